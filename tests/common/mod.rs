//! Shared test fixtures: a throw-away Postgres database per test and an in-process app.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod control;
pub mod proxy;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nudge::config::ServeConfig;
use nudge::features::catalog::FeatureCatalog;
use nudge::ingest::catalog::Catalog;
use nudge::ingest::hashing::UserHasher;
use nudge::models::Model;
use nudge::models::artifact::{Estimator, FORMAT, MODEL_FILE, schema_hash};
use nudge::models::calibration::Calibration;
use nudge::models::preprocess::{CategoricalEncoding, NumericEncoding, Preprocessing};
use nudge::models::registry::Registry;
use nudge::serving::{ApiContext, router};
use nudge::store::database;
use nudge::store::online::OnlineStore;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::migrate::MigrateDatabase;
use std::path::Path;
use tower::ServiceExt;

/// Hash key used by the test apps.
pub const HASH_KEY: &str = "test-hash-key-0123456789";
/// Webhook secret used by the test apps.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
/// Capture API token used by the test apps.
pub const TOKEN: &str = "phc_test_token";
/// Bearer token of the scheduler scope in the test apps.
pub const SCHEDULER_TOKEN: &str = "test-scheduler-token";
/// Bearer token of the admin scope in the test apps.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Postgres server for tests (`NUDGE_TEST_PG`, default the local one).
pub fn pg_server() -> String {
    std::env::var("NUDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Redis for tests (`NUDGE_TEST_REDIS`, default the local one).
pub fn redis_url() -> String {
    std::env::var("NUDGE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database of its own for one test, dropped (connections and all) when the test ends.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn migrated() -> Self {
        let db = Self::unmigrated().await;
        database::migrate(&db.pool).await.expect("migrate");
        db
    }

    /// A fresh database without the nudge schema.
    pub async fn unmigrated() -> Self {
        let url = Self::fresh_url();
        database::create_database_if_missing(&url)
            .await
            .expect("create test database");
        let pool = database::connect(&url, 8)
            .await
            .expect("connect test database");
        Self { url, pool }
    }

    /// The URL of a database that does not exist yet (dropped at the end by [`DropDb`]).
    pub fn fresh_url() -> String {
        format!(
            "{}/nudge_test_{}",
            pg_server(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// Number of rows `sql` (a `SELECT count(*)`) counts.
    pub async fn count(&self, sql: &'static str) -> i64 {
        self.scalar(sql).await
    }

    /// The single value `sql` selects.
    pub async fn scalar<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("scalar query")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.url);
    }
}

/// Runs one of the package's binaries (by its `CARGO_BIN_EXE_*` path) to completion,
/// without `NUDGE_HASH_KEY` from the caller's environment.
pub fn run_bin(path: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(path)
        .env_remove("NUDGE_HASH_KEY")
        .args(args)
        .output()
        .expect("run binary")
}

/// Installs a test tool under `target/` with its `install.sh` (a path from the package
/// root; idempotent) and returns the path of its program, `target/<in_target>`.
pub fn installed_tool(install_script: &str, in_target: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new("bash")
        .arg(std::path::Path::new(root).join(install_script))
        .status()
        .expect("run install.sh");
    assert!(status.success(), "{install_script} failed");
    format!("{root}/target/{in_target}")
}

/// Drops the database named by its URL when the test ends, even when it fails.
pub struct DropOnExit(pub String);

impl Drop for DropOnExit {
    fn drop(&mut self) {
        drop_database(&self.0);
    }
}

/// Drops a test database named by URL, whatever connections it still has.
pub fn drop_database(url: &str) {
    let url = url.to_owned();
    // Drop runs inside the test's runtime, which cannot be blocked on; use a thread.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            // A task of a stopped server can still hold a pool that reconnects between
            // the forced drop's disconnect and the drop itself: try again, then say so.
            let mut last = Ok(());
            for _ in 0..5 {
                last = sqlx::Postgres::force_drop_database(&url).await;
                if last.is_ok() {
                    return;
                }
            }
            if let Err(e) = last {
                eprintln!("test database {url} left behind: {e}");
            }
        });
    })
    .join();
}

/// A configuration for the test apps (dev flags off, secrets set).
pub fn config(url: &str) -> ServeConfig {
    ServeConfig {
        database_url: url.to_owned(),
        redis_url: None,
        redis_prefix: format!("nudge-test-{}:", uuid::Uuid::new_v4().simple()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        hasher: UserHasher::new(HASH_KEY.as_bytes()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        posthog_token: Some(TOKEN.into()),
        db_pool_size: 8,
        models_dir: std::path::PathBuf::from("models"),
        policy_path: std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policy/policy.yaml"
        )),
        scheduler_token: Some(SCHEDULER_TOKEN.into()),
        admin_token: Some(ADMIN_TOKEN.into()),
        features_refresh: Duration::from_secs(60),
        flag_poll: Duration::from_millis(100),
        controller_tick: None,
        max_in_flight: 512,
        request_timeout: Duration::from_secs(20),
        dashboard_kpi_every: Duration::ZERO,
        dev: false,
    }
}

/// A context over `pool` and `online` with the built-in catalogs.
pub fn context(config: &ServeConfig, pool: PgPool, online: OnlineStore) -> ApiContext {
    ApiContext::new(
        config,
        Catalog::builtin().expect("catalog"),
        FeatureCatalog::builtin().expect("feature catalog"),
        pool,
        online,
    )
}

/// [`context`] with its policy and models loaded from `config`'s paths and its runtime
/// flags read.
pub async fn loaded_context(config: &ServeConfig, pool: PgPool, online: OnlineStore) -> ApiContext {
    let ctx = context(config, pool, online);
    ctx.reload().expect("policy and model load");
    ctx.refresh_flags().await.expect("flags read");
    ctx
}

/// An app over `pool` with the embedded online store.
pub fn app_with_pool(pool: PgPool, config: &ServeConfig) -> Router {
    router(context(config, pool, OnlineStore::embedded()))
}

/// A test database and an app over it.
pub struct TestApp {
    pub db: TestDb,
    pub app: Router,
    pub hasher: UserHasher,
}

impl TestApp {
    pub async fn new() -> Self {
        let db = TestDb::migrated().await;
        let app = app_with_pool(db.pool.clone(), &config(&db.url));
        Self {
            db,
            app,
            hasher: UserHasher::new(HASH_KEY.as_bytes()),
        }
    }

    /// Sends a request; returns the status, the headers and the JSON body (or Null).
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        send(&self.app, request).await
    }

    /// POSTs raw bytes with extra headers.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut req = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (status, _, json) = self.send(req.body(body.into()).expect("request")).await;
        (status, json)
    }

    /// POSTs JSON to the capture API's `/batch/`.
    pub async fn capture(&self, body: &Value) -> (StatusCode, Value) {
        self.post("/batch/", &[], body.to_string()).await
    }
}

/// Sends one request to `app` with a timeout; the body as JSON (null when it is not).
pub async fn send(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (status, headers, bytes) = send_raw(app, request).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

/// Sends one request to `app` with a timeout; the body as bytes.
pub async fn send_raw(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, axum::body::Bytes) {
    let response = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(request))
        .await
        .expect("request finished in time")
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes)
}

/// The HMAC-SHA-256 signature header value of `body` under the test secret.
pub fn sign(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A valid `app_opened` event for `user` with a fresh uuid.
pub fn app_opened(user: &str, ts: &str) -> Value {
    serde_json::json!({
        "uuid": uuid::Uuid::new_v4().to_string(), "event": "app_opened", "distinct_id": user,
        "timestamp": ts, "properties": {"source": "push", "$lib": "posthog-python"}
    })
}

/// A catalog event with the fixed uuid numbered `n`.
pub fn numbered_event(n: u32, name: &str, who: &str, ts: &str, properties: Value) -> Value {
    serde_json::json!({"uuid": format!("00000000-0000-4000-8000-{n:012}"), "event": name,
                       "distinct_id": who, "timestamp": ts, "properties": properties})
}

/// Simulates `config` into `db` (test hash key, default options).
pub async fn simulate(db: &TestDb, config: nudge::sim::SimConfig) {
    nudge::sim::run::run(
        config,
        UserHasher::new(HASH_KEY.as_bytes()),
        db.pool.clone(),
        nudge::sim::run::RunOptions::default(),
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .expect("simulate");
}

/// Ingests `events` through the production path; every one must be accepted.
pub async fn ingest_all(db: &TestDb, events: &[Value]) {
    let ingestor = nudge::ingest::Ingestor::new(
        Catalog::builtin().expect("catalog"),
        UserHasher::new(HASH_KEY.as_bytes()),
        db.pool.clone(),
    );
    let report = ingestor
        .ingest(nudge::ingest::event::Source::Capture, events.iter().map(Ok))
        .await
        .expect("ingest");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
}

/// A Redis key prefix of its own for one test; every key under it is deleted when the
/// test ends, even when it fails.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        Self(format!("nudge-test-{}:", uuid::Uuid::new_v4().simple()))
    }

    /// A store connected to the test Redis under this prefix.
    pub async fn store(&self) -> OnlineStore {
        OnlineStore::connect_redis(&redis_url(), &self.0)
            .await
            .expect("connect test redis")
    }

    /// Keys under the prefix, sorted.
    pub fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut conn = client.get_connection().expect("connect test redis");
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut conn)
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Seconds to live of `key` (-1 = none, -2 = no such key).
    pub fn ttl(&self, key: &str) -> i64 {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut conn = client.get_connection().expect("connect test redis");
        redis::cmd("TTL").arg(key).query(&mut conn).expect("TTL")
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Writes a ranker champion that scores contact reminders high (sigmoid 2 ≈ 0.88),
/// weekly digests low (≈ 0.12) and anything else 0.5, whatever the user's features.
pub fn write_ranker(models: &Path, version: &str) {
    write_logistic(
        models,
        ("notif_ranker", "returned_24h_after_notif", version),
        &["sessions_7d"],
        &[("notif_type", &["contact_reminder", "weekly_digest"])],
        &[
            ("notif_type=contact_reminder", 2.0),
            ("notif_type=weekly_digest", -2.0),
        ],
        0.0,
    );
}

/// Saves a logistic model `(name, label, version)` over `numeric` features (mean 0,
/// scale 1, with missing indicators) and `categorical` features with their levels, with
/// the given column weights (others 0), and makes it the champion.
pub fn write_logistic(
    models: &Path,
    (name, label, version): (&str, &str, &str),
    numeric: &[&str],
    categorical: &[(&str, &[&str])],
    weights: &[(&str, f64)],
    intercept: f64,
) {
    let preprocessing = Preprocessing {
        numeric: numeric
            .iter()
            .map(|n| NumericEncoding {
                name: (*n).into(),
                mean: 0.0,
                scale: 1.0,
                missing_indicator: true,
                range: None,
            })
            .collect(),
        categorical: categorical
            .iter()
            .map(|(n, levels)| CategoricalEncoding {
                name: (*n).into(),
                levels: levels.iter().map(|l| (*l).into()).collect(),
            })
            .collect(),
    };
    let weights = preprocessing
        .column_names()
        .iter()
        .map(|c| {
            weights
                .iter()
                .find(|(column, _)| column == c)
                .map_or(0.0, |(_, w)| *w)
        })
        .collect();
    let model = Model {
        format: FORMAT,
        name: name.into(),
        version: version.into(),
        label: label.into(),
        candidate: "logistic".into(),
        schema_hash: schema_hash(numeric.iter().copied(), categorical.iter().map(|(n, _)| *n)),
        preprocessing,
        estimator: Estimator::Logistic { weights, intercept },
        calibration: Calibration::None,
    };
    let registry = Registry::new(models);
    registry
        .save(name, version, &[(MODEL_FILE, &model.to_json().unwrap())])
        .unwrap();
    registry.set_champion(name, version).unwrap();
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("nudge-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An admin-scope request with a JSON body (or none).
pub async fn admin(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json");
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let (status, _, json) = send(app, req.body(body).expect("request")).await;
    (status, json)
}
