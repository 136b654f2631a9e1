//! Send quotas: each user's sends of the last day, and their send load when the policy
//! has a send budget, checked and reserved in one atomic step so replicas never grant
//! more than the cap between them. In Redis the step is a Lua script (Redis runs a
//! script alone); embedded, a mutex. Both apply [`quota_check`]'s rule, and a repeated
//! reservation of the same candidate (a retried request) is answered
//! [`Reservation::Repeated`] without counting twice.

use std::collections::HashMap;
use std::ops::AddAssign;
use std::pin::pin;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt};
use redis::Script;
use sqlx::PgPool;

use super::StoreError;
use super::online::OnlineStore;
use super::redis_link::RedisLink;
use crate::policy::gates::{QuotaRule, Reason, SendBudget, SendLoad, quota_check};

/// Check the cap and the gap against the user's sorted set of sends (member = candidate
/// id, score = send time in ms), then the send budget against the user's load (a hash of
/// its value `v` and time `t` in ms), then add the send: one atomic step. Same rule as
/// `quota_check`: sends older than a day are dropped first, so a retry is recognised
/// within the day the send counts in. A half-life of 0 means no budget; a `max` below 0,
/// a load tracked but not enforced.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local key, load_key = KEYS[1], KEYS[2]
local now, gap, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local half_life, max = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 86400000)
if redis.call('ZSCORE', key, ARGV[4]) then return 'repeated' end
if redis.call('ZCARD', key) >= cap then return 'daily_cap' end
local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
if last[2] and now - tonumber(last[2]) < gap then return 'min_gap' end
local load, at = 0, now
if half_life > 0 then
  local stored = redis.call('HMGET', load_key, 'v', 't')
  if stored[1] then
    local stored_at = tonumber(stored[2])
    at = math.max(now, stored_at)
    load = tonumber(stored[1]) * 0.5 ^ (math.max(0, now - stored_at) / half_life)
  end
  if max >= 0 and load >= max then return 'send_budget' end
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, 172800000)
if half_life > 0 then
  redis.call('HSET', load_key, 'v', string.format('%.17g', load + 1), 't', string.format('%d', at))
  redis.call('PEXPIRE', load_key, ARGV[7])
end
return 'granted'",
    )
});

/// Adds a user's recorded sends of the last day to their sorted set (`NX`: a send the
/// store counted itself has the same candidate id and is not added twice), then sets
/// their send load unless one is stored (a reservation, or an earlier seeding, counted
/// since); `ARGV`: the load's `v` (empty for none), `t` in ms and memory in ms, then
/// (time in ms, id) pairs. Returns the sends added and whether the load was set.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local sends_key, load_key = KEYS[1], KEYS[2]
local added = 0
for i = 4, #ARGV, 2 do
  added = added + redis.call('ZADD', sends_key, 'NX', ARGV[i], ARGV[i + 1])
end
if added > 0 then redis.call('PEXPIRE', sends_key, 172800000) end
local loaded = 0
if ARGV[1] ~= '' and redis.call('EXISTS', load_key) == 0 then
  redis.call('HSET', load_key, 'v', ARGV[1], 't', ARGV[2])
  redis.call('PEXPIRE', load_key, ARGV[3])
  loaded = 1
end
return {added, loaded}",
    )
});

/// Users whose quotas one Redis pipeline seeds.
const SEED_BATCH: usize = 1_000;

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

/// The user's keys in Redis: their sends of the day (a sorted set) and their send load (a
/// hash). The user hash is a hash tag (`{…}`), so in a Redis Cluster both keys sit in one
/// slot, as the reservation's script, which touches both, requires.
fn user_keys(prefix: &str, user_hash: &str) -> [String; 2] {
    [
        format!("{prefix}quota:{{{user_hash}}}"),
        format!("{prefix}load:{{{user_hash}}}"),
    ]
}

/// A send load as its Redis hash holds it: value and time in ms, absent when none is stored.
type StoredLoad = (Option<f64>, Option<i64>);

/// What the quota store holds of a user: their sends of the last day, and their send
/// load when the policy has a send budget.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    /// Sends of the last day.
    pub sends: Sends,
    /// The send load, if any send has been counted in one.
    pub load: Option<SendLoad>,
}

/// In-process quotas: user hash → what the store holds of the user.
#[derive(Default)]
pub struct SendsByUser {
    users: HashMap<String, Recent>,
    /// The map's size at which users without a send in the last day (nor a load still
    /// remembered) are forgotten: twice the size left by the last sweep, so sweeping
    /// costs O(1) per reservation and the map holds at most twice the users it must
    /// remember (at least 1,024).
    sweep_at: usize,
}

/// The smallest map that is swept.
const MIN_SWEEP: usize = 1_024;

impl SendsByUser {
    /// Forgets users whose every send is older than a day before `now` and whose load,
    /// if the budget keeps one, is past its [`SendBudget::memory`], once the map has
    /// doubled since the last sweep (a user's own old sends go at their next reservation).
    fn sweep(&mut self, now: DateTime<Utc>, budget: Option<&SendBudget>) {
        if self.users.len() < self.sweep_at.max(MIN_SWEEP) {
            return;
        }
        let since = now - Duration::days(1);
        let remembered = |load: Option<SendLoad>| match (budget, load) {
            (Some(budget), Some(load)) => now - load.at < budget.memory(),
            _ => false,
        };
        self.users.retain(|_, recent| {
            recent.sends.iter().any(|(t, _)| *t > since) || remembered(recent.load)
        });
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

    /// What the store holds of the user at `now` (their sends of the last day, and their
    /// load when `budget` is enforced), read without reserving, so a request the quota
    /// refuses (or a retry) is settled by [`settled`] without the atomic step. In Redis
    /// one `ZRANGE` (with an `HMGET` of the load in the same pipeline), which a caller
    /// sends beside the feature read (the connection pipelines them: one round trip);
    /// `None` when embedded, where the reservation itself is as cheap.
    pub async fn peek(
        &self,
        user_hash: &str,
        now: DateTime<Utc>,
        budget: Option<&SendBudget>,
    ) -> Result<Option<Recent>, StoreError> {
        let QuotaStore::Redis { conn, prefix } = self else {
            return Ok(None);
        };
        let since = (now - Duration::days(1)).timestamp_millis();
        let [sends_key, load_key] = user_keys(prefix, user_hash);
        let mut read_sends = redis::cmd("ZRANGE");
        read_sends
            .arg(sends_key)
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES");
        let mut conn = conn.clone();
        let (sends, load): (Vec<(String, f64)>, Option<StoredLoad>) = match budget {
            None => (read_sends.query_async(&mut conn).await?, None),
            Some(_) => {
                let mut read_load = redis::cmd("HMGET");
                read_load.arg(load_key).arg("v").arg("t");
                let (sends, load) = redis::pipe()
                    .add_command(read_sends)
                    .add_command(read_load)
                    .query_async(&mut conn)
                    .await?;
                (sends, Some(load))
            }
        };
        Ok(Some(Recent {
            sends: sends
                .into_iter()
                .filter_map(|(id, ms)| Some((DateTime::from_timestamp_millis(ms as i64)?, id)))
                .collect(),
            load: load.and_then(|(value, at)| {
                Some(SendLoad {
                    value: value?,
                    at: DateTime::from_timestamp_millis(at?)?,
                })
            }),
        }))
    }

    /// Adds what the events record to the store ([`seed_from_recorded`]): each user's sends
    /// of the last day where the store lacks them (by candidate id, so nothing counts
    /// twice), and their send load where the store holds none (a load the store counted
    /// itself has counted later sends and is kept). A restart, an emptied store, or sends
    /// made before nudge-serve counted then reset neither the daily cap, the gap nor the
    /// budget.
    pub async fn seed(&self, plan: &[UserSeed]) -> Result<Seeded, StoreError> {
        let mut seeded = Seeded::default();
        match self {
            QuotaStore::Embedded(quotas) => {
                let mut quotas = quotas.lock().unwrap_or_else(|p| p.into_inner());
                for user in plan {
                    let recent = quotas.users.entry(user.user.clone()).or_default();
                    for (at, id) in &user.day_sends {
                        if !recent.sends.iter().any(|(_, known)| known == id) {
                            recent.sends.push((*at, id.clone()));
                            seeded.sends += 1;
                        }
                    }
                    if user.load.is_some() && recent.load.is_none() {
                        recent.load = user.load;
                        seeded.loads += 1;
                    }
                }
            }
            QuotaStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let sha = SEED.load_async(&mut conn).await?;
                for batch in plan.chunks(SEED_BATCH) {
                    let mut pipe = redis::pipe();
                    for user in batch {
                        let command = pipe.cmd("EVALSHA").arg(&sha).arg(2);
                        let [sends_key, load_key] = user_keys(prefix, &user.user);
                        command.arg(sends_key).arg(load_key);
                        match user.load {
                            Some(load) => command
                                .arg(format!("{:.17e}", load.value))
                                .arg(load.at.timestamp_millis()),
                            None => command.arg("").arg(0),
                        };
                        command.arg(user.memory.num_milliseconds());
                        for (at, id) in &user.day_sends {
                            command.arg(at.timestamp_millis()).arg(id);
                        }
                    }
                    let stored: Vec<(usize, usize)> = pipe.query_async(&mut conn).await?;
                    for (sends, loads) in stored {
                        seeded.sends += sends;
                        seeded.loads += loads;
                    }
                }
            }
        }
        seeded.users = plan.len();
        Ok(seeded)
    }

    /// Reserves a send of `candidate_id` to `user_hash` at `now`, if `rule` allows it.
    pub async fn reserve(
        &self,
        rule: QuotaRule<'_>,
        user_hash: &str,
        candidate_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Reservation, StoreError> {
        match self {
            QuotaStore::Embedded(quotas) => {
                // A poisoned lock only means another request panicked mid-update; the
                // map itself is still consistent (each update is one push or retain).
                let mut quotas = quotas.lock().unwrap_or_else(|p| p.into_inner());
                quotas.sweep(now, rule.budget);
                let recent = quotas.users.entry(user_hash.to_owned()).or_default();
                recent.sends.retain(|(t, _)| *t > now - Duration::days(1));
                Ok(settled(rule, recent, candidate_id, now).unwrap_or_else(|| {
                    recent.sends.push((now, candidate_id.to_owned()));
                    recent.load = rule.budget.map(|b| b.after_send(recent.load, now));
                    Reservation::Granted
                }))
            }
            QuotaStore::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                // The script's encoding: a half-life of 0 for no budget, a max below 0 for
                // a load kept but not enforced.
                let (half_life, memory) = rule.budget.map_or((0, 0), |budget| {
                    (
                        budget.half_life.num_milliseconds(),
                        budget.memory().num_milliseconds(),
                    )
                });
                let max = rule.enforced_budget().map_or(-1.0, |budget| budget.max);
                let [sends_key, load_key] = user_keys(prefix, user_hash);
                let outcome: String = RESERVE
                    .key(sends_key)
                    .key(load_key)
                    .arg(now.timestamp_millis())
                    .arg(rule.gates.min_gap.num_milliseconds())
                    .arg(rule.gates.max_sends_per_day)
                    .arg(candidate_id)
                    .arg(half_life)
                    .arg(max)
                    .arg(memory)
                    .invoke_async(&mut conn)
                    .await?;
                Ok(match outcome.as_str() {
                    "granted" => Reservation::Granted,
                    "repeated" => Reservation::Repeated,
                    "daily_cap" => Reservation::Refused(Reason::DailyCap),
                    "send_budget" => Reservation::Refused(Reason::SendBudget),
                    _ => Reservation::Refused(Reason::MinGap),
                })
            }
        }
    }
}

/// What [`QuotaStore::seed`] adds for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSeed {
    /// The user hash.
    pub user: String,
    /// Recorded sends within a day of the newest recorded send (older ones no quota
    /// counts).
    pub day_sends: Sends,
    /// The send load of every recorded send, when the policy has a budget.
    pub load: Option<SendLoad>,
    /// How long the load is remembered.
    pub memory: Duration,
}

/// What a seeding added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Users with recorded sends.
    pub users: usize,
    /// Sends of the last day the store did not hold.
    pub sends: usize,
    /// Loads stored where none was.
    pub loads: usize,
}

impl AddAssign for Seeded {
    fn add_assign(&mut self, other: Seeded) {
        self.users += other.users;
        self.sends += other.sends;
        self.loads += other.loads;
    }
}

/// How far back before the newest recorded send [`recorded_sends`] must read: a day for
/// the quotas, and the budget's memory for the load.
pub fn seed_window(budget: Option<&SendBudget>) -> Duration {
    budget.map_or(Duration::days(1), |b| b.memory().max(Duration::days(1)))
}

/// The newest recorded send (`None` before any): the window seeding reads ends there, not
/// at the clock, so a replayed or simulated history counts too.
pub async fn newest_recorded_send(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(sent_at) FROM silver.notifications")
        .fetch_one(pool)
        .await
}

/// Each user's recorded sends after `since`, in time order: the `notification_sent` rows
/// in silver (from any arm and any sender), streamed a user at a time so seeding holds
/// one batch of users, not every send, however many there are.
pub fn recorded_sends(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> impl Stream<Item = Result<(String, Sends), sqlx::Error>> + '_ {
    sqlx::query_as::<_, (String, Vec<DateTime<Utc>>, Vec<String>)>(
        "SELECT user_hash, array_agg(sent_at ORDER BY sent_at, notification_id),
                array_agg(notification_id ORDER BY sent_at, notification_id)
         FROM silver.notifications
         WHERE sent_at > $1
         GROUP BY user_hash",
    )
    .bind(since)
    .fetch(pool)
    .map_ok(|(user, times, ids)| (user, times.into_iter().zip(ids).collect()))
}

impl UserSeed {
    /// What to seed from a user's recorded sends (in time order), given the `newest`
    /// recorded send of all: the sends within a day of it, and, under `budget`, the load
    /// of all of them ([`SendBudget::load_of`], the reservation's own step folded over
    /// them).
    pub fn of(
        user: String,
        sends: Sends,
        newest: DateTime<Utc>,
        budget: Option<&SendBudget>,
    ) -> Self {
        let times: Vec<DateTime<Utc>> = sends.iter().map(|(at, _)| *at).collect();
        let day_ago = newest - Duration::days(1);
        UserSeed {
            load: budget.and_then(|b| b.load_of(&times)),
            memory: budget.map_or(Duration::zero(), SendBudget::memory),
            day_sends: sends.into_iter().filter(|(at, _)| *at > day_ago).collect(),
            user,
        }
    }
}

/// Seeds `store` from the notifications the events record ([`QuotaStore::seed`]), a
/// batch of users at a time: the day's sends and, under `budget`, each user's send load.
pub async fn seed_from_recorded(
    store: &QuotaStore,
    pool: &PgPool,
    budget: Option<&SendBudget>,
) -> Result<Seeded, StoreError> {
    let Some(newest) = newest_recorded_send(pool).await? else {
        return Ok(Seeded::default());
    };
    let mut seeded = Seeded::default();
    let mut batch = Vec::with_capacity(SEED_BATCH);
    let mut recorded = pin!(recorded_sends(pool, newest - seed_window(budget)));
    while let Some(next) = recorded.next().await {
        let (user, sends) = next?;
        batch.push(UserSeed::of(user, sends, newest, budget));
        if batch.len() == SEED_BATCH {
            seeded += store.seed(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        seeded += store.seed(&batch).await?;
    }
    Ok(seeded)
}

/// What a reservation of `candidate_id` at `now` is certain to answer, given what the
/// store holds of the user: `Repeated` when the candidate is among their sends of the
/// day before, `Refused` when the quota rule refuses it; `None` when it would be
/// granted, which only the atomic step may do.
pub fn settled(
    rule: QuotaRule<'_>,
    recent: &Recent,
    candidate_id: &str,
    now: DateTime<Utc>,
) -> Option<Reservation> {
    if recent.sends.iter().any(|(_, id)| id == candidate_id) {
        return Some(Reservation::Repeated);
    }
    let times: Vec<DateTime<Utc>> = recent.sends.iter().map(|(t, _)| *t).collect();
    quota_check(rule, &times, recent.load, now)
        .err()
        .map(Reservation::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::Policy;

    /// The policy's gates (2 a day, 8 h apart) and a send budget of 1.2 with a half-life
    /// of two days.
    fn policy() -> Policy {
        Policy::parse(
            "rollout: { mode: shadow, salt: s }\nthreshold: { initial: 0.3, min: 0.05, max: 0.9 }\nsend_budget: { half_life_hours: 48, max: 1.2 }\n",
        )
        .unwrap()
    }

    /// The rule without the budget.
    fn unbudgeted(policy: &Policy) -> QuotaRule<'_> {
        QuotaRule {
            gates: &policy.gates,
            budget: None,
            enforce_budget: false,
        }
    }

    fn recent(sends: &[(DateTime<Utc>, &str)]) -> Recent {
        Recent {
            sends: sends.iter().map(|&(t, id)| (t, id.to_owned())).collect(),
            load: None,
        }
    }

    #[test]
    fn settled_answers_retries_and_refusals_and_leaves_grants_to_the_atomic_step() {
        let policy = policy();
        let rule = unbudgeted(&policy);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |h: i64| t0 + Duration::hours(h);
        let one = recent(&[(t0, "n1")]);
        let two = recent(&[(t0, "n1"), (at(9), "n2")]);
        assert_eq!(settled(rule, &Recent::default(), "n1", t0), None);
        assert_eq!(
            settled(rule, &one, "n1", at(1)),
            Some(Reservation::Repeated)
        );
        assert_eq!(
            settled(rule, &one, "n2", at(1)),
            Some(Reservation::Refused(Reason::MinGap))
        );
        assert_eq!(settled(rule, &one, "n2", at(9)), None);
        assert_eq!(
            settled(rule, &two, "n3", at(20)),
            Some(Reservation::Refused(Reason::DailyCap))
        );
        assert_eq!(
            settled(rule, &two, "n2", at(20)),
            Some(Reservation::Repeated)
        );
    }

    #[tokio::test]
    async fn the_embedded_store_counts_every_send_in_the_load_and_refuses_only_the_model_arm() {
        let policy = policy(); // budget 1.2, half-life 24 h
        let store = QuotaStore::Embedded(Arc::default());
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |h: i64| t0 + Duration::hours(h);
        let rule = |enforce_budget| QuotaRule {
            gates: &policy.gates,
            budget: policy.send_budget.as_ref(),
            enforce_budget,
        };
        // Two baseline sends 12 h apart: a load of 2^(-12/48) + 1 ≈ 1.84 at the second.
        for (candidate, hour) in [("n1", 0), ("n2", 12)] {
            let granted = store.reserve(rule(false), "u", candidate, at(hour)).await;
            assert_eq!(granted.unwrap(), Reservation::Granted);
        }
        let budget = Reservation::Refused(Reason::SendBudget);
        for (enforce, candidate, hour, expected) in [
            // At 30 h the cap and the gap allow a send, but the load, 1.84 · 2^(-18/48) ≈
            // 1.42, is over the budget: the model arm is refused, the baseline arm is not.
            (true, "n3", 30, budget),
            (false, "n3", 30, Reservation::Granted),
            // That send counted: 1.42 + 1 = 2.42 at 30 h falls under 1.2 after 48.6 h,
            // past a day without sends.
            (true, "n4", 78, budget),
            (true, "n4", 79, Reservation::Granted),
        ] {
            let reserved = store.reserve(rule(enforce), "u", candidate, at(hour)).await;
            assert_eq!(reserved.unwrap(), expected, "{candidate} at {hour} h");
        }
    }

    #[test]
    fn a_users_seed_keeps_the_sends_of_the_day_before_the_newest_and_every_sends_load() {
        let policy = policy(); // budget 1.2, half-life 48 h
        let budget = policy.send_budget.unwrap();
        let newest = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |h: i64| newest - Duration::hours(h);
        let send = |h: i64, id: &str| (at(h), id.to_owned());
        let a_sends = vec![send(30, "a1"), send(23, "a2"), send(0, "a3")];
        let a = UserSeed::of("a".into(), a_sends.clone(), newest, Some(&budget));
        assert_eq!(a.day_sends, [send(23, "a2"), send(0, "a3")]);
        let load = a.load.unwrap();
        let expected = 2f64.powf(-30.0 / 48.0) + 2f64.powf(-23.0 / 48.0) + 1.0;
        assert_eq!(load.at, newest);
        assert!((load.value - expected).abs() < 1e-12, "{load:?}");
        assert_eq!(a.memory, budget.memory());
        // The day is counted back from the newest send of all, not from the user's own.
        let b = UserSeed::of("b".into(), vec![send(48, "b1")], newest, Some(&budget));
        assert!(b.day_sends.is_empty());
        assert_eq!(b.load.unwrap().at, at(48));
        // Without a budget: the same sends, no load.
        let unbudgeted = UserSeed::of("a".into(), a_sends, newest, None);
        assert_eq!(unbudgeted.day_sends, a.day_sends);
        assert_eq!(unbudgeted.load, None);
        assert_eq!(seed_window(None), Duration::days(1));
        assert_eq!(seed_window(Some(&budget)), Duration::hours(48 * 20));
    }

    #[tokio::test]
    async fn seeding_adds_what_the_store_lacks_and_the_gates_and_budget_apply_it() {
        let policy = policy(); // 2 a day, 8 h apart; budget 1.2, half-life 48 h
        let budget = policy.send_budget.unwrap();
        let store = QuotaStore::Embedded(Arc::default());
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let hours = |h: i64| t0 + Duration::hours(h);
        let rule = QuotaRule {
            gates: &policy.gates,
            budget: Some(&budget),
            enforce_budget: true,
        };
        // "counted" was sent n1 by this store; the events record n1 too, and n0 before.
        let counted = store.reserve(rule, "counted", "n1", t0).await.unwrap();
        assert_eq!(counted, Reservation::Granted);
        let recorded = |user: &str| {
            (
                user.to_owned(),
                vec![(hours(-1), "n0".to_owned()), (t0, "n1".to_owned())],
            )
        };
        let plan = ["counted", "new"].map(|user| {
            let (user, sends) = recorded(user);
            UserSeed::of(user, sends, t0, Some(&budget))
        });
        let seeded = store.seed(&plan).await.unwrap();
        // n0 for both, n1 for "new" only; a load for "new" only.
        assert_eq!(
            seeded,
            Seeded {
                users: 2,
                sends: 3,
                loads: 1
            }
        );
        // Seeding again adds nothing.
        let again = store.seed(&plan).await.unwrap();
        assert_eq!((again.sends, again.loads), (0, 0));
        // Two sends in the last day: the cap refuses both users until n0 is a day old.
        let capped = Reservation::Refused(Reason::DailyCap);
        for user in ["counted", "new"] {
            assert_eq!(
                store.reserve(rule, user, "n2", hours(9)).await.unwrap(),
                capped
            );
        }
        // A day after n1: "new" carries the recorded load, 1.99 at t0, 1.40 a day later;
        // "counted" kept its own, 1 at t0, 0.71 a day later.
        let refused = Reservation::Refused(Reason::SendBudget);
        assert_eq!(
            store.reserve(rule, "new", "n2", hours(24)).await.unwrap(),
            refused
        );
        let kept = store
            .reserve(rule, "counted", "n2", hours(24))
            .await
            .unwrap();
        assert_eq!(kept, Reservation::Granted);
    }

    #[test]
    fn a_users_keys_share_their_hash_tag_so_a_cluster_puts_them_in_one_slot() {
        // Redis Cluster hashes only what is between the first `{` and the next `}`.
        let tag = |key: &str| {
            let open = key.find('{').expect("a hash tag");
            let close = open + key[open..].find('}').expect("closed");
            key[open + 1..close].to_owned()
        };
        let [sends, load] = user_keys("nudge:", "a1b2");
        assert_eq!((tag(&sends), tag(&load)), ("a1b2".into(), "a1b2".into()));
        assert_ne!(sends, load);
    }

    #[test]
    fn a_sweep_keeps_users_whose_load_the_budget_still_remembers() {
        let policy = policy();
        let budget = policy.send_budget.unwrap(); // remembered 20 × 48 h = 40 days
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let sent = |days: i64| {
            let at = now - Duration::days(days);
            Recent {
                sends: vec![(at, "n".to_owned())],
                load: Some(SendLoad { value: 1.0, at }),
            }
        };
        let mut quotas = SendsByUser::default();
        for i in 0..MIN_SWEEP {
            // Alternately two days and fifty days since the user's only send.
            let days = if i % 2 == 0 { 2 } else { 50 };
            quotas.users.insert(format!("u{i}"), sent(days));
        }
        quotas.sweep(now, Some(&budget));
        assert_eq!(quotas.users.len(), MIN_SWEEP / 2);
        assert!(
            quotas
                .users
                .values()
                .all(|r| r.sends[0].0 == now - Duration::days(2))
        );
        // Without a budget, only the last day's sends are kept.
        quotas.sweep_at = 0;
        quotas.users.insert("recent".into(), sent(0));
        for i in 0..MIN_SWEEP {
            quotas.users.insert(format!("v{i}"), sent(2));
        }
        quotas.sweep(now, None);
        assert_eq!(quotas.users.keys().collect::<Vec<_>>(), ["recent"]);
    }

    #[tokio::test]
    async fn the_embedded_store_forgets_users_without_a_send_in_the_last_day() {
        let store = QuotaStore::Embedded(Arc::default());
        let QuotaStore::Embedded(quotas) = &store else {
            unreachable!()
        };
        let policy = policy();
        let rule = unbudgeted(&policy);
        let day_one = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for i in 0..5_000 {
            let granted = store.reserve(rule, &format!("u{i}"), "n1", day_one).await;
            assert_eq!(granted.unwrap(), Reservation::Granted);
        }
        assert_eq!(quotas.lock().unwrap().users.len(), 5_000);

        // Two days later, new users arrive: once the map has doubled since the last sweep
        // (8,192 users), the day-one users are forgotten, before every new one is in.
        let day_three = day_one + Duration::days(2);
        let mut largest = 0;
        for i in 0..4_000 {
            let user = format!("v{i}");
            let granted = store.reserve(rule, &user, "n1", day_three).await;
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
        let again = store.reserve(rule, "v0", "n2", day_three).await;
        assert_eq!(again.unwrap(), Reservation::Refused(Reason::MinGap));
    }
}
