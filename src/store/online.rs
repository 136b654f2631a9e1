//! The shared online state: Redis when `REDIS_URL` is set, otherwise in-process
//! (embedded), which is right for one replica and says so.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StoreError;

/// Which online store this process uses.
#[derive(Clone)]
pub enum OnlineStore {
    /// In-process state: correct for a single replica only.
    Embedded,
    /// Redis, shared by every replica; keys start with `prefix`.
    Redis {
        /// Auto-reconnecting connection.
        conn: ConnectionManager,
        /// Key prefix, so several deployments (or tests) can share one Redis.
        prefix: String,
    },
}

impl std::fmt::Debug for OnlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl OnlineStore {
    /// Connects to Redis at `url` (keys under `prefix`).
    pub async fn connect_redis(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        // Fail fast: a request path must not wait out a long reconnect backoff.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::Redis {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// `"embedded"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self {
            OnlineStore::Embedded => "embedded",
            OnlineStore::Redis { .. } => "redis",
        }
    }

    /// Checks the store answers (always true when embedded).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            OnlineStore::Embedded => Ok(()),
            OnlineStore::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
                Ok(())
            }
        }
    }
}
