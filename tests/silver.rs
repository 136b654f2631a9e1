//! The silver layer on hand-made event sequences with known answers: identity stitching
//! (also when the link arrives late), sessions (30-minute gaps, midnight, out-of-order
//! arrival, re-sent events), notification outcomes, and idempotent refreshes.

mod common;

use chrono::NaiveDate;
use common::{HASH_KEY, TestDb, ingest_all as ingest, numbered_event as event};
use nudge::features::{DayRange, refresh};
use nudge::ingest::hashing::UserHasher;
use serde_json::{Value, json};

fn hash(id: &str) -> String {
    UserHasher::new(HASH_KEY.as_bytes()).hash(id)
}

fn opened(n: u32, who: &str, ts: &str) -> Value {
    event(n, "app_opened", who, ts, json!({"source": "organic"}))
}

fn days(from: &str, to: &str) -> DayRange {
    DayRange::new(
        from.parse::<NaiveDate>().unwrap(),
        to.parse::<NaiveDate>().unwrap(),
    )
    .unwrap()
}

async fn sessions(db: &TestDb, who: &str) -> Vec<(String, String, i32, String)> {
    sqlx::query_as(
        "SELECT to_char(started_at AT TIME ZONE 'UTC', 'MM-DD HH24:MI'), to_char(ended_at AT TIME ZONE 'UTC', 'MM-DD HH24:MI'),
                events, source
         FROM silver.sessions WHERE user_hash = $1 ORDER BY started_at",
    )
    .bind(hash(who))
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn anonymous_events_count_for_the_user_who_identifies() {
    let db = TestDb::migrated().await;
    ingest(
        &db,
        &[
            event(
                1,
                "landing_view",
                "anon-1",
                "2026-01-05T10:00:00Z",
                json!({}),
            ),
            event(
                2,
                "app_opened",
                "anon-1",
                "2026-01-05T10:05:00Z",
                json!({"source": "organic"}),
            ),
            event(
                3,
                "signup_completed",
                "u1",
                "2026-01-05T10:07:00Z",
                json!({}),
            ),
            event(
                4,
                "$identify",
                "u1",
                "2026-01-05T10:07:01Z",
                json!({"$anon_distinct_id": "anon-1"}),
            ),
            event(
                5,
                "contact_created",
                "u1",
                "2026-01-05T10:09:00Z",
                json!({}),
            ),
        ],
    )
    .await;
    refresh::refresh(&db.pool, days("2026-01-05", "2026-01-06"))
        .await
        .unwrap();
    let stitched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM silver.events WHERE user_hash = $1")
            .bind(hash("u1"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stitched, 5);
    // The anonymous app open and the signup are one session of u1; landing_view is not in-app.
    assert_eq!(
        sessions(&db, "u1").await,
        vec![(
            "01-05 10:05".into(),
            "01-05 10:09".into(),
            3,
            "organic".into()
        )]
    );
    assert!(sessions(&db, "anon-1").await.is_empty());
}

#[tokio::test]
async fn a_link_that_arrives_late_moves_earlier_days_to_the_user() {
    let db = TestDb::migrated().await;
    ingest(
        &db,
        &[
            opened(1, "anon-2", "2026-01-05T08:00:00Z"),
            opened(2, "u2", "2026-01-06T09:00:00Z"),
        ],
    )
    .await;
    refresh::refresh(&db.pool, days("2026-01-05", "2026-01-07"))
        .await
        .unwrap();
    assert_eq!(sessions(&db, "anon-2").await.len(), 1);

    // The identify comes two days later; only its day is refreshed.
    ingest(
        &db,
        &[event(
            3,
            "$identify",
            "u2",
            "2026-01-07T12:00:00Z",
            json!({"$anon_distinct_id": "anon-2"}),
        )],
    )
    .await;
    refresh::refresh(&db.pool, days("2026-01-07", "2026-01-08"))
        .await
        .unwrap();
    assert!(sessions(&db, "anon-2").await.is_empty());
    let starts: Vec<String> = sessions(&db, "u2").await.into_iter().map(|s| s.0).collect();
    assert_eq!(starts, ["01-05 08:00", "01-06 09:00"]);
}

#[tokio::test]
async fn sessions_split_on_thirty_minute_gaps_and_at_midnight_whatever_the_arrival_order() {
    let late = [
        opened(5, "u3", "2026-01-05T23:50:00Z"),
        opened(6, "u3", "2026-01-06T00:10:00Z"),
        event(4, "contact_viewed", "u3", "2026-01-05T11:10:00Z", json!({})),
    ];
    let early = [
        opened(1, "u3", "2026-01-05T10:00:00Z"),
        event(2, "contact_viewed", "u3", "2026-01-05T10:10:00Z", json!({})),
        event(3, "contact_viewed", "u3", "2026-01-05T10:39:00Z", json!({})), // 29 min gap
        event(
            7,
            "notification_sent",
            "u3",
            "2026-01-05T10:50:00Z",
            json!({"notification_id": "n1", "notif_type": "x"}),
        ),
        // A crash report is not activity: it would join the 10:00 and 11:10 sessions.
        event(
            8,
            "$exception",
            "u3",
            "2026-01-05T10:45:00Z",
            json!({"$exception_level": "fatal"}),
        ),
    ];
    let expected: Vec<(String, String, i32, String)> = vec![
        (
            "01-05 10:00".into(),
            "01-05 10:39".into(),
            3,
            "organic".into(),
        ),
        (
            "01-05 11:10".into(),
            "01-05 11:10".into(),
            1,
            "organic".into(),
        ), // 31 min gap
        (
            "01-05 23:50".into(),
            "01-05 23:50".into(),
            1,
            "organic".into(),
        ),
        (
            "01-06 00:10".into(),
            "01-06 00:10".into(),
            1,
            "organic".into(),
        ), // midnight
    ];
    let in_order = TestDb::migrated().await;
    ingest(&in_order, &early).await;
    ingest(&in_order, &late).await;
    let reversed = TestDb::migrated().await;
    ingest(&reversed, &late).await;
    ingest(&reversed, &early).await;
    ingest(&reversed, &early).await; // re-sent: same uuids, stored once
    for db in [&in_order, &reversed] {
        refresh::refresh(&db.pool, days("2026-01-05", "2026-01-07"))
            .await
            .unwrap();
        assert_eq!(sessions(db, "u3").await, expected);
    }
}

#[tokio::test]
async fn notifications_carry_their_open_or_dismissal_even_across_midnight() {
    let db = TestDb::migrated().await;
    let sent = |n, id: &str, ts| {
        event(
            n,
            "notification_sent",
            "u4",
            ts,
            json!({"notification_id": id, "notif_type": "contact_reminder", "arm": "logging", "propensity": 0.8}),
        )
    };
    ingest(
        &db,
        &[
            sent(1, "n-a", "2026-01-05T09:00:00Z"),
            event(
                2,
                "notification_opened",
                "u4",
                "2026-01-05T09:05:00Z",
                json!({"notification_id": "n-a"}),
            ),
            sent(3, "n-b", "2026-01-05T12:00:00Z"),
            event(
                4,
                "notification_dismissed",
                "u4",
                "2026-01-05T12:01:00Z",
                json!({"notification_id": "n-b"}),
            ),
            sent(5, "n-c", "2026-01-05T23:55:00Z"),
        ],
    )
    .await;
    refresh::refresh(&db.pool, days("2026-01-05", "2026-01-06"))
        .await
        .unwrap();
    ingest(
        &db,
        &[event(
            6,
            "notification_opened",
            "u4",
            "2026-01-06T00:05:00Z",
            json!({"notification_id": "n-c"}),
        )],
    )
    .await;
    refresh::refresh(&db.pool, days("2026-01-06", "2026-01-07"))
        .await
        .unwrap();
    let rows: Vec<(String, bool, bool, f32)> = sqlx::query_as(
        "SELECT notification_id, opened_at IS NOT NULL, dismissed_at IS NOT NULL, propensity
         FROM silver.notifications ORDER BY notification_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("n-a".into(), true, false, 0.8),
            ("n-b".into(), false, true, 0.8),
            ("n-c".into(), true, false, 0.8)
        ]
    );
}

#[tokio::test]
async fn refreshing_a_range_twice_changes_nothing() {
    let db = TestDb::migrated().await;
    ingest(
        &db,
        &[
            opened(1, "u5", "2026-01-05T10:00:00Z"),
            opened(2, "u5", "2026-01-06T10:00:00Z"),
        ],
    )
    .await;
    let digest = "SELECT md5(string_agg(user_hash || started_at::text || events::text, '|' ORDER BY user_hash, started_at))
                  FROM silver.sessions";
    let first = refresh::refresh(&db.pool, days("2026-01-05", "2026-01-07"))
        .await
        .unwrap();
    let before: String = db.scalar(digest).await;
    let second = refresh::refresh(&db.pool, days("2026-01-05", "2026-01-07"))
        .await
        .unwrap();
    assert_eq!(
        (first.events, first.sessions),
        (second.events, second.sessions)
    );
    assert_eq!((second.events, second.sessions), (2, 2));
    assert_eq!(db.scalar::<String>(digest).await, before);
    assert_eq!(db.count("SELECT count(*) FROM silver.events").await, 2);
}

#[tokio::test]
async fn the_default_range_starts_at_the_oldest_event_received_since_the_last_refresh() {
    let db = TestDb::migrated().await;
    let today = "2026-01-20".parse::<NaiveDate>().unwrap();
    assert_eq!(refresh::pending_range(&db.pool, today).await.unwrap(), None);
    ingest(&db, &[opened(1, "u6", "2026-01-10T10:00:00Z")]).await;
    let first = refresh::pending_range(&db.pool, today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, days("2026-01-10", "2026-01-21"));
    refresh::refresh(&db.pool, first).await.unwrap();
    assert_eq!(refresh::pending_range(&db.pool, today).await.unwrap(), None);
    // A late event for an earlier day pulls the range back to it.
    ingest(&db, &[opened(2, "u6", "2026-01-07T10:00:00Z")]).await;
    assert_eq!(
        refresh::pending_range(&db.pool, today).await.unwrap(),
        Some(days("2026-01-07", "2026-01-21"))
    );
}
