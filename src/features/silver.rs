//! The silver layer: `notebooks-sql/silver/refresh.sql` run over a day range.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgPool};

use super::{DayRange, FeatureError};

/// The silver refresh, one transaction (see the file for what each step does).
pub const REFRESH_SQL: &str = include_str!("../../notebooks-sql/silver/refresh.sql");

/// What a refresh wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilverReport {
    /// The days refreshed.
    pub range: DayRange,
    /// Silver events in the range.
    pub events: i64,
    /// Sessions in the range.
    pub sessions: i64,
    /// Notifications sent in the range.
    pub notifications: i64,
}

/// Refreshes silver for `range`: identity links, events, sessions and notifications.
/// Idempotent: refreshing a range twice leaves the same rows.
pub async fn refresh(pool: &PgPool, range: DayRange) -> Result<SilverReport, FeatureError> {
    let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    sqlx::raw_sql(AssertSqlSafe(range.substitute(REFRESH_SQL)))
        .execute(pool)
        .await?;
    let (events, sessions, notifications): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM silver.events WHERE day >= $1 AND day < $2),
                (SELECT count(*) FROM silver.sessions WHERE day >= $1 AND day < $2),
                (SELECT count(*) FROM silver.notifications
                 WHERE sent_at >= $1::timestamp AT TIME ZONE 'UTC' AND sent_at < $2::timestamp AT TIME ZONE 'UTC')",
    )
    .bind(range.from())
    .bind(range.to())
    .fetch_one(pool)
    .await?;
    sqlx::query("INSERT INTO silver.refreshes (from_day, to_day, started_at, events) VALUES ($1, $2, $3, $4)")
        .bind(range.from())
        .bind(range.to())
        .bind(started)
        .bind(events)
        .execute(pool)
        .await?;
    Ok(SilverReport {
        range,
        events,
        sessions,
        notifications,
    })
}

/// The days a refresh should cover when none are given: from the earliest event received
/// since the last refresh started (late arrivals included) through today. `None` when nothing
/// new arrived.
pub async fn pending_range(
    pool: &PgPool,
    today: NaiveDate,
) -> Result<Option<DayRange>, FeatureError> {
    let earliest: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(ts) FROM bronze.events
         WHERE received_at >= COALESCE((SELECT max(started_at) FROM silver.refreshes), '-infinity')",
    )
    .fetch_one(pool)
    .await?;
    let Some(earliest) = earliest else {
        return Ok(None);
    };
    let from = earliest.date_naive();
    let to = today
        .succ_opt()
        .unwrap_or(today)
        .max(from.succ_opt().unwrap_or(from));
    DayRange::new(from, to).map(Some)
}
