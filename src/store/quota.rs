//! Send quotas: each user's sends of the last day, checked and reserved in one atomic
//! step so replicas never grant more than the cap between them. In Redis the step is a
//! Lua script (Redis runs a script alone); embedded, a mutex. Both apply
//! [`quota_check`]'s rule, and a repeated reservation of the same candidate (a retried
//! request) is answered [`Reservation::Repeated`] without counting twice.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use redis::Script;
use redis::aio::ConnectionManager;

use super::StoreError;
use super::online::OnlineStore;
use crate::policy::gates::{Gates, Reason, quota_check};

/// Check the cap and the gap against the user's sorted set of sends (member = candidate
/// id, score = send time in ms), then add the send: one atomic step. Same rule as
/// `quota_check`: sends older than a day are dropped first, so a retry is recognised
/// within the day the send counts in.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local key, now, gap, cap = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 86400000)
if redis.call('ZSCORE', key, ARGV[4]) then return 'repeated' end
if redis.call('ZCARD', key) >= cap then return 'daily_cap' end
local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
if last[2] and now - tonumber(last[2]) < gap then return 'min_gap' end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, 172800000)
return 'granted'",
    )
});

/// The outcome of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved now.
    Granted,
    /// This candidate was already reserved for the user (a retry): nothing counted again.
    Repeated,
    /// Refused by the daily cap or the minimum gap.
    Refused(Reason),
}

/// In-process quotas: user hash → (send time, candidate id) of the last day's sends.
type SendsByUser = HashMap<String, Vec<(DateTime<Utc>, String)>>;

/// Where quotas live: Redis when the online store is Redis, otherwise in-process.
#[derive(Clone)]
pub enum QuotaStore {
    /// In-process, one replica only.
    Embedded(Arc<Mutex<SendsByUser>>),
    /// Redis, shared by every replica.
    Redis {
        /// Connection.
        conn: ConnectionManager,
        /// Key prefix.
        prefix: String,
    },
}

impl QuotaStore {
    /// Quotas next to the online store: in the same Redis, or embedded.
    pub fn beside(online: &OnlineStore) -> Self {
        match online {
            OnlineStore::Embedded(_) => QuotaStore::Embedded(Arc::default()),
            OnlineStore::Redis { conn, prefix } => QuotaStore::Redis {
                conn: conn.clone(),
                prefix: prefix.clone(),
            },
        }
    }

    /// Reserves a send of `candidate_id` to `user_hash` at `now`, if the gates allow it.
    pub async fn reserve(
        &self,
        gates: &Gates,
        user_hash: &str,
        candidate_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Reservation, StoreError> {
        match self {
            QuotaStore::Embedded(users) => {
                // A poisoned lock only means another request panicked mid-update; the
                // map itself is still consistent (each update is one push or retain).
                let mut users = users.lock().unwrap_or_else(|p| p.into_inner());
                let sends = users.entry(user_hash.to_owned()).or_default();
                sends.retain(|(t, _)| *t > now - Duration::days(1));
                if sends.iter().any(|(_, id)| id == candidate_id) {
                    return Ok(Reservation::Repeated);
                }
                let times: Vec<DateTime<Utc>> = sends.iter().map(|(t, _)| *t).collect();
                Ok(match quota_check(gates, &times, now) {
                    Ok(()) => {
                        sends.push((now, candidate_id.to_owned()));
                        Reservation::Granted
                    }
                    Err(reason) => Reservation::Refused(reason),
                })
            }
            QuotaStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let outcome: String = RESERVE
                    .key(format!("{prefix}quota:{user_hash}"))
                    .arg(now.timestamp_millis())
                    .arg(gates.min_gap.num_milliseconds())
                    .arg(gates.max_sends_per_day)
                    .arg(candidate_id)
                    .invoke_async(&mut conn)
                    .await?;
                Ok(match outcome.as_str() {
                    "granted" => Reservation::Granted,
                    "repeated" => Reservation::Repeated,
                    "daily_cap" => Reservation::Refused(Reason::DailyCap),
                    _ => Reservation::Refused(Reason::MinGap),
                })
            }
        }
    }
}
