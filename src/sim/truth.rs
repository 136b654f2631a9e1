//! Ground truth: the exact probability that a user comes back (opens the app) within
//! 24 hours of a moment, given the simulator's state at that moment.
//!
//! The window (t, t + 24 h] spans the rest of the current UTC day and the start of the
//! next. Along the path where the user does not return, every state change is
//! deterministic (midnight updates) or a known draw (the lapse of an active day, the
//! policy's action at a slot), so the probability of no return is a short product of
//! survival terms, branching only over the one slot and the one midnight a window holds.
//! The functions here call the same [`behaviour`](super::behaviour) functions as the day
//! loop, so the truth is computed from the very numbers the events were drawn from.

use super::behaviour::{
    DaySummary, State, Status, after_lapse_draw, email_return_probability, email_time, end_of_day,
    is_forced_day, lapse_probability, organic_rate, push_return_probability,
};
use super::day::plan_opportunity;
use super::policy::Opportunity;
use super::population::Traits;

/// Seconds in a day.
pub const DAY_SECS: f64 = 86_400.0;
/// Mean delay between a push and its open.
pub const PUSH_OPEN_MEAN_SECS: f64 = 600.0;
/// Longest delay between a push and its open.
pub const PUSH_OPEN_MAX_SECS: f64 = 10_800.0;
/// Delay between an e-mail's arrival and the click that opens the app.
pub const EMAIL_CLICK_DELAY_SECS: f64 = 60.0;

/// Longest open delay of a push sent at `secs` after UTC midnight: opens happen the same
/// UTC day, so a day's sessions are settled before its midnight.
pub fn push_open_max_delay(secs: f64) -> f64 {
    PUSH_OPEN_MAX_SECS.min(DAY_SECS - 1.0 - secs).max(1.0)
}

/// P(an opened push sent at `sent_secs` is opened within `elapsed` seconds): an
/// exponential delay truncated at [`push_open_max_delay`].
pub fn push_open_delay_cdf(elapsed: f64, sent_secs: f64) -> f64 {
    let max = push_open_max_delay(sent_secs);
    let cdf = |x: f64| 1.0 - (-x / PUSH_OPEN_MEAN_SECS).exp();
    (cdf(elapsed.clamp(0.0, max)) / cdf(max)).min(1.0)
}

/// The open delay at quantile `u` in [0, 1): the inverse of [`push_open_delay_cdf`].
pub fn push_open_delay(u: f64, sent_secs: f64) -> f64 {
    let max = push_open_max_delay(sent_secs);
    let cap = 1.0 - (-max / PUSH_OPEN_MEAN_SECS).exp();
    (-PUSH_OPEN_MEAN_SECS * (1.0 - u * cap).ln()).min(max)
}

/// How organic sessions can still happen later in the current day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrganicRest {
    /// A Poisson process with this daily rate.
    Poisson(f64),
    /// A forced day with no organic session yet: one is certain.
    ForcedPending,
    /// No more organic sessions today.
    Exhausted,
}

/// Where a 24-hour window opens, and what the day held until then.
#[derive(Debug, Clone)]
pub struct WindowStart<'a> {
    /// Simulation seed (for the scheduler's plan of the next day).
    pub seed: u64,
    /// The user.
    pub traits: &'a Traits,
    /// State at the window's opening (its slow fields are the day's starting values).
    pub state: &'a State,
    /// Day the window opens.
    pub day: i32,
    /// UTC weekday of `day` (0 = Monday).
    pub weekday: u8,
    /// Seconds after UTC midnight the window opens.
    pub secs: f64,
    /// The day until the window opened (sends include one made at the opening).
    pub so_far: DaySummary,
    /// Organic sessions still possible today.
    pub organic: OrganicRest,
    /// Today's slot, when it is still to come within the window.
    pub later_slot: Option<&'a Opportunity>,
    /// Today's signup time, on the signup day.
    pub signup_secs: Option<f64>,
}

/// The policy's action probabilities for an opportunity, when known.
pub type ActionProbabilities<'a> = dyn Fn(&Opportunity) -> Option<Vec<f64>> + 'a;

/// P(no organic session in the share `mass` of a day's activity profile) on a day with
/// daily rate `rate`. On a forced day a session is certain: when the Poisson count is
/// zero, one session falls at a time drawn from the profile.
pub fn organic_silence(rate: f64, forced: bool, mass: f64) -> f64 {
    if forced {
        (-rate * mass).exp() - (-rate).exp() * mass
    } else {
        (-rate * mass).exp()
    }
}

/// Whether the logs cannot tell this user's status: an alive user who is away and a user
/// who lapsed at the end of their last active day leave the same silence, until an
/// alive user's forced return (or the lapse's end) tells them apart.
pub fn lapse_is_hidden(state: &State) -> bool {
    matches!(state.status, Status::Alive | Status::Lapsed { .. })
}

/// `state` with the other reading of the same silence: the user alive, or lapsed at the
/// end of their last active day.
pub fn as_if(state: &State, lapsed: bool) -> State {
    State {
        status: after_lapse_draw(lapsed, state.last_active_day),
        ..state.clone()
    }
}

/// Bayes' rule for the hidden lapse: the belief that the user lapsed, after a silence
/// that an alive user keeps with probability `alive_silence` and a lapsed user always
/// keeps.
pub fn lapse_belief_after(belief: f64, alive_silence: f64) -> f64 {
    let alive = (1.0 - belief) * alive_silence;
    if belief + alive > 0.0 {
        belief / (belief + alive)
    } else {
        0.0
    }
}

/// P(no session in the window) at a slot with the policy's action probabilities, a push
/// opened by `deadline` counting as a session; also the number of sends of each branch.
fn slot_branches(
    traits: &Traits,
    state: &State,
    opp: &Opportunity,
    deadline: f64,
    probabilities: &ActionProbabilities<'_>,
) -> Option<Vec<(f64, f64, u32)>> {
    let probs = probabilities(opp)?;
    let in_time = push_open_delay_cdf(deadline - opp.secs, opp.secs);
    Some(
        probs
            .iter()
            .enumerate()
            .map(|(k, &p)| match opp.candidates.get(k) {
                Some(c) => {
                    let ret = push_return_probability(
                        traits,
                        state,
                        opp.day,
                        c.notif_type,
                        opp.local_hour,
                    );
                    (p, 1.0 - ret * in_time, 1)
                }
                None => (p, 1.0, 0),
            })
            .collect(),
    )
}

/// P(no session in (0, `until`] of day `day`), from the state at the start of that day.
fn next_day_no_return(
    w: &WindowStart<'_>,
    state: &State,
    until: f64,
    probabilities: &ActionProbabilities<'_>,
) -> Option<f64> {
    let traits = w.traits;
    let day = w.day + 1;
    let weekday = (w.weekday + 1) % 7;
    let organic = organic_silence(
        organic_rate(traits, state, day),
        is_forced_day(state, day),
        traits.profile.mass_until(until),
    );
    let email = match email_time(traits, state, weekday, None) {
        Some(e) if e + EMAIL_CLICK_DELAY_SECS <= until => 1.0 - email_return_probability(state),
        _ => 1.0,
    };
    let slot = match plan_opportunity(w.seed, traits, state, day, weekday, None) {
        Some(opp) if opp.secs < until => slot_branches(traits, state, &opp, until, probabilities)?
            .iter()
            .map(|(p, no_return, _)| p * no_return)
            .sum(),
        _ => 1.0,
    };
    Some(organic * email * slot)
}

/// P(no session from midnight to the window's end), given the day's summary.
fn after_midnight(
    w: &WindowStart<'_>,
    today: &DaySummary,
    probabilities: &ActionProbabilities<'_>,
) -> Option<f64> {
    let next = end_of_day(w.state, today, w.day);
    if today.active {
        let lapse = lapse_probability(w.traits, &next, w.day);
        let alive = State {
            status: Status::Alive,
            ..next
        };
        Some(lapse + (1.0 - lapse) * next_day_no_return(w, &alive, w.secs, probabilities)?)
    } else {
        next_day_no_return(w, &next, w.secs, probabilities)
    }
}

/// P(no app session in (t, t + 24 h]) for a window opening at `w`. `None` when the window
/// holds a slot of a policy that cannot tell its action probabilities.
pub fn no_return_probability(
    w: &WindowStart<'_>,
    probabilities: &ActionProbabilities<'_>,
) -> Option<f64> {
    let traits = w.traits;
    let end = w.secs + DAY_SECS;
    let organic = match w.organic {
        OrganicRest::Poisson(rate) => (-rate * (1.0 - traits.profile.mass_until(w.secs))).exp(),
        OrganicRest::ForcedPending => 0.0,
        OrganicRest::Exhausted => 1.0,
    };
    let email = match email_time(traits, w.state, w.weekday, w.signup_secs) {
        Some(e) if e > w.secs && e + EMAIL_CLICK_DELAY_SECS <= end => {
            1.0 - email_return_probability(w.state)
        }
        _ => 1.0,
    };
    let today = organic * email;
    match w.later_slot {
        Some(opp) => {
            let mut total = 0.0;
            for (p, no_return, sends) in slot_branches(traits, w.state, opp, end, probabilities)? {
                if p > 0.0 {
                    let summary = DaySummary {
                        sends: w.so_far.sends + sends,
                        ..w.so_far
                    };
                    total += p * no_return * after_midnight(w, &summary, probabilities)?;
                }
            }
            Some(today * total)
        }
        None => Some(today * after_midnight(w, &w.so_far, probabilities)?),
    }
}

/// Probability of a return within 24 h of a push sent at the window's opening.
pub fn notification_return_probability(
    w: &WindowStart<'_>,
    push_return: f64,
    probabilities: &ActionProbabilities<'_>,
) -> Option<f64> {
    Some(1.0 - (1.0 - push_return) * no_return_probability(w, probabilities)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::behaviour::Subscription;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn open_delay_sampling_inverts_its_cdf(u in 0.0f64..1.0, sent in 0.0f64..86_000.0) {
            let d = push_open_delay(u, sent);
            prop_assert!(d >= 0.0 && sent + d < DAY_SECS);
            prop_assert!((push_open_delay_cdf(d, sent) - u).abs() < 1e-9);
        }
    }

    proptest! {
        #[test]
        fn silence_an_alive_user_keeps_less_often_makes_a_lapse_likelier(
            belief in 0.001f64..0.999, silence in 0.0f64..1.0, less in 0.0f64..1.0,
        ) {
            let after = lapse_belief_after(belief, silence);
            prop_assert!((0.0..=1.0).contains(&after));
            // Any silence is at least as likely for a lapsed user (certain) as for an alive one.
            prop_assert!(after >= belief - 1e-12);
            prop_assert!(lapse_belief_after(belief, silence * less) >= after - 1e-12);
        }
    }

    #[test]
    fn a_certain_silence_tells_nothing_and_an_impossible_one_everything() {
        assert!((lapse_belief_after(0.2, 1.0) - 0.2).abs() < 1e-12);
        assert_eq!(lapse_belief_after(0.2, 0.0), 1.0);
        assert_eq!(lapse_belief_after(0.0, 0.5), 0.0);
        // Odds: prior 1:4 lapsed, an alive user silent half the time → 1:2.
        assert!((lapse_belief_after(0.2, 0.5) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_forced_day_is_never_silent_to_its_end() {
        assert_eq!(organic_silence(0.7, true, 1.0), 0.0);
        assert!((organic_silence(0.7, false, 1.0) - (-0.7f64).exp()).abs() < 1e-12);
        assert_eq!(organic_silence(0.7, true, 0.0), 1.0);
        // Before its end, a forced day may still be silent.
        assert!(organic_silence(0.7, true, 0.5) > 0.0);
    }

    #[test]
    fn the_two_readings_of_a_silence_share_the_history() {
        let state = State {
            status: Status::Alive,
            momentum: 0.4,
            fatigue: 1.5,
            last_active_day: 9,
            opted_out: false,
            contacts: 30.0,
            due: 2.0,
            subscription: Subscription::Free,
            last_pricing_day: None,
            last_paywall_secs: None,
            consented: true,
        };
        let lapsed = as_if(&state, true);
        assert_eq!(lapsed.status, Status::Lapsed { until_day: 23 });
        assert!(lapse_is_hidden(&lapsed) && lapse_is_hidden(&state));
        assert_eq!(as_if(&lapsed, false), state);
        assert!(!lapse_is_hidden(&State {
            status: Status::Dormant,
            ..state
        }));
    }

    #[test]
    fn open_delay_cdf_spans_zero_to_one() {
        assert_eq!(push_open_delay_cdf(0.0, 0.0), 0.0);
        assert_eq!(push_open_delay_cdf(PUSH_OPEN_MAX_SECS, 0.0), 1.0);
        assert!(push_open_delay_cdf(PUSH_OPEN_MEAN_SECS, 0.0) > 0.6);
        // Late in the day the delay is cut at midnight.
        assert_eq!(push_open_delay_cdf(120.0, DAY_SECS - 100.0), 1.0);
    }
}
