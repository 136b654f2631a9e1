//! `nudge-serve`'s HTTP service: the shared [`ApiContext`], the router, and start-up.
//!
//! Handlers live in one module per resource; errors become responses only in
//! [`error`]. Start-up refuses a database whose schema this build does not know.

pub mod error;
pub mod features;
pub mod health;
pub mod ingest;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use self::error::ApiError;
use crate::config::ServeConfig;
use crate::features::FeatureError;
use crate::features::catalog::{FeatureCatalog, FeatureCatalogError};
use crate::ingest::Ingestor;
use crate::ingest::catalog::{Catalog, CatalogError};
use crate::ingest::hashing::UserHasher;
use crate::ingest::wire::MAX_BODY_BYTES;
use crate::store::online::OnlineStore;
use crate::store::{StoreError, database};
use crate::telemetry;

/// Everything a handler may use, shared by reference.
#[derive(Clone)]
pub struct ApiContext(Arc<Inner>);

/// The fields of [`ApiContext`].
pub struct Inner {
    /// Event ingest.
    pub ingestor: Ingestor,
    /// Postgres.
    pub pool: PgPool,
    /// Online store (Redis or embedded).
    pub online: OnlineStore,
    /// The feature catalog: names and kinds of the online features.
    pub feature_catalog: FeatureCatalog,
    /// Keyed hasher of user ids.
    pub hasher: UserHasher,
    /// Webhook secret; `None` disables `POST /v1/events`.
    pub webhook_secret: Option<String>,
    /// Capture API token; `None` disables the capture API.
    pub posthog_token: Option<String>,
    /// Prometheus recorder.
    pub metrics: PrometheusHandle,
}

impl std::ops::Deref for ApiContext {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ApiContext {
    /// A context over already-connected stores.
    pub fn new(
        config: &ServeConfig,
        catalog: Catalog,
        feature_catalog: FeatureCatalog,
        pool: PgPool,
        online: OnlineStore,
    ) -> Self {
        Self(Arc::new(Inner {
            ingestor: Ingestor::new(catalog, config.hasher.clone(), pool.clone()),
            pool,
            online,
            feature_catalog,
            hasher: config.hasher.clone(),
            webhook_secret: config.webhook_secret.clone(),
            posthog_token: config.posthog_token.clone(),
            metrics: telemetry::metrics_handle(),
        }))
    }
}

/// The service's routes.
pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::webhook))
        .route("/batch/", post(ingest::capture))
        .route("/capture/", post(ingest::capture))
        .route("/e/", post(ingest::capture))
        .route("/i/v0/e/", post(ingest::capture))
        .route("/v1/features/{user_id}", get(features::get_features))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn(record_latency))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(ctx)
}

/// Records each request's latency by route and status.
async fn record_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(telemetry::HTTP_LATENCY, "route" => route,
                        "status" => response.status().as_u16().to_string())
    .record(started.elapsed().as_secs_f64());
    response
}

/// Why `nudge-serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A store could not be reached or has the wrong schema.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event catalog is invalid.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The feature catalog is invalid.
    #[error(transparent)]
    FeatureCatalog(#[from] FeatureCatalogError),
    /// The online features could not be loaded.
    #[error("loading online features: {0}")]
    Features(#[from] FeatureError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

/// Connects the stores, checks the schema, and builds the context.
pub async fn prepare(config: &ServeConfig) -> Result<ApiContext, StartError> {
    database::create_database_if_missing(&config.database_url).await?;
    let pool = database::connect(&config.database_url, config.db_pool_size).await?;
    database::check_schema(&pool).await?;
    let online = match &config.redis_url {
        Some(url) => OnlineStore::connect_redis(url, &config.redis_prefix).await?,
        None => OnlineStore::embedded(),
    };
    Ok(ApiContext::new(
        config,
        Catalog::builtin()?,
        FeatureCatalog::builtin()?,
        pool,
        online,
    ))
}

/// Runs the service until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if config.dev {
        tracing::warn!(
            "DEV MODE: insecure defaults in force (fixed hash key); never use with real users"
        );
    }
    let ctx = prepare(&config).await?;
    match &ctx.online {
        OnlineStore::Embedded(_) => tracing::info!(
            "online store: embedded (in-process; correct for a single replica only, set REDIS_URL to share)"
        ),
        OnlineStore::Redis { prefix, .. } => {
            tracing::info!(prefix = %prefix, "online store: redis (shared by all replicas)")
        }
    }
    features::FeatureRefresher::start(ctx.clone())
        .await?
        .spawn(config.features_refresh);
    tracing::info!(
        webhook = config.webhook_secret.is_some(),
        capture_api = config.posthog_token.is_some(),
        "ingest endpoints"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(addr = %config.listen, "nudge-serve listening");
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
