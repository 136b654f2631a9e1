//! The gates a send passes in every arm, as pure functions: the kill switch, push opt-out
//! and quiet hours need only the request; the daily cap and minimum gap need the user's
//! recent sends, which the quota store keeps ([`crate::store::quota`]). The model arm's
//! send budget needs the user's send load, a decayed count of their sends, which the
//! quota store keeps beside them.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// Gate settings from policy.yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Sends allowed per user in any rolling 24 hours.
    pub max_sends_per_day: u32,
    /// Shortest time between two sends to a user.
    pub min_gap: Duration,
    /// No sends in this local-time window.
    pub quiet_hours: Option<QuietHours>,
}

/// The model arm's send budget: it sends to a user only while their send load, a count
/// of their past sends in which each weighs half as much per `half_life` of age, is
/// below `max`. Every send counts in the load, whichever arm made it: the user tires of
/// all of them. The baseline arm is never refused by it, so control keeps the
/// scheduler's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendBudget {
    /// Age at which a send weighs half.
    pub half_life: Duration,
    /// The load at which the model arm stops sending.
    pub max: f64,
}

/// A user's send load: `value` as of `at`, decaying from there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendLoad {
    /// The decayed count of sends at `at`.
    pub value: f64,
    /// When `value` was computed: the user's latest send.
    pub at: DateTime<Utc>,
}

impl SendBudget {
    /// How many half-lives after a user's latest send their load is forgotten: it then
    /// weighs less than a millionth of a send.
    pub const FORGET_AFTER_HALF_LIVES: i32 = 20;

    /// The load at `now` (a load stamped after `now`, from a request with a later clock,
    /// is taken as it is).
    pub fn load_at(&self, load: Option<SendLoad>, now: DateTime<Utc>) -> f64 {
        load.map_or(0.0, |l| {
            let age = (now - l.at).max(Duration::zero());
            l.value * 0.5f64.powf(age.as_seconds_f64() / self.half_life.as_seconds_f64())
        })
    }

    /// The load after one more send at `now`.
    pub fn after_send(&self, load: Option<SendLoad>, now: DateTime<Utc>) -> SendLoad {
        SendLoad {
            value: self.load_at(load, now) + 1.0,
            at: load.map_or(now, |l| l.at.max(now)),
        }
    }

    /// The load after `sends` (in time order) counted from none: what the quota store
    /// holds of a user once it has counted each of them.
    pub fn load_of(&self, sends: &[DateTime<Utc>]) -> Option<SendLoad> {
        sends
            .iter()
            .fold(None, |load, &at| Some(self.after_send(load, at)))
    }

    /// Whether the model arm may send at `now`, given the user's load.
    pub fn check(&self, load: Option<SendLoad>, now: DateTime<Utc>) -> Result<(), Reason> {
        if self.load_at(load, now) < self.max {
            Ok(())
        } else {
            Err(Reason::SendBudget)
        }
    }

    /// How long a user's load is kept after their latest send.
    pub fn memory(&self) -> Duration {
        self.half_life * Self::FORGET_AFTER_HALF_LIVES
    }
}

/// What one reservation applies: the gates' daily cap and minimum gap, and the send
/// budget, tracked whenever the policy has one and enforced only in the model arm.
#[derive(Debug, Clone, Copy)]
pub struct QuotaRule<'a> {
    /// The gates.
    pub gates: &'a Gates,
    /// The policy's send budget, if any.
    pub budget: Option<&'a SendBudget>,
    /// Whether the budget may refuse this send (the model arm decides it).
    pub enforce_budget: bool,
}

impl QuotaRule<'_> {
    /// The budget that may refuse this send, if any.
    pub fn enforced_budget(&self) -> Option<&SendBudget> {
        self.budget.filter(|_| self.enforce_budget)
    }
}

/// A local-time window, in minutes after midnight; it may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// First quiet minute.
    pub start: u16,
    /// First minute that is no longer quiet.
    pub end: u16,
}

impl QuietHours {
    /// Whether `minute` (after local midnight) is quiet.
    pub fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Why a candidate was or was not sent: the `reason` of each decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Sent.
    Ok,
    /// The model's best candidate scored under the threshold.
    BelowThreshold,
    /// Another candidate was chosen.
    NotSelected,
    /// The user had the day's maximum of sends.
    DailyCap,
    /// The last send was too recent.
    MinGap,
    /// It is quiet hours in the user's local time.
    QuietHours,
    /// The user turned push notifications off.
    OptedOut,
    /// The kill switch is on.
    KillSwitch,
    /// The quota store could not be reached: nothing is sent rather than risk the cap.
    QuotaUnavailable,
    /// The user's recent sends reach the model arm's send budget.
    SendBudget,
}

impl Reason {
    /// The reason's name in responses, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::BelowThreshold => "below_threshold",
            Reason::NotSelected => "not_selected",
            Reason::DailyCap => "daily_cap",
            Reason::MinGap => "min_gap",
            Reason::QuietHours => "quiet_hours",
            Reason::OptedOut => "opted_out",
            Reason::KillSwitch => "kill_switch",
            Reason::QuotaUnavailable => "quota_unavailable",
            Reason::SendBudget => "send_budget",
        }
    }
}

/// The gate that stops every send to this user right now, if any, before quotas: the
/// kill switch, then opt-out, then quiet hours at `local_minute`.
pub fn blocking_gate(
    gates: &Gates,
    kill_switch: bool,
    opted_out: bool,
    local_minute: u16,
) -> Option<Reason> {
    if kill_switch {
        Some(Reason::KillSwitch)
    } else if opted_out {
        Some(Reason::OptedOut)
    } else if gates.quiet_hours.is_some_and(|q| q.contains(local_minute)) {
        Some(Reason::QuietHours)
    } else {
        None
    }
}

/// Whether one more send at `now` fits the quota, given the user's earlier sends (any
/// order; those older than a day are ignored) and their send load: the daily cap, then
/// the minimum gap, then the send budget where `rule` enforces it. The Redis script of
/// [`crate::store::quota`] applies the same rule.
pub fn quota_check(
    rule: QuotaRule<'_>,
    sends: &[DateTime<Utc>],
    load: Option<SendLoad>,
    now: DateTime<Utc>,
) -> Result<(), Reason> {
    let gates = rule.gates;
    let day_ago = now - Duration::days(1);
    let recent = sends.iter().filter(|&&t| t > day_ago);
    let (count, last) = recent.fold((0u32, None), |(n, last), &t| {
        (n + 1, Some(last.map_or(t, |l: DateTime<Utc>| l.max(t))))
    });
    if count >= gates.max_sends_per_day {
        Err(Reason::DailyCap)
    } else if last.is_some_and(|l| now - l < gates.min_gap) {
        Err(Reason::MinGap)
    } else {
        rule.enforced_budget()
            .map_or(Ok(()), |budget| budget.check(load, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gates() -> Gates {
        Gates {
            max_sends_per_day: 2,
            min_gap: Duration::hours(8),
            quiet_hours: Some(QuietHours {
                start: 22 * 60,
                end: 8 * 60,
            }),
        }
    }

    /// The rule of `gates` without a send budget.
    fn unbudgeted(gates: &Gates) -> QuotaRule<'_> {
        QuotaRule {
            gates,
            budget: None,
            enforce_budget: false,
        }
    }

    fn budget() -> SendBudget {
        SendBudget {
            half_life: Duration::hours(24),
            max: 1.5,
        }
    }

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + Duration::hours(hours)
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let q = gates().quiet_hours.unwrap();
        assert!(
            q.contains(22 * 60)
                && q.contains(23 * 60 + 59)
                && q.contains(0)
                && q.contains(7 * 60 + 59)
        );
        assert!(!q.contains(8 * 60) && !q.contains(21 * 60 + 59) && !q.contains(12 * 60));
        let day = QuietHours {
            start: 13 * 60,
            end: 14 * 60,
        };
        assert!(day.contains(13 * 60 + 30) && !day.contains(14 * 60) && !day.contains(0));
    }

    #[test]
    fn the_kill_switch_outranks_opt_out_which_outranks_quiet_hours() {
        let g = gates();
        assert_eq!(
            blocking_gate(&g, true, true, 23 * 60),
            Some(Reason::KillSwitch)
        );
        assert_eq!(
            blocking_gate(&g, false, true, 23 * 60),
            Some(Reason::OptedOut)
        );
        assert_eq!(
            blocking_gate(&g, false, false, 23 * 60),
            Some(Reason::QuietHours)
        );
        assert_eq!(blocking_gate(&g, false, false, 12 * 60), None);
    }

    #[test]
    fn the_daily_cap_and_the_minimum_gap_hold() {
        let g = gates();
        let rule = unbudgeted(&g);
        assert_eq!(quota_check(rule, &[], None, at(0)), Ok(()));
        assert_eq!(
            quota_check(rule, &[at(0)], None, at(7)),
            Err(Reason::MinGap)
        );
        assert_eq!(quota_check(rule, &[at(0)], None, at(8)), Ok(()));
        assert_eq!(
            quota_check(rule, &[at(0), at(9)], None, at(20)),
            Err(Reason::DailyCap)
        );
        // The first send leaves the rolling day after 24 hours.
        assert_eq!(quota_check(rule, &[at(9), at(0)], None, at(25)), Ok(()));
    }

    #[test]
    fn a_send_weighs_half_after_each_half_life() {
        let b = budget();
        assert_eq!(b.load_at(None, at(0)), 0.0);
        let first = b.after_send(None, at(0));
        assert_eq!(
            first,
            SendLoad {
                value: 1.0,
                at: at(0)
            }
        );
        assert!((b.load_at(Some(first), at(24)) - 0.5).abs() < 1e-12);
        assert!((b.load_at(Some(first), at(48)) - 0.25).abs() < 1e-12);
        let second = b.after_send(Some(first), at(24));
        assert!((second.value - 1.5).abs() < 1e-12 && second.at == at(24));
        // A request with an earlier clock neither grows the load nor moves it back.
        assert_eq!(b.load_at(Some(second), at(12)), second.value);
        assert_eq!(b.after_send(Some(second), at(12)).at, at(24));
    }

    #[test]
    fn the_budget_refuses_at_its_max_and_only_where_enforced() {
        let g = gates();
        let b = budget(); // 1.5, half-life a day
        let rule = |enforce_budget| QuotaRule {
            gates: &g,
            budget: Some(&b),
            enforce_budget,
        };
        let load = Some(SendLoad {
            value: 3.0,
            at: at(0),
        });
        // 3 · 2^-1 = 1.5 a day later: at the max, refused; an hour later, under it.
        assert_eq!(
            quota_check(rule(true), &[], load, at(24)),
            Err(Reason::SendBudget)
        );
        assert_eq!(quota_check(rule(true), &[], load, at(25)), Ok(()));
        assert_eq!(quota_check(rule(false), &[], load, at(24)), Ok(()));
        // The cap and the gap come first.
        assert_eq!(
            quota_check(rule(true), &[at(20)], load, at(24)),
            Err(Reason::MinGap)
        );
    }

    proptest! {
        /// Whatever the history, granting every allowed send never puts more than the cap
        /// in any 24 hours, nor two sends closer than the gap.
        #[test]
        fn granted_sends_respect_cap_and_gap(asks in proptest::collection::vec(0i64..240, 1..60)) {
            let g = gates();
            let mut asks = asks;
            asks.sort_unstable();
            let mut granted: Vec<DateTime<Utc>> = Vec::new();
            for h in asks {
                if quota_check(unbudgeted(&g), &granted, None, at(h)).is_ok() {
                    granted.push(at(h));
                }
            }
            for (i, &t) in granted.iter().enumerate() {
                let in_day = granted.iter().filter(|&&u| u <= t && u > t - Duration::days(1)).count();
                prop_assert!(in_day as u32 <= g.max_sends_per_day);
                if i > 0 {
                    prop_assert!(t - granted[i - 1] >= g.min_gap);
                }
            }
        }

        /// The load kept step by step, one decay and one addition per send, is the sum
        /// of every send's weight, 2^(-age / half-life); and under an enforced budget no
        /// send is granted once that sum reaches the max.
        #[test]
        fn the_running_load_is_the_decayed_count_and_the_budget_holds(
            asks in proptest::collection::vec(0i64..24 * 30, 1..80),
            half_life_hours in 1i64..120,
            max in 0.5..4.0f64,
        ) {
            let g = gates();
            let b = SendBudget { half_life: Duration::hours(half_life_hours), max };
            let rule = QuotaRule { gates: &g, budget: Some(&b), enforce_budget: true };
            let mut asks = asks;
            asks.sort_unstable();
            let mut granted: Vec<DateTime<Utc>> = Vec::new();
            let mut load = None;
            for h in asks {
                let now = at(h);
                let decayed_count: f64 = granted
                    .iter()
                    .map(|&t| 0.5f64.powf((now - t).as_seconds_f64() / b.half_life.as_seconds_f64()))
                    .sum();
                prop_assert!((b.load_at(load, now) - decayed_count).abs() < 1e-9);
                // Counted afterwards from the same sends, the load is the same.
                prop_assert!((b.load_at(b.load_of(&granted), now) - decayed_count).abs() < 1e-9);
                if quota_check(rule, &granted, load, now).is_ok() {
                    prop_assert!(decayed_count < max);
                    granted.push(now);
                    load = Some(b.after_send(load, now));
                }
            }
        }
    }
}
