//! The population simulator: EverReach users whose every outcome probability is known.
//!
//! There is no production data, so nudge carries a simulated population (see "Simulator"
//! in DESIGN.md). Each user has latent [traits](population::Traits) and a changing
//! [state](behaviour::State); day by day the [day loop](day) emits the catalog's events,
//! which go through the same [`Ingestor`](crate::ingest::Ingestor) as production events,
//! and records the exact probability behind every notification, active day and paywall
//! view ([`truth`]), from which the [report] computes oracle AUCs.
//!
//! The day loop is separate from the [policy] that decides notifications:
//! [`Simulation::plan_day`] lists the day's opportunities, any policy decides them, and
//! [`Simulation::play_day`] plays the day with those decisions.

pub mod behaviour;
pub mod day;
pub mod policy;
pub mod population;
pub mod profile;
pub mod random;
pub mod report;
pub mod run;
pub mod store;
pub mod truth;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use self::day::{DayContext, DayOutput, UserSim};
use self::policy::{Decision, NotificationPolicy, Opportunity};
use self::truth::ActionProbabilities;
use crate::ingest::hashing::UserHasher;

/// Most users one simulation holds.
pub const MAX_USERS: u32 = 10_000_000;
/// Most days one simulation covers.
pub const MAX_DAYS: i32 = 3_650;

/// A simulation's parameters, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    users: u32,
    days: i32,
    seed: u64,
    start: NaiveDate,
    exploration: f64,
}

/// Why simulation parameters were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    /// Users out of range.
    #[error("--users must be between 1 and {MAX_USERS}")]
    Users,
    /// Days out of range.
    #[error("--days must be between 1 and {MAX_DAYS}")]
    Days,
    /// Exploration out of range.
    #[error("--exploration must be between 0 and 1")]
    Exploration,
}

impl SimConfig {
    /// Checks the parameters.
    pub fn new(
        users: u32,
        days: i32,
        seed: u64,
        start: NaiveDate,
        exploration: f64,
    ) -> Result<Self, SimConfigError> {
        if !(1..=MAX_USERS).contains(&users) {
            return Err(SimConfigError::Users);
        }
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(SimConfigError::Days);
        }
        if !(0.0..=1.0).contains(&exploration) {
            return Err(SimConfigError::Exploration);
        }
        Ok(Self {
            users,
            days,
            seed,
            start,
            exploration,
        })
    }

    /// Number of users (`u0` … `u<users-1>`).
    pub fn users(&self) -> u32 {
        self.users
    }

    /// Number of simulated days.
    pub fn days(&self) -> i32 {
        self.days
    }

    /// Seed of every random draw.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// First simulated day (UTC).
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// The logging policy's exploration share.
    pub fn exploration(&self) -> f64 {
        self.exploration
    }

    /// Midnight UTC of the first day.
    pub fn start_instant(&self) -> DateTime<Utc> {
        self.start.and_time(chrono::NaiveTime::MIN).and_utc()
    }
}

/// A population being simulated, day after day. A clone continues independently (to
/// play several policies from the same history).
#[derive(Debug, Clone)]
pub struct Simulation {
    config: SimConfig,
    users: Vec<UserSim>,
}

impl Simulation {
    /// Draws the population of `config`; user ids are hashed with `hasher`.
    pub fn new(config: SimConfig, hasher: &UserHasher) -> Self {
        let users = (0..config.users)
            .map(|i| {
                let (traits, state) = population::draw_user(config.seed, i, config.days, hasher);
                UserSim::new(traits, state)
            })
            .collect();
        Self { config, users }
    }

    /// The parameters.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The users.
    pub fn users(&self) -> &[UserSim] {
        &self.users
    }

    fn weekday(&self, day: i32) -> u8 {
        let first = self.config.start.weekday().num_days_from_monday() as i32;
        (first + day).rem_euclid(7) as u8
    }

    /// Starts `day`: the scheduler's opportunities, in user order.
    pub fn plan_day(&mut self, day: i32) -> Vec<Opportunity> {
        let (seed, weekday) = (self.config.seed, self.weekday(day));
        self.users
            .iter_mut()
            .filter_map(|u| u.begin_day(seed, day, weekday))
            .collect()
    }

    /// Plays `day` with one decision per opportunity of [`Simulation::plan_day`].
    /// `probabilities` gives the deciding policy's action probabilities (see
    /// [`NotificationPolicy::action_probabilities`]).
    pub fn play_day(
        &mut self,
        day: i32,
        opportunities: &[Opportunity],
        decisions: &[Decision],
        probabilities: &ActionProbabilities<'_>,
    ) -> DayOutput {
        let ctx = DayContext {
            seed: self.config.seed,
            start: self.config.start_instant(),
            days: self.config.days,
            day,
            weekday: self.weekday(day),
            probabilities,
        };
        let mut out = DayOutput::default();
        let mut slots = opportunities.iter().zip(decisions).peekable();
        for user in &mut self.users {
            let slot = slots.next_if(|(opp, _)| opp.user == user.traits.index);
            user.play_day(&ctx, slot, &mut out);
        }
        out
    }

    /// Plans, decides with `policy` and plays `day`.
    pub fn step(&mut self, day: i32, policy: &mut dyn NotificationPolicy) -> DayOutput {
        let opportunities = self.plan_day(day);
        let decisions = policy.decide(&opportunities);
        self.play_day(day, &opportunities, &decisions, &|o: &Opportunity| {
            policy.action_probabilities(o)
        })
    }

    /// Closes what the horizon leaves open (those outcomes are unknown).
    pub fn finish(&mut self) -> DayOutput {
        let mut out = DayOutput::default();
        for user in &mut self.users {
            user.finish(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::policy::LoggingPolicy;
    use sha2::{Digest, Sha256};

    fn run(users: u32, days: i32, seed: u64) -> (Vec<u8>, usize) {
        let config = SimConfig::new(
            users,
            days,
            seed,
            NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            0.3,
        )
        .unwrap();
        let mut sim = Simulation::new(config, &UserHasher::new(b"k"));
        let mut policy = LoggingPolicy::new(seed, 0.3);
        let mut digest = Sha256::new();
        let mut events = 0;
        for day in 0..days {
            for e in sim.step(day, &mut policy).events {
                digest.update(e.to_string().as_bytes());
                events += 1;
            }
        }
        (digest.finalize().to_vec(), events)
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let (a, n) = run(60, 10, 42);
        assert!(n > 100, "only {n} events");
        assert_eq!(a, run(60, 10, 42).0);
        assert_ne!(a, run(60, 10, 43).0);
    }

    /// Every event of 300 users over 14 days, with every user's chance of a crash per
    /// session set to `rate`.
    fn events_at_crash_rate(rate: f64) -> Vec<serde_json::Value> {
        let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
        let config = SimConfig::new(300, 14, 11, start, 0.3).unwrap();
        let mut sim = Simulation::new(config, &UserHasher::new(b"k"));
        for user in &mut sim.users {
            user.traits.crashes_per_session = rate;
        }
        let mut policy = LoggingPolicy::new(11, 0.3);
        (0..14)
            .flat_map(|day| sim.step(day, &mut policy).events)
            .collect()
    }

    #[test]
    fn sessions_crash_at_their_rate_and_crashes_change_no_other_event() {
        let is_crash = |e: &serde_json::Value| e["event"] == "$exception";
        let with = events_at_crash_rate(0.2);
        let without = events_at_crash_rate(0.0);
        assert!(!without.iter().any(is_crash));
        let sessions = with.iter().filter(|e| e["event"] == "app_opened").count();
        let crashes: Vec<usize> = (0..with.len()).filter(|&i| is_crash(&with[i])).collect();
        let share = crashes.len() as f64 / sessions as f64;
        assert!(sessions > 2_000, "only {sessions} sessions");
        assert!((share - 0.2).abs() < 0.03, "{share} of sessions crashed");
        for &i in &crashes {
            let (crash, before) = (&with[i], &with[i - 1]);
            assert_eq!(crash["properties"]["$exception_level"], "fatal");
            assert_eq!(
                (&crash["distinct_id"], &crash["timestamp"]),
                (&before["distinct_id"], &before["timestamp"]),
                "a crash is reported at its session's last event"
            );
        }
        let rest: Vec<_> = with.into_iter().filter(|e| !is_crash(e)).collect();
        assert_eq!(rest, without);
    }

    #[test]
    fn parameters_are_checked() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
        assert_eq!(SimConfig::new(0, 5, 1, d, 0.3), Err(SimConfigError::Users));
        assert_eq!(SimConfig::new(5, 0, 1, d, 0.3), Err(SimConfigError::Days));
        assert_eq!(
            SimConfig::new(5, 5, 1, d, 1.5),
            Err(SimConfigError::Exploration)
        );
    }
}
