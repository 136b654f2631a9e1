//! Gold snapshots on hand-made histories: the columns are the feature catalog's, values
//! are what happened strictly before `as_of`, and later events never change a snapshot.

mod common;

use chrono::NaiveDate;
use common::{HASH_KEY, TestDb, ingest_all as ingest, numbered_event as event};
use nudge::features::catalog::FeatureCatalog;
use nudge::features::{DayRange, refresh};
use nudge::ingest::Ingestor;
use nudge::ingest::catalog::Catalog;
use nudge::ingest::event::Source;
use nudge::ingest::hashing::UserHasher;
use serde_json::{Value, json};

async fn refresh_days(db: &TestDb, from: &str, to: &str) {
    let range = DayRange::new(
        from.parse::<NaiveDate>().unwrap(),
        to.parse::<NaiveDate>().unwrap(),
    )
    .unwrap();
    refresh::refresh(&db.pool, range).await.unwrap();
}

/// The snapshot of `who` as of `as_of`, as JSON (column → value).
async fn snapshot(db: &TestDb, who: &str, as_of: &str) -> Option<Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(s) - 'user_hash' - 'as_of' FROM gold.snapshots s WHERE user_hash = $1 AND as_of = $2::date",
    )
    .bind(UserHasher::new(HASH_KEY.as_bytes()).hash(who))
    .bind(as_of)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

/// The columns of `gold.<relation>` after `as_of`: name and type.
async fn feature_columns(db: &TestDb, relation: &str) -> Vec<(String, String)> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'gold' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(relation)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let as_of = columns
        .iter()
        .position(|(c, _)| c == "as_of")
        .expect("as_of");
    columns[as_of + 1..].to_vec()
}

#[tokio::test]
async fn snapshot_and_training_columns_are_the_feature_catalog_in_order_with_its_types() {
    let db = TestDb::migrated().await;
    let catalog = FeatureCatalog::builtin().unwrap();
    let expected: Vec<(String, String)> = catalog
        .features()
        .iter()
        .map(|f| (f.name.clone(), f.kind.sql_type().to_owned()))
        .collect();
    for relation in [
        "snapshots",
        "training_returned_24h_after_notif",
        "training_churn_14d",
        "training_paywall",
    ] {
        assert_eq!(feature_columns(&db, relation).await, expected, "{relation}");
    }
}

#[tokio::test]
async fn snapshots_hold_what_happened_before_as_of_and_later_events_change_only_later_ones() {
    let db = TestDb::migrated().await;
    let sent = json!({"notification_id": "n-1", "notif_type": "contact_reminder", "timezone": "Asia/Tokyo"});
    ingest(
        &db,
        &[
            event(
                1,
                "app_opened",
                "u7",
                "2026-01-05T10:00:00Z",
                json!({"source": "organic"}),
            ),
            event(
                2,
                "app_opened",
                "u7",
                "2026-01-05T15:00:00Z",
                json!({"source": "organic"}),
            ),
            event(3, "notification_sent", "u7", "2026-01-07T20:00:00Z", sent),
            event(
                4,
                "notification_dismissed",
                "u7",
                "2026-01-07T20:10:00Z",
                json!({"notification_id": "n-1"}),
            ),
            event(
                5,
                "app_opened",
                "u7",
                "2026-01-08T09:00:00Z",
                json!({"source": "organic"}),
            ),
            event(
                6,
                "contact_created",
                "u7",
                "2026-01-08T09:00:30Z",
                json!({"contact_count": 12}),
            ),
            event(
                7,
                "outreach_sent",
                "u7",
                "2026-01-08T09:01:00Z",
                json!({"channel": "sms"}),
            ),
            event(
                8,
                "app_opened",
                "u8",
                "2026-01-07T12:00:00Z",
                json!({"source": "organic"}),
            ),
        ],
    )
    .await;
    refresh_days(&db, "2026-01-05", "2026-01-11").await;

    let before = snapshot(&db, "u7", "2026-01-09")
        .await
        .expect("snapshot as of 01-09");
    // Sessions started at 10:00, 15:00 and 09:00 UTC: their circular mean start hour.
    let usual_hour = before["usual_session_hour"].as_f64().expect("usual hour");
    let (sin, cos) = [10.0f64, 15.0, 9.0].iter().fold((0.0, 0.0), |(s, c), h| {
        let angle = (15.0 * h).to_radians();
        (s + angle.sin(), c + angle.cos())
    });
    let expected_hour = (sin.atan2(cos).to_degrees() / 15.0 + 24.0) % 24.0;
    assert!(
        (usual_hour - expected_hour).abs() < 1e-4,
        "usual session hour {usual_hour}, expected {expected_hour}"
    );
    let mut exact = before.clone();
    exact
        .as_object_mut()
        .expect("object")
        .remove("usual_session_hour");
    let expected = json!({
        "sessions_1d": 1, "sessions_7d": 3, "sessions_30d": 3, "active_days_7d": 2, "active_days_30d": 2,
        "events_7d": 5, "hours_since_last_session": 14.983334, "contacts_created_30d": 1, "contacts_viewed_7d": 0,
        "outreach_7d": 1, "outreach_30d": 1, "notifs_sent_7d": 1, "notifs_sent_30d": 1, "notifs_opened_7d": 0,
        "notifs_opened_30d": 0, "notifs_dismissed_7d": 1, "open_rate_30d": 0,
        "hours_since_last_notification": 28, "opted_out": false,
        "days_since_last_outreach": 0.62430555, "contact_count": 12,
        // No pricing, paywall or trial: intent 0. Magnetism: engagement 25% × 2/5 active
        // days + social returns 10% × 1/4 outreach = 10 + 2.5.
        "intent_score": 0, "magnetism_index": 12.5, "magnetism_band": "cold",
        "notifs_sent_3d": 1, "timezone": "Asia/Tokyo"
    });
    assert_eq!(exact, expected);
    // Before the notification that reported it, no timezone is known.
    assert_eq!(
        snapshot(&db, "u7", "2026-01-07").await.unwrap()["timezone"],
        Value::Null
    );
    // As of 01-05 nobody was known yet; u8 (first seen 01-07) is known from 01-08 on.
    assert_eq!(snapshot(&db, "u7", "2026-01-05").await, None);
    assert_eq!(snapshot(&db, "u8", "2026-01-07").await, None);
    assert!(snapshot(&db, "u8", "2026-01-08").await.is_some());
    // Windows roll: by 01-11 the 01-05 sessions are still in 7 days, the 01-08 day is not the last.
    let later = snapshot(&db, "u7", "2026-01-11").await.unwrap();
    assert_eq!(
        (later["sessions_1d"].clone(), later["sessions_7d"].clone()),
        (json!(0), json!(3))
    );

    // Events on 01-09 (after midnight) arrive late: the 01-09 snapshot must not move.
    ingest(
        &db,
        &[
            event(
                9,
                "app_opened",
                "u7",
                "2026-01-09T00:30:00Z",
                json!({"source": "push"}),
            ),
            event(10, "push_opt_out", "u7", "2026-01-09T01:00:00Z", json!({})),
            // The user moved: a later notification reports another timezone, and a still
            // later one a timezone Postgres does not know, which is ignored.
            event(
                11,
                "notification_sent",
                "u7",
                "2026-01-09T02:00:00Z",
                json!({"notification_id": "n-2", "notif_type": "weekly_digest", "timezone": "Europe/Berlin"}),
            ),
            event(
                12,
                "notification_sent",
                "u7",
                "2026-01-09T03:00:00Z",
                json!({"notification_id": "n-3", "notif_type": "weekly_digest", "timezone": "Mars/Olympus"}),
            ),
        ],
    )
    .await;
    refresh_days(&db, "2026-01-09", "2026-01-11").await;
    assert_eq!(snapshot(&db, "u7", "2026-01-09").await.unwrap(), before);
    let after = snapshot(&db, "u7", "2026-01-10").await.unwrap();
    assert_eq!(
        (
            after["sessions_1d"].clone(),
            after["opted_out"].clone(),
            after["timezone"].clone()
        ),
        (json!(1), json!(true), json!("Europe/Berlin"))
    );
    assert_eq!(
        snapshot(&db, "u7", "2026-01-11").await.unwrap()["opted_out"],
        json!(true)
    );
}

#[tokio::test]
async fn status_reports_freshness_lag_and_the_validation_pass_share() {
    let db = TestDb::migrated().await;
    ingest(
        &db,
        &[event(
            1,
            "app_opened",
            "u9",
            "2026-01-05T10:00:00Z",
            json!({"source": "organic"}),
        )],
    )
    .await;
    let ingestor = Ingestor::new(
        Catalog::builtin().unwrap(),
        UserHasher::new(HASH_KEY.as_bytes()),
        db.pool.clone(),
    );
    let bad = [
        json!({"event": "not_in_catalog", "distinct_id": "u9", "timestamp": "2026-01-05T11:00:00Z"}),
    ];
    assert_eq!(
        ingestor
            .ingest(Source::Capture, bad.iter().map(Ok))
            .await
            .unwrap()
            .rejected
            .len(),
        1
    );
    refresh_days(&db, "2026-01-05", "2026-01-06").await;

    let status = nudge::features::status::status(&db.pool, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        status.newest_event,
        Some("2026-01-05T10:00:00Z".parse().unwrap())
    );
    assert_eq!(status.newest_snapshot, NaiveDate::from_ymd_opt(2026, 1, 6));
    assert_eq!(status.lag(), Some(chrono::TimeDelta::zero())); // the snapshot covers the event
    assert_eq!((status.received_last_day, status.rejected_last_day), (1, 1));
    assert_eq!(status.validation_pass_share(), Some(0.5));
    assert!(status.to_string().contains("gate ≥ 95%: FAIL"), "{status}");
}

#[tokio::test]
async fn intent_and_magnetism_follow_their_weights() {
    let db = TestDb::migrated().await;
    ingest(
        &db,
        &[
            event(1, "pricing_view", "u10", "2026-01-06T10:00:00Z", json!({})),
            event(
                2,
                "paywall_view",
                "u10",
                "2026-01-06T10:01:00Z",
                json!({"placement": "settings"}),
            ),
            event(3, "trial_started", "u10", "2026-01-06T10:02:00Z", json!({})),
        ],
    )
    .await;
    refresh_days(&db, "2026-01-06", "2026-01-20").await;
    let features = |s: Value| {
        (
            s["intent_score"].clone(),
            s["magnetism_index"].clone(),
            s["magnetism_band"].clone(),
        )
    };
    // 10 + 5 + 40 points, +20 recent, +10 for three signals; magnetism: 30% of 85, plus
    // 25% × 1/5 active days.
    let fresh = snapshot(&db, "u10", "2026-01-07").await.unwrap();
    assert_eq!(features(fresh), (json!(85), json!(30.5), json!("cooling")));
    // Eight days on, the recency bonus is gone and the active day has left the 7-day window.
    let later = snapshot(&db, "u10", "2026-01-15").await.unwrap();
    assert_eq!(features(later), (json!(65), json!(19.5), json!("cold")));
}

#[tokio::test]
async fn hours_from_usual_session_is_the_circular_distance_on_the_utc_clock() {
    let db = TestDb::migrated().await;
    for (at, usual, expected) in [
        ("2026-01-09T23:00:00Z", Some(1.0f32), Some(2.0f32)),
        ("2026-01-09T05:00:00Z", Some(23.5), Some(5.5)),
        ("2026-01-09T18:30:00Z", Some(6.5), Some(12.0)),
        ("2026-01-09T12:00:00Z", Some(12.0), Some(0.0)),
        ("2026-01-09T12:00:00Z", None, None),
    ] {
        let distance: Option<f32> =
            sqlx::query_scalar("SELECT gold.hours_from_usual_session($1::timestamptz, $2)")
                .bind(at)
                .bind(usual)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(distance, expected, "{at} vs {usual:?}");
    }
}
