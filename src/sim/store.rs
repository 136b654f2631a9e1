//! The simulator's tables (schema `sim`): the population a database holds, its users'
//! traits and the ground truth. Bulk rows go in with `COPY`.

use std::fmt::Write as _;

use chrono::NaiveDate;
use sqlx::PgPool;

use super::SimConfig;
use super::day::{DayOutput, UserSim};
use super::population::Cohort;
use crate::store::copy::copy_in;

/// Version of the behavioural model. Bump it whenever a change alters the events a seed
/// draws or the truth recorded beside them, so that a database simulated by another
/// version is replaced, never topped up.
pub const SIMULATOR_VERSION: i32 = 4;

/// How a run relates to what the database already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStart {
    /// No simulated population before (or it was replaced).
    Fresh,
    /// The same population again: stored events come back as duplicates, truth is rewritten.
    Repeat,
}

/// Why the simulator's tables could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SimStoreError {
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database holds a different simulated population (or one drawn by another
    /// version of the simulator).
    #[error(
        "the database already holds another simulated population (seed {seed}, {users} users, {days} days \
         from {start}, or another simulator version); use a fresh database or --replace to delete it"
    )]
    OtherPopulation {
        /// Its seed.
        seed: i64,
        /// Its users.
        users: i32,
        /// Its days.
        days: i32,
        /// Its first day.
        start: NaiveDate,
    },
}

/// Registers the run, after clearing any earlier population if `replace`.
pub async fn prepare_run(
    pool: &PgPool,
    config: &SimConfig,
    replace: bool,
) -> Result<RunStart, SimStoreError> {
    let existing: Option<(i64, i32, i32, NaiveDate, f32, i32)> = sqlx::query_as(
        "SELECT seed, users, days, start_date, exploration, simulator FROM sim.runs",
    )
    .fetch_optional(pool)
    .await?;
    let wanted = (
        config.seed() as i64,
        config.users() as i32,
        config.days(),
        config.start(),
        config.exploration() as f32,
        SIMULATOR_VERSION,
    );
    let start = match existing {
        Some(found) if found == wanted && !replace => RunStart::Repeat,
        Some((seed, users, days, start, ..)) if !replace => {
            return Err(SimStoreError::OtherPopulation {
                seed,
                users,
                days,
                start,
            });
        }
        Some(_) => {
            delete_population(pool).await?;
            RunStart::Fresh
        }
        None => RunStart::Fresh,
    };
    sqlx::raw_sql(
        "TRUNCATE sim.users, sim.notification_truth, sim.churn_truth, sim.paywall_truth;
         DELETE FROM sim.runs;",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO sim.runs (seed, users, days, start_date, exploration, simulator) VALUES ($1, $2, $3, $4, $5, $6)",
    )
        .bind(wanted.0)
        .bind(wanted.1)
        .bind(wanted.2)
        .bind(wanted.3)
        .bind(wanted.4)
        .bind(wanted.5)
        .execute(pool)
        .await?;
    Ok(start)
}

/// Deletes the simulated population: its events, consent history, rejects and truth.
/// Events from other sources are kept.
async fn delete_population(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "BEGIN;
         DELETE FROM bronze.consent_changes WHERE user_hash IN (SELECT user_hash FROM sim.users);
         DELETE FROM bronze.events WHERE source = 'simulator';
         DELETE FROM bronze.rejects WHERE source = 'simulator';
         TRUNCATE sim.users, sim.notification_truth, sim.churn_truth, sim.paywall_truth;
         DELETE FROM sim.runs;
         COMMIT;",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A nullable COPY text field.
fn field<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "\\N".to_owned(), |v| v.to_string())
}

/// Writes every user's traits.
pub async fn write_users(
    pool: &PgPool,
    config: &SimConfig,
    users: &[UserSim],
) -> Result<(), sqlx::Error> {
    let mut data = String::with_capacity(users.len() * 160);
    for u in users {
        let t = &u.traits;
        let (cohort, signup_day) = match t.cohort {
            Cohort::Existing { .. } => ("existing", t.signup_day()),
            Cohort::New { day, .. } => ("new", day),
        };
        let signup = config.start() + chrono::TimeDelta::days(i64::from(signup_day));
        let _ = writeln!(
            data,
            "{}\t{cohort}\t{signup}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            t.user_hash,
            t.timezone_name(),
            t.preferred_hour,
            t.notify_local_hour,
            t.activity,
            t.fatigue_sensitivity,
            t.price_sensitivity,
            t.outreach_habit,
            t.consent.is_none(),
        );
    }
    copy_in(
        pool,
        "COPY sim.users (user_hash, cohort, signup_date, timezone, preferred_hour, notify_hour, activity, \
         fatigue_sensitivity, price_sensitivity, outreach_habit, in_truth) FROM STDIN",
        data,
    )
    .await?;
    Ok(())
}

/// Rows of ground truth written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruthCounts {
    /// Notifications.
    pub notifications: u64,
    /// Active user-days.
    pub churn: u64,
    /// Paywall views.
    pub paywalls: u64,
}

/// Writes a day's ground truth; `user_hashes[i]` is user `i`'s hash.
pub async fn write_truth(
    pool: &PgPool,
    out: &DayOutput,
    user_hashes: &[String],
) -> Result<TruthCounts, sqlx::Error> {
    let mut notifications = String::new();
    for n in &out.notifications {
        let _ = writeln!(
            notifications,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            n.notification_id,
            user_hashes[n.user as usize],
            n.sent_at.to_rfc3339(),
            n.notif_type.as_str(),
            field(n.propensity),
            n.p_open,
            field(n.p_return),
            field(n.p_return_attainable),
            field(n.returned),
        );
    }
    let mut churn = String::new();
    for c in &out.churn {
        let _ = writeln!(
            churn,
            "{}\t{}\t{}\t{}",
            user_hashes[c.user as usize],
            c.day,
            c.p_churn,
            field(c.churned)
        );
    }
    let mut paywalls = String::new();
    for p in &out.paywalls {
        let _ = writeln!(
            paywalls,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.event_uuid,
            user_hashes[p.user as usize],
            p.viewed_at.to_rfc3339(),
            p.placement.as_str(),
            p.p_trial,
            field(p.p_bounce),
            p.trial,
            field(p.bounced),
        );
    }
    let (a, b, c) = tokio::join!(
        copy_in(
            pool,
            "COPY sim.notification_truth (notification_id, user_hash, sent_at, notif_type, propensity, p_open, \
             p_return_24h, p_return_24h_attainable, returned_24h) FROM STDIN",
            notifications,
        ),
        copy_in(
            pool,
            "COPY sim.churn_truth (user_hash, day, p_churn_14d, churned_14d) FROM STDIN",
            churn
        ),
        copy_in(
            pool,
            "COPY sim.paywall_truth (event_uuid, user_hash, viewed_at, placement, p_trial, p_bounce, trial_24h, \
             bounced_24h) FROM STDIN",
            paywalls,
        ),
    );
    a?;
    b?;
    c?;
    Ok(TruthCounts {
        notifications: out.notifications.len() as u64,
        churn: out.churn.len() as u64,
        paywalls: out.paywalls.len() as u64,
    })
}

/// Marks the run finished, with its summary.
pub async fn finish_run(pool: &PgPool, summary: &serde_json::Value) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sim.runs SET finished_at = now(), summary = $1")
        .bind(sqlx::types::Json(summary))
        .execute(pool)
        .await?;
    Ok(())
}
