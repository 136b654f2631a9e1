//! Send quotas: each user's sends of the last day, checked and reserved in one atomic
//! step so replicas never grant more than the cap between them. In Redis the step is a
//! Lua script (Redis runs a script alone); embedded, a mutex. Both apply
//! [`quota_check`]'s rule, and a repeated reservation of the same candidate (a retried
//! request) is answered [`Reservation::Repeated`] without counting twice.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use redis::Script;

use super::StoreError;
use super::online::OnlineStore;
use super::redis_link::RedisLink;
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
#[derive(Default)]
pub struct SendsByUser {
    users: HashMap<String, Vec<(DateTime<Utc>, String)>>,
    /// The map's size at which users without a send in the last day are forgotten:
    /// twice the size left by the last sweep, so sweeping costs O(1) per reservation and
    /// the map holds at most twice the users sent to within a day (at least 1,024).
    sweep_at: usize,
}

/// The smallest map that is swept.
const MIN_SWEEP: usize = 1_024;

impl SendsByUser {
    /// Forgets users whose every send is older than a day before `now`, once the map has
    /// doubled since the last sweep (a user's own old sends go at their next reservation).
    fn sweep(&mut self, now: DateTime<Utc>) {
        if self.users.len() < self.sweep_at.max(MIN_SWEEP) {
            return;
        }
        let since = now - Duration::days(1);
        self.users
            .retain(|_, sends| sends.iter().any(|(t, _)| *t > since));
        self.sweep_at = 2 * self.users.len();
    }
}

/// Where quotas live: Redis when the online store is Redis, otherwise in-process.
#[derive(Clone)]
pub enum QuotaStore {
    /// In-process, one replica only.
    Embedded(Arc<Mutex<SendsByUser>>),
    /// Redis, shared by every replica.
    Redis {
        /// Connection.
        conn: RedisLink,
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
            QuotaStore::Embedded(quotas) => {
                // A poisoned lock only means another request panicked mid-update; the
                // map itself is still consistent (each update is one push or retain).
                let mut quotas = quotas.lock().unwrap_or_else(|p| p.into_inner());
                quotas.sweep(now);
                let sends = quotas.users.entry(user_hash.to_owned()).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gates() -> Gates {
        crate::policy::Policy::parse(
            "rollout: { mode: shadow, salt: s }\nthreshold: { initial: 0.3, min: 0.05, max: 0.9 }\n",
        )
        .unwrap()
        .gates
    }

    #[tokio::test]
    async fn the_embedded_store_forgets_users_without_a_send_in_the_last_day() {
        let store = QuotaStore::Embedded(Arc::default());
        let QuotaStore::Embedded(quotas) = &store else {
            unreachable!()
        };
        let gates = gates();
        let day_one = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for i in 0..5_000 {
            let granted = store.reserve(&gates, &format!("u{i}"), "n1", day_one).await;
            assert_eq!(granted.unwrap(), Reservation::Granted);
        }
        assert_eq!(quotas.lock().unwrap().users.len(), 5_000);

        // Two days later, new users arrive: once the map has doubled since the last sweep
        // (8,192 users), the day-one users are forgotten, before every new one is in.
        let day_three = day_one + Duration::days(2);
        let mut largest = 0;
        for i in 0..4_000 {
            let user = format!("v{i}");
            let granted = store.reserve(&gates, &user, "n1", day_three).await;
            assert_eq!(granted.unwrap(), Reservation::Granted);
            largest = largest.max(quotas.lock().unwrap().users.len());
        }
        {
            let users = &quotas.lock().unwrap().users;
            assert!(
                users.keys().all(|u| u.starts_with('v')),
                "a day-one user kept"
            );
            assert_eq!(users.len(), 4_000);
        }
        assert_eq!(largest, 8_192);

        // A user still within the day keeps their quota through a sweep.
        let again = store.reserve(&gates, "v0", "n2", day_three).await;
        assert_eq!(again.unwrap(), Reservation::Refused(Reason::MinGap));
    }
}
