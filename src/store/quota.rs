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

/// A user's sends of the last day: (send time, candidate id) each.
pub type Sends = Vec<(DateTime<Utc>, String)>;

/// In-process quotas: user hash → the user's sends of the last day.
#[derive(Default)]
pub struct SendsByUser {
    users: HashMap<String, Sends>,
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

    /// The user's sends of the day before `now`, read without reserving, so a request
    /// the quota refuses (or a retry) is settled by [`settled`] without the atomic step.
    /// In Redis one `ZRANGE`, which a caller sends beside the feature read (the
    /// connection pipelines them: one round trip); `None` when embedded, where the
    /// reservation itself is as cheap.
    pub async fn peek(
        &self,
        user_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Sends>, StoreError> {
        let QuotaStore::Redis { conn, prefix } = self else {
            return Ok(None);
        };
        let since = (now - Duration::days(1)).timestamp_millis();
        let sends: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}quota:{user_hash}"))
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut conn.clone())
            .await?;
        Ok(Some(
            sends
                .into_iter()
                .filter_map(|(id, ms)| Some((DateTime::from_timestamp_millis(ms as i64)?, id)))
                .collect(),
        ))
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
                Ok(settled(gates, sends, candidate_id, now).unwrap_or_else(|| {
                    sends.push((now, candidate_id.to_owned()));
                    Reservation::Granted
                }))
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

/// What a reservation of `candidate_id` at `now` is certain to answer, given the user's
/// sends of the day before: `Repeated` when it is among them, `Refused` when the quota
/// rule refuses it; `None` when it would be granted, which only the atomic step may do.
pub fn settled(
    gates: &Gates,
    sends: &[(DateTime<Utc>, String)],
    candidate_id: &str,
    now: DateTime<Utc>,
) -> Option<Reservation> {
    if sends.iter().any(|(_, id)| id == candidate_id) {
        return Some(Reservation::Repeated);
    }
    let times: Vec<DateTime<Utc>> = sends.iter().map(|(t, _)| *t).collect();
    quota_check(gates, &times, now)
        .err()
        .map(Reservation::Refused)
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

    #[test]
    fn settled_answers_retries_and_refusals_and_leaves_grants_to_the_atomic_step() {
        let gates = gates(); // 2 a day, 8 h apart
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let one = vec![(t0, "n1".to_owned())];
        let two = vec![
            (t0, "n1".to_owned()),
            (t0 + Duration::hours(9), "n2".into()),
        ];
        let at = |h: i64| t0 + Duration::hours(h);
        assert_eq!(settled(&gates, &[], "n1", t0), None);
        assert_eq!(
            settled(&gates, &one, "n1", at(1)),
            Some(Reservation::Repeated)
        );
        assert_eq!(
            settled(&gates, &one, "n2", at(1)),
            Some(Reservation::Refused(Reason::MinGap))
        );
        assert_eq!(settled(&gates, &one, "n2", at(9)), None);
        assert_eq!(
            settled(&gates, &two, "n3", at(20)),
            Some(Reservation::Refused(Reason::DailyCap))
        );
        assert_eq!(
            settled(&gates, &two, "n2", at(20)),
            Some(Reservation::Repeated)
        );
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
