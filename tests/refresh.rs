//! The staged refresh: chunks run side by side give exactly the rows one job gives,
//! re-running changes nothing, two refreshes never interleave, and the newest day of
//! snapshots is what the online store serves.

mod common;

use chrono::NaiveDate;
use common::TestDb;
use nudge::features::refresh::{REFRESH_LOCK, refresh_with_jobs};
use nudge::features::{DayRange, FeatureError};
use nudge::sim::SimConfig;

/// One digest per silver and gold table, over all its rows.
async fn digests(db: &TestDb) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for table in [
        "silver.identity",
        "silver.events",
        "silver.sessions",
        "silver.notifications",
        "gold.user_days",
        "gold.snapshots",
    ] {
        let (rows, digest): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        out.push((table.to_owned(), rows, digest.unwrap_or_default()));
    }
    out
}

#[tokio::test]
async fn chunks_side_by_side_give_the_rows_of_one_job_and_reruns_change_nothing() {
    let db = TestDb::migrated().await;
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    common::simulate(&db, SimConfig::new(300, 20, 5, start, 0.3).unwrap()).await;
    let range = DayRange::new(
        start.pred_opt().unwrap(),
        start + chrono::TimeDelta::days(21),
    )
    .unwrap();
    refresh_with_jobs(&db.pool, range, 1).await.unwrap();
    let one_job = digests(&db).await;
    assert!(one_job.iter().all(|(_, rows, _)| *rows > 0), "{one_job:?}");
    let report = refresh_with_jobs(&db.pool, range, 3).await.unwrap();
    assert_eq!(digests(&db).await, one_job);
    assert_eq!(report.snapshots, one_job[5].1);

    // The range split differently (a prefix first, then the rest in 4 chunks) ends the same.
    let mid = start + chrono::TimeDelta::days(9);
    refresh_with_jobs(&db.pool, DayRange::new(range.from(), mid).unwrap(), 2)
        .await
        .unwrap();
    refresh_with_jobs(&db.pool, DayRange::new(mid, range.to()).unwrap(), 4)
        .await
        .unwrap();
    assert_eq!(digests(&db).await, one_job);
}

#[tokio::test]
async fn a_refresh_is_refused_while_another_holds_the_lock() {
    let db = TestDb::migrated().await;
    let mut other = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(REFRESH_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let range = DayRange::new(day, day.succ_opt().unwrap()).unwrap();
    assert!(matches!(
        refresh_with_jobs(&db.pool, range, 2).await,
        Err(FeatureError::RefreshRunning)
    ));
    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(REFRESH_LOCK)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(released);
    refresh_with_jobs(&db.pool, range, 2).await.unwrap();
}

#[tokio::test]
async fn after_contiguous_refreshes_the_newest_day_holds_every_users_newest_snapshot() {
    let db = TestDb::migrated().await;
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    // Signups on every day, so users first seen late in the range are included.
    common::simulate(&db, SimConfig::new(200, 12, 5, start, 0.3).unwrap()).await;
    let mid = start + chrono::TimeDelta::days(6);
    let end = start + chrono::TimeDelta::days(13);
    refresh_with_jobs(
        &db.pool,
        DayRange::new(start.pred_opt().unwrap(), mid).unwrap(),
        2,
    )
    .await
    .unwrap();
    refresh_with_jobs(&db.pool, DayRange::new(mid, end).unwrap(), 2)
        .await
        .unwrap();

    let digest = |sql: String| {
        let pool = db.pool.clone();
        async move {
            let (rows, digest): (i64, Option<String>) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ({sql}) t"
                )))
                .fetch_one(&pool)
                .await
                .unwrap();
            (rows, digest)
        }
    };
    let per_user = digest(
        "SELECT DISTINCT ON (user_hash) * FROM gold.snapshots ORDER BY user_hash, as_of DESC"
            .to_owned(),
    )
    .await;
    let first_days: Vec<NaiveDate> =
        sqlx::query_scalar("SELECT min(day) FROM gold.user_days GROUP BY user_hash")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(first_days.iter().any(|d| *d > mid), "late signups exist");
    assert_eq!(per_user.0 as usize, first_days.len());
    assert_eq!(
        digest(nudge::features::materialize::LATEST_SNAPSHOTS_SQL.to_owned()).await,
        per_user
    );
}

/// The object id of `silver.events`' day index: a new one means it was built again.
async fn day_index_oid(db: &TestDb) -> u32 {
    let oid: sqlx::postgres::types::Oid =
        sqlx::query_scalar("SELECT 'silver.silver_events_day'::regclass::oid")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    oid.0
}

/// `silver.events`' index definitions, sorted.
async fn event_indexes(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'silver' AND tablename = 'events'
         ORDER BY indexname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_bulk_refresh_builds_the_indexes_it_dropped_and_a_later_one_builds_what_a_failed_one_left()
 {
    let db = TestDb::migrated().await;
    let migrated = event_indexes(&db).await;
    assert!(migrated.len() >= 3, "{migrated:?}");
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    common::simulate(&db, SimConfig::new(100, 8, 5, start, 0.3).unwrap()).await;
    let end = start + chrono::TimeDelta::days(8);

    // A first fill is a bulk load: the indexes go, and come back as they were.
    let migrated_oid = day_index_oid(&db).await;
    refresh_with_jobs(&db.pool, DayRange::new(start, end).unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(event_indexes(&db).await, migrated);
    let built_oid = day_index_oid(&db).await;
    assert_ne!(built_oid, migrated_oid, "the day index was built again");
    let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM silver.suspended_indexes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(listed, 0);

    // What a bulk load that failed half-way leaves: an index dropped and listed.
    sqlx::raw_sql(
        "INSERT INTO silver.suspended_indexes
         SELECT 'silver.silver_events_returns', indexdef FROM pg_indexes
         WHERE schemaname = 'silver' AND indexname = 'silver_events_returns';
         DROP INDEX silver.silver_events_returns;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(event_indexes(&db).await.len(), migrated.len() - 1);
    // A one-day refresh (no bulk load of its own) builds it again.
    let last = end.pred_opt().unwrap();
    refresh_with_jobs(&db.pool, DayRange::new(last, end).unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(event_indexes(&db).await, migrated);
    assert_eq!(
        day_index_oid(&db).await,
        built_oid,
        "kept through a daily refresh"
    );
}
