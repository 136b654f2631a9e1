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
