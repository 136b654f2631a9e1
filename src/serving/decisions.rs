//! The decision log: every `/v1/score`, `/v1/paywall` and `/v1/churn` answer goes through
//! a bounded queue to a writer task that inserts batches (up to four at once) into
//! `serving.decisions`, `serving.paywall_decisions` and `serving.churn_scores`. A request
//! never waits for Postgres: when Postgres is slow or down, batches wait and are retried;
//! only when the queue is full is an entry refused, and every refused entry is counted in
//! `nudge_decision_log_dropped_total`. A batch Postgres refuses as data (an entry it
//! cannot store) is written entry by entry, so the one bad entry is counted in
//! `nudge_decision_log_refused_total` and logged, and the others are kept.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use crate::store::copy::{self, BinaryRows, copy_in, copy_in_new};
use crate::telemetry;

/// Entries the queue holds before new ones are refused.
pub const QUEUE_CAPACITY: usize = 100_000;
/// Entries per insert.
const BATCH: usize = 250;
/// Longest a received entry waits for others to fill its batch.
const LINGER: Duration = Duration::from_millis(100);
/// Batches written at once. A write waits for its commit, and on a busy machine for a
/// core; one at a time the log falls behind (and the queue fills) once requests come
/// faster than about 25,000 a second on two cores, two at a time about 33,000
/// (BENCHMARKS.md, "Scoring load"). More writes at once keep up without making batches
/// larger, which would make each insert a longer burst of Postgres on a core the server
/// needs. They take 4 of the pool's 16 connections only while a backlog lasts.
const WRITES_IN_FLIGHT: usize = 4;
/// Longest wait between retries of a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One candidate as logged.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedCandidate {
    /// Candidate id.
    pub id: String,
    /// Notification type.
    #[serde(rename = "type")]
    pub notif_type: String,
    /// Model score, when a model ran.
    pub score: Option<f64>,
    /// Whether it was sent.
    pub send: bool,
    /// The decision's reason.
    pub reason: &'static str,
}

/// One decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Request id (the response's).
    pub request_id: Uuid,
    /// The request's time.
    pub decided_at: DateTime<Utc>,
    /// Keyed hash of the user.
    pub user_hash: String,
    /// Arm.
    pub arm: &'static str,
    /// No stored features for the user.
    pub cold_start: bool,
    /// Model version, when a model ran.
    pub model_version: Option<String>,
    /// Policy version.
    pub policy_version: String,
    /// Threshold of the model rule.
    pub threshold: f64,
    /// Candidate sent.
    pub sent: Option<String>,
    /// Candidate the model rule chose.
    pub model_choice: Option<String>,
    /// Candidate the baseline rule chose.
    pub baseline_choice: Option<String>,
    /// Every candidate.
    pub candidates: Vec<LoggedCandidate>,
}

/// One `/v1/paywall` decision.
#[derive(Debug, Clone)]
pub struct PaywallDecision {
    /// Request id (the response's).
    pub request_id: Uuid,
    /// The request's time.
    pub decided_at: DateTime<Utc>,
    /// Keyed hash of the user.
    pub user_hash: String,
    /// The paywall's placement.
    pub placement: String,
    /// Arm.
    pub arm: &'static str,
    /// No stored features for the user.
    pub cold_start: bool,
    /// `paywall_trial` version, when the models ran.
    pub trial_version: Option<String>,
    /// `paywall_bounce` version, when the models ran.
    pub bounce_version: Option<String>,
    /// Policy version.
    pub policy_version: String,
    /// P(trial), when the models ran.
    pub p_trial: Option<f64>,
    /// P(bounce), when the models ran.
    pub p_bounce: Option<f64>,
    /// Net benefit, when the models ran.
    pub net_benefit: Option<f64>,
    /// What the model rule would do, when the models ran.
    pub model_show: Option<bool>,
    /// What was answered.
    pub show: bool,
}

/// One `/v1/churn` answer: a score per user.
#[derive(Debug, Clone)]
pub struct ChurnScores {
    /// Request id (the response's).
    pub request_id: Uuid,
    /// When it was answered.
    pub scored_at: DateTime<Utc>,
    /// `churn_14d` version.
    pub model_version: String,
    /// Policy version (the bands').
    pub policy_version: String,
    /// One per user.
    pub scores: Vec<LoggedChurnScore>,
}

/// One user's churn score as logged.
#[derive(Debug, Clone)]
pub struct LoggedChurnScore {
    /// Keyed hash of the user.
    pub user_hash: String,
    /// The day of the feature snapshot scored; `None` for a cold start.
    pub features_as_of: Option<NaiveDate>,
    /// The score answered.
    pub score: f64,
    /// Its band.
    pub band: String,
}

/// An entry of the log.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A `/v1/score` decision.
    Notification(Decision),
    /// A `/v1/paywall` decision.
    Paywall(PaywallDecision),
    /// A `/v1/churn` answer.
    Churn(ChurnScores),
}

impl Entry {
    /// The request id of the answer logged.
    pub fn request_id(&self) -> Uuid {
        match self {
            Entry::Notification(d) => d.request_id,
            Entry::Paywall(d) => d.request_id,
            Entry::Churn(c) => c.request_id,
        }
    }
}

impl From<Decision> for Entry {
    fn from(decision: Decision) -> Self {
        Entry::Notification(decision)
    }
}

impl From<PaywallDecision> for Entry {
    fn from(decision: PaywallDecision) -> Self {
        Entry::Paywall(decision)
    }
}

impl From<ChurnScores> for Entry {
    fn from(scores: ChurnScores) -> Self {
        Entry::Churn(scores)
    }
}

/// The sending side of the log; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    queue: mpsc::Sender<Entry>,
}

/// The writer task; [`DecisionWriter::finish`] flushes what is queued.
pub struct DecisionWriter {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl DecisionLog {
    /// Starts the writer over `pool`.
    pub fn start(pool: PgPool) -> (Self, DecisionWriter) {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(write_batches(pool, receiver, stopped));
        (Self { queue }, DecisionWriter { task, stop })
    }

    /// Queues a decision without waiting; a full queue counts the entry as dropped.
    pub fn record(&self, entry: impl Into<Entry>) {
        match self.queue.try_send(entry.into()) {
            Ok(()) => metrics::gauge!(telemetry::DECISION_QUEUE_DEPTH)
                .set((QUEUE_CAPACITY - self.queue.capacity()) as f64),
            Err(_) => metrics::counter!(telemetry::DECISION_LOG_DROPPED).increment(1),
        }
    }
}

impl DecisionWriter {
    /// Closes the queue (later decisions count as dropped) and waits until every queued
    /// decision is written, retrying failed batches for at most `patience`.
    pub async fn finish(self, patience: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(patience, self.task).await.is_err() {
            tracing::error!(
                "decision log not flushed within {patience:?}: unwritten entries are lost"
            );
        }
    }
}

/// Writes what the queue receives, a batch at a time with up to [`WRITES_IN_FLIGHT`]
/// batches written at once, until the queue is closed and empty and every write is done.
async fn write_batches(
    pool: PgPool,
    mut receiver: mpsc::Receiver<Entry>,
    mut stop: watch::Receiver<bool>,
) {
    let mut writes = JoinSet::new();
    loop {
        if writes.len() >= WRITES_IN_FLIGHT {
            report_failed_write(writes.join_next().await);
        }
        let mut batch = Vec::with_capacity(BATCH);
        if !gather(&mut receiver, &mut stop, &mut batch, LINGER).await {
            break;
        }
        writes.spawn(write_batch(pool.clone(), batch));
        metrics::gauge!(telemetry::DECISION_QUEUE_DEPTH).set(receiver.len() as f64);
    }
    // Every write finishes, even after one has failed.
    while let Some(done) = writes.join_next().await {
        report_failed_write(Some(done));
    }
}

/// Logs a write task that ended without finishing its batch (it panicked): the batch's
/// entries are lost, and how many cannot be told.
fn report_failed_write(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        tracing::error!(error = %e, "decision log write failed; a batch is lost");
    }
}

/// Writes one batch; if Postgres refuses it as data, entry by entry, counting and logging
/// each entry refused.
async fn write_batch(pool: PgPool, batch: Vec<Entry>) {
    if write_retrying(&pool, &batch, Attempt::First).await.is_ok() {
        return;
    }
    // One table's insert may have been stored before the other's was refused.
    for entry in &batch {
        if let Err(e) = write_retrying(&pool, std::slice::from_ref(entry), Attempt::Again).await {
            metrics::counter!(telemetry::DECISION_LOG_REFUSED).increment(1);
            tracing::error!(error = %e, request_id = %entry.request_id(),
                            "decision refused by Postgres; not logged");
        }
    }
}

/// Fills `batch` with the next entries: waits for one, then gathers more for at most
/// `linger` or until the batch holds [`BATCH`], so that under load Postgres commits a few
/// large inserts a second instead of many small ones (its cost per entry falls with the
/// batch size). Once `stop` changes, the queue is closed and nothing lingers: what is
/// queued is still gathered. False when the queue is closed and empty.
async fn gather<T>(
    receiver: &mut mpsc::Receiver<T>,
    stop: &mut watch::Receiver<bool>,
    batch: &mut Vec<T>,
    linger: Duration,
) -> bool {
    loop {
        tokio::select! {
            received = receiver.recv_many(batch, BATCH) => if received == 0 { return false } else { break },
            _ = stop.changed(), if !receiver.is_closed() => receiver.close(),
        }
    }
    let gathered = tokio::time::sleep(linger);
    tokio::pin!(gathered);
    while batch.len() < BATCH && !receiver.is_closed() {
        let room = BATCH - batch.len();
        tokio::select! {
            received = receiver.recv_many(batch, room) => if received == 0 { break },
            () = &mut gathered => break,
            _ = stop.changed() => receiver.close(),
        }
    }
    true
}

/// Whether a write may find some of its rows already stored.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// A batch's first write: its request ids are new, so a binary `COPY`, the cheapest
    /// insert Postgres has (BENCHMARKS.md, "Scoring load").
    First,
    /// A write after a failure, which may have come after a commit: the rows go through a
    /// temporary table and skip those already stored (not counting them), which `COPY`
    /// alone cannot do.
    Again,
}

/// Writes `entries`, retrying with backoff while Postgres is unreachable or failing;
/// returns the error when Postgres refuses the data itself, which no retry can change.
/// Logs the first failure and the recovery, not every retry: an outage of Postgres is one
/// warning and one notice however long it lasts (`nudge_decision_log_errors_total` counts
/// each failed attempt).
async fn write_retrying(
    pool: &PgPool,
    entries: &[Entry],
    mut attempt: Attempt,
) -> Result<(), sqlx::Error> {
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    loop {
        match insert_entries(pool, entries, attempt).await {
            Ok(written) => {
                metrics::counter!(telemetry::DECISIONS_LOGGED).increment(written);
                if failures > 0 {
                    tracing::info!(
                        failures,
                        entries = entries.len(),
                        "decision log written again"
                    );
                }
                return Ok(());
            }
            Err(e) if refused_as_data(&e) => return Err(e),
            Err(e) => {
                metrics::counter!(telemetry::DECISION_LOG_ERRORS).increment(1);
                if failures == 0 {
                    tracing::warn!(error = %e, entries = entries.len(),
                                   "decision log write failed; retrying until it succeeds");
                }
                failures += 1;
                attempt = Attempt::Again;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Whether Postgres refused the rows themselves: SQLSTATE class 22 (data exception, e.g.
/// a NUL character) or 23 (integrity constraint).
fn refused_as_data(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// Inserts a batch, each kind into its table, and returns the rows written. Another
/// attempt after a partial failure re-inserts nothing twice: request ids are keys and
/// conflicts are skipped (and not counted).
async fn insert_entries(
    pool: &PgPool,
    batch: &[Entry],
    attempt: Attempt,
) -> Result<u64, sqlx::Error> {
    let mut notifications = Vec::new();
    let mut paywalls = Vec::new();
    let mut churn = Vec::new();
    for entry in batch {
        match entry {
            Entry::Notification(d) => notifications.push(d),
            Entry::Paywall(d) => paywalls.push(d),
            Entry::Churn(c) => churn.push(c),
        }
    }
    Ok(insert(pool, &notifications, attempt).await?
        + insert_paywall(pool, &paywalls, attempt).await?
        + insert_churn(pool, &churn, attempt).await?)
}

/// Writes binary `COPY` rows into `columns` of `table`: a first write copies them
/// straight in; a write again skips the rows already stored.
async fn write_rows(
    pool: &PgPool,
    (table, columns): (&str, &str),
    rows: Vec<u8>,
    attempt: Attempt,
) -> Result<u64, sqlx::Error> {
    match attempt {
        Attempt::First => {
            copy_in(
                pool,
                &format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)"),
                rows,
            )
            .await
        }
        Attempt::Again => copy_in_new(pool, table, columns, rows).await,
    }
}

async fn insert_paywall(
    pool: &PgPool,
    batch: &[&PaywallDecision],
    attempt: Attempt,
) -> Result<u64, sqlx::Error> {
    let mut rows = BinaryRows::with_capacity(batch.len() * 160);
    for d in batch {
        rows.push([
            &d.request_id,
            &d.decided_at,
            &d.user_hash,
            &d.placement,
            &d.arm,
            &d.cold_start,
            &d.trial_version.as_deref(),
            &d.bounce_version.as_deref(),
            &d.policy_version,
            &d.p_trial,
            &d.p_bounce,
            &d.net_benefit,
            &d.model_show,
            &d.show,
        ]);
    }
    let table = (
        "serving.paywall_decisions",
        "request_id, decided_at, user_hash, placement, arm, cold_start, trial_version, \
         bounce_version, policy_version, p_trial, p_bounce, net_benefit, model_show, show",
    );
    write_rows(pool, table, rows.finish(), attempt).await
}

async fn insert_churn(
    pool: &PgPool,
    batch: &[&ChurnScores],
    attempt: Attempt,
) -> Result<u64, sqlx::Error> {
    let mut rows = BinaryRows::with_capacity(batch.iter().map(|c| c.scores.len() * 160).sum());
    for c in batch {
        for s in &c.scores {
            rows.push([
                &c.request_id,
                &c.scored_at,
                &s.user_hash,
                &s.features_as_of,
                &c.model_version,
                &c.policy_version,
                &s.score,
                &s.band,
            ]);
        }
    }
    let table = (
        "serving.churn_scores",
        "request_id, scored_at, user_hash, features_as_of, model_version, policy_version, \
         score, band",
    );
    write_rows(pool, table, rows.finish(), attempt).await
}

async fn insert(pool: &PgPool, batch: &[&Decision], attempt: Attempt) -> Result<u64, sqlx::Error> {
    let ranker = super::served::Served::Ranker.name();
    let mut rows = BinaryRows::with_capacity(batch.len() * 768);
    for d in batch {
        rows.push([
            &d.request_id,
            &d.decided_at,
            &d.user_hash,
            &d.arm,
            &d.cold_start,
            &d.model_version.as_ref().map(|_| ranker),
            &d.model_version.as_deref(),
            &d.policy_version,
            &(d.threshold as f32),
            &d.sent.as_deref(),
            &d.model_choice.as_deref(),
            &d.baseline_choice.as_deref(),
            // Kept as sent: the column is `json` (migration 0019).
            &copy::Json(&d.candidates),
        ]);
    }
    let table = (
        "serving.decisions",
        "request_id, decided_at, user_hash, arm, cold_start, model_name, model_version, \
         policy_version, threshold, sent, model_choice, baseline_choice, candidates",
    );
    write_rows(pool, table, rows.finish(), attempt).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn entries_arriving_within_the_linger_share_a_batch_and_later_ones_wait_for_the_next() {
        let (queue, mut receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (_stop, mut stopped) = watch::channel(false);
        queue.try_send(1).unwrap();
        let later = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            later.try_send(2).unwrap();
            tokio::time::sleep(LINGER).await;
            later.try_send(3).unwrap();
        });
        let started = Instant::now();
        let mut batch = Vec::new();
        assert!(gather(&mut receiver, &mut stopped, &mut batch, LINGER).await);
        assert_eq!((batch.as_slice(), started.elapsed()), (&[1, 2][..], LINGER));
        batch.clear();
        assert!(gather(&mut receiver, &mut stopped, &mut batch, LINGER).await);
        assert_eq!(batch, [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_written_without_lingering() {
        let (queue, mut receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (_stop, mut stopped) = watch::channel(false);
        for i in 0..BATCH + 1 {
            queue.try_send(i).unwrap();
        }
        let started = Instant::now();
        let mut batch = Vec::new();
        assert!(gather(&mut receiver, &mut stopped, &mut batch, LINGER).await);
        assert_eq!((batch.len(), started.elapsed()), (BATCH, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_linger_at_once_and_the_queue_drains_then_ends() {
        let (queue, mut receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, mut stopped) = watch::channel(false);
        queue.try_send(1).unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stop.send(true).unwrap();
            // Held until the test ends, as the writer's handle is until the flush.
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        let mut batch = Vec::new();
        assert!(gather(&mut receiver, &mut stopped, &mut batch, LINGER).await);
        assert_eq!(
            (batch.as_slice(), started.elapsed()),
            (&[1][..], Duration::from_millis(10))
        );
        assert!(
            queue.try_send(2).is_err(),
            "a stopped log takes no new entries"
        );
        batch.clear();
        assert!(!gather(&mut receiver, &mut stopped, &mut batch, LINGER).await);
        assert!(batch.is_empty());
    }
}
