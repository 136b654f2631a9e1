//! `nudge-train simulate`: the population simulated day by day under the logging policy,
//! its events ingested through the production ingest path, its truth stored.
//!
//! The simulation runs on a blocking thread, a day ahead of the writer, while each day's
//! events are ingested in batches on concurrent connections. Days are written in order
//! (a day's batches all finish before the next day's start), so a consent change is
//! always stored before the events it governs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::day::DayOutput;
use super::policy::{Decision, LoggingPolicy, Opportunity};
use super::store::{self, RunStart, SimStoreError, TruthCounts};
use super::{SimConfig, Simulation};
use crate::ingest::catalog::{Catalog, CatalogError};
use crate::ingest::event::Source;
use crate::ingest::hashing::UserHasher;
use crate::ingest::{IngestError, IngestReport, Ingestor};

/// How a run writes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Events per ingest batch (batches split between users).
    pub batch_size: usize,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// Delete the simulated population the database holds, if any, and simulate afresh.
    pub replace: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            concurrency: 3,
            replace: false,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimRunError {
    /// The simulator's tables.
    #[error(transparent)]
    Store(#[from] SimStoreError),
    /// Ingesting events.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The built-in event catalog is broken.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The simulation thread stopped unexpectedly.
    #[error("simulation thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

impl From<sqlx::Error> for SimRunError {
    fn from(e: sqlx::Error) -> Self {
        SimRunError::Store(SimStoreError::Database(e))
    }
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Users simulated.
    pub users: u32,
    /// Days simulated.
    pub days: i32,
    /// Seed.
    pub seed: u64,
    /// Whether the database held this population already.
    pub repeat: bool,
    /// Events emitted, by name.
    pub emitted: BTreeMap<&'static str, u64>,
    /// Events stored now.
    pub accepted: u64,
    /// Events already stored (a repeated run).
    pub duplicates: u64,
    /// Events refused, by reason (consent withdrawals are the expected ones).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Notification truths written.
    pub notification_truths: u64,
    /// Churn truths written.
    pub churn_truths: u64,
    /// Paywall truths written.
    pub paywall_truths: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl RunSummary {
    /// Events emitted in all.
    pub fn total_emitted(&self) -> u64 {
        self.emitted.values().sum()
    }

    /// Events emitted per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.total_emitted() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn absorb_ingest(&mut self, report: &IngestReport) {
        self.accepted += report.accepted as u64;
        self.duplicates += report.duplicates as u64;
        for r in &report.rejected {
            *self.rejected.entry(r.reason).or_default() += 1;
        }
    }

    fn absorb_truth(&mut self, counts: TruthCounts) {
        self.notification_truths += counts.notifications;
        self.churn_truths += counts.churn;
        self.paywall_truths += counts.paywalls;
    }

    fn absorb_counts(&mut self, counts: &BTreeMap<&'static str, u64>) {
        for (name, n) in counts {
            *self.emitted.entry(name).or_default() += n;
        }
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.total_emitted();
        writeln!(
            f,
            "simulated {} users × {} days (seed {}) in {:.1} s: {} events, {:.0} events/s{}",
            self.users,
            self.days,
            self.seed,
            self.elapsed.as_secs_f64(),
            total,
            self.events_per_second(),
            if self.repeat {
                " (population already stored: a repeat)"
            } else {
                ""
            }
        )?;
        let refused: u64 = self.rejected.values().sum();
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            f,
            "  ingested: {} stored, {} duplicates, {} refused{}",
            self.accepted,
            self.duplicates,
            refused,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            }
        )?;
        writeln!(f, "  events by type:")?;
        for (name, n) in &self.emitted {
            writeln!(f, "    {name:<28} {n:>12}")?;
        }
        let count = |name: &str| self.emitted.get(name).copied().unwrap_or(0) as f64;
        let sent = count("notification_sent").max(1.0);
        writeln!(
            f,
            "  per notification sent: {:.1}% opened, {:.1}% dismissed, {:.2}% opted out",
            100.0 * count("notification_opened") / sent,
            100.0 * count("notification_dismissed") / sent,
            100.0 * count("push_opt_out") / sent
        )?;
        write!(
            f,
            "  ground truth: {} notifications, {} active user-days, {} paywall views",
            self.notification_truths, self.churn_truths, self.paywall_truths
        )
    }
}

/// Splits a day's events into batches of about `size`, only between users.
fn batches(events: Vec<Value>, user_ends: &[usize], size: usize) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut events = events.into_iter();
    let mut taken = 0;
    let mut batch_end = 0;
    for &end in user_ends {
        if end - taken >= size.max(1) {
            out.push(events.by_ref().take(end - taken).collect());
            taken = end;
        }
        batch_end = end;
    }
    if batch_end > taken {
        out.push(events.collect());
    }
    out
}

/// Simulates `config` into the database behind `pool` under the logging policy;
/// `progress` counts days.
pub async fn run(
    config: SimConfig,
    hasher: UserHasher,
    pool: PgPool,
    options: RunOptions,
    progress: &ProgressBar,
) -> Result<RunSummary, SimRunError> {
    let days = config.days();
    let mut driver = SimDriver::start(config, hasher, pool, options).await?;
    driver.play_logged(days, progress).await?;
    driver.finish().await
}

/// Writes a played day: its events through the ingest path (concurrent batches split
/// only between users), its truths to the sim schema.
struct DayWriter {
    ingestor: Ingestor,
    pool: PgPool,
    user_hashes: Arc<Vec<String>>,
    options: RunOptions,
}

impl DayWriter {
    async fn write(&self, mut out: DayOutput, summary: &mut RunSummary) -> Result<(), SimRunError> {
        summary.absorb_counts(&out.event_counts);
        let events = std::mem::take(&mut out.events);
        let user_ends = std::mem::take(&mut out.user_ends);
        let truth = {
            let (pool, hashes) = (self.pool.clone(), self.user_hashes.clone());
            tokio::spawn(async move { store::write_truth(&pool, &out, &hashes).await })
        };
        let mut tasks: JoinSet<Result<IngestReport, IngestError>> = JoinSet::new();
        for batch in batches(events, &user_ends, self.options.batch_size) {
            while tasks.len() >= self.options.concurrency.max(1) {
                if let Some(done) = tasks.join_next().await {
                    summary.absorb_ingest(&done??);
                }
            }
            let ingestor = self.ingestor.clone();
            tasks.spawn(async move {
                ingestor
                    .ingest(Source::Simulator, batch.iter().map(Ok))
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            summary.absorb_ingest(&done??);
        }
        summary.absorb_truth(truth.await??);
        Ok(())
    }
}

/// A simulation in progress: the population, the day it has reached, and its writer.
/// Days are played under the logging policy ([`SimDriver::play_logged`]) or with
/// decisions from elsewhere, such as `nudge-serve` in closed loop
/// ([`SimDriver::plan`] then [`SimDriver::play`]).
pub struct SimDriver {
    sim: Option<Simulation>,
    writer: DayWriter,
    summary: RunSummary,
    next_day: i32,
    days: i32,
    started: Instant,
}

impl SimDriver {
    /// Draws the population of `config` and stores it (replacing the stored one when
    /// `options.replace`); no day is played yet.
    pub async fn start(
        config: SimConfig,
        hasher: UserHasher,
        pool: PgPool,
        options: RunOptions,
    ) -> Result<Self, SimRunError> {
        let started = Instant::now();
        let start = store::prepare_run(&pool, &config, options.replace).await?;
        let sim = {
            let (config, hasher) = (config.clone(), hasher.clone());
            tokio::task::spawn_blocking(move || Simulation::new(config, &hasher)).await?
        };
        store::write_users(&pool, &config, sim.users()).await?;
        let user_hashes = Arc::new(
            sim.users()
                .iter()
                .map(|u| u.traits.user_hash.clone())
                .collect(),
        );
        Ok(Self {
            sim: Some(sim),
            writer: DayWriter {
                ingestor: Ingestor::new(Catalog::builtin()?, hasher, pool.clone()),
                pool,
                user_hashes,
                options,
            },
            summary: RunSummary {
                users: config.users(),
                days: config.days(),
                seed: config.seed(),
                repeat: start == RunStart::Repeat,
                emitted: BTreeMap::new(),
                accepted: 0,
                duplicates: 0,
                rejected: BTreeMap::new(),
                notification_truths: 0,
                churn_truths: 0,
                paywall_truths: 0,
                elapsed: Duration::ZERO,
            },
            next_day: 0,
            days: config.days(),
            started,
        })
    }

    /// The next day to play (0 = the first).
    pub fn next_day(&self) -> i32 {
        self.next_day
    }

    /// Days left before the horizon.
    pub fn days_left(&self) -> i32 {
        self.days - self.next_day
    }

    fn take_sim(&mut self) -> Simulation {
        self.sim
            .take()
            .expect("the simulation is back between calls")
    }

    /// Plays the next `days` days under the logging policy, simulating a day ahead of
    /// the writer; `progress` counts days.
    pub async fn play_logged(
        &mut self,
        days: i32,
        progress: &ProgressBar,
    ) -> Result<(), SimRunError> {
        let (first, last) = (self.next_day, (self.next_day + days).min(self.days));
        let (tx, mut rx) = mpsc::channel::<DayOutput>(2);
        let mut sim = self.take_sim();
        let generator = tokio::task::spawn_blocking(move || {
            let mut policy = LoggingPolicy::new(sim.config().seed(), sim.config().exploration());
            for day in first..last {
                if tx.blocking_send(sim.step(day, &mut policy)).is_err() {
                    break;
                }
            }
            sim
        });
        progress.set_length((last - first) as u64);
        let mut written = Ok(());
        while let Some(out) = rx.recv().await {
            if let Err(e) = self.writer.write(out, &mut self.summary).await {
                written = Err(e);
                break;
            }
            progress.inc(1);
            progress.set_message(format!(
                "{} events, {:.0}/s",
                self.summary.total_emitted(),
                self.summary.total_emitted() as f64 / self.started.elapsed().as_secs_f64()
            ));
        }
        drop(rx);
        self.sim = Some(generator.await?);
        written?;
        self.next_day = last;
        Ok(())
    }

    /// The next day's notification opportunities, in user order.
    pub async fn plan(&mut self) -> Result<Vec<Opportunity>, SimRunError> {
        let mut sim = self.take_sim();
        let day = self.next_day;
        let (sim, opportunities) = tokio::task::spawn_blocking(move || {
            let opportunities = sim.plan_day(day);
            (sim, opportunities)
        })
        .await?;
        self.sim = Some(sim);
        Ok(opportunities)
    }

    /// Plays the planned day with one decision per opportunity and writes it.
    pub async fn play(
        &mut self,
        opportunities: Vec<Opportunity>,
        decisions: Vec<Decision>,
    ) -> Result<(), SimRunError> {
        let mut sim = self.take_sim();
        let day = self.next_day;
        let (sim, out) = tokio::task::spawn_blocking(move || {
            // The deciding policy's probabilities are unknown: truths that need them are left out.
            let out = sim.play_day(day, &opportunities, &decisions, &|_: &Opportunity| None);
            (sim, out)
        })
        .await?;
        self.sim = Some(sim);
        self.writer.write(out, &mut self.summary).await?;
        self.next_day += 1;
        Ok(())
    }

    /// Closes what the horizon leaves open, writes it, and records the run's summary.
    pub async fn finish(mut self) -> Result<RunSummary, SimRunError> {
        let mut sim = self.take_sim();
        let out = tokio::task::spawn_blocking(move || sim.finish()).await?;
        self.writer.write(out, &mut self.summary).await?;
        self.summary.days = self.next_day;
        self.summary.elapsed = self.started.elapsed();
        store::finish_run(
            &self.writer.pool,
            &serde_json::to_value(&self.summary).unwrap_or_default(),
        )
        .await?;
        Ok(self.summary)
    }
}
