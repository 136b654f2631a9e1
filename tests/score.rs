//! nudge-serve's decisions against real Postgres and Redis: `POST /v1/score` (gates, arms,
//! atomic reservations across two instances, idempotent retries), `/v1/churn`,
//! `/v1/paywall`, runtime flags, reloads, token scopes and dependency outages.

mod common;

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{ADMIN_TOKEN, SCHEDULER_TOKEN, TempDir, TestDb, admin, config, send, write_ranker};
use nudge::models::artifact::MODEL_FILE;
use nudge::models::registry::Registry;
use nudge::serving::decisions::{
    ChurnScores, Decision, DecisionLog, LoggedCandidate, LoggedChurnScore, PaywallDecision,
};
use nudge::serving::{ApiContext, router};
use nudge::store::online::OnlineStore;
use serde_json::{Value, json};

/// A policy file with the given rollout and gates.
fn write_policy(path: &Path, rollout: &str, extra: &str) {
    std::fs::write(
        path,
        format!("rollout: {rollout}\nthreshold: {{ initial: 0.3, min: 0.05, max: 0.9 }}\n{extra}"),
    )
    .unwrap();
}

struct Server {
    ctx: ApiContext,
    app: Router,
}

/// An instance over `db` (Redis under `prefix` when given), loaded from `dir`.
async fn server(db: &TestDb, dir: &Path, redis_prefix: Option<&str>) -> Server {
    let online = match redis_prefix {
        Some(prefix) => OnlineStore::connect_redis(&common::redis_url(), prefix)
            .await
            .unwrap(),
        None => OnlineStore::embedded(),
    };
    server_over(db, db.pool.clone(), online, dir).await
}

/// An instance over `db` reached through `pool`, with `online`, loaded from `dir`, its
/// runtime flags read (none are set: the policy file's rollout is in force).
async fn server_over(db: &TestDb, pool: sqlx::PgPool, online: OnlineStore, dir: &Path) -> Server {
    let mut cfg = config(&db.url);
    cfg.models_dir = dir.join("models");
    cfg.policy_path = dir.join("policy.yaml");
    let ctx = common::loaded_context(&cfg, pool, online).await;
    Server {
        app: router(ctx.clone()),
        ctx,
    }
}

async fn score(app: &Router, body: &Value) -> (StatusCode, Value) {
    score_with(app, body, Some(SCHEDULER_TOKEN)).await
}

async fn score_with(app: &Router, body: &Value, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::post("/v1/score").header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let (status, _, json) = send(app, req.body(Body::from(body.to_string())).unwrap()).await;
    (status, json)
}

fn request(user: &str, now: &str, types: &[&str]) -> Value {
    let candidates: Vec<Value> = types
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("n-{i}"), "type": t}))
        .collect();
    json!({"user_id": user, "now": now, "timezone": "UTC", "candidates": candidates})
}

fn reasons(body: &Value) -> Vec<(bool, String)> {
    body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["send"].as_bool().unwrap(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Stores a snapshot of `user` (as of 2026-11-22) with `sessions_7d` and `opted_out`;
/// an embedded store loads it when its refresher starts.
async fn insert_snapshot(db: &TestDb, user: &str, sessions_7d: i32, opted_out: bool) {
    let hash = nudge::ingest::hashing::UserHasher::new(common::HASH_KEY.as_bytes()).hash(user);
    sqlx::query(
        "INSERT INTO gold.snapshots (user_hash, as_of, sessions_1d, sessions_7d, sessions_30d,
             active_days_7d, active_days_30d, events_7d, contacts_created_30d, contacts_viewed_7d,
             outreach_7d, outreach_30d, notifs_sent_7d, notifs_sent_30d, notifs_opened_7d,
             notifs_opened_30d, notifs_dismissed_7d, opted_out, intent_score, magnetism_index,
             magnetism_band)
         VALUES ($1, '2026-11-22', 1, $2, 9, 2, 5, 30, 0, 1, 0, 1, 4, 12, 1, 3, 2, $3, 0, 10, 'cold')",
    )
    .bind(&hash)
    .bind(sessions_7d)
    .bind(opted_out)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// A new directory holding a ranker champion (`models/`) and a policy (`policy.yaml`:
/// `rollout`, then `extra` YAML).
fn served_dir(rollout: &str, extra: &str) -> TempDir {
    let dir = TempDir::new();
    write_ranker(&dir.0.join("models"), "v1");
    write_policy(&dir.0.join("policy.yaml"), rollout, extra);
    dir
}

/// A migrated database, a [`served_dir`], and an embedded-store instance over them.
async fn setup(rollout: &str, extra: &str) -> (TestDb, TempDir, Server) {
    let db = TestDb::migrated().await;
    let dir = served_dir(rollout, extra);
    let s = server(&db, &dir.0, None).await;
    (db, dir, s)
}

#[tokio::test]
async fn shadow_returns_the_baseline_and_logs_the_model_choice() {
    let (db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;

    let (status, body) = score(
        &s.app,
        &request(
            "u1",
            "2026-11-22T12:00:00Z",
            &["weekly_digest", "contact_reminder"],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["arm"], "shadow");
    assert_eq!(body["cold_start"], true);
    // The baseline sends the scheduler's first candidate; the model would pick the second.
    assert_eq!(
        reasons(&body),
        vec![(true, "ok".into()), (false, "not_selected".into())]
    );
    let scores = scores(&body);
    assert!(scores[0] < 0.2 && scores[1] > 0.8, "{scores:?}");

    s.ctx
        .flush_decisions(std::time::Duration::from_secs(10))
        .await;
    let (arm, sent, model_choice, baseline): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as("SELECT arm, sent, model_choice, baseline_choice FROM serving.decisions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (
            arm.as_str(),
            sent.as_deref(),
            model_choice.as_deref(),
            baseline.as_deref()
        ),
        ("shadow", Some("n-0"), Some("n-1"), Some("n-0"))
    );
    // The model's scores are logged beside the answer: candidate for candidate, as answered.
    let logged: String = sqlx::query_scalar("SELECT candidates::text FROM serving.decisions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let logged: Vec<Value> = serde_json::from_str(&logged).unwrap();
    let answered = body["decisions"].as_array().unwrap();
    assert_eq!(logged.len(), answered.len());
    for (logged, answered) in logged.iter().zip(answered) {
        for key in ["id", "score", "send", "reason"] {
            assert_eq!(logged[key], answered[key], "{key}");
        }
    }
    assert_eq!(
        (&logged[0]["type"], &logged[1]["type"]),
        (
            &Value::from("weekly_digest"),
            &Value::from("contact_reminder")
        )
    );
}

#[tokio::test]
async fn in_full_mode_the_holdout_is_served_by_the_baseline_as_control() {
    let (_db, _dir, s) = setup("{ mode: full, holdout_percent: 50, salt: s }", "").await;
    // The holdout is the top half of the buckets.
    let held_out = |user: &str| nudge::rollout::bucket("s", user) >= 5_000;
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let (inside, outside) = (
        users.iter().find(|u| held_out(u)).unwrap(),
        users.iter().find(|u| !held_out(u)).unwrap(),
    );
    let now = "2026-11-22T12:00:00Z";
    let types = ["weekly_digest", "contact_reminder"];
    let (_, body) = score(&s.app, &request(inside, now, &types)).await;
    assert_eq!(body["arm"], "control", "{body}");
    // The baseline's choice (the first candidate), not the model's.
    assert_eq!(
        reasons(&body),
        vec![(true, "ok".into()), (false, "not_selected".into())]
    );
    let (_, body) = score(&s.app, &request(outside, now, &types)).await;
    assert_eq!(body["arm"], "full", "{body}");
    assert_eq!(
        reasons(&body),
        vec![(false, "below_threshold".into()), (true, "ok".into())]
    );
}

#[tokio::test]
async fn full_mode_sends_the_best_candidate_above_the_threshold_only() {
    let (_db, _dir, s) = setup("{ mode: full, salt: s }", "").await;

    let (_, body) = score(
        &s.app,
        &request(
            "u1",
            "2026-11-22T12:00:00Z",
            &["weekly_digest", "contact_reminder"],
        ),
    )
    .await;
    assert_eq!(body["arm"], "full");
    assert_eq!(
        reasons(&body),
        vec![(false, "below_threshold".into()), (true, "ok".into())]
    );
    let (_, body) = score(
        &s.app,
        &request("u2", "2026-11-22T12:00:00Z", &["weekly_digest"]),
    )
    .await;
    assert_eq!(reasons(&body), vec![(false, "below_threshold".into())]);

    // Candidates of one type (scored once, their rows being alike) each get the score
    // their type gets alone.
    let alone = |notif_type: &'static str| {
        let app = s.app.clone();
        async move {
            let (_, body) =
                score(&app, &request("u3", "2026-11-22T12:00:00Z", &[notif_type])).await;
            scores(&body)[0]
        }
    };
    let (reminder, digest) = (
        alone("contact_reminder").await,
        alone("weekly_digest").await,
    );
    let (_, body) = score(
        &s.app,
        &request(
            "u3",
            "2026-11-22T12:00:00Z",
            &[
                "weekly_digest",
                "contact_reminder",
                "weekly_digest",
                "contact_reminder",
            ],
        ),
    )
    .await;
    assert_ne!(reminder, digest);
    assert_eq!(scores(&body), [digest, reminder, digest, reminder]);
}

/// The candidates' scores of an answer, in request order.
fn scores(body: &Value) -> Vec<f64> {
    body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn each_gate_refuses_with_its_reason() {
    let (_db, dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    let one = |user: &str, now: &str| request(user, now, &["contact_reminder"]);

    // Quiet hours are local: 23:30 in Berlin is 22:30 UTC.
    let mut berlin = one("u1", "2026-11-22T22:30:00Z");
    berlin["timezone"] = json!("Europe/Berlin");
    assert_eq!(
        reasons(&score(&s.app, &berlin).await.1),
        vec![(false, "quiet_hours".into())]
    );
    // Without a timezone: UTC, and the answer says so (07:30 UTC is quiet).
    let mut no_tz = one("u1", "2026-11-22T07:30:00Z");
    no_tz.as_object_mut().unwrap().remove("timezone");
    let (_, body) = score(&s.app, &no_tz).await;
    assert_eq!(
        (reasons(&body), body["timezone_assumed_utc"].clone()),
        (vec![(false, "quiet_hours".into())], json!(true))
    );

    // Minimum gap, then the daily cap (2 per rolling day, 8 h apart).
    assert_eq!(
        reasons(&score(&s.app, &one("u2", "2026-11-22T09:00:00Z")).await.1)[0],
        (true, "ok".into())
    );
    let mut again = one("u2", "2026-11-22T12:00:00Z");
    again["candidates"][0]["id"] = json!("n-other");
    assert_eq!(
        reasons(&score(&s.app, &again).await.1)[0],
        (false, "min_gap".into())
    );
    again["now"] = json!("2026-11-22T17:00:00Z");
    assert_eq!(
        reasons(&score(&s.app, &again).await.1)[0],
        (true, "ok".into())
    );
    let mut third = one("u2", "2026-11-23T08:30:00Z");
    third["candidates"][0]["id"] = json!("n-third");
    assert_eq!(
        reasons(&score(&s.app, &third).await.1)[0],
        (false, "daily_cap".into())
    );

    // Kill switch, after a reload.
    write_policy(
        &dir.0.join("policy.yaml"),
        "{ mode: shadow, salt: s }",
        "kill_switch: true\n",
    );
    s.ctx.reload().unwrap();
    assert_eq!(
        reasons(&score(&s.app, &one("u3", "2026-11-22T12:00:00Z")).await.1),
        vec![(false, "kill_switch".into())]
    );
}

#[tokio::test]
async fn opted_out_users_are_not_sent_to() {
    let (db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    insert_snapshot(&db, "u-out", 3, true).await;
    // The embedded store loads the newest snapshots at start.
    nudge::serving::features::FeatureRefresher::start(s.ctx.clone())
        .await
        .unwrap();
    let (_, body) = score(
        &s.app,
        &request("u-out", "2026-11-22T12:00:00Z", &["contact_reminder"]),
    )
    .await;
    assert_eq!(body["cold_start"], false);
    assert_eq!(reasons(&body), vec![(false, "opted_out".into())]);
}

#[tokio::test]
async fn a_request_without_a_timezone_takes_the_users_stored_one_else_utc() {
    let (db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    insert_snapshot(&db, "in-tokyo", 3, false).await;
    sqlx::query("UPDATE gold.snapshots SET timezone = 'Asia/Tokyo'")
        .execute(&db.pool)
        .await
        .unwrap();
    nudge::serving::features::FeatureRefresher::start(s.ctx.clone())
        .await
        .unwrap();
    // 14:00 UTC is 23:00 in Tokyo: inside the default quiet hours (22:00-08:00).
    let at = |user: &str, timezone: Option<&str>| {
        let mut body = request(user, "2026-11-22T14:00:00Z", &["contact_reminder"]);
        match timezone {
            Some(tz) => body["timezone"] = json!(tz),
            None => drop(body.as_object_mut().unwrap().remove("timezone")),
        }
        body
    };
    let (_, stored) = score(&s.app, &at("in-tokyo", None)).await;
    assert_eq!(
        (&stored["timezone"], &stored["timezone_assumed_utc"]),
        (&json!("Asia/Tokyo"), &json!(false))
    );
    assert_eq!(reasons(&stored), vec![(false, "quiet_hours".into())]);
    // The request's own timezone wins over the stored one.
    let (_, given) = score(&s.app, &at("in-tokyo", Some("Europe/Berlin"))).await;
    assert_eq!(given["timezone"], "Europe/Berlin");
    assert_eq!(reasons(&given), vec![(true, "ok".into())]);
    // No stored timezone (a cold start here): UTC, and the answer says so.
    let (_, unknown) = score(&s.app, &at("nobody", None)).await;
    assert_eq!(
        (&unknown["timezone"], &unknown["timezone_assumed_utc"]),
        (&json!("UTC"), &json!(true))
    );
    assert_eq!(reasons(&unknown), vec![(true, "ok".into())]);
}

#[tokio::test]
async fn a_retry_does_not_reserve_twice_and_64_concurrent_requests_across_two_instances_send_exactly_the_cap()
 {
    let db = TestDb::migrated().await;
    let dir = served_dir(
        "{ mode: shadow, salt: s }",
        "gates: { max_sends_per_day: 2, min_gap_hours: 0 }\n",
    );
    let prefix = common::RedisPrefix::new();
    let a = server(&db, &dir.0, Some(&prefix.0)).await;
    let b = server(&db, &dir.0, Some(&prefix.0)).await;

    // The same request twice: the same decision, one reservation.
    let first = request("retry-user", "2026-11-22T12:00:00Z", &["contact_reminder"]);
    assert_eq!(
        reasons(&score(&a.app, &first).await.1),
        vec![(true, "ok".into())]
    );
    assert_eq!(
        reasons(&score(&b.app, &first).await.1),
        vec![(true, "ok".into())]
    );
    let mut other = first.clone();
    other["candidates"][0]["id"] = json!("n-other");
    assert_eq!(
        reasons(&score(&a.app, &other).await.1),
        vec![(true, "ok".into())]
    );
    other["candidates"][0]["id"] = json!("n-third");
    assert_eq!(
        reasons(&score(&b.app, &other).await.1),
        vec![(false, "daily_cap".into())]
    );

    // 64 different candidates for one user at once, split over both instances.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let app = if i % 2 == 0 {
            a.app.clone()
        } else {
            b.app.clone()
        };
        let mut body = request("busy-user", "2026-11-22T12:00:00Z", &["contact_reminder"]);
        body["candidates"][0]["id"] = json!(format!("c-{i}"));
        tasks.spawn(async move { score(&app, &body).await });
    }
    let mut sent = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let decision = &reasons(&body)[0];
        if decision.0 {
            sent += 1;
        } else {
            assert_eq!(decision.1, "daily_cap");
        }
    }
    assert_eq!(sent, 2);
}

#[tokio::test]
async fn the_redis_quota_read_holds_the_last_days_sends_and_settles_what_the_reservation_would() {
    use nudge::store::quota::{QuotaStore, Reservation, settled};
    let prefix = common::RedisPrefix::new();
    let quota = QuotaStore::beside(&prefix.store().await);
    let policy = nudge::policy::Policy::parse(
        "rollout: { mode: shadow, salt: s }\nthreshold: { initial: 0.3, min: 0.05, max: 0.9 }\n",
    )
    .unwrap();
    // 2 a day, 8 h apart, no send budget.
    let rule = nudge::policy::gates::QuotaRule {
        gates: &policy.gates,
        budget: None,
        enforce_budget: false,
    };
    let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let at = |hours: i64| t0 + chrono::Duration::hours(hours);
    for (candidate, hour) in [("n1", 0), ("n2", 9)] {
        let granted = quota.reserve(rule, "u", candidate, at(hour)).await;
        assert_eq!(granted.unwrap(), Reservation::Granted);
    }

    // Ten hours in: both sends, and the read settles a third send and a retry exactly as
    // the atomic reservation answers them.
    let recent = quota
        .peek("u", at(10), None)
        .await
        .unwrap()
        .expect("read from redis");
    assert_eq!(
        recent.sends,
        vec![(at(0), "n1".to_owned()), (at(9), "n2".to_owned())]
    );
    assert_eq!(recent.load, None);
    for candidate in ["n3", "n1"] {
        let certain = settled(rule, &recent, candidate, at(10)).expect("settled");
        let reserved = quota.reserve(rule, "u", candidate, at(10)).await.unwrap();
        assert_eq!(certain, reserved, "{candidate}");
    }
    // A day after the first send only the second counts, and a grant is left to the
    // reservation.
    let later = quota.peek("u", at(24), None).await.unwrap().unwrap();
    assert_eq!(later.sends, vec![(at(9), "n2".to_owned())]);
    assert_eq!(settled(rule, &later, "n4", at(24)), None);
    assert_eq!(
        quota.reserve(rule, "u", "n4", at(24)).await.unwrap(),
        Reservation::Granted
    );
}

#[tokio::test]
async fn the_redis_script_and_the_embedded_store_keep_the_same_send_load_send_for_send() {
    use nudge::store::quota::{QuotaStore, Recent, Reservation, settled};
    let prefix = common::RedisPrefix::new();
    let redis = QuotaStore::beside(&prefix.store().await);
    let embedded = QuotaStore::beside(&OnlineStore::embedded());
    let policy = nudge::policy::Policy::parse(
        "rollout: { mode: shadow, salt: s }\nthreshold: { initial: 0.3, min: 0.05, max: 0.9 }\n\
         gates: { max_sends_per_day: 3, min_gap_hours: 2 }\n\
         send_budget: { half_life_hours: 30, max: 1.6 }\n",
    )
    .unwrap();
    let budget = policy.send_budget.unwrap();
    let rule = |enforce_budget| nudge::policy::gates::QuotaRule {
        gates: &policy.gates,
        budget: policy.send_budget.as_ref(),
        enforce_budget,
    };
    let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    // Asks every 1 to 12 hours over three weeks, a third of them from the baseline arm.
    let mut granted: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    let mut outcomes = std::collections::BTreeMap::new();
    let mut minutes = 0;
    for i in 0..160u32 {
        minutes += 60 * (1 + i64::from(i * 37 % 11));
        let now = t0 + chrono::Duration::minutes(minutes);
        let enforce = i % 3 != 0;
        let candidate = format!("n{i}");
        let peeked = redis
            .peek("u", now, rule(enforce).enforced_budget())
            .await
            .unwrap()
            .expect("read from redis");
        let from_redis = redis
            .reserve(rule(enforce), "u", &candidate, now)
            .await
            .unwrap();
        let from_embedded = embedded
            .reserve(rule(enforce), "u", &candidate, now)
            .await
            .unwrap();
        assert_eq!(from_redis, from_embedded, "ask {i}");
        // The read settles every refusal as the script does, and leaves grants to it.
        let certain = settled(rule(enforce), &peeked, &candidate, now);
        match from_redis {
            Reservation::Granted => assert_eq!(certain, None, "ask {i}"),
            refused => assert_eq!(certain, Some(refused), "ask {i}"),
        }
        if from_redis == Reservation::Granted {
            granted.push(now);
        }
        *outcomes.entry(format!("{from_redis:?}")).or_insert(0) += 1;
        // The stored load is the decayed count of every send granted so far.
        let Recent { load, .. } = redis.peek("u", now, Some(&budget)).await.unwrap().unwrap();
        let decayed_count: f64 = granted
            .iter()
            .map(|&t| 0.5f64.powf((now - t).as_seconds_f64() / budget.half_life.as_seconds_f64()))
            .sum();
        assert!(
            (budget.load_at(load, now) - decayed_count).abs() < 1e-9,
            "ask {i}: {load:?} against {decayed_count}"
        );
    }
    // The asks met every outcome the budget and the gates give.
    for outcome in ["Granted", "Refused(SendBudget)", "Refused(MinGap)"] {
        assert!(outcomes.contains_key(outcome), "{outcome}: {outcomes:?}");
    }
}

#[tokio::test]
async fn the_send_budget_refuses_the_model_arm_and_counts_the_baseline_arms_sends() {
    for redis in [true, false] {
        let db = TestDb::migrated().await;
        let dir = served_dir(
            "{ mode: shadow, salt: s }",
            "send_budget: { half_life_hours: 24, max: 1.5 }\n",
        );
        let prefix = common::RedisPrefix::new();
        let s = server(&db, &dir.0, redis.then_some(prefix.0.as_str())).await;
        let ask = |id: &str, now: &str| {
            let mut body = request("u1", now, &["contact_reminder"]);
            body["candidates"][0]["id"] = json!(id);
            let app = s.app.clone();
            async move { score(&app, &body).await.1 }
        };
        // In shadow the baseline sends three times: a load of 1.79, then 2.13 at 09:00 on
        // the 23rd, past the budget, which the baseline arm does not apply.
        for (id, now) in [
            ("a", "2026-11-22T09:00:00Z"),
            ("b", "2026-11-22T17:00:00Z"),
            ("c", "2026-11-23T09:00:00Z"),
        ] {
            assert_eq!(reasons(&ask(id, now).await), [(true, "ok".into())], "{id}");
        }
        // In full mode the model arm stops at the budget: 2.13 · 2^(-8.5/24) ≈ 1.67 at
        // 17:30, and sends again once the load is under it, 1.05 a day later.
        write_policy(
            &dir.0.join("policy.yaml"),
            "{ mode: full, salt: s }",
            "send_budget: { half_life_hours: 24, max: 1.5 }\n",
        );
        s.ctx.reload().unwrap();
        let refused = ask("d", "2026-11-23T17:30:00Z").await;
        assert_eq!(
            (refused["arm"].as_str(), reasons(&refused)),
            (Some("full"), vec![(false, "send_budget".into())]),
            "redis {redis}"
        );
        let sent = ask("d", "2026-11-24T09:30:00Z").await;
        assert_eq!(reasons(&sent), [(true, "ok".into())], "redis {redis}");
    }
}

/// Records a `notification_sent` of `user` at `sent_at` in silver, as the feature refresh
/// would from the app's events.
async fn record_send(db: &TestDb, user: &str, id: &str, sent_at: &str) {
    let hash = nudge::ingest::hashing::UserHasher::new(common::HASH_KEY.as_bytes()).hash(user);
    sqlx::query(
        "INSERT INTO silver.notifications (notification_id, user_hash, sent_at, notif_type)
         VALUES ($1, $2, $3::timestamptz, 'contact_reminder')",
    )
    .bind(id)
    .bind(&hash)
    .bind(sent_at)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn quotas_are_seeded_from_the_recorded_notifications_and_what_the_store_counted_is_kept() {
    for redis in [true, false] {
        let db = TestDb::migrated().await;
        let dir = served_dir(
            "{ mode: full, salt: s }",
            "send_budget: { half_life_hours: 24, max: 1.5 }\n",
        );
        let prefix = common::RedisPrefix::new();
        let s = server(&db, &dir.0, redis.then_some(prefix.0.as_str())).await;
        let ask = |user: &str, id: &str, now: &str| {
            let mut body = request(user, now, &["contact_reminder"]);
            body["candidates"][0]["id"] = json!(id);
            let app = s.app.clone();
            async move { reasons(&score(&app, &body).await.1) }
        };
        // Every ask is at 20:00 on the 22nd, after the seeding. Sends made before this
        // server counted: u1 at 18:00 and 19:00 the day before (out of the day's cap) and
        // at 12:00 (8 h before, the gap allows it).
        for (id, at) in [("h1", "21T18"), ("h2", "21T19"), ("h3", "22T12")] {
            record_send(&db, "u1", id, &format!("2026-11-{at}:00:00Z")).await;
        }
        // u2: four sends the day before, but this server counts u2's send at 10:00 before
        // it seeds: its own count is kept.
        for (id, at) in [("h4", "16"), ("h5", "17"), ("h6", "18"), ("h7", "19")] {
            record_send(&db, "u2", id, &format!("2026-11-21T{at}:00:00Z")).await;
        }
        // u3's one send is older than the budget's memory (20 half-lives) before the newest.
        record_send(&db, "u3", "h8", "2026-10-01T12:00:00Z").await;
        // u4 was sent to at 15:00, within the 8 h gap of 20:00.
        record_send(&db, "u4", "h9", "2026-11-22T15:00:00Z").await;
        assert_eq!(
            ask("u2", "a", "2026-11-22T10:00:00Z").await,
            [(true, "ok".into())]
        );
        let seeded = |kind: &str| {
            let line = format!("nudge_quota_seeded_total{{kind=\"{kind}\"}} ");
            nudge::telemetry::metrics_handle()
                .render()
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
                .map_or(0.0, |v| v.parse::<f64>().unwrap())
        };
        let before = (seeded("sends"), seeded("loads"));
        s.ctx.seed_quotas().await;
        // Within a day of the newest send (15:00): u1's three, u2's four and u4's one;
        // loads for u1 and u4 (u2's own is kept). Other tests seed too: at least these.
        assert!(seeded("sends") - before.0 >= 8.0, "redis {redis}");
        assert!(seeded("loads") - before.1 >= 2.0, "redis {redis}");
        let at_20 = "2026-11-22T20:00:00Z";
        // u1: 2^(-26/24) + 2^(-25/24) + 2^(-8/24) = 1.75: past the budget.
        assert_eq!(
            ask("u1", "b", at_20).await,
            [(false, "send_budget".into())],
            "redis {redis}"
        );
        // u2: its own 1 at 10:00 is 0.75 (the four recorded sends alone would be 1.86).
        assert_eq!(
            ask("u2", "c", at_20).await,
            [(true, "ok".into())],
            "redis {redis}"
        );
        assert_eq!(
            ask("u3", "d", at_20).await,
            [(true, "ok".into())],
            "redis {redis}"
        );
        assert_eq!(
            ask("u4", "e", at_20).await,
            [(false, "min_gap".into())],
            "redis {redis}"
        );
        if redis {
            // The script's encoding: the reservation reads the seeded value and time.
            let hash =
                nudge::ingest::hashing::UserHasher::new(common::HASH_KEY.as_bytes()).hash("u1");
            let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
                .unwrap()
                .to_utc();
            let budget = s.ctx.current().unwrap().policy.send_budget.unwrap();
            let load = s.ctx.quota.peek(&hash, at, Some(&budget)).await.unwrap();
            let load = load.and_then(|recent| recent.load).expect("a stored load");
            assert_eq!(load.at, at);
            let expected = 2f64.powf(-18.0 / 24.0) + 2f64.powf(-17.0 / 24.0) + 1.0;
            assert!((load.value - expected).abs() < 1e-9, "{load:?}");
        }
    }
}

#[tokio::test]
async fn seeding_reads_every_user_a_batch_at_a_time_and_a_second_seeding_adds_nothing() {
    use nudge::policy::gates::SendBudget;
    use nudge::store::quota::{QuotaStore, Seeded, seed_from_recorded};
    let db = TestDb::migrated().await;
    // 2,500 users (batches of 1,000, 1,000 and 500), each sent to 30 h and 2 h before the
    // newest send, and one user whose only send is older than the budget's memory.
    sqlx::query(
        "INSERT INTO silver.notifications (notification_id, user_hash, sent_at, notif_type)
         SELECT 'n' || u || '-' || h, 'user-' || u,
                timestamptz '2026-03-01' - h * interval '1 hour' - u * interval '1 ms',
                'contact_reminder'
         FROM generate_series(1, 2500) u, unnest(ARRAY[30, 2]) h
         UNION ALL
         SELECT 'old', 'user-old', timestamptz '2025-01-01', 'contact_reminder'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let budget = SendBudget {
        half_life: chrono::Duration::hours(24),
        max: 1.5,
    };
    let prefix = common::RedisPrefix::new();
    for online in [OnlineStore::embedded(), prefix.store().await] {
        let store = QuotaStore::beside(&online);
        let first = seed_from_recorded(&store, &db.pool, Some(&budget)).await;
        let expected = Seeded {
            users: 2500,
            sends: 2500,
            loads: 2500,
        };
        assert_eq!(first.unwrap(), expected, "{}", online.kind());
        let again = seed_from_recorded(&store, &db.pool, Some(&budget)).await;
        let nothing_new = Seeded {
            users: 2500,
            sends: 0,
            loads: 0,
        };
        assert_eq!(again.unwrap(), nothing_new, "{}", online.kind());
    }
}

#[tokio::test]
async fn a_reload_that_brings_in_a_send_budget_seeds_the_loads_before_it_answers() {
    let (db, dir, s) = setup("{ mode: full, salt: s }", "").await;
    for (id, hour) in [("h1", 18), ("h2", 19), ("h3", 20), ("h4", 22)] {
        record_send(&db, "u1", id, &format!("2026-11-21T{hour}:00:00Z")).await;
    }
    // At start, without a budget, only the day's sends are seeded.
    s.ctx.seed_quotas().await;
    write_policy(
        &dir.0.join("policy.yaml"),
        "{ mode: full, salt: s }",
        "send_budget: { half_life_hours: 24, max: 1.5 }\n",
    );
    s.ctx.reload_and_seed().await.unwrap();
    // At 21:00 the next day one send is within the day (the cap and the gap allow a
    // send), and the four weigh 2^(-27/24) + 2^(-26/24) + 2^(-25/24) + 2^(-23/24) = 1.93.
    let mut body = request("u1", "2026-11-22T21:00:00Z", &["contact_reminder"]);
    body["candidates"][0]["id"] = json!("n");
    assert_eq!(
        reasons(&score(&s.app, &body).await.1),
        [(false, "send_budget".into())]
    );
}

#[tokio::test]
async fn a_bad_policy_or_model_is_refused_on_reload_and_the_old_ones_keep_serving() {
    let (_db, dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    let admin = |path: &str, token: &str| {
        Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };

    std::fs::write(
        dir.0.join("policy.yaml"),
        "rollout: { mode: sideways, salt: s }\n",
    )
    .unwrap();
    let (status, _, body) = send(&s.app, admin("/admin/reload", ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keep serving")
    );
    let (status, body) = score(
        &s.app,
        &request("u1", "2026-11-22T12:00:00Z", &["contact_reminder"]),
    )
    .await;
    assert_eq!(
        (status, body["arm"].clone()),
        (StatusCode::OK, json!("shadow"))
    );

    // A corrupt champion artifact: refused, v1 keeps scoring.
    write_policy(&dir.0.join("policy.yaml"), "{ mode: shadow, salt: s }", "");
    let registry = Registry::new(dir.0.join("models"));
    registry
        .save(
            "notif_ranker",
            "v2",
            &[(MODEL_FILE, "{\"format\": 1, \"truncated")],
        )
        .unwrap();
    registry.set_champion("notif_ranker", "v2").unwrap();
    let (status, _, _) = send(&s.app, admin("/admin/reload", ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, body) = score(
        &s.app,
        &request("u1", "2026-11-22T12:00:00Z", &["contact_reminder"]),
    )
    .await;
    assert_eq!(body["model"]["version"], "v1");
}

#[tokio::test]
async fn tokens_are_scoped() {
    let (_db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    let body = request("u1", "2026-11-22T12:00:00Z", &["contact_reminder"]);
    assert_eq!(
        score_with(&s.app, &body, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        score_with(&s.app, &body, Some(ADMIN_TOKEN)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        score_with(&s.app, &body, Some(SCHEDULER_TOKEN)).await.0,
        StatusCode::OK
    );
    let reload = |token: &str| {
        Request::post("/admin/reload")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&s.app, reload(SCHEDULER_TOKEN)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&s.app, reload(ADMIN_TOKEN)).await.0, StatusCode::OK);
    // A user's features are theirs: the feature read takes the scheduler scope too.
    let features = |token: Option<&str>| {
        let mut request = Request::get("/v1/features/u1");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    for token in [None, Some(ADMIN_TOKEN)] {
        assert_eq!(
            send(&s.app, features(token)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Nothing is materialised for u1: past the token check, the store answers 404.
    assert_eq!(
        send(&s.app, features(Some(SCHEDULER_TOKEN))).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_oversized_body_an_unknown_route_and_a_wrong_method_get_json_errors() {
    let (_db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    let padded = |bytes: usize| {
        let mut body = request("u1", "2026-11-22T12:00:00Z", &["contact_reminder"]);
        let size = body.to_string().len();
        body["padding"] = json!("x".repeat(bytes - size - r#","padding":"""#.len()));
        assert_eq!(body.to_string().len(), bytes);
        body
    };
    let limit = nudge::serving::body::SCHEDULER_LIMIT;
    let (status, _) = score(&s.app, &padded(limit)).await;
    assert_eq!(status, StatusCode::OK, "a body at the limit is read");
    let (status, body) = score(&s.app, &padded(limit + 1)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(body["error"]["field"], "body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&limit.to_string()),
        "{body}"
    );

    let rollout = Request::put("/admin/rollout")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::from(vec![
            b' ';
            nudge::serving::body::ADMIN_LIMIT + 1
        ]))
        .unwrap();
    let (status, _, body) = send(&s.app, rollout).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (status, _, body) = send(
        &s.app,
        Request::get("/v2/score").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let wrong_method = Request::get("/v1/score")
        .header("authorization", format!("Bearer {SCHEDULER_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&s.app, wrong_method).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(headers["allow"], "POST");
}

#[tokio::test]
async fn malformed_requests_get_a_422_naming_the_field() {
    let (_db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    let candidates = |list: Value| json!({"user_id": "u1", "candidates": list});
    // Control characters have no place in an id (and Postgres cannot store a NUL).
    for (path, body, field) in [
        (
            "/v1/score",
            candidates(json!([{"id": "a", "type": "t"}, {"id": "a", "type": "t"}])),
            "candidates[1].id",
        ),
        (
            "/v1/score",
            candidates(json!([{"id": "a\u{0}b", "type": "t"}])),
            "candidates[0].id",
        ),
        (
            "/v1/score",
            candidates(json!([{"id": "a", "type": "t\n"}])),
            "candidates[0].type",
        ),
        (
            "/v1/score",
            json!({"user_id": "u1", "now": "2099-01-01T00:00:00Z",
                   "candidates": [{"id": "a", "type": "t"}]}),
            "now",
        ),
        (
            "/v1/churn",
            json!({"user_ids": ["u1", "u\u{7}"]}),
            "user_ids[1]",
        ),
        (
            "/v1/paywall",
            json!({"user_id": "u1", "placement": "x\u{0}"}),
            "placement",
        ),
    ] {
        let (status, error) = post_v1(&s.app, path, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error["error"]["field"], field, "{body}");
    }
}

/// A shadow decision, no model run, whose baseline chose `candidate`: an entry for the
/// decision log's tests.
fn logged_decision(candidate: &str) -> Decision {
    Decision {
        request_id: uuid::Uuid::now_v7(),
        decided_at: chrono::Utc::now(),
        user_hash: "h".into(),
        arm: "shadow",
        cold_start: true,
        model_version: None,
        policy_version: "p".into(),
        threshold: 0.3,
        sent: None,
        model_choice: None,
        baseline_choice: Some(candidate.into()),
        candidates: vec![LoggedCandidate {
            id: candidate.into(),
            notif_type: "t".into(),
            score: None,
            send: false,
            reason: "not_selected",
        }],
    }
}

/// A shadow paywall decision at `placement`, no model run: an entry for the decision
/// log's tests.
fn logged_paywall(placement: &str) -> PaywallDecision {
    PaywallDecision {
        request_id: uuid::Uuid::now_v7(),
        decided_at: chrono::Utc::now(),
        user_hash: "h".into(),
        placement: placement.into(),
        arm: "shadow",
        cold_start: true,
        trial_version: None,
        bounce_version: None,
        policy_version: "p".into(),
        p_trial: None,
        p_bounce: None,
        net_benefit: None,
        model_show: None,
        show: false,
    }
}

/// Held by the tests that have Postgres refuse a decision, so that one of them can count
/// the process-wide refusals its own entries cause.
static REFUSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_decision_postgres_refuses_is_counted_and_does_not_hold_up_the_others() {
    let db = TestDb::migrated().await;
    // Tests that have Postgres refuse an entry take turns: the count is this test's.
    let _turn = REFUSING.lock().await;
    let metrics = nudge::telemetry::metrics_handle();
    let refused = || {
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("nudge_decision_log_refused_total "))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let kept = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT baseline_choice FROM serving.decisions ORDER BY request_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let refused_before = refused();
    let (log, writer) = DecisionLog::start(db.pool.clone());
    log.record(logged_decision("first"));
    // Postgres stores no NUL character: the whole batch insert fails on this row.
    log.record(logged_decision("bad\u{0}id"));
    log.record(logged_decision("last"));
    writer.finish(std::time::Duration::from_secs(20)).await;
    assert_eq!(kept().await, ["first", "last"]);
    assert_eq!(refused() - refused_before, 1.0);

    // A batch whose notifications are stored before its paywall decision is refused: the
    // notifications, written again entry by entry, are found stored, not refused.
    let (log, writer) = DecisionLog::start(db.pool.clone());
    log.record(logged_decision("again-1"));
    log.record(logged_paywall("bad\u{0}placement"));
    log.record(logged_decision("again-2"));
    writer.finish(std::time::Duration::from_secs(20)).await;
    assert_eq!(kept().await, ["first", "last", "again-1", "again-2"]);
    assert_eq!(refused() - refused_before, 2.0);
}

#[tokio::test]
async fn a_batch_waiting_on_postgres_does_not_hold_up_the_next_one() {
    use std::time::{Duration, Instant};
    let db = TestDb::migrated().await;
    // Another session locks the paywall log against writes (reads go on): a write waits.
    let mut locker = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE serving.paywall_decisions IN SHARE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let (log, writer) = DecisionLog::start(db.pool.clone());
    log.record(logged_paywall("settings"));
    let until = |what: &'static str, sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                == 0
            {
                assert!(Instant::now() < deadline, "{what}: not within 20 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(
        "the paywall batch waits on the lock",
        "SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE 'COPY serving.paywall_decisions%'",
    )
    .await;
    // The next batch is written while the first still waits.
    log.record(logged_decision("next"));
    until(
        "the next batch is stored",
        "SELECT count(*) FROM serving.decisions",
    )
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM serving.paywall_decisions")
            .await,
        0,
        "the first batch is still waiting"
    );
    locker.rollback().await.unwrap();
    writer.finish(Duration::from_secs(20)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM serving.paywall_decisions")
            .await,
        1
    );
}

#[tokio::test]
async fn every_field_of_a_logged_answer_is_stored_as_recorded_by_a_first_write_and_by_a_write_again()
 {
    use chrono::{DateTime, Utc};
    let db = TestDb::migrated().await;
    let at: DateTime<Utc> = "2026-11-22T18:05:00.123456Z".parse().unwrap();
    // Every optional field set, or none; `tag` goes into every text field.
    let decision = |tag: &str, full: bool| Decision {
        request_id: uuid::Uuid::now_v7(),
        decided_at: at,
        user_hash: format!("hash-{tag}"),
        arm: if full { "canary" } else { "shadow" },
        cold_start: !full,
        model_version: full.then(|| format!("v-{tag}")),
        policy_version: format!("p-{tag}"),
        threshold: 0.3,
        sent: full.then(|| format!("sent-{tag}")),
        model_choice: full.then(|| format!("model-{tag}")),
        baseline_choice: full.then(|| format!("baseline-{tag}")),
        candidates: vec![LoggedCandidate {
            id: format!("c-{tag}"),
            notif_type: "weekly_digest".into(),
            score: full.then_some(0.25),
            send: full,
            reason: "ok",
        }],
    };
    let paywall = |tag: &str, full: bool| PaywallDecision {
        request_id: uuid::Uuid::now_v7(),
        decided_at: at,
        user_hash: format!("hash-{tag}"),
        placement: format!("placement-{tag}"),
        arm: "canary",
        cold_start: !full,
        trial_version: full.then(|| format!("trial-{tag}")),
        bounce_version: full.then(|| format!("bounce-{tag}")),
        policy_version: format!("p-{tag}"),
        p_trial: full.then_some(0.125),
        p_bounce: full.then_some(-0.5),
        net_benefit: full.then_some(1e-9),
        model_show: full.then_some(true),
        show: full,
    };
    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Stored {
        request_id: uuid::Uuid,
        decided_at: DateTime<Utc>,
        user_hash: String,
        arm: String,
        cold_start: bool,
        model_name: Option<String>,
        model_version: Option<String>,
        policy_version: String,
        threshold: f32,
        sent: Option<String>,
        model_choice: Option<String>,
        baseline_choice: Option<String>,
        candidates: String,
    }
    let expected = |d: &Decision| Stored {
        request_id: d.request_id,
        decided_at: d.decided_at,
        user_hash: d.user_hash.clone(),
        arm: d.arm.to_owned(),
        cold_start: d.cold_start,
        model_name: d.model_version.as_ref().map(|_| "notif_ranker".to_owned()),
        model_version: d.model_version.clone(),
        policy_version: d.policy_version.clone(),
        threshold: d.threshold as f32,
        sent: d.sent.clone(),
        model_choice: d.model_choice.clone(),
        baseline_choice: d.baseline_choice.clone(),
        candidates: serde_json::to_string(&d.candidates).unwrap(),
    };
    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct StoredPaywall {
        request_id: uuid::Uuid,
        decided_at: DateTime<Utc>,
        user_hash: String,
        placement: String,
        arm: String,
        cold_start: bool,
        trial_version: Option<String>,
        bounce_version: Option<String>,
        policy_version: String,
        p_trial: Option<f64>,
        p_bounce: Option<f64>,
        net_benefit: Option<f64>,
        model_show: Option<bool>,
        show: bool,
    }
    let expected_paywall = |d: &PaywallDecision| StoredPaywall {
        request_id: d.request_id,
        decided_at: d.decided_at,
        user_hash: d.user_hash.clone(),
        placement: d.placement.clone(),
        arm: d.arm.to_owned(),
        cold_start: d.cold_start,
        trial_version: d.trial_version.clone(),
        bounce_version: d.bounce_version.clone(),
        policy_version: d.policy_version.clone(),
        p_trial: d.p_trial,
        p_bounce: d.p_bounce,
        net_benefit: d.net_benefit,
        model_show: d.model_show,
        show: d.show,
    };

    // A clean batch goes in with one first write; a batch holding an entry Postgres
    // refuses (a NUL character) is written again entry by entry.
    let first = [decision("first-full", true), decision("first-bare", false)];
    let first_paywalls = [paywall("first-full", true), paywall("first-bare", false)];
    let again = [decision("again-full", true), decision("again-bare", false)];
    let again_paywalls = [paywall("again-full", true), paywall("again-bare", false)];
    // A churn answer of two users, one scored on a snapshot and one a cold start.
    let churn = |tag: &str| ChurnScores {
        request_id: uuid::Uuid::now_v7(),
        scored_at: at,
        model_version: format!("churn-{tag}"),
        policy_version: format!("p-{tag}"),
        scores: vec![
            LoggedChurnScore {
                user_hash: format!("hash-{tag}-1"),
                features_as_of: Some("2026-11-21".parse().unwrap()),
                score: 0.0625,
                band: "low".into(),
            },
            LoggedChurnScore {
                user_hash: format!("hash-{tag}-2"),
                features_as_of: None,
                score: 0.75,
                band: format!("band-{tag}"),
            },
        ],
    };
    let (first_churn, again_churn) = (churn("first"), churn("again"));
    let _turn = REFUSING.lock().await;
    for (decisions, paywalls, churn, refused) in [
        (&first, &first_paywalls, &first_churn, None),
        (
            &again,
            &again_paywalls,
            &again_churn,
            Some(paywall("bad\u{0}", false)),
        ),
    ] {
        let (log, writer) = DecisionLog::start(db.pool.clone());
        decisions.iter().cloned().for_each(|d| log.record(d));
        paywalls.iter().cloned().for_each(|d| log.record(d));
        log.record(churn.clone());
        refused.into_iter().for_each(|d| log.record(d));
        writer.finish(std::time::Duration::from_secs(20)).await;
    }

    let stored: Vec<Stored> = sqlx::query_as(
        "SELECT request_id, decided_at, user_hash, arm, cold_start, model_name, model_version,
                policy_version, threshold, sent, model_choice, baseline_choice,
                candidates::text AS candidates
         FROM serving.decisions ORDER BY request_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let all: Vec<Stored> = first.iter().chain(&again).map(expected).collect();
    assert_eq!(stored, all);
    let stored: Vec<StoredPaywall> = sqlx::query_as(
        "SELECT request_id, decided_at, user_hash, placement, arm, cold_start, trial_version,
                bounce_version, policy_version, p_trial, p_bounce, net_benefit, model_show, show
         FROM serving.paywall_decisions ORDER BY request_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let all: Vec<StoredPaywall> = first_paywalls
        .iter()
        .chain(&again_paywalls)
        .map(expected_paywall)
        .collect();
    assert_eq!(stored, all);
    type StoredChurn = (
        uuid::Uuid,
        DateTime<Utc>,
        String,
        Option<chrono::NaiveDate>,
        String,
        String,
        f64,
        String,
    );
    let stored: Vec<StoredChurn> = sqlx::query_as(
        "SELECT request_id, scored_at, user_hash, features_as_of, model_version, policy_version,
                score, band
         FROM serving.churn_scores ORDER BY request_id, user_hash",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let all: Vec<StoredChurn> = [&first_churn, &again_churn]
        .into_iter()
        .flat_map(|c| {
            c.scores.iter().map(|s| {
                (
                    c.request_id,
                    c.scored_at,
                    s.user_hash.clone(),
                    s.features_as_of,
                    c.model_version.clone(),
                    c.policy_version.clone(),
                    s.score,
                    s.band.clone(),
                )
            })
        })
        .collect();
    assert_eq!(stored, all);
}

#[tokio::test]
async fn the_servers_notification_context_equals_the_training_views_value_for_value() {
    use chrono::{DateTime, NaiveDate, Utc};
    use nudge::serving::served::{SendContext, hours_from_usual_session};

    let db = TestDb::migrated().await;
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    common::simulate(
        &db,
        nudge::sim::SimConfig::new(300, 20, 5, start, 0.3).unwrap(),
    )
    .await;
    let range = nudge::features::DayRange::new(
        start.pred_opt().unwrap(),
        start + chrono::TimeDelta::days(21),
    )
    .unwrap();
    nudge::features::refresh::refresh_with_jobs(&db.pool, range, 2)
        .await
        .unwrap();

    type Row = (
        DateTime<Utc>,
        Option<String>,
        String,
        String,
        Option<f32>,
        Option<f32>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.example_at, n.timezone, t.local_hour, t.local_weekday, t.usual_session_hour,
                t.hours_from_usual_session
         FROM gold.training_notif_ranker t JOIN silver.notifications n USING (notification_id)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let zones: std::collections::HashSet<_> = rows.iter().map(|r| r.1.clone()).collect();
    assert!(
        rows.len() > 1_000 && zones.len() > 3,
        "{} rows, zones {zones:?}",
        rows.len()
    );
    let with_usual_hour = rows.iter().filter(|r| r.4.is_some()).count();
    assert!(with_usual_hour > rows.len() / 2);
    for (at, tz, hour, weekday, usual, distance) in rows {
        let context = SendContext::new(at, tz.as_deref().map(|t| t.parse().expect("known zone")));
        assert_eq!(
            (context.local_hour.as_str(), context.local_weekday.as_str()),
            (hour.as_str(), weekday.as_str()),
            "{at} {tz:?}"
        );
        let served = usual.map(|u| hours_from_usual_session(at, f64::from(u)));
        assert_eq!(served, distance.map(f64::from), "{at} usual {usual:?}");
    }
}

/// Polls `app`'s `GET /admin/rollout` until `accept` holds (at most 10 s).
async fn wait_for_rollout(app: &Router, accept: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, view) = admin(app, "GET", "/admin/rollout", None).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        if accept(&view) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second instance never saw the change: {view}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rollout_flag_set_through_one_instance_is_in_force_on_another_without_restart() {
    // Once over Redis, once over Postgres (the embedded deployment's flag store).
    let prefix = common::RedisPrefix::new();
    for shared_redis in [Some(prefix.0.as_str()), None] {
        let db = TestDb::migrated().await;
        let dir = served_dir("{ mode: shadow, salt: s }", "");
        let a = server(&db, &dir.0, shared_redis).await;
        let b = server(&db, &dir.0, shared_redis).await;
        b.ctx.watch_flags(std::time::Duration::from_millis(50));
        let store = if shared_redis.is_some() {
            "redis"
        } else {
            "postgres"
        };
        let body = request("flag-user", "2026-11-22T12:00:00Z", &["contact_reminder"]);
        assert_eq!(score(&b.app, &body).await.1["arm"], "shadow");

        let (status, view) = admin(
            &a.app,
            "PUT",
            "/admin/rollout",
            Some(json!({"mode": "full", "reason": "launch"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(
            (&view["mode"], &view["source"], &view["flag_store"]),
            (&json!("full"), &json!("flag"), &json!(store))
        );
        assert_eq!(view["flag"]["reason"], "launch");
        let seen = wait_for_rollout(&b.app, |v| v["mode"] == "full").await;
        assert_eq!(seen["source"], "flag");
        assert_eq!(score(&b.app, &body).await.1["arm"], "full");

        // The kill switch set through A stops sends on B.
        let (status, _) = admin(
            &a.app,
            "POST",
            "/admin/kill-switch",
            Some(json!({"on": true, "reason": "incident"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        wait_for_rollout(&b.app, |v| v["kill_switch"] == true).await;
        assert_eq!(
            reasons(&score(&b.app, &body).await.1),
            vec![(false, "kill_switch".into())]
        );

        // Clearing the flag puts the policy file's rollout back in force everywhere.
        let (status, view) = admin(&a.app, "DELETE", "/admin/rollout", None).await;
        assert_eq!(
            (status, &view["source"]),
            (StatusCode::OK, &json!("policy"))
        );
        wait_for_rollout(&b.app, |v| v["mode"] == "shadow").await;

        // `nudge-serve flag` writes the same store with no server involved.
        let mut args = vec!["flag", "--database-url", db.url.as_str()];
        let url = common::redis_url();
        if let Some(prefix) = shared_redis {
            args.extend(["--redis-url", url.as_str(), "--redis-prefix", prefix]);
        }
        args.extend([
            "set",
            "--mode",
            "canary",
            "--percent",
            "100",
            "--reason",
            "cli",
        ]);
        let out = common::run_bin(env!("CARGO_BIN_EXE_nudge-serve"), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = wait_for_rollout(&b.app, |v| v["mode"] == "canary").await;
        assert_eq!(
            (&seen["canary_percent"], &seen["flag"]["set_by"]),
            (&json!(100.0), &json!("cli"))
        );
        assert_eq!(score(&b.app, &body).await.1["arm"], "canary");
    }
}

#[tokio::test]
async fn a_bad_rollout_change_is_refused_naming_the_field() {
    let (_db, _dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    for (body, field) in [
        (json!({"mode": "sideways"}), "mode"),
        (json!({"canary_percent": 5}), "mode"),
        (json!({"mode": "canary"}), "canary_percent"),
        (
            json!({"mode": "canary", "canary_percent": 101}),
            "canary_percent",
        ),
        (
            json!({"mode": "canary", "canary_percent": "5"}),
            "canary_percent",
        ),
        (json!({"mode": "full", "reason": 3}), "reason"),
        (json!({"mode": "full", "reason": "a\u{0}b"}), "reason"),
    ] {
        let (status, error) = admin(&s.app, "PUT", "/admin/rollout", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error["error"]["field"], field, "{body}");
    }
    // The message names the field once.
    let (_, error) = admin(
        &s.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "canary", "canary_percent": 101})),
    )
    .await;
    assert_eq!(
        error["error"]["message"],
        "canary_percent: must be within 0..=100, got 101"
    );
    let (status, error) = admin(
        &s.app,
        "POST",
        "/admin/kill-switch",
        Some(json!({"on": "yes"})),
    )
    .await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("on"))
    );
    // Nothing was stored: the policy file's rollout is still in force.
    let (_, view) = admin(&s.app, "GET", "/admin/rollout", None).await;
    assert_eq!(
        (&view["mode"], &view["source"], &view["kill_switch"]),
        (&json!("shadow"), &json!("policy"), &json!(false))
    );
}

/// Polls until `count` (a `SELECT count(*)` of a log table) is `n` (at most 30 s): the
/// decision log writes off the request path.
async fn wait_for_rows(db: &TestDb, count: &'static str, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let logged = db.count(count).await;
        if logged == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count}: {logged}, {n} expected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A shadow policy and a ranker in a new directory, and `db` behind a proxy that can
/// cut it off: the directory, the proxy, and the database's URL through it.
async fn behind_a_proxy(db: &TestDb) -> (TempDir, common::proxy::TcpProxy, String) {
    let dir = served_dir("{ mode: shadow, salt: s }", "");
    let server_addr = common::pg_server();
    let upstream = server_addr.rsplit('@').next().unwrap().to_owned();
    let proxy = common::proxy::TcpProxy::start(upstream).await;
    let via_proxy = db.url.replacen(
        &server_addr,
        &format!("postgres://postgres@{}", proxy.addr),
        1,
    );
    (dir, proxy, via_proxy)
}

#[tokio::test]
async fn scoring_goes_on_while_postgres_is_down_and_the_log_catches_up_afterwards() {
    let db = TestDb::migrated().await;
    let (dir, proxy, via_proxy) = behind_a_proxy(&db).await;
    let pool = nudge::store::database::connect(&via_proxy, 4)
        .await
        .unwrap();
    let s = server_over(&db, pool, OnlineStore::embedded(), &dir.0).await;

    let body = |user: &str| request(user, "2026-11-22T12:00:00Z", &["contact_reminder"]);
    assert_eq!(score(&s.app, &body("before")).await.0, StatusCode::OK);
    wait_for_rows(&db, "SELECT count(*) FROM serving.decisions", 1).await;

    let write_errors = || {
        s.ctx
            .metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("nudge_decision_log_errors_total "))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let errors_before = write_errors();
    proxy.cut();
    for i in 0..5 {
        let (status, answer) = score(&s.app, &body(&format!("during-{i}"))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(reasons(&answer), vec![(true, "ok".into())]);
    }
    // The writer tries, fails and keeps the five decisions for a retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while write_errors() <= errors_before {
        assert!(std::time::Instant::now() < deadline, "no failed write seen");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(db.count("SELECT count(*) FROM serving.decisions").await, 1);

    proxy.restore();
    wait_for_rows(&db, "SELECT count(*) FROM serving.decisions", 6).await;
}

/// nudge-serve itself (`run_on`) with `cfg`, loaded from `dir`, on a free port: its base
/// URL, the sender that stops it, and its task. Requests wait on the listener until it
/// serves.
async fn run_server(
    mut cfg: nudge::config::ServeConfig,
    dir: &Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), nudge::serving::StartError>>,
) {
    cfg.models_dir = dir.join("models");
    cfg.policy_path = dir.join("policy.yaml");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nudge::serving::run_on(cfg, listener, async move {
        let _ = stopped.await;
    }));
    (base, stop, server)
}

/// The test Redis behind a proxy that can cut it off.
async fn redis_behind_a_proxy() -> common::proxy::TcpProxy {
    let redis = common::redis_url();
    common::proxy::TcpProxy::start(redis.trim_start_matches("redis://").to_owned()).await
}

#[tokio::test]
async fn shutdown_waits_for_the_decision_log_to_be_written() {
    let db = TestDb::migrated().await;
    let (dir, proxy, via_proxy) = behind_a_proxy(&db).await;
    let (base, stop, server) = run_server(config(&via_proxy), &dir.0).await;
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // With Postgres out of reach the decisions wait in the log's queue.
    proxy.cut();
    for i in 0..20 {
        let answer = client
            .post(format!("{base}/v1/score"))
            .bearer_auth(SCHEDULER_TOKEN)
            .json(&request(
                &format!("u{i}"),
                "2026-11-22T12:00:00Z",
                &["contact_reminder"],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
    }
    assert_eq!(db.count("SELECT count(*) FROM serving.decisions").await, 0);
    stop.send(()).unwrap();
    proxy.restore();
    // The server stops only once the queued decisions are written.
    server.await.unwrap().unwrap();
    assert_eq!(db.count("SELECT count(*) FROM serving.decisions").await, 20);
}

/// `POST /v1/score` to a running server for `user` (one contact reminder, at noon UTC).
async fn score_at(
    client: &reqwest::Client,
    base: &str,
    user: &str,
) -> (reqwest::StatusCode, Value) {
    let response = client
        .post(format!("{base}/v1/score"))
        .bearer_auth(SCHEDULER_TOKEN)
        .json(&request(
            user,
            "2026-11-22T12:00:00Z",
            &["contact_reminder"],
        ))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// `GET path` of a running server with `token`: status and JSON body.
async fn get_at(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
) -> (reqwest::StatusCode, Value) {
    let response = client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn with_redis_down_or_hanging_the_answer_is_a_200_in_time_that_sends_nothing_and_says_why() {
    for hanging in [false, true] {
        let db = TestDb::migrated().await;
        let dir = served_dir("{ mode: shadow, salt: s }", "");
        let proxy = redis_behind_a_proxy().await;
        let prefix = common::RedisPrefix::new();
        let mut cfg = config(&db.url);
        cfg.redis_url = Some(format!("redis://{}", proxy.addr));
        cfg.redis_prefix = prefix.0.clone();
        // Asking a hanging Redis for features and then for quota, each until the
        // connection's 500-ms response timeout, would miss this deadline.
        cfg.request_timeout = std::time::Duration::from_millis(800);
        let (base, stop, server) = run_server(cfg, &dir.0).await;
        let client = reqwest::Client::new();
        let (status, answer) = score_at(&client, &base, "redis-down").await;
        assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
        assert_eq!(reasons(&answer), vec![(true, "ok".into())]);

        if hanging {
            proxy.stall();
        } else {
            proxy.cut();
        }
        // The first request finds Redis gone; the next ones do not wait for it.
        for user in ["redis-down", "second", "third"] {
            let (status, answer) = score_at(&client, &base, user).await;
            assert_eq!(
                status,
                reqwest::StatusCode::OK,
                "hanging {hanging}: {answer}"
            );
            assert_eq!(reasons(&answer), vec![(false, "quota_unavailable".into())]);
            assert_eq!(answer["cold_start"], true);
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn with_redis_down_at_start_the_server_starts_holds_at_shadow_sends_nothing_and_recovers() {
    let db = TestDb::migrated().await;
    let dir = served_dir("{ mode: canary, canary_percent: 100, salt: s }", "");
    let proxy = redis_behind_a_proxy().await;
    proxy.cut();
    let prefix = common::RedisPrefix::new();
    let mut cfg = config(&db.url);
    cfg.redis_url = Some(format!("redis://{}", proxy.addr));
    cfg.redis_prefix = prefix.0.clone();
    let (base, stop, server) = run_server(cfg, &dir.0).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, token: &'static str| get_at(&client, &base, path, token);

    // Started (requests wait on the listener until it serves), not ready, and saying why.
    let (status, ready) = get("/readyz", "").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["online_store"]["ok"], false, "{ready}");
    assert_eq!(ready["models"]["ok"], true, "{ready}");
    // The flags are unread, so the canary of the file is held at shadow.
    let (_, rollout) = get("/admin/rollout", ADMIN_TOKEN).await;
    assert_eq!(
        (&rollout["mode"], &rollout["source"]),
        (&json!("shadow"), &json!("unread"))
    );
    // A safe answer: nothing sent, the reason given.
    let (status, answer) = score_at(&client, &base, "before").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(answer["arm"], "shadow", "{answer}");
    assert_eq!(reasons(&answer), vec![(false, "quota_unavailable".into())]);

    // Redis back: ready, the flags read, the file's canary in force.
    proxy.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ready, _) = get("/readyz", "").await;
        let (_, rollout) = get("/admin/rollout", ADMIN_TOKEN).await;
        if ready.is_success() && rollout["source"] == "policy" {
            assert_eq!(rollout["mode"], "canary");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {rollout}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, answer) = score_at(&client, &base, "after").await;
    assert_eq!(answer["arm"], "canary", "{answer}");
    assert_eq!(reasons(&answer), vec![(true, "ok".into())]);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Waits (at most 30 s) until a running server is ready and serves `user`'s features.
async fn ready_with_features_of(client: &reqwest::Client, base: &str, user: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let features = format!("/v1/features/{user}");
    loop {
        let (ready, _) = get_at(client, base, "/readyz", "").await;
        let (found, _) = get_at(client, base, &features, SCHEDULER_TOKEN).await;
        if ready.is_success() && found.is_success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready with {user}'s features"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_postgres_down_at_start_the_server_starts_answers_cold_starts_and_catches_up() {
    let db = TestDb::migrated().await;
    insert_snapshot(&db, "known-1", 3, false).await;
    insert_snapshot(&db, "known-2", 3, false).await;
    let (dir, proxy, via_proxy) = behind_a_proxy(&db).await;
    proxy.cut();
    // The embedded store: features, flags and controller state all come from Postgres.
    let (base, stop, server) = run_server(config(&via_proxy), &dir.0).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, token: &'static str| get_at(&client, &base, path, token);

    // Started (requests wait on the listener until it serves), not ready, and saying why.
    let (status, ready) = get("/readyz", "").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (&ready["database"]["ok"], &ready["models"]["ok"]),
        (&json!(false), &json!(true)),
        "{ready}"
    );
    let (_, rollout) = get("/admin/rollout", ADMIN_TOKEN).await;
    assert_eq!(
        (&rollout["mode"], &rollout["source"]),
        (&json!("shadow"), &json!("unread"))
    );
    // An answer, with the user's features not loaded yet: a cold start.
    let (status, answer) = score_at(&client, &base, "known-1").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert_eq!(answer["cold_start"], true, "{answer}");
    assert_eq!(reasons(&answer), vec![(true, "ok".into())]);

    // Postgres back: ready, the features loaded, the decision logged.
    proxy.restore();
    ready_with_features_of(&client, &base, "known-2").await;
    let (_, rollout) = get("/admin/rollout", ADMIN_TOKEN).await;
    assert_eq!(rollout["source"], "policy", "{rollout}");
    let (_, answer) = score_at(&client, &base, "known-2").await;
    assert_eq!(answer["cold_start"], false, "{answer}");
    wait_for_rows(&db, "SELECT count(*) FROM serving.decisions", 2).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_server_started_before_postgres_loads_features_once_the_schema_is_the_one_it_knows() {
    let db = TestDb::unmigrated().await;
    let (dir, proxy, via_proxy) = behind_a_proxy(&db).await;
    proxy.cut();
    let (base, stop, server) = run_server(config(&via_proxy), &dir.0).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, token: &'static str| get_at(&client, &base, path, token);
    let (status, _) = get("/healthz", "").await;
    assert_eq!(status, reqwest::StatusCode::OK);

    // Postgres answers without the schema: not ready, saying what to run.
    proxy.restore();
    let (status, ready) = get("/readyz", "").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready["database"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nudge-train migrate")),
        "{ready}"
    );
    // Migrated meanwhile: ready, and the embedded store loaded.
    nudge::store::database::migrate(&db.pool).await.unwrap();
    insert_snapshot(&db, "known", 3, false).await;
    ready_with_features_of(&client, &base, "known").await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// POSTs `body` to `path` with the scheduler token.
async fn post_v1(app: &Router, path: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {SCHEDULER_TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, json) = send(app, req).await;
    (status, json)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[tokio::test]
async fn churn_scores_each_user_in_a_policy_band_says_which_were_cold_starts_and_logs_each_score() {
    let (db, dir, s) = setup("{ mode: shadow, salt: s }", "").await;
    let (status, error) = post_v1(&s.app, "/v1/churn", &json!({"user_ids": ["a"]})).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("not_ready"))
    );

    // P(churn) = sigmoid(-sessions_7d): a cold start (sessions_7d missing, imputed 0) is 0.5.
    common::write_logistic(
        &dir.0.join("models"),
        ("churn_14d", "churn_14d", "c1"),
        &["sessions_7d"],
        &[],
        &[("sessions_7d", -1.0)],
        0.0,
    );
    s.ctx.reload().unwrap();
    insert_snapshot(&db, "regular", 3, false).await;
    nudge::serving::features::FeatureRefresher::start(s.ctx.clone())
        .await
        .unwrap();
    let (status, body) = post_v1(
        &s.app,
        "/v1/churn",
        &json!({"user_ids": ["regular", "newcomer"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], json!({"name": "churn_14d", "version": "c1"}));
    let scores = body["scores"].as_array().unwrap();
    assert_eq!(scores[0]["user_id"], "regular");
    assert!((scores[0]["score"].as_f64().unwrap() - sigmoid(-3.0)).abs() < 1e-9);
    assert_eq!(
        (&scores[0]["band"], &scores[0]["cold_start"]),
        (&json!("low"), &json!(false))
    );
    assert!((scores[1]["score"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(
        (&scores[1]["band"], &scores[1]["cold_start"]),
        (&json!("medium"), &json!(true))
    );

    // Each score is logged under the answer's request id, with the day of the features
    // scored (none for the cold start), keyed by the user's hash.
    wait_for_rows(&db, "SELECT count(*) FROM serving.churn_scores", 2).await;
    let logged: Vec<(
        String,
        String,
        Option<chrono::NaiveDate>,
        String,
        f64,
        String,
    )> = sqlx::query_as(
        "SELECT request_id::text, user_hash, features_as_of, model_version, score, band
             FROM serving.churn_scores ORDER BY score",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let hash = |user: &str| {
        nudge::ingest::hashing::UserHasher::new(common::HASH_KEY.as_bytes()).hash(user)
    };
    let request_id = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(
        logged,
        [
            (
                request_id.clone(),
                hash("regular"),
                Some("2026-11-22".parse().unwrap()),
                "c1".to_owned(),
                scores[0]["score"].as_f64().unwrap(),
                "low".to_owned()
            ),
            (
                request_id,
                hash("newcomer"),
                None,
                "c1".to_owned(),
                scores[1]["score"].as_f64().unwrap(),
                "medium".to_owned()
            ),
        ]
    );

    let (status, error) = post_v1(&s.app, "/v1/churn", &json!({"user_ids": ["a", ""]})).await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("user_ids[1]"))
    );
}

#[tokio::test]
async fn paywall_weighs_trial_against_bounce_in_model_arms_shows_by_baseline_otherwise_and_logs_each_answer()
 {
    let (db, dir, s) = setup(
        "{ mode: shadow, salt: s }",
        "paywall: { value_trial: 10, cost_bounce: 2, min_net_benefit: 0 }\n",
    )
    .await;
    let models = dir.0.join("models");
    // P(trial) = sigmoid(1) at contact_limit, sigmoid(-3) at settings; P(bounce) = 0.5.
    common::write_logistic(
        &models,
        ("paywall_trial", "paywall_trial", "t1"),
        &[],
        &[("placement", &["contact_limit", "settings"])],
        &[
            ("placement=contact_limit", 1.0),
            ("placement=settings", -3.0),
        ],
        0.0,
    );
    common::write_logistic(
        &models,
        ("paywall_bounce", "paywall_bounce", "b1"),
        &["sessions_7d"],
        &[],
        &[],
        0.0,
    );
    s.ctx.reload().unwrap();
    let ask = |placement: &str| json!({"user_id": "viewer", "placement": placement, "now": "2026-11-22T12:00:00Z"});

    // Shadow: the baseline shows; the model's view is computed and logged.
    let (status, shadow) = post_v1(&s.app, "/v1/paywall", &ask("settings")).await;
    assert_eq!(status, StatusCode::OK, "{shadow}");
    assert_eq!(
        (&shadow["arm"], &shadow["show"], &shadow["reason"]),
        (&json!("shadow"), &json!(true), &json!("baseline"))
    );
    let expected = 10.0 * sigmoid(-3.0) - 2.0 * 0.5;
    assert!((shadow["net_benefit"].as_f64().unwrap() - expected).abs() < 1e-9);
    assert_eq!(
        shadow["model"]["trial"],
        json!({"name": "paywall_trial", "version": "t1"})
    );

    // Full (by the runtime flag): the model decides.
    let (status, _) = admin(
        &s.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "full"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, low) = post_v1(&s.app, "/v1/paywall", &ask("settings")).await;
    assert_eq!(
        (&low["arm"], &low["show"], &low["reason"]),
        (
            &json!("full"),
            &json!(false),
            &json!("net_benefit_below_min")
        )
    );
    let (_, high) = post_v1(&s.app, "/v1/paywall", &ask("contact_limit")).await;
    assert_eq!(
        (&high["show"], &high["reason"]),
        (&json!(true), &json!("net_benefit_above_min"))
    );
    assert!((high["p_trial"].as_f64().unwrap() - sigmoid(1.0)).abs() < 1e-9);

    wait_for_rows(&db, "SELECT count(*) FROM serving.paywall_decisions", 3).await;
    let logged: Vec<(String, String, bool, Option<bool>)> = sqlx::query_as(
        "SELECT arm, placement, show, model_show FROM serving.paywall_decisions ORDER BY arm, placement",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        logged,
        vec![
            ("full".into(), "contact_limit".into(), true, Some(true)),
            ("full".into(), "settings".into(), false, Some(false)),
            ("shadow".into(), "settings".into(), true, Some(false)),
        ]
    );

    let (status, error) = post_v1(&s.app, "/v1/paywall", &json!({"user_id": "viewer"})).await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("placement"))
    );
}
