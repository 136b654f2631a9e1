//! The runtime flags' store: one Redis hash (`{prefix}flags`, field = flag name, value =
//! JSON) beside a Redis online store, or the `serving.flags` table when embedded, so
//! every replica — and `nudge-serve flag` with no server running — reads and writes the
//! same flags.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use super::StoreError;
use super::online::OnlineStore;
use super::redis_link::RedisLink;
use crate::rollout::{Flags, KillSwitchFlag, RolloutFlag};

const ROLLOUT: &str = "rollout";
const KILL_SWITCH: &str = "kill_switch";

/// Where the flags live.
#[derive(Clone)]
pub enum FlagStore {
    /// Redis, beside the online store.
    Redis {
        /// Connection.
        conn: RedisLink,
        /// Key prefix.
        prefix: String,
    },
    /// Postgres (embedded mode).
    Postgres(PgPool),
}

impl FlagStore {
    /// Flags next to the online store: in its Redis, or in Postgres when it is embedded.
    pub fn beside(online: &OnlineStore, pool: &PgPool) -> Self {
        match online {
            OnlineStore::Embedded(_) => FlagStore::Postgres(pool.clone()),
            OnlineStore::Redis { conn, prefix } => FlagStore::Redis {
                conn: conn.clone(),
                prefix: prefix.clone(),
            },
        }
    }

    /// Connects to the flags a deployment uses: in Redis when `redis_url` is given (keys
    /// under `prefix`), else in the Postgres at `database_url` (its schema checked).
    pub async fn connect(
        redis_url: Option<&str>,
        prefix: &str,
        database_url: &str,
    ) -> Result<Self, StoreError> {
        Ok(match redis_url {
            Some(url) => FlagStore::Redis {
                conn: super::online::redis_connection_now(url).await?,
                prefix: prefix.to_owned(),
            },
            None => {
                let pool = super::database::connect(database_url, 2).await?;
                super::database::check_schema(&pool).await?;
                FlagStore::Postgres(pool)
            }
        })
    }

    /// `"redis"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self {
            FlagStore::Redis { .. } => "redis",
            FlagStore::Postgres(_) => "postgres",
        }
    }

    /// Every flag.
    pub async fn read(&self) -> Result<Flags, StoreError> {
        let (rollout, kill_switch): (Option<String>, Option<String>) = match self {
            FlagStore::Redis { conn, prefix } => {
                redis::cmd("HMGET")
                    .arg(format!("{prefix}flags"))
                    .arg(ROLLOUT)
                    .arg(KILL_SWITCH)
                    .query_async(&mut conn.clone())
                    .await?
            }
            FlagStore::Postgres(pool) => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT name, value::text FROM serving.flags WHERE name IN ($1, $2)",
                )
                .bind(ROLLOUT)
                .bind(KILL_SWITCH)
                .fetch_all(pool)
                .await?;
                let get = |name: &str| rows.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                (get(ROLLOUT), get(KILL_SWITCH))
            }
        };
        Ok(Flags {
            rollout: decode(ROLLOUT, rollout)?,
            kill_switch: decode(KILL_SWITCH, kill_switch)?,
        })
    }

    /// Sets the rollout override, or clears it (`None`: the policy file's rollout again).
    pub async fn set_rollout(&self, flag: Option<&RolloutFlag>) -> Result<(), StoreError> {
        self.write(ROLLOUT, flag).await
    }

    /// Sets the kill switch.
    pub async fn set_kill_switch(&self, flag: &KillSwitchFlag) -> Result<(), StoreError> {
        self.write(KILL_SWITCH, Some(flag)).await
    }

    async fn write(
        &self,
        name: &'static str,
        value: Option<&impl Serialize>,
    ) -> Result<(), StoreError> {
        let json =
            value
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::BadFlag {
                    name,
                    reason: e.to_string(),
                })?;
        match (self, json) {
            (FlagStore::Redis { conn, prefix }, Some(json)) => {
                let () = redis::cmd("HSET")
                    .arg(format!("{prefix}flags"))
                    .arg(name)
                    .arg(json)
                    .query_async(&mut conn.clone())
                    .await?;
            }
            (FlagStore::Redis { conn, prefix }, None) => {
                let () = redis::cmd("HDEL")
                    .arg(format!("{prefix}flags"))
                    .arg(name)
                    .query_async(&mut conn.clone())
                    .await?;
            }
            (FlagStore::Postgres(pool), Some(json)) => {
                sqlx::query(
                    "INSERT INTO serving.flags (name, value) VALUES ($1, $2::jsonb)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                )
                .bind(name)
                .bind(json)
                .execute(pool)
                .await?;
            }
            (FlagStore::Postgres(pool), None) => {
                sqlx::query("DELETE FROM serving.flags WHERE name = $1")
                    .bind(name)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A stored flag's value; an unreadable one is an error, never taken as "unset".
fn decode<T: DeserializeOwned>(
    name: &'static str,
    json: Option<String>,
) -> Result<Option<T>, StoreError> {
    json.map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| StoreError::BadFlag {
            name,
            reason: e.to_string(),
        })
}
