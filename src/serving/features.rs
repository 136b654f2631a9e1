//! `GET /v1/features/{user_id}`, and the background task that keeps the online features
//! fresh: the embedded store reloads from Postgres after each feature refresh, and the
//! freshness gauges on `/metrics` follow `nudge-train features status`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use serde::Serialize;
use sqlx::PgPool;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use crate::features::FeatureError;
use crate::features::materialize::materialize;
use crate::features::row::NamedFeatures;
use crate::features::status::status;
use crate::store::online::{FeatureLookup, OnlineStore};
use crate::telemetry::{EMBEDDED_USERS, FEATURES_LAG, SNAPSHOT_AGE, VALIDATION_PASS_SHARE};

/// The body of `GET /v1/features/{user_id}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FeaturesBody<'a> {
    /// The user id as asked.
    user_id: &'a str,
    /// Midnight UTC of the snapshot: every value covers events strictly before it.
    as_of: DateTime<Utc>,
    /// Feature name → value (number, string or null), in catalog order.
    #[schema(value_type = Object)]
    features: NamedFeatures<'a>,
}

/// `GET /v1/features/{user_id}`: the user's newest materialised features, in catalog order.
#[utoipa::path(get, path = "/v1/features/{user_id}", tag = "features",
    security(("scheduler" = [])),
    params(("user_id" = String, Path, description = "the user's id")),
    responses((status = 200, body = FeaturesBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_features(
    State(ctx): State<ApiContext>,
    Path(user_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user_hash = ctx.hasher.hash(&user_id);
    let row = match ctx
        .online
        .features(&ctx.feature_catalog, &user_hash)
        .await?
    {
        FeatureLookup::Found(row) => row,
        FeatureLookup::Unknown => {
            return Err(ApiError::UnknownUser(
                "no features are stored for this user",
            ));
        }
        FeatureLookup::NotMaterialized => {
            return Err(ApiError::UnknownUser(
                "no features have been materialised yet (nudge-train features materialize)",
            ));
        }
    };
    let body = FeaturesBody {
        user_id: &user_id,
        as_of: row.as_of_time(),
        features: row.named(&ctx.feature_catalog),
    };
    // Serialised here, not through serde_json::Value, so reals keep their f32 digits.
    let json = serde_json::to_vec(&body).map_err(|_| ApiError::Internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}

/// Loads the embedded store from Postgres.
async fn load_embedded(ctx: &ApiContext) -> Result<(), FeatureError> {
    let report = materialize(
        &ctx.pool,
        &ctx.feature_catalog,
        &ctx.online,
        &ProgressBar::hidden(),
    )
    .await?;
    metrics::gauge!(EMBEDDED_USERS).set(report.users as f64);
    tracing::info!(
        users = report.users,
        version = %report.version,
        newest_as_of = ?report.newest_as_of,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "embedded feature store loaded"
    );
    Ok(())
}

/// When the last feature refresh finished (changes whenever snapshots may have changed).
async fn last_refresh(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(finished_at) FROM silver.refreshes")
        .fetch_one(pool)
        .await
}

/// Keeps the online features fresh: see [`FeatureRefresher::tick`].
pub struct FeatureRefresher {
    ctx: ApiContext,
    /// The feature refresh the embedded store was last loaded after (the inner `None`:
    /// before any refresh); `None` until the first load.
    loaded_after: Option<Option<DateTime<Utc>>>,
}

impl FeatureRefresher {
    /// Loads the embedded store (Redis is filled by `nudge-train features materialize`).
    pub async fn start(ctx: ApiContext) -> Result<Self, FeatureError> {
        // Read before loading, so a refresh finishing during the load triggers a reload.
        let loaded_after = last_refresh(&ctx.pool).await?;
        if matches!(ctx.online, OnlineStore::Embedded(_)) {
            load_embedded(&ctx).await?;
        }
        Ok(Self {
            ctx,
            loaded_after: Some(loaded_after),
        })
    }

    /// A refresher whose first tick loads the embedded store (for a server that started
    /// before Postgres answered: until then it holds no features).
    pub fn unloaded(ctx: ApiContext) -> Self {
        Self {
            ctx,
            loaded_after: None,
        }
    }

    /// Updates the freshness gauges and, when embedded, loads the store if it never was or
    /// a feature refresh finished since the last load. Errors are logged, the loaded
    /// version serving meanwhile.
    pub async fn tick(&mut self) {
        let ctx = &self.ctx;
        match status(&ctx.pool, Utc::now()).await {
            Ok(status) => {
                if let Some(lag) = status.lag() {
                    metrics::gauge!(FEATURES_LAG).set(lag.num_milliseconds() as f64 / 1e3);
                }
                if let Some(as_of) = status.newest_snapshot {
                    let age = Utc::now() - as_of.and_time(chrono::NaiveTime::MIN).and_utc();
                    metrics::gauge!(SNAPSHOT_AGE).set(age.num_milliseconds() as f64 / 1e3);
                }
                if let Some(share) = status.validation_pass_share() {
                    metrics::gauge!(VALIDATION_PASS_SHARE).set(share);
                }
            }
            Err(err) => tracing::warn!(error = %err, "feature status unavailable"),
        }
        if !matches!(ctx.online, OnlineStore::Embedded(_)) {
            return;
        }
        match last_refresh(&ctx.pool).await {
            Ok(latest) if self.loaded_after != Some(latest) => match load_embedded(ctx).await {
                Ok(()) => self.loaded_after = Some(latest),
                Err(err) => tracing::warn!(
                    error = %err,
                    "embedded feature load failed; what was loaded before, if anything, keeps serving"
                ),
            },
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "feature refresh marker unavailable"),
        }
    }

    /// Ticks every `every`, forever.
    pub fn spawn(mut self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.tick().await;
            }
        })
    }
}
