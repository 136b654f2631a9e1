//! `nudge-train features refresh`: the silver and gold refresh SQL of `notebooks-sql/`,
//! run over a day range as one transaction.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgPool};

use super::{DayRange, FeatureError};

/// Settings of the refresh transaction.
pub const SETTINGS_SQL: &str = include_str!("../../notebooks-sql/refresh_settings.sql");
/// Silver: identity links, stitched events, sessions, notification outcomes.
pub const SILVER_SQL: &str = include_str!("../../notebooks-sql/silver/refresh.sql");
/// Gold: per-user daily aggregates and point-in-time snapshots.
pub const GOLD_SQL: &str = include_str!("../../notebooks-sql/gold/refresh.sql");

/// What a refresh wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    /// The days refreshed.
    pub range: DayRange,
    /// Silver events in the range.
    pub events: i64,
    /// Sessions in the range.
    pub sessions: i64,
    /// Notifications sent in the range.
    pub notifications: i64,
    /// Snapshots taken at the end of the range's days.
    pub snapshots: i64,
}

/// Refreshes silver and gold for `range`, in one transaction. Idempotent: refreshing a
/// range twice leaves the same rows.
pub async fn refresh(pool: &PgPool, range: DayRange) -> Result<RefreshReport, FeatureError> {
    let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let script = format!("BEGIN;\n{SETTINGS_SQL}\n{SILVER_SQL}\n{GOLD_SQL}\nCOMMIT;\n");
    sqlx::raw_sql(AssertSqlSafe(range.substitute(&script)))
        .execute(pool)
        .await?;
    let (events, sessions, notifications, snapshots): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM silver.events WHERE day >= $1 AND day < $2),
                (SELECT count(*) FROM silver.sessions WHERE day >= $1 AND day < $2),
                (SELECT count(*) FROM silver.notifications
                 WHERE sent_at >= $1::timestamp AT TIME ZONE 'UTC' AND sent_at < $2::timestamp AT TIME ZONE 'UTC'),
                (SELECT count(*) FROM gold.snapshots WHERE as_of > $1 AND as_of <= $2)",
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
    Ok(RefreshReport {
        range,
        events,
        sessions,
        notifications,
        snapshots,
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
