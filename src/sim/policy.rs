//! Who decides which notification a simulated user gets.
//!
//! Each day the simulator lists every user's notification opportunity (the scheduler's
//! daily slot with its candidates), a [`NotificationPolicy`] decides them all, and the
//! simulator plays the day with those decisions. The history uses the [`LoggingPolicy`];
//! a closed loop can put `nudge-serve` in its place.

use super::behaviour::NotifType;
use super::random::{self, Stream};

/// One candidate notification the scheduler proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Notification id (the `notification_id` property).
    pub id: String,
    /// Type.
    pub notif_type: NotifType,
    /// Contacts due for outreach (context for reminders).
    pub contacts_due: u32,
}

/// A user's daily slot: the scheduler asks what, if anything, to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Opportunity {
    /// Simulated user index (app id `u<index>`).
    pub user: u32,
    /// Day of the slot.
    pub day: i32,
    /// Seconds after UTC midnight of the slot.
    pub secs: f64,
    /// Local hour of the slot.
    pub local_hour: u8,
    /// The user's IANA timezone.
    pub timezone: &'static str,
    /// Candidates in the scheduler's order (at least one).
    pub candidates: Vec<Candidate>,
    /// The user turned push off (no policy may send).
    pub opted_out: bool,
}

/// A policy's answer for one opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index of the candidate to send, or `None` for no send.
    pub send: Option<usize>,
    /// Probability the policy had of taking this action, when it is known.
    pub propensity: Option<f64>,
    /// Arm recorded on `notification_sent`.
    pub arm: &'static str,
    /// Model version recorded on `notification_sent`, if a model decided.
    pub model_version: Option<String>,
}

/// Decides a day's notification opportunities.
pub trait NotificationPolicy {
    /// One decision per opportunity, in order.
    fn decide(&mut self, opportunities: &[Opportunity]) -> Vec<Decision>;

    /// The probability of each action for `opportunity` (index `k` = candidate `k`, the
    /// last = no send), when the policy can tell. The simulator's ground truth for
    /// windows that contain a later slot needs it; without it those truths are left out.
    fn action_probabilities(&self, opportunity: &Opportunity) -> Option<Vec<f64>>;
}

/// The history's policy: the scheduler's baseline (its first candidate), except that with
/// probability `exploration` the action is drawn uniformly from the candidates and "no
/// send". Every decision logs its propensity, so off-policy estimates are possible.
#[derive(Debug, Clone)]
pub struct LoggingPolicy {
    seed: u64,
    exploration: f64,
}

/// Default share of uniformly explored decisions.
pub const DEFAULT_EXPLORATION: f64 = 0.3;

impl LoggingPolicy {
    /// A logging policy drawing from the simulation's `seed`.
    pub fn new(seed: u64, exploration: f64) -> Self {
        Self {
            seed,
            exploration: exploration.clamp(0.0, 1.0),
        }
    }
}

impl NotificationPolicy for LoggingPolicy {
    fn decide(&mut self, opportunities: &[Opportunity]) -> Vec<Decision> {
        opportunities
            .iter()
            .map(|opp| {
                let probs = self.action_probabilities(opp).unwrap_or_default();
                let u = random::unit(self.seed, Stream::Policy, opp.user, opp.day);
                let mut acc = 0.0;
                let action = probs
                    .iter()
                    .position(|p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(probs.len() - 1);
                Decision {
                    send: (action < opp.candidates.len()).then_some(action),
                    propensity: Some(probs[action]),
                    arm: "logging",
                    model_version: None,
                }
            })
            .collect()
    }

    fn action_probabilities(&self, opportunity: &Opportunity) -> Option<Vec<f64>> {
        let k = opportunity.candidates.len();
        let mut probs = vec![0.0; k + 1];
        if opportunity.opted_out {
            probs[k] = 1.0;
        } else {
            let uniform = self.exploration / (k + 1) as f64;
            probs.iter_mut().for_each(|p| *p = uniform);
            probs[0] += 1.0 - self.exploration;
        }
        Some(probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opportunity(user: u32, types: &[NotifType], opted_out: bool) -> Opportunity {
        Opportunity {
            user,
            day: 3,
            secs: 36_000.0,
            local_hour: 10,
            timezone: "UTC",
            candidates: types
                .iter()
                .map(|&t| Candidate {
                    id: format!("n-{user}-{}", t.as_str()),
                    notif_type: t,
                    contacts_due: 0,
                })
                .collect(),
            opted_out,
        }
    }

    #[test]
    fn propensities_sum_to_one_and_match_the_choice_frequencies() {
        let mut policy = LoggingPolicy::new(11, 0.3);
        let types = [NotifType::ContactReminder, NotifType::WeeklyDigest];
        let opps: Vec<_> = (0..30_000).map(|u| opportunity(u, &types, false)).collect();
        let probs = policy.action_probabilities(&opps[0]).unwrap();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((probs[0] - (0.7 + 0.1)).abs() < 1e-12);
        let decisions = policy.decide(&opps);
        for (action, p) in probs.iter().enumerate() {
            let chosen = |d: &Decision| d.send.unwrap_or(types.len()) == action;
            let share = decisions.iter().filter(|d| chosen(d)).count() as f64 / opps.len() as f64;
            assert!((share - p).abs() < 0.01, "action {action}: {share} vs {p}");
            assert!(
                decisions
                    .iter()
                    .filter(|d| chosen(d))
                    .all(|d| d.propensity == Some(*p))
            );
        }
    }

    #[test]
    fn opted_out_users_are_never_sent_anything() {
        let mut policy = LoggingPolicy::new(1, 1.0);
        let opps: Vec<_> = (0..500)
            .map(|u| opportunity(u, &[NotifType::SuggestedContact], true))
            .collect();
        assert!(
            policy
                .decide(&opps)
                .iter()
                .all(|d| d.send.is_none() && d.propensity == Some(1.0))
        );
    }

    #[test]
    fn same_seed_same_decisions() {
        let opps: Vec<_> = (0..200)
            .map(|u| opportunity(u, &NotifType::ALL, false))
            .collect();
        let a = LoggingPolicy::new(9, 0.3).decide(&opps);
        assert_eq!(a, LoggingPolicy::new(9, 0.3).decide(&opps));
        assert_ne!(a, LoggingPolicy::new(10, 0.3).decide(&opps));
    }
}
