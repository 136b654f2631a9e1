//! The closed loop against real Postgres: the simulator plays days with a running
//! nudge-serve deciding every notification, and the guardrails judge the canary on what
//! the simulated users did. A model that sends to the users least likely to act is rolled
//! back to shadow by itself; a model that ranks them sensibly is not.

mod common;

use chrono::{DateTime, NaiveDate, Utc};
use common::{ADMIN_TOKEN, SCHEDULER_TOKEN, TempDir, TestDb, config, write_logistic};
use indicatif::ProgressBar;
use nudge::control::closed_loop::{self, ServeClient};
use nudge::features::{DayRange, refresh};
use nudge::ingest::hashing::UserHasher;
use nudge::sim::SimConfig;
use nudge::sim::run::{RunOptions, SimDriver};
use serde_json::Value;

const USERS: u32 = 800;
const HISTORY_DAYS: i32 = 7;
const LOOP_DAYS: i32 = 8;

/// The ranker scores by the user's active days in the last week with `per_active_day`
/// (and no send for users without features).
struct Outcome {
    ticks: Vec<Value>,
    rollout: Value,
    canary_decisions_after_rollback: Option<i64>,
}

async fn canary_with(per_active_day: f64, intercept: f64) -> Outcome {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let hasher = UserHasher::new(common::HASH_KEY.as_bytes());
    let sim = SimConfig::new(USERS, HISTORY_DAYS + LOOP_DAYS, 11, start, 0.3).unwrap();
    let mut driver = SimDriver::start(sim, hasher, db.pool.clone(), RunOptions::default())
        .await
        .unwrap();
    driver
        .play_logged(HISTORY_DAYS, &ProgressBar::hidden())
        .await
        .unwrap();
    let history = DayRange::new(
        start.pred_opt().unwrap(),
        start + chrono::Duration::days(i64::from(HISTORY_DAYS)),
    )
    .unwrap();
    refresh::refresh(&db.pool, history).await.unwrap();

    write_logistic(
        &dir.0.join("models"),
        ("notif_ranker", "returned_24h_after_notif", "v1"),
        &["active_days_7d"],
        &[],
        &[
            ("active_days_7d", per_active_day),
            ("active_days_7d:missing", -8.0),
        ],
        intercept,
    );
    std::fs::write(
        dir.0.join("policy.yaml"),
        "rollout: { mode: canary, canary_percent: 50, salt: s }\n\
         threshold: { initial: 0.3, min: 0.05, max: 0.9 }\n\
         controller: { enabled: false }\n\
         guardrails: { window: 7d, min_samples: 150, confidence: 0.99, roi: 0.05,\n\
                       opt_out_rate: null, d7_retention: null, send_rate: null }\n",
    )
    .unwrap();
    let mut cfg = config(&db.url);
    cfg.models_dir = dir.0.join("models");
    cfg.policy_path = dir.0.join("policy.yaml");
    cfg.features_refresh = std::time::Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nudge::serving::run_on(cfg, listener, async move {
        let _ = stopped.await;
    }));
    let client = ServeClient::new(&format!("http://{addr}"), SCHEDULER_TOKEN, ADMIN_TOKEN);
    let mut ready = false;
    for _ in 0..100 {
        if client.rollout().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "nudge-serve did not start");

    let summary = closed_loop::run(
        &mut driver,
        &client,
        &db.pool,
        start,
        LOOP_DAYS,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    let rollout = client.rollout().await.unwrap();
    let rolled_back_at = summary
        .ticks
        .iter()
        .find(|t| t["guardrails"]["status"] == "rolled_back")
        .and_then(|t| t["at"].as_str())
        .map(|at| at.parse::<DateTime<Utc>>().unwrap());
    let canary_decisions_after_rollback = match rolled_back_at {
        Some(at) => Some(
            sqlx::query_scalar(
                "SELECT count(*) FROM serving.decisions WHERE arm = 'canary' AND decided_at >= $1",
            )
            .bind(at)
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        ),
        None => None,
    };
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    Outcome {
        ticks: summary.ticks,
        rollout,
        canary_decisions_after_rollback,
    }
}

#[tokio::test]
async fn a_canary_that_notifies_the_least_engaged_users_is_rolled_back_to_shadow_by_itself() {
    // Scores fall with engagement: only users idle all week reach the threshold.
    let outcome = canary_with(-3.0, 1.0).await;
    let checks: Vec<&Value> = outcome.ticks.iter().map(|t| &t["guardrails"]).collect();
    assert_eq!(outcome.rollout["mode"], "shadow", "{checks:#?}");
    assert_eq!(outcome.rollout["flag"]["set_by"], "guardrail");
    let reason = outcome.rollout["flag"]["reason"].as_str().unwrap();
    assert!(reason.contains("roi canary"), "{reason}");
    assert_eq!(outcome.canary_decisions_after_rollback, Some(0));
}

#[tokio::test]
async fn a_canary_that_notifies_engaged_users_keeps_running() {
    // Scores rise with engagement: the model's sends do better than the baseline's.
    let outcome = canary_with(1.0, -2.0).await;
    let checks: Vec<&Value> = outcome.ticks.iter().map(|t| &t["guardrails"]).collect();
    assert_eq!(outcome.rollout["mode"], "canary", "{checks:#?}");
    assert!(
        checks.iter().any(|c| c["status"] == "passed"
            && c["checks"]
                .as_array()
                .is_some_and(|a| a.iter().any(|k| !k["z"].is_null()))),
        "the guardrail never had enough evidence to judge: {checks:#?}"
    );
}
