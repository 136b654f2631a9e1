//! Where state lives: Postgres (events, logs, history; the schema and its migrations)
//! and the shared online state (Redis, or in-process when embedded).

pub mod copy;
pub mod database;
pub mod flags;
pub mod online;
pub mod quota;
pub mod redis_link;

/// Errors from the stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query or connection to Postgres failed.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database schema is not the one this build knows.
    #[error(transparent)]
    Schema(#[from] database::SchemaMismatch),
    /// The database URL is not a Postgres URL this build can use.
    #[error("invalid DATABASE_URL: {0}")]
    BadUrl(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The online store's features were materialised with another feature catalog or row
    /// encoding.
    #[error(
        "online features version {version} was written with another feature catalog or row encoding; re-run `nudge-train features materialize`"
    )]
    CatalogMismatch {
        /// The current version.
        version: String,
    },
    /// An online-store entry cannot be read.
    #[error("online store entry unreadable: {0}")]
    Corrupt(#[from] crate::features::row::RowDecodeError),
    /// A stored runtime flag cannot be read.
    #[error("runtime flag {name} unreadable: {reason}")]
    BadFlag {
        /// The flag.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A background write task failed.
    #[error("online store write task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether this is Redis out of reach (its breaker open, no answer, a dropped
    /// connection) rather than a refused command or bad data: callers that fall back
    /// count it without a log line each, the link logs the outage once.
    pub fn is_redis_unreachable(&self) -> bool {
        matches!(self, StoreError::Redis(e) if redis_link::is_unreachable(e))
    }

    /// Whether this is Postgres out of reach rather than a refused query or a wrong schema.
    pub fn is_postgres_unreachable(&self) -> bool {
        matches!(self, StoreError::Database(e) if database::is_unreachable(e))
    }
}
