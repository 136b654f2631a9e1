//! `nudge-serve`'s HTTP service: the shared [`ApiContext`], the router, and start-up.
//!
//! Handlers live in one module per resource; errors become responses only in
//! [`error`]. Start-up refuses a database whose schema this build does not know; one out
//! of reach at start is checked once it answers.

pub mod admin;
pub mod body;
pub mod churn;
pub mod controller;
pub mod dashboard;
pub mod decisions;
pub mod error;
pub mod features;
pub mod health;
pub mod ingest;
pub mod loaded;
pub mod openapi;
pub mod paywall;
pub mod score;
pub mod served;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;

use self::decisions::{DecisionLog, DecisionWriter};
use self::loaded::{LoadError, Loaded};
use crate::control::tick::Stored;
use crate::policy::Mode;
use crate::rollout::{Flags, InForce};
use crate::store::flags::FlagStore;
use crate::store::quota::{self, QuotaStore};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use self::error::ApiError;
use crate::config::ServeConfig;
use crate::features::FeatureError;
use crate::features::catalog::{FeatureCatalog, FeatureCatalogError};
use crate::features::row::FeatureRow;
use crate::ingest::Ingestor;
use crate::ingest::catalog::{Catalog, CatalogError};
use crate::ingest::hashing::UserHasher;
use crate::ingest::wire::ExpectedToken;
use crate::store::StoreError;
use crate::store::database::{self, AtStart};
use crate::store::online::{FeatureLookup, OnlineStore};
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
    pub posthog_token: Option<ExpectedToken>,
    /// Prometheus recorder.
    pub metrics: PrometheusHandle,
    /// Policy and ranker; `None` until the first successful load.
    pub loaded: ArcSwapOption<Loaded>,
    /// Send quotas (Redis beside the online store, or embedded).
    pub quota: QuotaStore,
    /// Where the runtime flags live (Redis beside the online store, else Postgres).
    pub flag_store: FlagStore,
    /// The runtime flags as last read from the flag store; `None` until the first read
    /// succeeds (the mode is then held at shadow at most: [`InForce::of`]).
    pub flags: ArcSwapOption<Flags>,
    /// The controller's state as last read from Postgres (`None` before its first tick).
    pub controller: ArcSwapOption<Stored>,
    /// The decision log's queue.
    pub decisions: DecisionLog,
    /// The decision log's writer, taken at shutdown to flush.
    pub decision_writer: Mutex<Option<DecisionWriter>>,
    /// Catalog index of `opted_out` (the push opt-out gate reads it).
    pub opted_out_index: Option<usize>,
    /// Catalog index of `timezone` (a score request naming none falls back to it).
    pub timezone_index: Option<usize>,
    /// Model registry root.
    pub models_dir: PathBuf,
    /// Policy file.
    pub policy_path: PathBuf,
    /// Scheduler-scope token; `None` = no auth (dev only).
    pub scheduler_token: Option<ExpectedToken>,
    /// Admin-scope token; `None` = admin API disabled.
    pub admin_token: Option<ExpectedToken>,
    /// Requests handled at once before load is shed.
    pub max_in_flight: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// The dashboard's KPI section between page loads.
    pub dashboard_kpis: dashboard::KpiCache,
    /// How long the dashboard's KPI section is kept before it is computed again.
    pub dashboard_kpi_every: Duration,
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
        let (decisions, writer) = DecisionLog::start(pool.clone());
        let opted_out_index = feature_catalog.index("opted_out");
        let timezone_index = feature_catalog.index("timezone");
        Self(Arc::new(Inner {
            ingestor: Ingestor::new(catalog, config.hasher.clone(), pool.clone()),
            quota: QuotaStore::beside(&online),
            flag_store: FlagStore::beside(&online, &pool),
            flags: ArcSwapOption::empty(),
            controller: ArcSwapOption::empty(),
            online,
            feature_catalog,
            loaded: ArcSwapOption::empty(),
            decisions,
            decision_writer: Mutex::new(Some(writer)),
            opted_out_index,
            timezone_index,
            models_dir: config.models_dir.clone(),
            policy_path: config.policy_path.clone(),
            scheduler_token: config.scheduler_token.as_deref().map(ExpectedToken::new),
            admin_token: config.admin_token.as_deref().map(ExpectedToken::new),
            max_in_flight: config.max_in_flight,
            request_timeout: config.request_timeout,
            dashboard_kpis: dashboard::KpiCache::default(),
            dashboard_kpi_every: config.dashboard_kpi_every,
            pool,
            hasher: config.hasher.clone(),
            webhook_secret: config.webhook_secret.clone(),
            posthog_token: config.posthog_token.as_deref().map(ExpectedToken::new),
            metrics: telemetry::metrics_handle(),
        }))
    }
}

impl ApiContext {
    /// Loads the policy and the ranker champion and swaps them in as one value. A file
    /// that fails validation is refused with the reason and what serves stays.
    pub fn reload(&self) -> Result<Arc<Loaded>, LoadError> {
        let loaded = Arc::new(Loaded::load(
            &self.policy_path,
            &self.models_dir,
            &self.feature_catalog,
        )?);
        self.loaded.store(Some(loaded.clone()));
        metrics::gauge!(telemetry::LOADED_VERSION, "kind" => "policy", "version" => loaded.policy.version.clone()).set(1.0);
        for model in loaded.models() {
            metrics::gauge!(telemetry::LOADED_VERSION, "kind" => model.served.name(), "version" => model.version.clone()).set(1.0);
            tracing::info!(model = model.served.name(), version = %model.version, "champion loaded");
        }
        tracing::info!(policy = %loaded.policy.version, mode = loaded.policy.rollout.mode.as_str(),
                       "policy and models loaded");
        self.publish_rollout();
        Ok(loaded)
    }

    /// [`Self::reload`], then, when the new policy brings in a send budget the one in
    /// force before did not have (or nothing was loaded), [`Self::seed_quotas`] before
    /// answering, so the budget counts the recorded sends from its first decision. What
    /// `POST /admin/reload` and SIGHUP run.
    pub async fn reload_and_seed(&self) -> Result<Arc<Loaded>, LoadError> {
        let budget_before = self
            .loaded
            .load_full()
            .and_then(|loaded| loaded.policy.send_budget);
        let loaded = self.reload()?;
        if budget_before.is_none() && loaded.policy.send_budget.is_some() {
            self.seed_quotas().await;
        }
        Ok(loaded)
    }

    /// The policy and models in force, or 503 until the first load succeeds.
    pub fn current(&self) -> Result<Arc<Loaded>, ApiError> {
        self.loaded
            .load_full()
            .ok_or_else(|| ApiError::NotReady("policy and models are not loaded".into()))
    }

    /// The user's online features; `None` (a cold start) when there are none or the store
    /// fails (counted in `nudge_score_feature_errors_total`).
    pub async fn user_features(&self, user_hash: &str) -> Option<FeatureRow> {
        match self.online.features(&self.feature_catalog, user_hash).await {
            Ok(FeatureLookup::Found(row)) => Some(row),
            Ok(FeatureLookup::Unknown | FeatureLookup::NotMaterialized) => None,
            Err(e) => {
                metrics::counter!(telemetry::FEATURE_ERRORS).increment(1);
                log_fallback(&e, "online features unavailable; scoring as a cold start");
                None
            }
        }
    }

    /// The rollout and kill switch in force: the runtime flags over the loaded policy.
    pub fn in_force(&self, policy: &crate::policy::Policy) -> InForce {
        InForce::of(policy, self.flags.load().as_deref())
    }

    /// Sets the rollout gauges to what is in force.
    fn publish_rollout(&self) {
        let Some(loaded) = self.loaded.load_full() else {
            return;
        };
        let in_force = self.in_force(&loaded.policy);
        for mode in [Mode::Off, Mode::Shadow, Mode::Canary, Mode::Full] {
            metrics::gauge!(telemetry::ROLLOUT_MODE, "mode" => mode.as_str())
                .set(f64::from(u8::from(mode == in_force.mode)));
        }
        metrics::gauge!(telemetry::CANARY_PERCENT).set(in_force.canary_percent);
        metrics::gauge!(telemetry::KILL_SWITCH).set(f64::from(u8::from(in_force.kill_switch)));
    }

    /// Reads the runtime flags from the flag store and puts them in force. On failure the
    /// flags last read stay in force (counted in `nudge_flag_errors_total`).
    pub async fn refresh_flags(&self) -> Result<Arc<Flags>, crate::store::StoreError> {
        match self.flag_store.read().await {
            Ok(flags) => {
                let flags = Arc::new(flags);
                if self.flags.load().as_deref() != Some(&*flags) {
                    tracing::info!(rollout = ?flags.rollout, kill_switch = ?flags.kill_switch, "runtime flags changed");
                }
                self.flags.store(Some(flags.clone()));
                self.publish_rollout();
                Ok(flags)
            }
            Err(e) => {
                metrics::counter!(telemetry::FLAG_ERRORS).increment(1);
                Err(e)
            }
        }
    }

    /// Re-reads the runtime flags and the controller's threshold every `interval`, so a
    /// change made through any replica or `nudge-serve flag`, or a controller step taken
    /// by another replica, is in force everywhere within about that time. A read that
    /// starts or stops failing is logged once, not at every poll.
    pub fn watch_flags(&self, interval: std::time::Duration) {
        let ctx = self.clone();
        let flags_failing = Arc::new(Failing::default());
        let controller_failing = Arc::new(Failing::default());
        spawn_every(interval, move || {
            let ctx = ctx.clone();
            let (flags_failing, controller_failing) =
                (flags_failing.clone(), controller_failing.clone());
            async move {
                let flags = ctx.refresh_flags().await;
                match (flags_failing.record(flags.is_err()), flags) {
                    (Some(true), Err(e)) if ctx.flags.load().is_some() => {
                        tracing::warn!(error = %e, "runtime flags unreadable; the last ones read stay in force")
                    }
                    (Some(true), Err(e)) => {
                        tracing::warn!(error = %e, "runtime flags still unread; the policy file's rollout, at most shadow, stays in force")
                    }
                    (Some(false), _) => tracing::info!("runtime flags readable again"),
                    _ => {}
                }
                let controller = ctx.refresh_controller().await;
                match (controller_failing.record(controller.is_err()), controller) {
                    (Some(true), Err(e)) => {
                        tracing::warn!(error = %e, "controller state unreadable; the last threshold read stays in force")
                    }
                    (Some(false), _) => tracing::info!("controller state readable again"),
                    _ => {}
                }
            }
        });
    }

    /// Checks the schema every [`SCHEMA_RECHECK`] until Postgres answers with the one this
    /// build knows (a wrong one is logged once, then checked again: a migration run
    /// meanwhile is picked up), then starts the feature refresher (`every`), whose first
    /// tick loads the embedded store.
    fn start_features_once_the_schema_is_current(&self, every: Duration) {
        let ctx = self.clone();
        tokio::spawn(async move {
            let mut checks = tokio::time::interval(SCHEMA_RECHECK);
            let mut logged = None;
            loop {
                checks.tick().await;
                match database::check_schema(&ctx.pool).await {
                    Ok(()) => break,
                    Err(e) if e.is_postgres_unreachable() => {}
                    Err(e) => {
                        let message = e.to_string();
                        if logged.as_ref() != Some(&message) {
                            tracing::error!(error = %message, "postgres answers with a schema this \
                                build does not serve; not ready until it does");
                            logged = Some(message);
                        }
                    }
                }
            }
            tracing::info!("postgres answers with the schema this build knows");
            ctx.seed_quotas().await;
            features::FeatureRefresher::unloaded(ctx).spawn(every);
        });
    }

    /// Seeds the quota store from the notifications the events record
    /// ([`QuotaStore::seed`]): the day's sends, and each user's send load when the policy
    /// in force has a budget, so a restart or sends made before this server counted reset
    /// neither; at start, and once Postgres answers with the current schema. A failure is
    /// logged and the quotas count from nothing.
    pub async fn seed_quotas(&self) {
        let budget = self
            .loaded
            .load_full()
            .and_then(|loaded| loaded.policy.send_budget);
        let started = std::time::Instant::now();
        match quota::seed_from_recorded(&self.quota, &self.pool, budget.as_ref()).await {
            Ok(seeded) => {
                metrics::counter!(telemetry::QUOTA_SEEDED, "kind" => "sends")
                    .increment(seeded.sends as u64);
                metrics::counter!(telemetry::QUOTA_SEEDED, "kind" => "loads")
                    .increment(seeded.loads as u64);
                tracing::info!(
                    users = seeded.users,
                    sends = seeded.sends,
                    loads = seeded.loads,
                    store = self.online.kind(),
                    elapsed_ms = started.elapsed().as_millis(),
                    "quotas seeded from the recorded notifications (what the store held is kept)"
                );
            }
            Err(e) => {
                metrics::counter!(telemetry::QUOTA_SEED_ERRORS).increment(1);
                tracing::error!(error = %e, "quotas could not be seeded from the recorded \
                    notifications; the daily cap, the gap and the send budget count only \
                    sends from now on");
            }
        }
    }

    /// Flushes the decision log (waiting at most `patience`); later decisions are dropped and counted.
    pub async fn flush_decisions(&self, patience: std::time::Duration) {
        let writer = self
            .decision_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer) = writer {
            writer.finish(patience).await;
        }
    }
}

/// Whether a background read is failing, so that an outage is logged when it starts and
/// when it ends rather than at every poll (the metrics count every failure).
#[derive(Debug, Default)]
struct Failing(AtomicBool);

impl Failing {
    /// Records whether the latest read failed: `Some(true)` when failures start,
    /// `Some(false)` when they end, `None` when nothing changed.
    fn record(&self, failed: bool) -> Option<bool> {
        (self.0.swap(failed, Ordering::Relaxed) != failed).then_some(failed)
    }
}

/// How often a server started while Postgres was out of reach checks its schema again.
const SCHEMA_RECHECK: Duration = Duration::from_secs(1);

/// Runs `task` every `interval`, forever, on a spawned task; a late tick delays the next
/// ones instead of bunching them.
pub fn spawn_every<F, Fut>(interval: Duration, mut task: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            task().await;
        }
    })
}

/// The service's routes. Every route but the operational ones (`/healthz`, `/readyz`,
/// `/metrics`, which must answer under load) shares one in-flight limit, beyond which a
/// request is refused at once with 503 rather than queued, and one timeout.
///
/// Each layer a router applies wraps every route in one more boxed service, which each
/// request clones and drops, so the layers are grouped: a route has one for its group's
/// limits and scope, and one for the tracing, panic catching and latency of every route.
pub fn router(ctx: ApiContext) -> Router {
    let timeout = ctx.request_timeout;
    let in_flight = GlobalConcurrencyLimitLayer::new(ctx.max_in_flight);
    let limits = || {
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |error| refusal(error, timeout)))
            .load_shed()
            .layer(in_flight.clone())
            .timeout(timeout)
    };
    let scheduler = Router::new()
        .route("/v1/score", post(score::score))
        .route("/v1/churn", post(churn::churn))
        .route("/v1/paywall", post(paywall::paywall))
        .route("/v1/features/{user_id}", get(features::get_features))
        .route_layer(limits().layer(middleware::from_fn_with_state(
            ctx.clone(),
            admin::scheduler_scope,
        )));
    let admin = Router::new()
        .route("/admin/reload", post(admin::reload))
        .route(
            "/admin/rollout",
            get(admin::get_rollout)
                .put(admin::put_rollout)
                .delete(admin::delete_rollout),
        )
        .route("/admin/kill-switch", post(admin::kill_switch))
        .route("/admin/controller", get(controller::get_controller))
        .route("/admin/controller/tick", post(controller::post_tick))
        .route_layer(limits().layer(middleware::from_fn_with_state(
            ctx.clone(),
            admin::admin_scope,
        )));
    let unscoped = ingest::CAPTURE_PATHS
        .into_iter()
        .fold(Router::new(), |api, path| {
            api.route(path, post(ingest::capture))
        })
        .route("/v1/events", post(ingest::webhook))
        .route("/dashboard", get(dashboard::dashboard))
        .route_layer(limits());
    Router::new()
        .merge(unscoped)
        .merge(scheduler)
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                // A failed request is logged once, by `ApiError`, with its reason.
                .layer(TraceLayer::new_for_http().on_failure(()))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal.into_response()
                }))
                .layer(middleware::from_fn(record_latency)),
        )
        .with_state(ctx)
}

/// A request the limits refused (`timeout` is the configured one): 503 with
/// Retry-After, counted by cause.
async fn refusal(error: BoxError, timeout: Duration) -> ApiError {
    let (cause, answer) = if error.is::<Overloaded>() {
        ("overloaded", ApiError::Overloaded)
    } else if error.is::<Elapsed>() {
        ("timeout", ApiError::TimedOut(timeout))
    } else {
        tracing::error!(error = %error, "request refused by an unexpected middleware error");
        ("internal", ApiError::Internal)
    };
    metrics::counter!(telemetry::REFUSED, "cause" => cause).increment(1);
    answer
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

/// Logs a store failure a request falls back from (`fallback` says how): Redis out of
/// reach only at debug level, since the Redis link logs the outage once and the metrics
/// count every failure; anything else as a warning.
fn log_fallback(error: &StoreError, fallback: &str) {
    if error.is_redis_unreachable() {
        tracing::debug!(error = %error, "{fallback}");
    } else {
        tracing::warn!(error = %error, "{fallback}");
    }
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

/// A context ready to serve, and what start-up found of Postgres.
pub struct Prepared {
    /// The context.
    pub ctx: ApiContext,
    /// Whether Postgres answered with the schema this build knows.
    pub postgres: AtStart,
}

/// Connects the stores and builds the context. A Postgres that answers must have the
/// schema this build knows (else start-up is refused); one out of reach is checked once it
/// answers ([`Prepared::postgres`]), and Redis is connected on first use, so a server
/// starts while either is down and answers safely meanwhile.
pub async fn prepare(config: &ServeConfig) -> Result<Prepared, StartError> {
    let (pool, postgres) = database::open(&config.database_url, config.db_pool_size).await?;
    let online = match &config.redis_url {
        Some(url) => OnlineStore::redis(url, &config.redis_prefix)?,
        None => OnlineStore::embedded(),
    };
    let ctx = ApiContext::new(
        config,
        Catalog::builtin()?,
        FeatureCatalog::builtin()?,
        pool,
        online,
    );
    Ok(Prepared { ctx, postgres })
}

/// Runs the service on `config.listen` until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    run_on(config, listener, shutdown).await
}

/// Runs the service on `listener` (whatever `config.listen` says) until `shutdown` resolves.
pub async fn run_on(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if config.dev {
        tracing::warn!(
            "DEV MODE: insecure defaults in force (fixed hash key); never use with real users"
        );
    }
    let Prepared { ctx, postgres } = prepare(&config).await?;
    match &ctx.online {
        OnlineStore::Embedded(_) => tracing::info!(
            "online store: embedded (in-process; correct for a single replica only, set REDIS_URL to share)"
        ),
        OnlineStore::Redis { prefix, .. } => {
            tracing::info!(prefix = %prefix, "online store: redis (shared by all replicas)");
            if let Err(e) = ctx.online.ping().await {
                tracing::error!(error = %e, "redis unreachable at start: answers send nothing \
                    (reason quota_unavailable) and /readyz says not ready until it answers");
            }
        }
    }
    match ctx.reload() {
        Ok(_) => {}
        // Start anyway: /readyz says why, and a fixed file is picked up by reload or SIGHUP.
        Err(e) => {
            tracing::error!(error = %e, "policy or models refused; not ready until a reload succeeds")
        }
    }
    admin::reload_on_sighup(ctx.clone());
    match postgres {
        AtStart::SchemaCurrent => {
            if let Err(e) = ctx.refresh_flags().await {
                tracing::error!(error = %e, "runtime flags unreadable at start; the policy file's rollout, \
                    at most shadow, is in force until they are read");
            }
            if let Err(e) = ctx.refresh_controller().await {
                tracing::error!(error = %e, "controller state unreadable at start; the policy's initial threshold is in force until it is");
            }
            if let Err(e) = ctx.publish_stored_guardrails().await {
                tracing::warn!(error = %e, "guardrail checks unreadable at start; their gauges wait for the next check");
            }
            ctx.seed_quotas().await;
            features::FeatureRefresher::start(ctx.clone())
                .await?
                .spawn(config.features_refresh);
        }
        // The flags and the controller's state are read by the watch loop below, first
        // thing; the features wait for the schema check.
        AtStart::Unreachable(e) => {
            tracing::error!(error = %e, "postgres unreachable at start: scores are answered \
                (with no stored features, cold starts, when the store is embedded), decisions \
                wait in the log's queue, and /readyz says not ready until it answers with the \
                schema this build knows");
            ctx.start_features_once_the_schema_is_current(config.features_refresh);
        }
    }
    ctx.watch_flags(config.flag_poll);
    match config.controller_tick {
        Some(every) => {
            ctx.tick_controller(every);
            tracing::info!(every = ?every, "control loop ticks on the wall clock");
        }
        None => tracing::info!("control loop ticks only on POST /admin/controller/tick"),
    }
    tracing::info!(store = ctx.flag_store.kind(), every = ?config.flag_poll, "runtime flags");
    tracing::info!(
        webhook = config.webhook_secret.is_some(),
        capture_api = config.posthog_token.is_some(),
        "ingest endpoints"
    );
    tracing::info!(addr = %listener.local_addr()?, "nudge-serve listening");
    axum::serve(listener, router(ctx.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    ctx.flush_decisions(std::time::Duration::from_secs(10))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Failing;

    #[test]
    fn a_failing_read_is_reported_when_failures_start_and_when_they_end_only() {
        let failing = Failing::default();
        let seen: Vec<_> = [false, true, true, true, false, false, true]
            .into_iter()
            .map(|failed| failing.record(failed))
            .collect();
        assert_eq!(
            seen,
            [None, Some(true), None, None, Some(false), None, Some(true)]
        );
    }
}
