//! The shared online state: Redis when `REDIS_URL` is set, otherwise in-process
//! (embedded), which is right for one replica and says so.
//!
//! Features are stored by *version*: a materialisation writes every user's row under a new
//! version and then makes it current in one step, so a reader sees either the old rows or
//! the new ones, never a mix. In Redis a version is written as one hash
//! (`{prefix}features:v:{version}`, field = user hash, value = [`FeatureRow::encode`]);
//! the commit names it in its own field [`VERSION_FIELD`] and renames it to
//! `{prefix}features:live`. A reader asks for the version field and the user's field in
//! one plain `HMGET` of that one hash: atomic, as every Redis command is, and cheaper
//! for Redis than a script on the hot path. A version ends in the catalog's fingerprint,
//! so a build with another feature catalog (or row encoding) refuses rows it would misread.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::redis_link::RedisLink;
use tokio::task::JoinSet;

use super::StoreError;
use crate::features::catalog::FeatureCatalog;
use crate::features::row::FeatureRow;

/// A version not switched to within this time (a materialisation that died) expires.
const UNFINISHED_VERSION_TTL_SECS: u64 = 3_600;

/// Write batches in flight at once during a materialisation.
const WRITES_IN_FLIGHT: usize = 4;

/// The field of the live hash that names its version. User hashes are lowercase hex, so
/// no user's field can take this name.
pub const VERSION_FIELD: &str = ":version";

/// Makes a written version (`KEYS[1]`) live (`KEYS[2]`): names it in the hash, keeps it, and
/// renames it over the live one, which is unlinked (freed off Redis's main thread; a
/// `RENAME` over it would free 100,000 fields in line). Returns the replaced version.
static SWITCH_FEATURES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PERSIST', KEYS[1])
local old = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('UNLINK', KEYS[2])
redis.call('RENAME', KEYS[1], KEYS[2])
return old",
    )
});

/// An auto-reconnecting Redis connection that fails fast: a request path must not wait
/// out a long reconnect backoff. It connects on first use, so a server can start while
/// Redis is down and answer safely until it returns; [`redis_connection_now`] is for
/// commands that need Redis at once.
fn redis_connection(url: &str) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// An unguarded [`RedisLink`] for a command, checked with a `PING`: an unreachable Redis
/// is an error now.
pub(crate) async fn redis_connection_now(url: &str) -> Result<RedisLink, StoreError> {
    let mut conn = RedisLink::direct(redis_connection(url)?);
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(conn)
}

/// Which online store this process uses.
#[derive(Clone)]
pub enum OnlineStore {
    /// In-process state: correct for a single replica only.
    Embedded(Arc<Embedded>),
    /// Redis, shared by every replica; keys start with `prefix`.
    Redis {
        /// Auto-reconnecting connection (guarded in the server).
        conn: RedisLink,
        /// Key prefix, so several deployments (or tests) can share one Redis.
        prefix: String,
    },
}

/// The embedded store's state.
#[derive(Default)]
pub struct Embedded {
    features: RwLock<Option<Arc<FeatureTable>>>,
}

/// One materialised version of every user's features (embedded store).
#[derive(Debug)]
pub struct FeatureTable {
    /// The version's name.
    pub version: String,
    /// Rows by user hash.
    pub rows: HashMap<String, FeatureRow>,
}

/// What the online store holds for a user.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureLookup {
    /// The user's newest materialised row.
    Found(FeatureRow),
    /// Features are materialised, but none for this user.
    Unknown,
    /// Nothing is materialised yet.
    NotMaterialized,
}

impl std::fmt::Debug for OnlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl OnlineStore {
    /// An empty embedded store.
    pub fn embedded() -> Self {
        OnlineStore::Embedded(Arc::default())
    }

    /// Redis at `url` (keys under `prefix`) for the server: connected on first use, so
    /// it starts while Redis is down, reconnects by itself, and behind a breaker, so a
    /// request never waits on a Redis that is down ([`RedisLink::guarded`]).
    pub fn redis(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self::Redis {
            conn: RedisLink::guarded(redis_connection(url)?),
            prefix: prefix.to_owned(),
        })
    }

    /// Redis at `url` (keys under `prefix`), connected now: an unreachable Redis is an
    /// error here, for commands that cannot do without it.
    pub async fn connect_redis(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self::Redis {
            conn: redis_connection_now(url).await?,
            prefix: prefix.to_owned(),
        })
    }

    /// `"embedded"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self {
            OnlineStore::Embedded(_) => "embedded",
            OnlineStore::Redis { .. } => "redis",
        }
    }

    /// Checks the store answers (always true when embedded).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            OnlineStore::Embedded(_) => Ok(()),
            OnlineStore::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
                Ok(())
            }
        }
    }

    /// The current feature version, if any.
    pub async fn feature_version(&self) -> Result<Option<String>, StoreError> {
        match self {
            OnlineStore::Embedded(state) => Ok(state.current().map(|t| t.version.clone())),
            OnlineStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                Ok(redis::cmd("HGET")
                    .arg(live_key(prefix))
                    .arg(VERSION_FIELD)
                    .query_async(&mut conn)
                    .await?)
            }
        }
    }

    /// The newest materialised features of `user_hash`.
    pub async fn features(
        &self,
        catalog: &FeatureCatalog,
        user_hash: &str,
    ) -> Result<FeatureLookup, StoreError> {
        match self {
            OnlineStore::Embedded(state) => Ok(match state.current() {
                None => FeatureLookup::NotMaterialized,
                Some(table) => table
                    .rows
                    .get(user_hash)
                    .map_or(FeatureLookup::Unknown, |row| {
                        FeatureLookup::Found(row.clone())
                    }),
            }),
            OnlineStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let (version, entry): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
                    .arg(live_key(prefix))
                    .arg(VERSION_FIELD)
                    .arg(user_hash)
                    .query_async(&mut conn)
                    .await?;
                let Some(version) = version else {
                    return Ok(FeatureLookup::NotMaterialized);
                };
                if !version.ends_with(catalog.fingerprint()) {
                    return Err(StoreError::CatalogMismatch { version });
                }
                match entry {
                    None => Ok(FeatureLookup::Unknown),
                    Some(encoded) => {
                        Ok(FeatureLookup::Found(FeatureRow::decode(catalog, &encoded)?))
                    }
                }
            }
        }
    }

    /// Starts writing a new feature version (named after the catalog); readers keep seeing
    /// the current one until [`FeatureWriter::commit`].
    pub fn begin_features(&self, catalog: &FeatureCatalog) -> FeatureWriter {
        let version = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            catalog.fingerprint()
        );
        let target = match self {
            OnlineStore::Embedded(state) => WriteTarget::Embedded {
                state: Arc::clone(state),
                rows: HashMap::new(),
            },
            OnlineStore::Redis { conn, prefix } => WriteTarget::Redis {
                conn: conn.clone(),
                prefix: prefix.clone(),
                in_flight: JoinSet::new(),
            },
        };
        FeatureWriter {
            version,
            target,
            written: 0,
        }
    }
}

impl Embedded {
    /// The current feature table, if one was committed.
    fn current(&self) -> Option<Arc<FeatureTable>> {
        // A poisoned lock still holds a whole table: swaps replace the Arc in one step.
        match self.features.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, table: FeatureTable) {
        let table = Some(Arc::new(table));
        match self.features.write() {
            Ok(mut guard) => *guard = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }
}

/// The hash of the live version's rows.
fn live_key(prefix: &str) -> String {
    format!("{prefix}features:live")
}

/// The hash a version is written to until it goes live.
fn version_key(prefix: &str, version: &str) -> String {
    format!("{prefix}features:v:{version}")
}

/// Writes one feature version; dropped without [`FeatureWriter::commit`], it never
/// becomes current (in Redis it expires after an hour).
pub struct FeatureWriter {
    version: String,
    target: WriteTarget,
    written: u64,
}

enum WriteTarget {
    Embedded {
        state: Arc<Embedded>,
        rows: HashMap<String, FeatureRow>,
    },
    Redis {
        conn: RedisLink,
        prefix: String,
        in_flight: JoinSet<redis::RedisResult<()>>,
    },
}

impl FeatureWriter {
    /// The version being written.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Adds a batch of rows (user hash, row). In Redis the batch is one pipelined
    /// `HSET` + `EXPIRE`, with a few batches in flight.
    pub async fn write(&mut self, batch: Vec<(String, FeatureRow)>) -> Result<(), StoreError> {
        self.written += batch.len() as u64;
        match &mut self.target {
            WriteTarget::Embedded { rows, .. } => rows.extend(batch),
            WriteTarget::Redis {
                conn,
                prefix,
                in_flight,
            } => {
                if batch.is_empty() {
                    return Ok(());
                }
                while in_flight.len() >= WRITES_IN_FLIGHT {
                    join_one(in_flight).await?;
                }
                let key = version_key(prefix, &self.version);
                let fields: Vec<(String, Vec<u8>)> = batch
                    .into_iter()
                    .map(|(user, row)| (user, row.encode()))
                    .collect();
                let mut pipe = redis::pipe();
                pipe.hset_multiple(&key, &fields)
                    .ignore()
                    .expire(&key, UNFINISHED_VERSION_TTL_SECS as i64)
                    .ignore();
                let mut conn = conn.clone();
                in_flight.spawn(async move { pipe.query_async::<()>(&mut conn).await });
            }
        }
        Ok(())
    }

    /// Waits until every row written so far is stored (not yet current).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if let WriteTarget::Redis { in_flight, .. } = &mut self.target {
            while !in_flight.is_empty() {
                join_one(in_flight).await?;
            }
        }
        Ok(())
    }

    /// Waits for every write, then makes this version current in one step and drops
    /// the version it replaces. Returns the number of rows written.
    pub async fn commit(mut self) -> Result<u64, StoreError> {
        self.flush().await?;
        match self.target {
            WriteTarget::Embedded { state, rows } => state.install(FeatureTable {
                version: self.version,
                rows,
            }),
            WriteTarget::Redis {
                mut conn, prefix, ..
            } => {
                let _replaced: Option<String> = SWITCH_FEATURES
                    .key(version_key(&prefix, &self.version))
                    .key(live_key(&prefix))
                    .arg(VERSION_FIELD)
                    .arg(&self.version)
                    .invoke_async(&mut conn)
                    .await?;
            }
        }
        Ok(self.written)
    }
}

/// Waits for one in-flight write and surfaces its error.
async fn join_one(in_flight: &mut JoinSet<redis::RedisResult<()>>) -> Result<(), StoreError> {
    match in_flight.join_next().await {
        Some(Ok(result)) => Ok(result?),
        Some(Err(join)) => Err(StoreError::Task(join.to_string())),
        None => Ok(()),
    }
}
