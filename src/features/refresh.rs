//! `nudge-train features refresh`: the silver and gold refresh SQL of `notebooks-sql/`,
//! run stage by stage over a day range, each stage's chunks side by side.

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::{DayRange, FeatureError};

/// Settings of every refresh transaction.
pub const SETTINGS_SQL: &str = include_str!("../../notebooks-sql/refresh_settings.sql");
/// Stage 1: identity links; events of late-linked ids moved to their user.
pub const IDENTITY_SQL: &str = include_str!("../../notebooks-sql/silver/identity.sql");
/// Stage 2: a range's silver events.
pub const EVENTS_SQL: &str = include_str!("../../notebooks-sql/silver/events.sql");
/// Stage 3: a range's sessions and notification outcomes.
pub const DERIVED_SQL: &str = include_str!("../../notebooks-sql/silver/derived.sql");
/// Stage 4: a range's per-user daily aggregates.
pub const USER_DAYS_SQL: &str = include_str!("../../notebooks-sql/gold/user_days.sql");
/// Stage 5: the snapshots as of a range's day ends.
pub const SNAPSHOTS_SQL: &str = include_str!("../../notebooks-sql/gold/snapshots.sql");

/// Session-level advisory lock held by a refresh, so two never interleave.
pub const REFRESH_LOCK: i64 = 0x6e75_6467_655f_7266; // "nudge_rf"

/// Forgets silver and gold from `from` on (bronze keeps every event): what a replaced
/// simulated population leaves there would otherwise outlive it beyond the days refreshed
/// again, and the online store would serve its newest snapshots.
pub async fn forget_from(pool: &PgPool, from: NaiveDate) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for statement in [
        "DELETE FROM silver.events WHERE day >= $1",
        "DELETE FROM silver.sessions WHERE day >= $1",
        "DELETE FROM silver.notifications WHERE sent_at >= $1::date::timestamptz",
        "DELETE FROM silver.restitched_days WHERE day >= $1",
        "DELETE FROM gold.user_days WHERE day >= $1",
        "DELETE FROM gold.snapshots WHERE as_of >= $1",
    ] {
        sqlx::query(statement).bind(from).execute(&mut *tx).await?;
    }
    tx.commit().await
}

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
    /// Days outside the range whose events a late identity link moved (rebuilt too).
    pub restitched_days: usize,
}

/// Refreshes silver and gold for `range` with one job per core.
pub async fn refresh(pool: &PgPool, range: DayRange) -> Result<RefreshReport, FeatureError> {
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    refresh_with_jobs(pool, range, jobs).await
}

/// Refreshes silver and gold for `range`: the stages of `notebooks-sql/` in order, each
/// stage split into `jobs` chunks run side by side (one transaction each): chunks of
/// days for silver and the daily aggregates, partitions of users for the snapshots. Idempotent: refreshing a range twice leaves the same rows. Refused while
/// another refresh holds the lock.
pub async fn refresh_with_jobs(
    pool: &PgPool,
    range: DayRange,
    jobs: usize,
) -> Result<RefreshReport, FeatureError> {
    // A connection of its own: the session lock goes when it closes, whatever happens.
    let mut lock = PgConnection::connect_with(&pool.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(REFRESH_LOCK)
        .fetch_one(&mut lock)
        .await?;
    if !locked {
        return Err(FeatureError::RefreshRunning);
    }
    let report = run_stages(pool, range, jobs.max(1)).await;
    let _ = lock.close().await;
    report
}

async fn run_stages(
    pool: &PgPool,
    range: DayRange,
    jobs: usize,
) -> Result<RefreshReport, FeatureError> {
    let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let stage = std::time::Instant::now();

    sqlx::raw_sql(AssertSqlSafe(format!(
        "BEGIN;\n{SETTINGS_SQL}\n{IDENTITY_SQL}\nCOMMIT;\n"
    )))
    .execute(pool)
    .await?;
    // Includes days a failed refresh left to rebuild.
    let restitched: Vec<NaiveDate> =
        sqlx::query_scalar("SELECT day FROM silver.restitched_days ORDER BY day")
            .fetch_all(pool)
            .await?;

    tracing::info!(
        elapsed_s = stage.elapsed().as_secs_f64(),
        "refresh stage 1 (identity) done"
    );
    load_events(pool, range, jobs).await?;
    analyze(pool, &["silver.events"]).await?;
    // A notification sent the day before the range may be opened in it.
    let widened = DayRange::new(range.from().pred_opt().unwrap_or(range.from()), range.to())?;
    let outside: Vec<NaiveDate> = restitched
        .iter()
        .copied()
        .filter(|d| !widened.contains(*d))
        .collect();
    let mut derived = widened.split(jobs);
    derived.extend(
        outside
            .iter()
            .filter_map(|d| DayRange::new(*d, d.succ_opt()?).ok()),
    );
    let derived_sql = format!("{DERIVED_SQL}\n{USER_DAYS_SQL}");
    run_chunks(pool, "derived", by_days(&derived_sql, derived), jobs).await?;
    analyze(
        pool,
        &["silver.sessions", "silver.notifications", "gold.user_days"],
    )
    .await?;
    sqlx::query("DELETE FROM silver.restitched_days WHERE day = ANY($1)")
        .bind(&restitched)
        .execute(pool)
        .await?;
    run_chunks(pool, "snapshots", by_users(range, jobs), jobs).await?;
    analyze(pool, &["gold.snapshots"]).await?;

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
        restitched_days: outside.len(),
    })
}

/// Stage 2. When the range rewrites most of `silver.events` (a first fill or a backfill),
/// its secondary indexes are dropped first and built once afterwards: maintaining them
/// row by row took most of the stage's time. Indexes a failed bulk load left suspended
/// are built first, whatever this refresh covers.
async fn load_events(pool: &PgPool, range: DayRange, jobs: usize) -> Result<(), FeatureError> {
    restore_indexes(pool).await?;
    let stored: (Option<NaiveDate>, Option<NaiveDate>) =
        sqlx::query_as("SELECT min(day), max(day) FROM silver.events")
            .fetch_one(pool)
            .await?;
    let bulk = match stored {
        (Some(first), Some(last)) => range.days() > range.days_kept_of(first, last),
        _ => true,
    };
    if bulk {
        suspend_indexes(pool, "silver", "events").await?;
    }
    let loaded = run_chunks(pool, "events", by_days(EVENTS_SQL, range.split(jobs)), jobs).await;
    // Built again even when the load failed: the table is usable either way.
    let restored = restore_indexes(pool).await;
    loaded?;
    restored
}

/// Drops the indexes of `schema.table` that back no constraint, recording each
/// definition in `silver.suspended_indexes` in the same transaction.
async fn suspend_indexes(pool: &PgPool, schema: &str, table: &str) -> Result<(), FeatureError> {
    let mut tx = pool.begin().await?;
    let names: Vec<String> = sqlx::query_scalar(
        "INSERT INTO silver.suspended_indexes (name, definition)
         SELECT quote_ident(i.schemaname) || '.' || quote_ident(i.indexname), i.indexdef
         FROM pg_indexes i
         WHERE i.schemaname = $1 AND i.tablename = $2
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                           WHERE c.conindid = to_regclass(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname)))
         RETURNING name",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    for name in &names {
        // The name comes from the catalog, quoted by quote_ident.
        sqlx::raw_sql(AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(indexes = %names.join(", "), "indexes suspended for a bulk load");
    Ok(())
}

/// Builds every index `silver.suspended_indexes` lists, in one transaction that also
/// empties the list.
async fn restore_indexes(pool: &PgPool) -> Result<(), FeatureError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("SET LOCAL maintenance_work_mem = '1GB'")
        .execute(&mut *tx)
        .await?;
    // One already there again (built by hand, say) is left as it is.
    let suspended: Vec<(String, String)> = sqlx::query_as(
        "WITH listed AS (DELETE FROM silver.suspended_indexes RETURNING name, definition)
         SELECT name, definition FROM listed WHERE to_regclass(name) IS NULL ORDER BY name",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (_, definition) in &suspended {
        // Definitions come from pg_indexes.indexdef.
        sqlx::raw_sql(AssertSqlSafe(definition.clone()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if suspended.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = suspended.iter().map(|(name, _)| name.as_str()).collect();
    tracing::info!(
        indexes = %names.join(", "),
        elapsed_s = started.elapsed().as_secs_f64(),
        "indexes built"
    );
    Ok(())
}

/// Refreshes the planner's statistics of tables a stage rewrote, so the next stage (and
/// the label and training views) are planned for what the tables now hold rather than
/// for whenever autovacuum last looked.
async fn analyze(pool: &PgPool, tables: &[&str]) -> Result<(), FeatureError> {
    let started = std::time::Instant::now();
    sqlx::raw_sql(AssertSqlSafe(format!("ANALYZE {}", tables.join(", "))))
        .execute(pool)
        .await?;
    tracing::info!(
        tables = %tables.join(", "),
        elapsed_s = started.elapsed().as_secs_f64(),
        "statistics refreshed"
    );
    Ok(())
}

/// `sql` once per chunk of days.
fn by_days(sql: &str, chunks: Vec<DayRange>) -> Vec<String> {
    chunks.iter().map(|chunk| chunk.substitute(sql)).collect()
}

/// The snapshot SQL over the whole `range` once per partition of users: a day chunk
/// would rebuild the 29-day warm-up of the grid, a user partition only its own users.
fn by_users(range: DayRange, parts: usize) -> Vec<String> {
    let sql = range
        .substitute(SNAPSHOTS_SQL)
        .replace(":'parts'", &format!("'{parts}'"));
    (0..parts)
        .map(|part| sql.replace(":'part'", &format!("'{part}'")))
        .collect()
}

/// Runs each chunk's SQL in its own transaction after the settings, at most `jobs` at a
/// time; the first error stops the stage.
async fn run_chunks(
    pool: &PgPool,
    stage: &str,
    chunks: Vec<String>,
    jobs: usize,
) -> Result<(), FeatureError> {
    let started = std::time::Instant::now();
    let count = chunks.len();
    futures_util::stream::iter(chunks)
        .map(|sql| async move {
            let script = format!("BEGIN;\n{SETTINGS_SQL}\n{sql}\nCOMMIT;\n");
            sqlx::raw_sql(AssertSqlSafe(script)).execute(pool).await
        })
        .buffer_unordered(jobs)
        .try_collect::<Vec<_>>()
        .await?;
    tracing::info!(
        stage,
        chunks = count,
        elapsed_s = started.elapsed().as_secs_f64(),
        "refresh stage done"
    );
    Ok(())
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
