//! The decision log: every `/v1/score` answer goes through a bounded queue to a writer
//! task that inserts batches into `serving.decisions`. A request never waits for
//! Postgres: when Postgres is slow or down, batches wait and are retried; only when the
//! queue is full is an entry refused, and every refused entry is counted in
//! `nudge_decision_log_dropped_total`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::telemetry;

/// Entries the queue holds before new ones are refused.
pub const QUEUE_CAPACITY: usize = 100_000;
/// Entries per insert.
const BATCH: usize = 1_000;
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

/// The sending side of the log; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    queue: mpsc::Sender<Decision>,
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
    pub fn record(&self, decision: Decision) {
        match self.queue.try_send(decision) {
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

async fn write_batches(
    pool: PgPool,
    mut receiver: mpsc::Receiver<Decision>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH) => if received == 0 { break },
            // Stop taking new entries; what is queued is still received, then 0 ends the loop.
            _ = stop.changed() => { receiver.close(); continue; }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match insert(&pool, &batch).await {
                Ok(()) => {
                    metrics::counter!(telemetry::DECISIONS_LOGGED).increment(batch.len() as u64);
                    break;
                }
                Err(e) => {
                    metrics::counter!(telemetry::DECISION_LOG_ERRORS).increment(1);
                    tracing::warn!(error = %e, entries = batch.len(), "decision log write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        batch.clear();
        metrics::gauge!(telemetry::DECISION_QUEUE_DEPTH).set(receiver.len() as f64);
    }
}

async fn insert(pool: &PgPool, batch: &[Decision]) -> Result<(), sqlx::Error> {
    let column = |f: fn(&Decision) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    let candidates: Vec<serde_json::Value> = batch
        .iter()
        .map(|d| serde_json::to_value(&d.candidates).unwrap_or(serde_json::Value::Null))
        .collect();
    sqlx::query(
        "INSERT INTO serving.decisions
           (request_id, decided_at, user_hash, arm, cold_start, model_name, model_version,
            policy_version, threshold, sent, model_choice, baseline_choice, candidates)
         SELECT r, d, u, a, c, CASE WHEN v IS NOT NULL THEN $13 END, v, p, t, s, m, b, j
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bool[],
                     $6::text[], $7::text[], $8::real[], $9::text[], $10::text[], $11::text[],
                     $12::jsonb[])
              AS x(r, d, u, a, c, v, p, t, s, m, b, j)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(batch.iter().map(|d| d.request_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|d| d.decided_at).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|d| d.user_hash.clone())
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|d| d.arm.to_owned()).collect::<Vec<_>>())
    .bind(batch.iter().map(|d| d.cold_start).collect::<Vec<_>>())
    .bind(column(|d| d.model_version.clone()))
    .bind(
        batch
            .iter()
            .map(|d| d.policy_version.clone())
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|d| d.threshold as f32).collect::<Vec<_>>())
    .bind(column(|d| d.sent.clone()))
    .bind(column(|d| d.model_choice.clone()))
    .bind(column(|d| d.baseline_choice.clone()))
    .bind(candidates)
    .bind(super::ranker::RANKER)
    .execute(pool)
    .await?;
    Ok(())
}
