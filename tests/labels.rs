//! The label views agree with the simulator's recorded outcomes, example by example: the
//! labels the trainer will read are the outcomes the ground truth describes.

mod common;

use chrono::NaiveDate;
use common::TestDb;
use nudge::features::{DayRange, labels, refresh};
use nudge::sim::SimConfig;

#[tokio::test]
async fn label_views_match_the_simulated_outcomes() {
    let db = TestDb::migrated().await;
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    common::simulate(&db, SimConfig::new(400, 24, 9, start, 0.3).unwrap()).await;
    let range = DayRange::new(
        NaiveDate::from_ymd_opt(2026, 1, 4).unwrap(),
        NaiveDate::from_ymd_opt(2026, 1, 29).unwrap(),
    )
    .unwrap();
    refresh::refresh(&db.pool, range).await.unwrap();

    let notif = (
        db.count(
            "SELECT count(*) FROM sim.notification_truth t
             JOIN gold.label_returned_24h_after_notif l USING (notification_id)
             WHERE t.returned_24h IS NOT NULL AND l.complete",
        )
        .await,
        db.count(
            "SELECT count(*) FROM sim.notification_truth t
             JOIN gold.label_returned_24h_after_notif l USING (notification_id)
             WHERE t.returned_24h IS NOT NULL AND l.complete AND l.returned_24h_after_notif <> t.returned_24h",
        )
        .await,
    );
    assert!(notif.0 > 3_000, "{notif:?}");
    assert_eq!(notif.1, 0, "returned_24h disagreements");

    // Every active day the simulator drew a churn outcome for is an example of the view.
    let churn = (
        db.count("SELECT count(*) FROM sim.churn_truth WHERE churned_14d IS NOT NULL").await,
        db.count(
            "SELECT count(*) FROM sim.churn_truth t JOIN gold.label_churn_14d l USING (user_hash, day)
             WHERE t.churned_14d IS NOT NULL",
        )
        .await,
        db.count(
            "SELECT count(*) FROM sim.churn_truth t JOIN gold.label_churn_14d l USING (user_hash, day)
             WHERE t.churned_14d IS NOT NULL AND l.churn_14d <> t.churned_14d",
        )
        .await,
    );
    assert!(churn.0 > 500, "{churn:?}");
    assert_eq!(
        (churn.1, churn.2),
        (churn.0, 0),
        "churn examples matched, disagreements"
    );

    let paywall = (
        db.count(
            "SELECT count(*) FROM sim.paywall_truth t JOIN gold.label_paywall l USING (event_uuid)
             WHERE t.bounced_24h IS NOT NULL AND l.complete",
        )
        .await,
        db.count(
            "SELECT count(*) FROM sim.paywall_truth t JOIN gold.label_paywall l USING (event_uuid)
             WHERE (t.bounced_24h IS NOT NULL AND l.complete AND l.paywall_bounce <> t.bounced_24h)
                OR l.paywall_trial <> t.trial_24h",
        )
        .await,
    );
    assert!(paywall.0 > 50, "{paywall:?}");
    assert_eq!(paywall.1, 0, "paywall disagreements");

    // A window the data does not cover yet is never counted complete.
    let complete_but_unknown = db
        .count(
            "SELECT (SELECT count(*) FROM gold.label_churn_14d l JOIN sim.churn_truth t USING (user_hash, day)
                     WHERE l.complete AND t.churned_14d IS NULL)
                  + (SELECT count(*) FROM gold.label_returned_24h_after_notif l
                     JOIN sim.notification_truth t USING (notification_id)
                     WHERE l.complete AND t.returned_24h IS NULL)",
        )
        .await;
    assert_eq!(complete_but_unknown, 0);

    let report = labels::label_report(&db.pool).await.unwrap();
    let churn_rate: f64 = db
        .scalar("SELECT avg(churn_14d::int)::float8 FROM gold.label_churn_14d WHERE complete")
        .await;
    let churn_examples = db
        .count("SELECT count(*) FROM gold.label_churn_14d WHERE complete")
        .await;
    assert_eq!(report.labels[1].label, "churn_14d");
    assert_eq!(
        (report.labels[1].examples, report.labels[1].positive_rate),
        (churn_examples, churn_rate)
    );
}
