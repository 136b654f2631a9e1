//! The control loop's fixtures: an instance over a test database with a policy in canary,
//! hand-made decisions and silver events, and ticks at a given time.

use std::path::Path;

use axum::Router;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use nudge::serving::{ApiContext, router};
use nudge::store::online::OnlineStore;
use serde_json::{Value, json};

use super::{TempDir, TestDb, admin, config, loaded_context, write_ranker};

pub const T0: &str = "2026-03-02T12:00:00Z";

pub fn t0() -> DateTime<Utc> {
    T0.parse().unwrap()
}

pub fn policy_text(extra: &str) -> String {
    format!(
        "rollout: {{ mode: canary, canary_percent: 50, salt: s }}\n\
         threshold: {{ initial: 0.3, min: 0.05, max: 0.9 }}\n{extra}"
    )
}

pub struct Instance {
    pub ctx: ApiContext,
    pub app: Router,
}

/// An instance over `db` loaded from `dir`, with the controller state read as at start.
pub async fn instance(db: &TestDb, dir: &Path) -> Instance {
    instance_with(db, dir, |_| {}).await
}

/// [`instance`], with the test configuration changed by `configure`.
pub async fn instance_with(
    db: &TestDb,
    dir: &Path,
    configure: impl FnOnce(&mut nudge::config::ServeConfig),
) -> Instance {
    let mut cfg = config(&db.url);
    configure(&mut cfg);
    cfg.models_dir = dir.join("models");
    cfg.policy_path = dir.join("policy.yaml");
    let ctx = loaded_context(&cfg, db.pool.clone(), OnlineStore::embedded()).await;
    ctx.refresh_controller().await.expect("controller state");
    Instance {
        app: router(ctx.clone()),
        ctx,
    }
}

pub async fn setup(controller: &str) -> (TestDb, TempDir, Instance) {
    setup_policy(&policy_text(controller)).await
}

/// A migrated database, a ranker and `policy`, and an instance over them.
pub async fn setup_policy(policy: &str) -> (TestDb, TempDir, Instance) {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    write_ranker(&dir.0.join("models"), "v1");
    std::fs::write(dir.0.join("policy.yaml"), policy).unwrap();
    let one = instance(&db, &dir.0).await;
    (db, dir, one)
}

/// A decision of `user` in `arm` at `at`; `sent` names the candidate sent, if any.
pub async fn decision(db: &TestDb, user: &str, arm: &str, at: DateTime<Utc>, sent: Option<&str>) {
    sqlx::query(
        "INSERT INTO serving.decisions (request_id, decided_at, user_hash, arm, cold_start,
           policy_version, threshold, sent, candidates)
         VALUES (gen_random_uuid(), $1, $2, $3, false, 'p', 0.3, $4, '[]')",
    )
    .bind(at)
    .bind(user)
    .bind(arm)
    .bind(sent)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// A silver event of `user`.
pub async fn event(db: &TestDb, user: &str, name: &str, at: DateTime<Utc>, properties: Value) {
    sqlx::query(
        "INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
         VALUES (gen_random_uuid(), $1, $1, $2, $3, ($3 AT TIME ZONE 'UTC')::date, true, $4)",
    )
    .bind(user)
    .bind(name)
    .bind(at)
    .bind(properties)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// `n` decisions of distinct users in `arm` at `at`, each sending; the first `acted` of
/// them followed by a push open an hour later, the first `opted_out` by a push opt-out.
pub async fn arm_sends(
    db: &TestDb,
    arm: &str,
    n: usize,
    at: DateTime<Utc>,
    acted: usize,
    opted_out: usize,
) {
    for i in 0..n {
        let user = format!("{arm}-{}-{i}", at.timestamp());
        decision(db, &user, arm, at, Some(&format!("n-{user}"))).await;
        if i < acted {
            event(
                db,
                &user,
                "app_opened",
                at + Duration::hours(1),
                json!({"source": "push"}),
            )
            .await;
        }
        if i < opted_out {
            event(
                db,
                &user,
                "push_opt_out",
                at + Duration::hours(2),
                json!({}),
            )
            .await;
        }
    }
}

pub async fn tick_at(app: &Router, at: DateTime<Utc>) -> Value {
    let (status, body) = admin(
        app,
        "POST",
        "/admin/controller/tick",
        Some(json!({"at": at})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}
