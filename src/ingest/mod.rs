//! Event ingest: from PostHog-shaped JSON to rows in `bronze.events`.
//!
//! Every source (webhook, capture API, simulator) goes through [`Ingestor::ingest`]:
//! each event is checked against the [`catalog::Catalog`] on its own, ids are keyed-hashed,
//! consent is honoured, and the good events of a batch are written in one multi-row
//! statement that is idempotent on the event uuid.

pub mod catalog;
pub mod consent;
pub mod event;
pub mod hashing;
pub mod wire;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use self::catalog::Catalog;
use self::consent::{ConsentChange, ConsentLedger};
use self::event::{RejectReason, Rejected, Source, StoredEvent, normalize};
use self::hashing::UserHasher;

/// What happened to a request's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    /// Events stored now.
    pub accepted: usize,
    /// Events already stored before (same uuid), or repeated within the request.
    pub duplicates: usize,
    /// Events not stored, with the reason.
    pub rejected: Vec<Rejected>,
}

/// Ingest failed as a whole; nothing of the request may be assumed stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Postgres could not be reached or refused the write.
    #[error("event store unavailable: {0}")]
    Store(#[from] sqlx::Error),
}

/// Checks, hashes and stores events.
#[derive(Debug, Clone)]
pub struct Ingestor {
    catalog: Catalog,
    hasher: UserHasher,
    pool: PgPool,
}

impl Ingestor {
    /// An ingestor writing to `pool`.
    pub fn new(catalog: Catalog, hasher: UserHasher, pool: PgPool) -> Self {
        Self {
            catalog,
            hasher,
            pool,
        }
    }

    /// Checks and stores a batch. Elements already refused by the caller (e.g. for a
    /// wrong token) come as `Err` so their index is reported with the rest.
    pub async fn ingest<'a>(
        &self,
        source: Source,
        batch: impl IntoIterator<Item = Result<&'a Value, RejectReason>>,
    ) -> Result<IngestReport, IngestError> {
        let mut report = IngestReport::default();
        let mut events: Vec<(usize, StoredEvent)> = Vec::new();
        let mut seen = HashSet::new();
        for (index, item) in batch.into_iter().enumerate() {
            let checked = item
                .map_err(|reason| (reason, None))
                .and_then(|raw| normalize(raw, &self.catalog, &self.hasher));
            match checked {
                Ok(ev) if !seen.insert(ev.uuid) => report.duplicates += 1,
                Ok(ev) => events.push((index, ev)),
                Err((reason, event)) => report.rejected.push(Rejected::new(index, &reason, event)),
            }
        }

        let ledger = self.record_consent(&events).await?;
        let (allowed, withdrawn): (Vec<_>, Vec<_>) = events.into_iter().partition(|(_, ev)| {
            ev.consent_granted().is_some() || ledger.allows(&ev.user_hash, ev.timestamp)
        });
        for (index, ev) in withdrawn {
            report.rejected.push(Rejected::new(
                index,
                &RejectReason::ConsentWithdrawn,
                Some(ev.event),
            ));
        }

        let stored = self.insert_events(source, &allowed).await?;
        report.accepted = stored.len();
        report.duplicates += allowed.len() - stored.len();
        report.rejected.sort_by_key(|r| r.index);
        self.insert_rejects(source, &report.rejected).await?;
        record_metrics(&allowed, &stored, &report.rejected);
        Ok(report)
    }

    /// Stores the batch's consent changes and returns the consent history of its users.
    async fn record_consent(
        &self,
        events: &[(usize, StoredEvent)],
    ) -> Result<ConsentLedger, IngestError> {
        let changes: Vec<(Uuid, &StoredEvent, bool)> = events
            .iter()
            .filter_map(|(_, ev)| ev.consent_granted().map(|g| (ev.uuid, ev, g)))
            .collect();
        if !changes.is_empty() {
            sqlx::query(
                "INSERT INTO bronze.consent_changes (event_uuid, user_hash, changed_at, granted)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::bool[])
                 ON CONFLICT (event_uuid) DO NOTHING",
            )
            .bind(changes.iter().map(|c| c.0).collect::<Vec<_>>())
            .bind(
                changes
                    .iter()
                    .map(|c| c.1.user_hash.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(changes.iter().map(|c| c.1.timestamp).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.2).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        }
        let users: Vec<&str> = events
            .iter()
            .map(|(_, ev)| ev.user_hash.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if users.is_empty() {
            return Ok(ConsentLedger::default());
        }
        let history = sqlx::query_as::<_, (String, DateTime<Utc>, bool)>(
            "SELECT user_hash, changed_at, granted FROM bronze.consent_changes
             WHERE user_hash = ANY($1)",
        )
        .bind(&users)
        .fetch_all(&self.pool)
        .await?;
        Ok(ConsentLedger::new(history.into_iter().map(
            |(user_hash, at, granted)| ConsentChange {
                user_hash,
                at,
                granted,
            },
        )))
    }

    /// Inserts events in one statement; returns the uuids that were new.
    async fn insert_events(
        &self,
        source: Source,
        events: &[(usize, StoredEvent)],
    ) -> Result<HashSet<Uuid>, IngestError> {
        if events.is_empty() {
            return Ok(HashSet::new());
        }
        let stored: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO bronze.events (uuid, event, user_hash, ts, properties, source)
             SELECT u, e, h, t, p, $6 FROM UNNEST($1::uuid[], $2::text[], $3::text[],
                                                   $4::timestamptz[], $5::jsonb[]) AS x(u, e, h, t, p)
             ON CONFLICT (uuid) DO NOTHING
             RETURNING uuid",
        )
        .bind(events.iter().map(|(_, ev)| ev.uuid).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, ev)| ev.event.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, ev)| ev.user_hash.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, ev)| ev.timestamp).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, ev)| sqlx::types::Json(&ev.properties)).collect::<Vec<_>>())
        .bind(source.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(stored.into_iter().collect())
    }

    /// Records rejects (reason, field, catalog event name; never payload or ids).
    async fn insert_rejects(
        &self,
        source: Source,
        rejected: &[Rejected],
    ) -> Result<(), IngestError> {
        if rejected.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO bronze.rejects (source, event, reason, field)
             SELECT $1, e, r, f FROM UNNEST($2::text[], $3::text[], $4::text[]) AS x(e, r, f)",
        )
        .bind(source.as_str())
        .bind(
            rejected
                .iter()
                .map(|r| r.event.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rejected.iter().map(|r| r.reason).collect::<Vec<_>>())
        .bind(
            rejected
                .iter()
                .map(|r| r.field.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Counts events by name and outcome, and rejects by reason.
fn record_metrics(allowed: &[(usize, StoredEvent)], stored: &HashSet<Uuid>, rejected: &[Rejected]) {
    let mut counts: HashMap<(&str, &'static str), u64> = HashMap::new();
    for (_, ev) in allowed {
        let outcome = if stored.contains(&ev.uuid) {
            "accepted"
        } else {
            "duplicate"
        };
        *counts.entry((ev.event.as_str(), outcome)).or_default() += 1;
    }
    for ((event, outcome), n) in counts {
        metrics::counter!(crate::telemetry::INGEST_EVENTS, "event" => event.to_owned(), "outcome" => outcome)
            .increment(n);
    }
    for r in rejected {
        let event = r.event.clone().unwrap_or_else(|| "unknown".into());
        metrics::counter!(crate::telemetry::INGEST_REJECTS, "reason" => r.reason, "event" => event)
            .increment(1);
    }
}
