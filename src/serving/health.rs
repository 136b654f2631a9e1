//! Operations endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::ApiContext;
use super::body::Json;
use super::served::Served;
use crate::store::{StoreError, database};

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = r#"{"status": "ok"}"#)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The state of one dependency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// Whether it is usable.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl<E: std::fmt::Display> From<Result<String, E>> for Check {
    fn from(result: Result<String, E>) -> Self {
        match result {
            Ok(detail) => Check { ok: true, detail },
            Err(e) => Check {
                ok: false,
                detail: e.to_string(),
            },
        }
    }
}

/// The readiness report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// Postgres reachable and schema current.
    pub database: Check,
    /// The online store (embedded or Redis) answers.
    pub online_store: Check,
    /// The feature version the online store serves (changes with each materialisation,
    /// or each reload of the embedded store), when it answers and holds one.
    pub features_version: Option<String>,
    /// Policy and ranker champion loaded.
    pub models: Check,
}

/// Longest `/readyz` waits for Postgres: a probe answers promptly during an outage, when
/// the pool would wait its whole acquire timeout for a connection.
const DATABASE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
/// `GET /readyz`: Postgres reachable with the schema this build knows, online store up.
pub async fn readyz(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let database: Check =
        match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, database::check_schema(&ctx.pool)).await
        {
            Ok(checked) => checked
                .map(|()| "reachable, schema current".to_owned())
                .into(),
            Err(_) => Check {
                ok: false,
                detail: format!(
                    "postgres: no answer within {} ms",
                    DATABASE_CHECK_TIMEOUT.as_millis()
                ),
            },
        };
    let features_version = ctx.online.feature_version().await.ok().flatten();
    let online_store: Check = online_store_detail(&ctx, features_version.as_deref())
        .await
        .into();
    let models: Check = models_detail(&ctx).into();
    let ready = database.ok && online_store.ok && models.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            database,
            online_store,
            features_version,
            models,
        }),
    )
}

/// The online store answers; which features version it serves.
async fn online_store_detail(
    ctx: &ApiContext,
    version: Option<&str>,
) -> Result<String, StoreError> {
    ctx.online.ping().await?;
    Ok(format!(
        "{} store answers; features: {}",
        ctx.online.kind(),
        version.unwrap_or("none materialised")
    ))
}

/// The loaded policy and ranker champion.
fn models_detail(ctx: &ApiContext) -> Result<String, String> {
    let loaded = ctx
        .loaded
        .load_full()
        .ok_or("policy and models not loaded (see the log; POST /admin/reload after fixing)")?;
    loaded.ranker_version().ok_or_else(|| {
        format!(
            "no {} champion in the registry (train and promote one)",
            Served::Ranker.name()
        )
    })?;
    let models: Vec<String> = loaded
        .models()
        .map(|m| format!("{} {}", m.served.name(), m.version))
        .collect();
    Ok(format!(
        "policy {}, {}, mode {}",
        loaded.policy.version,
        models.join(", "),
        ctx.in_force(&loaded.policy).mode.as_str()
    ))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", description = "Prometheus text exposition")))]
pub async fn metrics(State(ctx): State<ApiContext>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
}
