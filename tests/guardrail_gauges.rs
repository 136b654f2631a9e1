//! The guardrail gauges of a replica that did not run the latest check. A process of their
//! own: its metrics recorder is one per process, and other tests' ticks would set the same
//! gauges.

mod common;

use chrono::Duration;
use common::admin;
use common::control::{arm_sends, policy_text, setup, t0, tick_at};
use nudge::control::tick::{self, TickReport};
use nudge::policy::Policy;
use nudge::rollout::{Flags, InForce};
use serde_json::json;

const GUARDRAILS: &str = "controller: { enabled: false }\nguardrails: { window: 7d, min_samples: 200, opt_out_rate: 0.05 }\n";

/// The value of the gauge `series` in the metrics text, if exported.
fn gauge(metrics: &str, series: &str) -> Option<String> {
    metrics
        .lines()
        .find_map(|line| Some(line.strip_prefix(series)?.trim().to_owned()))
}

#[tokio::test]
async fn a_replica_between_checks_shows_the_latest_check_of_any_replica() {
    let (db, _dir, one) = setup(GUARDRAILS).await;
    let policy = Policy::parse(&policy_text(GUARDRAILS)).unwrap();
    let in_force = InForce::of(&policy, Some(&Flags::default()));
    let at = t0();
    arm_sends(&db, "canary", 400, at, 40, 8).await; // 2 % opted out
    arm_sends(&db, "control", 400, at, 40, 4).await; // 1 %
    let opt_out_z = "nudge_guardrail_z{metric=\"opt_out_rate\"}";
    let stored_z = || async {
        let z: f64 = sqlx::query_scalar(
            "SELECT z FROM serving.guardrail_checks WHERE metric = 'opt_out_rate'
             ORDER BY at DESC LIMIT 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        z.to_string()
    };

    // Another replica checks (the library's tick: no gauge of this process is set), then
    // this one ticks before the next check is due.
    let other = |at| tick::tick(&db.pool, &one.ctx.flag_store, &policy, &in_force, at);
    let first = other(at + Duration::days(1)).await.unwrap();
    assert!(matches!(first, TickReport::Ran(_)), "{first:?}");
    let report = tick_at(&one.app, at + Duration::days(1) + Duration::minutes(10)).await;
    assert_eq!(report["guardrails"]["status"], "not_due", "{report}");
    let first_z = stored_z().await;
    let metrics = one.ctx.metrics.render();
    assert_eq!(gauge(&metrics, opt_out_z), Some(first_z.clone()));
    let checked_at = (at + Duration::days(1)).timestamp().to_string();
    assert_eq!(
        gauge(&metrics, "nudge_guardrail_checked_at_seconds"),
        Some(checked_at)
    );

    // More canary users opt out; the other replica's next check sees it, and so does this
    // replica's next tick.
    arm_sends(&db, "canary", 400, at + Duration::hours(25), 40, 60).await;
    other(at + Duration::days(1) + Duration::hours(2))
        .await
        .unwrap();
    tick_at(
        &one.app,
        at + Duration::days(1) + Duration::hours(2) + Duration::minutes(10),
    )
    .await;
    let second_z = stored_z().await;
    assert_ne!(second_z, first_z);
    assert_eq!(gauge(&one.ctx.metrics.render(), opt_out_z), Some(second_z));

    // The canary is switched off (as a rollback on another replica would): this replica's
    // next tick clears the gauges.
    let (status, body) = admin(
        &one.app,
        "PUT",
        "/admin/rollout",
        Some(json!({"mode": "shadow", "reason": "paused"})),
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    let report = tick_at(&one.app, at + Duration::days(1) + Duration::hours(3)).await;
    assert_eq!(report["guardrails"]["status"], "no_model_arm", "{report}");
    let metrics = one.ctx.metrics.render();
    assert_eq!(gauge(&metrics, opt_out_z).as_deref(), Some("NaN"));
    assert_eq!(
        gauge(
            &metrics,
            "nudge_guardrail_breached{metric=\"opt_out_rate\"}"
        )
        .as_deref(),
        Some("0")
    );
}
