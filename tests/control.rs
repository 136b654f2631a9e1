//! The control loop against real Postgres: the KPI definitions on hand-made decisions and
//! events with known answers, controller steps (state that survives a restart, one
//! replica per interval, holds, dry run) and the guardrail's automatic rollback.

mod common;

use axum::Router;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use common::control::{
    T0, arm_sends, decision, event, instance, instance_with, setup, setup_policy, t0, tick_at,
};
use common::{TestDb, admin, send};
use nudge::control::kpi;
use nudge::control::pi::{self, Measurement, State};
use nudge::control::tick;
use nudge::policy::Policy;
use serde_json::{Value, json};

async fn score_threshold(app: &Router) -> f64 {
    let body = json!({"user_id": "someone", "now": T0, "timezone": "UTC",
                      "candidates": [{"id": "a", "type": "weekly_digest"}]});
    let req = axum::http::Request::post("/v1/score")
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", common::SCHEDULER_TOKEN),
        )
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let (status, _, json) = send(app, req).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["threshold"].as_f64().unwrap()
}

/// A session of `user` starting at `start`.
async fn session(db: &TestDb, user: &str, start: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO silver.sessions (user_hash, started_at, ended_at, day, events, source)
         VALUES ($1, $2, $2, ($2 AT TIME ZONE 'UTC')::date, 1, 'organic')",
    )
    .bind(user)
    .bind(start)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_d7_covariate_counts_active_days_in_the_two_weeks_before_the_experiment() {
    let (db, _dir, _one) = setup("").await;
    let at = t0();
    let days = |d: i64| at + Duration::days(d);
    // Shadow decisions before the experiment do not start it.
    decision(&db, "S", "shadow", days(-5), None).await;
    // A (canary): two sessions on day −3 and one on day −1 count 2 days; day −20 is
    // before the pre-period, day 2 after the start; retained on day 7.
    decision(&db, "A", "canary", at, Some("nA")).await;
    for (d, hour) in [(-20, 1), (-3, 1), (-3, 3), (-1, 1), (2, 1)] {
        session(&db, "A", days(d) + Duration::hours(hour)).await;
    }
    session(&db, "A", days(7) + Duration::hours(1)).await;
    // B (canary): nothing before, not retained. C (control): one day before, retained.
    decision(&db, "B", "canary", at + Duration::hours(2), None).await;
    decision(&db, "C", "control", at + Duration::hours(3), Some("nC")).await;
    session(&db, "C", days(-10)).await;
    session(&db, "C", days(7) + Duration::hours(4)).await;

    let start = kpi::experiment_start(&db.pool).await.unwrap();
    assert_eq!(start, Some(at));
    let window = (at, days(1), days(9));
    let sums = kpi::d7_pre_period(&db.pool, window, (days(-14), at))
        .await
        .unwrap();
    let expected = |users, retained, x, xx, xy| kpi::D7Sums {
        users,
        retained,
        pre_days: x,
        pre_days_sq: xx,
        pre_days_retained: xy,
    };
    assert_eq!(
        sums,
        vec![
            ("canary".to_owned(), expected(2, 1, 2, 4, 2)),
            ("control".to_owned(), expected(1, 1, 1, 1, 1)),
        ]
    );
    let report = kpi::report(&db.pool, window.0, window.1, window.2)
        .await
        .unwrap()
        .to_string();
    assert!(
        report.contains("active days then: canary 1.00, control 1.00"),
        "{report}"
    );
}

/// A day of `user` in gold with `app_opens` app opens (and as many sessions).
async fn user_day(db: &TestDb, user: &str, day: &str, app_opens: i32) {
    sqlx::query(
        "INSERT INTO gold.user_days (user_hash, day, sessions, app_opens, in_app_events,
           contacts_created, contacts_viewed, outreach, notifs_sent, notifs_opened,
           notifs_dismissed, opted_out, pricing_views, paywall_views, trials, emails_opened,
           emails_clicked, prompted_sessions)
         VALUES ($1, $2::date, $3, $3, 0, 0, 0, 0, 0, 0, 0, false, 0, 0, 0, 0, 0, 0)",
    )
    .bind(user)
    .bind(day)
    .bind(app_opens)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// A logged `/v1/churn` score of `user` on the snapshot as of `as_of` (none: cold start).
async fn churn_score(
    db: &TestDb,
    user: &str,
    as_of: Option<&str>,
    model: &str,
    score: f64,
    scored_at: &str,
) {
    sqlx::query(
        "INSERT INTO serving.churn_scores (request_id, scored_at, user_hash, features_as_of,
           model_version, policy_version, score, band)
         VALUES (gen_random_uuid(), $1::timestamptz, $2, $3::date, $4, 'p', $5,
                 CASE WHEN $5 >= 0.5 THEN 'high' ELSE 'low' END)",
    )
    .bind(scored_at)
    .bind(user)
    .bind(as_of)
    .bind(model)
    .bind(score)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_churn_score_meets_the_label_of_the_day_its_snapshot_describes_once_with_the_arm_then() {
    use nudge::control::calibration::{self, ScoredGroup};
    let (db, _dir, _one) = setup("").await;
    let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
    // The data reach 2026-03-29 noon: labels of days up to 03-14 are complete.
    sqlx::query(
        "INSERT INTO silver.refreshes (from_day, to_day, started_at, events)
         VALUES ('2026-03-01', '2026-03-30', now(), 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    event(
        &db,
        "Z",
        "app_opened",
        at("2026-03-29T12:00:00Z"),
        json!({}),
    )
    .await;
    // A: active 03-09 and 03-15 (not churned); scored twice on the snapshot as of 03-10,
    // the later score counts; its latest decision before that midnight is canary.
    user_day(&db, "A", "2026-03-09", 1).await;
    user_day(&db, "A", "2026-03-15", 2).await;
    churn_score(
        &db,
        "A",
        Some("2026-03-10"),
        "v1",
        0.2,
        "2026-03-10T06:00:00Z",
    )
    .await;
    churn_score(
        &db,
        "A",
        Some("2026-03-10"),
        "v1",
        0.3,
        "2026-03-10T09:00:00Z",
    )
    .await;
    decision(&db, "A", "control", at("2026-03-07T10:00:00Z"), None).await;
    decision(&db, "A", "canary", at("2026-03-08T10:00:00Z"), None).await;
    decision(&db, "A", "control", at("2026-03-11T10:00:00Z"), None).await;
    // B: active 03-09, never again (churned), no decision.
    user_day(&db, "B", "2026-03-09", 1).await;
    churn_score(
        &db,
        "B",
        Some("2026-03-10"),
        "v1",
        0.6,
        "2026-03-10T06:00:00Z",
    )
    .await;
    // F: active 03-09, back only on 03-24, the 15th day (churned); control; model v2.
    user_day(&db, "F", "2026-03-09", 1).await;
    user_day(&db, "F", "2026-03-24", 1).await;
    churn_score(
        &db,
        "F",
        Some("2026-03-10"),
        "v2",
        0.1,
        "2026-03-10T06:00:00Z",
    )
    .await;
    decision(&db, "F", "control", at("2026-03-09T10:00:00Z"), None).await;
    // Without a label: C was not active on 03-09; D a cold start; E's 14 days after
    // 03-19 are not all observed; G's snapshot is before the window.
    user_day(&db, "C", "2026-03-08", 1).await;
    churn_score(
        &db,
        "C",
        Some("2026-03-10"),
        "v1",
        0.4,
        "2026-03-10T06:00:00Z",
    )
    .await;
    churn_score(&db, "D", None, "v1", 0.5, "2026-03-10T06:00:00Z").await;
    user_day(&db, "E", "2026-03-19", 1).await;
    churn_score(
        &db,
        "E",
        Some("2026-03-20"),
        "v1",
        0.4,
        "2026-03-20T06:00:00Z",
    )
    .await;
    user_day(&db, "G", "2026-03-04", 1).await;
    churn_score(
        &db,
        "G",
        Some("2026-03-05"),
        "v1",
        0.4,
        "2026-03-05T06:00:00Z",
    )
    .await;

    let day = |d: &str| d.parse().unwrap();
    let groups =
        calibration::churn_calibration(&db.pool, Some(day("2026-03-10")), Some(day("2026-03-21")))
            .await
            .unwrap();
    let group = |model: &str, band: &str, arm: &str, mean_score: f64, churned| ScoredGroup {
        model_version: model.into(),
        band: band.into(),
        arm: arm.into(),
        users: 1,
        mean_score,
        churned,
    };
    assert_eq!(
        groups,
        [
            group("v1", "high", "none", 0.6, 1),
            group("v1", "low", "canary", 0.3, 0),
            group("v2", "low", "control", 0.1, 1),
        ]
    );
    // Unbounded, G's snapshot counts too (active 03-04, never again); E's still does not.
    let all = calibration::churn_calibration(&db.pool, None, None)
        .await
        .unwrap();
    assert_eq!(
        all,
        [
            group("v1", "high", "none", 0.6, 1),
            group("v1", "low", "canary", 0.3, 0),
            group("v1", "low", "none", 0.4, 1),
            group("v2", "low", "control", 0.1, 1),
        ]
    );
}

#[tokio::test]
async fn kpis_count_each_outcome_by_its_definition() {
    let (db, _dir, _one) = setup("").await;
    let at = t0();
    // A: acts within 24 h from a push, opens the notification, is active on day 7.
    decision(&db, "A", "canary", at, Some("nA")).await;
    event(
        &db,
        "A",
        "app_opened",
        at + Duration::hours(2),
        json!({"source": "push"}),
    )
    .await;
    sqlx::query(
        "INSERT INTO silver.notifications (notification_id, user_hash, sent_at, notif_type, opened_at)
         VALUES ('nA', 'A', $1, 'weekly_digest', $2)",
    )
    .bind(at)
    .bind(at + Duration::hours(2))
    .execute(&db.pool)
    .await
    .unwrap();
    session(&db, "A", at + Duration::days(7) + Duration::hours(1)).await;
    // B: an outreach only after 24 h, an organic open, opts out, active on day 6 only.
    decision(&db, "B", "canary", at, Some("nB")).await;
    decision(&db, "B", "canary", at + Duration::hours(3), None).await;
    event(
        &db,
        "B",
        "outreach_sent",
        at + Duration::hours(30),
        json!({"channel": "sms"}),
    )
    .await;
    event(
        &db,
        "B",
        "app_opened",
        at + Duration::hours(1),
        json!({"source": "organic"}),
    )
    .await;
    event(&db, "B", "push_opt_out", at + Duration::hours(5), json!({})).await;
    session(&db, "B", at + Duration::days(6)).await;
    // C: control, acts by an outreach within 24 h.
    decision(&db, "C", "control", at, Some("nC")).await;
    event(
        &db,
        "C",
        "outreach_sent",
        at + Duration::hours(5),
        json!({"channel": "email"}),
    )
    .await;
    // Crashes: A's app crashes after its first decision; B reports a handled error only;
    // C crashed before its first decision, and again after the outcomes were observed.
    let exception = |level: &str| json!({"$exception_level": level});
    event(
        &db,
        "A",
        "$exception",
        at + Duration::days(2),
        exception("fatal"),
    )
    .await;
    event(
        &db,
        "B",
        "$exception",
        at + Duration::days(2),
        exception("error"),
    )
    .await;
    event(
        &db,
        "C",
        "$exception",
        at - Duration::hours(1),
        exception("fatal"),
    )
    .await;
    event(
        &db,
        "C",
        "$exception",
        at + Duration::days(10),
        exception("fatal"),
    )
    .await;

    let day = Duration::days(1);
    let arms = kpi::arms(&db.pool, at, at + day, at + Duration::days(9))
        .await
        .unwrap();
    let canary = kpi::find(&arms, "canary").unwrap();
    assert_eq!(
        (
            canary.users,
            canary.decisions,
            canary.sends,
            canary.measured_sends
        ),
        (2, 3, 2, 2)
    );
    assert_eq!(
        (canary.actioned, canary.opened, canary.opted_out),
        (1, 1, 1)
    );
    assert_eq!((canary.d7_users, canary.retained_d7), (2, 1));
    assert_eq!(
        (canary.roi(), canary.sends_per_user()),
        (Some(0.5), Some(1.0))
    );
    let control = kpi::find(&arms, "control").unwrap();
    assert_eq!((control.measured_sends, control.actioned), (1, 1));
    assert_eq!((canary.crashed, control.crashed), (1, 0));
    // Outcomes not yet observed are not counted: 12 h after, no send's 24 h is complete.
    let early = kpi::arms(&db.pool, at, at + day, at + Duration::hours(12))
        .await
        .unwrap();
    let canary = kpi::find(&early, "canary").unwrap();
    assert_eq!(
        (canary.sends, canary.measured_sends, canary.d7_users),
        (2, 0, 0)
    );
    // The controller measures the model arm only.
    let (measured, actioned) = kpi::model_arm(&arms);
    assert_eq!((measured.sends, actioned), (2, 1));
}

#[tokio::test]
async fn a_tick_steps_on_the_measured_roi_and_a_restarted_instance_continues() {
    let (db, dir, one) =
        setup("controller: { interval: 1d, min_sends: 50 }\nguardrails: { enabled: false }\n")
            .await;
    let at = t0();
    arm_sends(&db, "canary", 100, at, 10, 0).await; // ROI 10 %: below the 30 % target
    arm_sends(&db, "control", 100, at, 60, 0).await; // not the model arm: not measured
    assert_eq!(score_threshold(&one.app).await, 0.3);

    let report = tick_at(&one.app, at + Duration::days(2)).await;
    let step = &report["controller"];
    assert_eq!(step["status"], "stepped", "{report}");
    assert_eq!(
        (step["sends"].as_u64(), step["roi"].as_f64()),
        (Some(100), Some(0.1))
    );
    let policy = Policy::load(&dir.0.join("policy.yaml")).unwrap();
    let expected = pi::step(
        &tick::settings(&policy),
        &State::initial(&tick::settings(&policy)),
        Measurement {
            roi: 0.1,
            sends: 100,
        },
    );
    assert!(expected.next.output > 0.3);
    let output = report["state"]["output"].as_f64().unwrap();
    assert!((output - expected.next.output).abs() < 1e-12, "{report}");
    assert_eq!(score_threshold(&one.app).await, output);

    let (status, view) = admin(&one.app, "GET", "/admin/controller", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["threshold"].as_f64(), Some(output));
    assert_eq!(view["history"].as_array().unwrap().len(), 1);
    assert_eq!(
        view["next_step_at"],
        json!((at + Duration::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );

    // A restarted replica reads the state and serves the same threshold.
    let two = instance(&db, &dir.0).await;
    assert_eq!(score_threshold(&two.app).await, output);

    // Before the interval has passed: nothing happens.
    let early = tick_at(&two.app, at + Duration::days(2) + Duration::hours(1)).await;
    assert_eq!(early["controller"]["status"], "not_due");
    // A day later with no new sends: held, and the next step measures from the same start.
    let held = tick_at(&two.app, at + Duration::days(3)).await;
    assert_eq!(held["controller"]["outcome"], "held_small_sample", "{held}");
    assert_eq!(held["state"]["output"].as_f64(), Some(output));
    assert_eq!(
        held["controller"]["window_from"],
        report["controller"]["window_to"]
    );
    arm_sends(&db, "canary", 60, at + Duration::days(2), 30, 0).await; // ROI 50 %
    let next = tick_at(&two.app, at + Duration::days(4)).await;
    assert_eq!(next["controller"]["status"], "stepped");
    assert_eq!(
        next["controller"]["window_from"],
        report["controller"]["window_to"]
    );
    assert!(next["state"]["output"].as_f64().unwrap() < output, "{next}");
    assert_eq!(
        db.count("SELECT count(*) FROM serving.controller_steps")
            .await,
        3
    );
}

#[tokio::test]
async fn only_one_replica_steps_per_interval() {
    let (db, dir, one) = setup("controller: { interval: 1d, min_sends: 10 }\n").await;
    let two = instance(&db, &dir.0).await;
    let at = t0();
    arm_sends(&db, "canary", 40, at, 4, 0).await;
    let when = at + Duration::days(2);
    let (a, b) = tokio::join!(tick_at(&one.app, when), tick_at(&two.app, when));
    let stepped = [&a, &b]
        .iter()
        .filter(|r| r["controller"]["status"] == "stepped")
        .count();
    assert_eq!(stepped, 1, "{a}\n{b}");
    assert_eq!(
        db.count("SELECT count(*) FROM serving.controller_steps")
            .await,
        1
    );
}

#[tokio::test]
async fn a_dry_run_logs_what_it_would_do_and_changes_nothing() {
    let (db, _dir, one) =
        setup("controller: { interval: 1d, min_sends: 10, dry_run: true }\n").await;
    let at = t0();
    arm_sends(&db, "canary", 40, at, 2, 0).await;
    let report = tick_at(&one.app, at + Duration::days(2)).await;
    assert_eq!(report["controller"]["dry_run"], true);
    let would = report["controller"]["next"]["output"].as_f64().unwrap();
    assert!(would > 0.3, "{report}");
    assert_eq!(report["state"]["output"].as_f64(), Some(0.3));
    assert_eq!(score_threshold(&one.app).await, 0.3);
}

/// A person turns the canary back on at 50 %.
async fn resume_canary(app: &Router) {
    let (status, body) = admin(
        app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "canary", "canary_percent": 50, "reason": "fixed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_breached_guardrail_switches_the_canary_to_shadow_until_a_human_turns_it_back() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\nguardrails: { window: 7d, min_samples: 200, opt_out_rate: 0.01 }\n",
    )
    .await;
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 60).await; // 15 % opted out
    arm_sends(&db, "control", 400, at, 40, 4).await; // 1 %
    let report = tick_at(&one.app, at + Duration::days(1)).await;
    assert_eq!(report["guardrails"]["status"], "rolled_back", "{report}");
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["mode"], "shadow", "{rollout}");
    assert_eq!(rollout["flag"]["set_by"], "guardrail");
    assert!(
        rollout["flag"]["reason"]
            .as_str()
            .unwrap()
            .contains("opt_out_rate")
    );
    let metrics = one.ctx.metrics.render();
    assert!(
        metrics.contains("nudge_guardrail_rollbacks_total"),
        "{metrics}"
    );
    // Each guardrail's verdict and z beside the z a breach needs, so an alert can watch
    // the gap. Their values are checked by a unit test of `publish_guardrails`: other
    // tests of this process tick in parallel and set the same gauges.
    for gauge in [
        "nudge_guardrail_breached{metric=\"opt_out_rate\"}",
        "nudge_guardrail_z{metric=\"opt_out_rate\"}",
        "nudge_guardrail_z_critical",
    ] {
        assert!(metrics.contains(gauge), "no {gauge} in {metrics}");
    }

    // A human turns the canary back on: the evidence that tripped it is not reused.
    resume_canary(&one.app).await;
    let again = tick_at(&one.app, at + Duration::days(1) + Duration::hours(1)).await;
    assert_eq!(again["guardrails"]["status"], "passed", "{again}");
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["mode"], "canary");
    assert_eq!(
        db.count("SELECT count(*) FROM serving.guardrail_checks WHERE breached")
            .await,
        1
    );
}

#[tokio::test]
async fn a_full_rollout_is_guarded_against_its_holdout_and_switched_to_shadow_on_harm() {
    let (db, _dir, one) = setup_policy(
        "rollout: { mode: full, holdout_percent: 10, salt: s }\n\
         threshold: { initial: 0.3, min: 0.05, max: 0.9 }\n\
         controller: { enabled: false }\n\
         guardrails: { window: 7d, min_samples: 200, opt_out_rate: 0.01 }\n",
    )
    .await;
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(
        (&rollout["holdout_percent"], &rollout["guardrails_compare"]),
        (&json!(10.0), &json!("full")),
        "{rollout}"
    );
    let at = t0();
    arm_sends(&db, "full", 400, at, 40, 60).await; // 15 % opted out
    arm_sends(&db, "control", 400, at, 40, 4).await; // 1 %: the holdout
    let report = tick_at(&one.app, at + Duration::days(1)).await;
    assert_eq!(report["guardrails"]["status"], "rolled_back", "{report}");
    let opt_out = opt_out_check(&report);
    assert_eq!(
        (&opt_out["arm"], &opt_out["canary"]["successes"]),
        (&json!("full"), &json!(60)),
        "{opt_out}"
    );
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(
        (&rollout["mode"], &rollout["flag"]["set_by"]),
        (&json!("shadow"), &json!("guardrail")),
        "{rollout}"
    );
    let reason = rollout["flag"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("opt_out_rate full 15.00% of 400 vs control 1.00% of 400"),
        "{reason}"
    );
    // The stored check keeps the arm it compared, for /admin/controller and the dashboard.
    let (_, controller) = admin(&one.app, "GET", "/admin/controller", None).await;
    let stored = controller["guardrails"]["checks"].as_array().unwrap();
    assert!(stored.iter().all(|c| c["arm"] == "full"), "{controller}");
}

#[tokio::test]
async fn a_rollout_that_leaves_no_control_is_shown_unguarded_and_left_in_force() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\nguardrails: { window: 7d, min_samples: 200, opt_out_rate: 0.01 }\n",
    )
    .await;
    let (status, body) = admin(
        &one.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "canary", "canary_percent": 100, "reason": "everyone"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["guardrails_compare"], "no_control", "{body}");
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 60).await;
    let report = tick_at(&one.app, at + Duration::days(1)).await;
    assert_eq!(report["guardrails"]["status"], "no_control", "{report}");
    assert_eq!(
        db.count("SELECT count(*) FROM serving.guardrail_checks")
            .await,
        0
    );
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(
        (&rollout["mode"], &rollout["flag"]["set_by"]),
        (&json!("canary"), &json!("admin-api")),
        "{rollout}"
    );
    let page = dashboard(&one.app).await;
    assert!(
        page.contains("NOT GUARDED: the model decides for every user"),
        "{page}"
    );
}

#[tokio::test]
async fn a_canary_whose_users_crash_more_is_switched_to_shadow() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\n\
         guardrails: { window: 7d, min_samples: 200, opt_out_rate: null, d7_retention: null, \
         send_rate: null, roi: null, crash_rate: 0.005 }\n",
    )
    .await;
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 0).await;
    arm_sends(&db, "control", 400, at, 40, 0).await;
    // 40 canary users' apps crash after a notification; 40 control users' report handled
    // errors only, which are not crashes.
    for (arm, level) in [("canary", "fatal"), ("control", "error")] {
        for i in 0..40 {
            let user = format!("{arm}-{}-{i}", at.timestamp());
            let exception = json!({"$exception_level": level});
            event(&db, &user, "$exception", at + Duration::hours(3), exception).await;
        }
    }
    let report = tick_at(&one.app, at + Duration::days(1)).await;
    assert_eq!(report["guardrails"]["status"], "rolled_back", "{report}");
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["mode"], "shadow", "{rollout}");
    let reason = rollout["flag"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("crash_rate canary 10.00% of 400 vs control 0.00% of 400"),
        "{reason}"
    );
}

/// The check of `metric` in a tick's report (or `GET /admin/controller`'s answer).
fn metric_check<'a>(report: &'a Value, metric: &str) -> &'a Value {
    report["guardrails"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["metric"] == metric))
        .unwrap_or_else(|| panic!("no {metric} check in {report}"))
}

/// The `d7_retention` check of a tick's report.
fn d7_check(report: &Value) -> &Value {
    metric_check(report, "d7_retention")
}

/// The `opt_out_rate` check of a tick's report.
fn opt_out_check(report: &Value) -> &Value {
    metric_check(report, "opt_out_rate")
}

#[tokio::test]
async fn the_d7_guardrail_weighs_the_users_whose_seventh_day_has_ended_and_rolls_back_on_harm() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\n\
         guardrails: { window: 7d, min_samples: 200, opt_out_rate: 0.01, d7_retention: 0.03, \
         send_rate: null, roi: null }\n",
    )
    .await;
    // A cohort first decided at t0: 20 % of the canary's users and 50 % of the control's
    // come back on their 7th day.
    let first = t0();
    for (arm, retained) in [("canary", 60), ("control", 150)] {
        arm_sends(&db, arm, 300, first, 0, 0).await;
        for i in 0..retained {
            let user = format!("{arm}-{}-{i}", first.timestamp());
            session(&db, &user, first + Duration::days(7) + Duration::hours(3)).await;
        }
    }
    // Later users in both arms, alike, so that each window has both arms.
    arm_sends(&db, "canary", 300, first + Duration::days(7), 30, 0).await;
    arm_sends(&db, "control", 300, first + Duration::days(7), 30, 0).await;

    // Half a day into the cohort's 7th day nobody's D7 is known: nothing to weigh.
    let early = tick_at(&one.app, first + Duration::days(7) + Duration::hours(12)).await;
    assert_eq!(early["guardrails"]["status"], "passed", "{early}");
    assert_eq!(d7_check(&early)["canary"]["trials"], 0, "{early}");
    assert_eq!(d7_check(&early)["z"], Value::Null);

    // A day later the cohort's 7th day has ended, though its first decisions have left
    // the trailing 7-day window: the shortfall is seen and the canary is stopped.
    let late = tick_at(&one.app, first + Duration::days(9)).await;
    assert_eq!(late["guardrails"]["status"], "rolled_back", "{late}");
    let check = d7_check(&late);
    assert_eq!(
        (&check["canary"], &check["control"]),
        (
            &json!({"successes": 60, "trials": 300}),
            &json!({"successes": 150, "trials": 300})
        ),
        "{late}"
    );
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["mode"], "shadow", "{rollout}");
    let reason = rollout["flag"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("d7_retention canary 20.00% of 300"),
        "{reason}"
    );
    // It names the users it weighed: first decided in the week that ended 8 days before,
    // from the canary's first decision on.
    let (from, to) = (first, first + Duration::days(1));
    let minute = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    let cohort = format!("users first decided {} → {} UTC", minute(from), minute(to));
    assert!(reason.contains(&cohort), "{reason}");
    // So does the stored check, shown by GET /admin/controller, beside the window's.
    let (_, controller) = admin(&one.app, "GET", "/admin/controller", None).await;
    let stored = &controller["guardrails"];
    assert_eq!(
        stored["at"],
        json!(first + Duration::days(9)),
        "{controller}"
    );
    assert_eq!(
        d7_check(&controller)["weighed"],
        json!({ "from": from, "to": to }),
        "{controller}"
    );
    let opt_out = opt_out_check(&controller);
    assert_eq!(
        opt_out["weighed"],
        json!({ "from": first + Duration::days(2), "to": first + Duration::days(9) }),
        "{controller}"
    );

    // Turned back on: users first decided before that are not weighed again.
    resume_canary(&one.app).await;
    arm_sends(&db, "canary", 300, first + Duration::days(9), 30, 0).await;
    arm_sends(&db, "control", 300, first + Duration::days(9), 30, 0).await;
    let again = tick_at(&one.app, first + Duration::days(9) + Duration::hours(2)).await;
    assert_eq!(again["guardrails"]["status"], "passed", "{again}");
    assert_eq!(d7_check(&again)["canary"]["trials"], 0, "{again}");
}

#[tokio::test]
async fn guardrails_are_checked_at_most_once_per_interval_and_a_later_check_sees_new_harm() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\n\
         guardrails: { window: 7d, interval: 1h, min_samples: 200, opt_out_rate: 0.01 }\n",
    )
    .await;
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 4).await;
    arm_sends(&db, "control", 400, at, 40, 4).await;
    let checks = "SELECT count(*) FROM serving.guardrail_checks";
    let first = tick_at(&one.app, at + Duration::days(1)).await;
    assert_eq!(first["guardrails"]["status"], "passed", "{first}");
    let checked = db.count(checks).await;
    assert!(checked > 0);

    // Harm logged after the check (the decision log is written asynchronously).
    arm_sends(&db, "canary", 400, at + Duration::hours(20), 40, 60).await;
    let early = tick_at(&one.app, at + Duration::days(1) + Duration::minutes(10)).await;
    assert_eq!(early["guardrails"]["status"], "not_due", "{early}");
    let next: DateTime<Utc> = early["guardrails"]["next_check_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(next, at + Duration::days(1) + Duration::hours(1));
    assert_eq!(
        db.count(checks).await,
        checked,
        "a tick that is not due checks nothing"
    );
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["mode"], "canary");

    let due = tick_at(&one.app, next).await;
    assert_eq!(due["guardrails"]["status"], "rolled_back", "{due}");
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["mode"], "shadow", "{rollout}");
    let (_, controller) = admin(&one.app, "GET", "/admin/controller", None).await;
    let time = |v: &Value| v.as_str().map(|t| t.parse::<DateTime<Utc>>().unwrap());
    assert_eq!(
        time(&controller["state"]["guardrails_checked_at"]),
        Some(next)
    );
    assert_eq!(
        time(&controller["next_guardrail_check_at"]),
        Some(next + Duration::hours(1)),
        "{controller}"
    );
}

#[tokio::test]
async fn a_sequential_guardrail_weighs_all_since_the_rollout_began_and_starts_again_on_a_change() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\n\
         guardrails: { test: sequential, window: 7d, min_samples: 200, opt_out_rate: 0.01, \
         d7_retention: null, send_rate: null, roi: null, crash_rate: null }\n",
    )
    .await;
    // Two healthy cohorts ten days apart: a 7-day window would see only the second.
    let first = t0();
    for at in [first, first + Duration::days(10)] {
        arm_sends(&db, "canary", 300, at, 30, 3).await;
        arm_sends(&db, "control", 300, at, 30, 3).await;
    }
    let at = first + Duration::days(12);
    let report = tick_at(&one.app, at).await;
    assert_eq!(report["guardrails"]["status"], "passed", "{report}");
    let check = opt_out_check(&report);
    assert_eq!(check["canary"]["trials"], 600, "{report}");
    assert_eq!(
        check["weighed"],
        json!({ "from": first, "to": at }),
        "from the canary's first decision: {report}"
    );
    // Its bar is above a fixed test's z₀.₉₉ = 2.33, and kept with the check.
    let critical = check["critical"].as_f64().unwrap();
    assert!(critical > 2.33, "{report}");
    let (_, controller) = admin(&one.app, "GET", "/admin/controller", None).await;
    assert_eq!(
        opt_out_check(&controller)["critical"].as_f64(),
        Some(critical),
        "{controller}"
    );
    assert_eq!(
        controller["state"]["guardrails_rollout"], "canary 50% holdout 0% salt s",
        "{controller}"
    );
    let (_, rollout) = admin(&one.app, "GET", "/admin/rollout", None).await;
    assert_eq!(rollout["guardrails_test"], "sequential", "{rollout}");

    // The growth lead widens the canary: users move between arms, so the evidence
    // starts again at the first tick that sees the change.
    let (status, body) = admin(
        &one.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "canary", "canary_percent": 70, "reason": "widen"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = at + Duration::hours(1);
    let report = tick_at(&one.app, changed).await;
    assert_eq!(
        report["guardrails"]["checks"],
        json!([]),
        "nothing since: {report}"
    );
    assert_eq!(
        report["state"]["guardrails_since"],
        json!(changed),
        "{report}"
    );
    assert_eq!(
        report["state"]["guardrails_rollout"],
        "canary 70% holdout 0% salt s"
    );

    // Harm after the change is weighed on its own, from the canary's first decision
    // since, and rolls the canary back.
    let decided = changed + Duration::hours(1);
    arm_sends(&db, "canary", 400, decided, 40, 60).await;
    arm_sends(&db, "control", 400, decided, 40, 4).await;
    let later = changed + Duration::days(1);
    let report = tick_at(&one.app, later).await;
    assert_eq!(report["guardrails"]["status"], "rolled_back", "{report}");
    let check = opt_out_check(&report);
    assert_eq!(check["canary"]["trials"], 400, "{report}");
    assert_eq!(check["weighed"], json!({ "from": decided, "to": later }));
    assert!(
        check["z"].as_f64() >= check["critical"].as_f64(),
        "{report}"
    );
}

#[tokio::test]
async fn a_promoted_model_is_weighed_from_its_first_decision_not_diluted_by_the_last() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\n\
         guardrails: { test: sequential, min_samples: 200, opt_out_rate: 0.01, \
         d7_retention: null, send_rate: null, roi: null, crash_rate: null }\n",
    )
    .await;
    // Ten days of a healthy model v1, then a retrained v2 whose users opt out.
    let first = t0();
    let promoted = first + Duration::days(10);
    arm_sends(&db, "canary", 400, first, 40, 4).await;
    arm_sends(&db, "control", 400, first, 40, 4).await;
    arm_sends(&db, "canary", 300, promoted, 30, 30).await;
    arm_sends(&db, "control", 300, promoted, 30, 3).await;
    for (version, from, to) in [
        ("v1", first, promoted),
        ("v2", promoted, promoted + Duration::days(1)),
    ] {
        sqlx::query(
            "UPDATE serving.decisions SET model_version = $1
             WHERE arm = 'canary' AND decided_at >= $2 AND decided_at < $3",
        )
        .bind(version)
        .bind(from)
        .bind(to)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // Weighed with v1's 400 healthy users, v2's 10 % opt-outs would read 4.9 % against
    // 1.0 %, short of a breach (z 3.19 at a bar of 3.43); weighed alone, they are one.
    let at = promoted + Duration::days(1);
    let report = tick_at(&one.app, at).await;
    let check = opt_out_check(&report);
    assert_eq!(
        check["weighed"],
        json!({ "from": promoted, "to": at }),
        "{report}"
    );
    assert_eq!(
        (&check["canary"], &check["control"]),
        (
            &json!({"successes": 30, "trials": 300}),
            &json!({"successes": 3, "trials": 300})
        ),
        "{report}"
    );
    assert_eq!(report["guardrails"]["status"], "rolled_back", "{report}");
}

#[tokio::test]
async fn a_tick_with_a_bad_time_is_refused_naming_the_field() {
    let (_db, _dir, one) = setup("").await;
    let (status, body) = admin(
        &one.app,
        "POST",
        "/admin/controller/tick",
        Some(json!({"at": "tomorrow"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "at");
}

#[tokio::test]
async fn held_steps_accumulate_sends_until_there_are_enough() {
    let (db, _dir, one) = setup("controller: { interval: 1d, min_sends: 50 }\n").await;
    let at = t0();
    arm_sends(&db, "canary", 30, at, 3, 0).await;
    let held = tick_at(&one.app, at + Duration::days(2)).await;
    assert_eq!(held["controller"]["outcome"], "held_small_sample", "{held}");
    assert_eq!(held["controller"]["sends"], 30);
    arm_sends(&db, "canary", 30, at + Duration::days(1), 3, 0).await;
    let stepped = tick_at(&one.app, at + Duration::days(3)).await;
    assert_eq!(stepped["controller"]["outcome"], "stepped", "{stepped}");
    assert_eq!(stepped["controller"]["sends"], 60);
    assert_eq!(
        stepped["controller"]["window_from"],
        held["controller"]["window_from"]
    );
}

/// `GET /dashboard`: the page, checked to be a 200 in HTML.
async fn dashboard(app: &Router) -> String {
    let request = axum::http::Request::get("/dashboard")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, headers, body) = common::send_raw(app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_the_rollout_the_controller_the_guardrails_and_the_kpis() {
    let (db, _dir, one) = setup(
        "controller: { interval: 1d, min_sends: 10 }\nguardrails: { window: 7d, min_samples: 200, opt_out_rate: 0.01 }\n",
    )
    .await;
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 60).await;
    arm_sends(&db, "control", 400, at, 40, 4).await;
    tick_at(&one.app, at + Duration::days(2)).await;
    let (status, _) = admin(
        &one.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "shadow", "reason": "<b>checked</b> by hand"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let page = dashboard(&one.app).await;
    assert!(
        page.contains("mode shadow at 0% (from the runtime flag)"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;checked&lt;/b&gt; by hand") && !page.contains("<b>checked"));
    assert!(
        page.contains("BREACHED opt_out_rate canary 15.00% of 400 vs control 1.00% of 400"),
        "{page}"
    );
    // And what a check of 400 users per arm can see at all: with 1 % of control opting
    // out (1.24 % kept off 0), the harm whose excess over the bar (1 point plus 2.33
    // standard errors, rising with the canary's rate) is 0.84 times that excess's spread:
    // 5.13 points, solved by hand.
    let breach_line = page
        .lines()
        .find(|l| l.starts_with("BREACHED opt_out_rate"))
        .unwrap();
    assert!(
        breach_line.ends_with("; 80 % power at a harm of 5.13 points"),
        "{breach_line}"
    );
    assert!(
        page.contains("held_small_sample") || page.contains("stepped"),
        "{page}"
    );
    assert!(page.contains("canary − control:"), "{page}");
}

#[tokio::test]
async fn the_dashboard_shows_each_guardrails_z_over_the_latest_checks() {
    let (db, _dir, one) = setup(
        "controller: { enabled: false }\n\
         guardrails: { window: 7d, interval: 1h, min_samples: 200, opt_out_rate: 0.01, \
         d7_retention: null, send_rate: null, roi: null, crash_rate: null }\n",
    )
    .await;
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 8).await; // 2 % opted out against 1 %
    arm_sends(&db, "control", 400, at, 40, 4).await;
    let z = |report: &Value| report["guardrails"]["checks"][0]["z"].as_f64().unwrap();
    let first = tick_at(&one.app, at + Duration::days(1)).await;
    assert_eq!(first["guardrails"]["status"], "passed", "{first}");
    // More of the canary's users opt out: the z rises towards a breach.
    arm_sends(&db, "canary", 400, at + Duration::hours(20), 40, 16).await;
    let second = tick_at(&one.app, at + Duration::days(1) + Duration::hours(1)).await;
    assert_eq!(second["guardrails"]["status"], "passed", "{second}");
    assert!(z(&second) > z(&first), "{first} {second}");

    let page = dashboard(&one.app).await;
    assert!(
        page.contains(
            "canary compared with control by a fixed test of the last 7 days: each check \
             breaches at z ≥ 2.33, at 99 % confidence per check\n"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "z at the latest 12 checks, newest first (the latest bars are in the lines above):"
        ),
        "{page}"
    );
    let trend = format!("  opt_out_rate  {:.2}  {:.2}\n", z(&second), z(&first));
    assert!(page.contains(&trend), "no {trend:?} in {page}");
}

#[tokio::test]
async fn the_dashboard_shows_d7_retention_of_the_latest_week_whose_seventh_day_has_ended() {
    let (db, _dir, one) = setup("").await;
    let first = t0();
    arm_sends(&db, "canary", 20, first, 0, 0).await;
    arm_sends(&db, "control", 20, first, 0, 0).await;
    for i in 0..5 {
        let user = format!("canary-{}-{i}", first.timestamp());
        session(&db, &user, first + Duration::days(7) + Duration::hours(3)).await;
    }
    // Ten days on, the last week's users have no D7 yet; those of t0 have.
    arm_sends(&db, "canary", 20, first + Duration::days(10), 1, 0).await;
    let page = dashboard(&one.app).await;
    let observed = first + Duration::days(10) + Duration::hours(1); // the newest event
    let heading = format!(
        "decisions {} → {}, the latest week whose D7 is known for every user",
        (observed - Duration::days(15)).to_rfc3339(),
        (observed - Duration::days(8)).to_rfc3339()
    );
    let (last_week, cohort) = page
        .split_once(&heading)
        .unwrap_or_else(|| panic!("no {heading:?} in {page}"));
    let canary_row = |table: &str| {
        table
            .lines()
            .find(|l| l.starts_with("canary "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no canary row in {table}"))
    };
    assert!(canary_row(last_week).ends_with("n/a"), "{last_week}");
    assert!(canary_row(cohort).contains(" 25.0% ["), "{cohort}");
}

#[tokio::test]
async fn the_dashboard_computes_its_kpis_at_most_once_per_interval() {
    let (db, dir, fresh) = setup("").await;
    let kept = instance_with(&db, &dir.0, |cfg| {
        cfg.dashboard_kpi_every = std::time::Duration::from_secs(3600);
    })
    .await;
    let newest = |at: DateTime<Utc>| format!("→ {}, outcomes", at.to_rfc3339());
    let computed_at = |page: &str| {
        let at = page.split("computed at ").nth(1).unwrap();
        at[..at.find(' ').unwrap()].to_owned()
    };

    let at = t0();
    arm_sends(&db, "canary", 20, at, 5, 0).await;
    let first = dashboard(&kept.app).await;
    assert!(first.contains(&newest(at)), "{first}");

    // A later decision: the kept section still shows the first computation, while the
    // rest of the page (here a rollout change) is read at every load.
    decision(&db, "late", "control", at + Duration::hours(1), None).await;
    let (status, _) = admin(
        &kept.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "shadow", "reason": "paused"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let second = dashboard(&kept.app).await;
    assert!(second.contains("mode shadow"), "{second}");
    assert!(second.contains(&newest(at)), "{second}");
    assert_eq!(computed_at(&second), computed_at(&first));

    // An instance that keeps nothing (interval 0) sees the new decision.
    let now = dashboard(&fresh.app).await;
    assert!(now.contains(&newest(at + Duration::hours(1))), "{now}");
}
