//! Materialisation: the newest snapshot of every user, copied into the online store under
//! a new version that becomes current in one step (`nudge-train features materialize` for
//! Redis; nudge-serve's embedded store loads itself the same way).

use std::fmt;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures_util::TryStreamExt;
use indicatif::ProgressBar;
use sqlx::PgPool;

use super::FeatureError;
use super::catalog::FeatureCatalog;
use super::row::FeatureRow;
use crate::store::online::OnlineStore;

/// The query behind the online store: one row per user, the newest snapshot.
pub const LATEST_SNAPSHOTS_SQL: &str =
    include_str!("../../notebooks-sql/gold/latest_snapshots.sql");

/// Rows per online-store write.
const BATCH: usize = 2_000;

/// What a materialisation wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MaterializeReport {
    /// The version now current.
    pub version: String,
    /// `"redis"` or `"embedded"`.
    pub store: &'static str,
    /// Users written.
    pub users: u64,
    /// The newest snapshot day among them.
    pub newest_as_of: Option<NaiveDate>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Copies every user's newest snapshot into `online` under a new version and switches to
/// it; `progress` counts users.
pub async fn materialize(
    pool: &PgPool,
    catalog: &FeatureCatalog,
    online: &OnlineStore,
    progress: &ProgressBar,
) -> Result<MaterializeReport, FeatureError> {
    let started = Instant::now();
    let mut writer = online.begin_features(catalog);
    let mut newest_as_of = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut rows = sqlx::query(LATEST_SNAPSHOTS_SQL).fetch(pool);
    while let Some(pg_row) = rows.try_next().await? {
        let user_hash: String = sqlx::Row::try_get(&pg_row, "user_hash")?;
        // The query selects snapshots, whose as_of is never null.
        if let Some(row) = FeatureRow::from_pg_row(catalog, &pg_row)? {
            newest_as_of = newest_as_of.max(Some(row.as_of));
            batch.push((user_hash, row));
        }
        if batch.len() == BATCH {
            progress.inc(BATCH as u64);
            writer
                .write(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .await?;
        }
    }
    progress.inc(batch.len() as u64);
    writer.write(batch).await?;
    let version = writer.version().to_owned();
    let users = writer.commit().await?;
    Ok(MaterializeReport {
        version,
        store: online.kind(),
        users,
        newest_as_of,
        elapsed: started.elapsed(),
    })
}

impl fmt::Display for MaterializeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "materialised {} users into the {} store as version {} (newest snapshot: {}) in {:.2} s",
            self.users,
            self.store,
            self.version,
            self.newest_as_of
                .map_or_else(|| "none".to_owned(), |d| format!("as of {d}")),
            self.elapsed.as_secs_f64()
        )
    }
}
