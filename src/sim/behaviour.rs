//! The behavioural model: a user's changing state and every probability the simulator
//! draws from. Pure functions over plain data; the day loop and the ground truth both call
//! them, so the truth is computed with exactly the numbers the events were drawn from.
//!
//! Time is in UTC days. Within a day, organic sessions form a Poisson process whose daily
//! rate is fixed at the start of the day and whose timing follows the user's
//! [`HourProfile`](super::profile::HourProfile). State changes once a day, at midnight
//! ([`end_of_day`]), except for the few things an event flips at once (opt-out,
//! subscription, consent).

use super::population::Traits;

/// Days of silence a lapse guarantees, and the longest an alive user stays away: an
/// active day is followed by 14 silent days exactly when the user lapsed on it, so the
/// 14-day churn label equals the lapse draw.
pub const CHURN_WINDOW_DAYS: i32 = 14;

/// Notification types the simulated scheduler proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifType {
    /// A contact is due for outreach.
    ContactReminder,
    /// "We miss you", offered after a few quiet days.
    ReEngagement,
    /// The weekly digest.
    WeeklyDigest,
    /// A suggested contact to reconnect with.
    SuggestedContact,
}

impl NotifType {
    /// Number of types.
    pub const COUNT: usize = 4;
    /// Every type, in the scheduler's priority order.
    pub const ALL: [NotifType; Self::COUNT] = [
        NotifType::ContactReminder,
        NotifType::ReEngagement,
        NotifType::WeeklyDigest,
        NotifType::SuggestedContact,
    ];

    /// The `notif_type` property value.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifType::ContactReminder => "contact_reminder",
            NotifType::ReEngagement => "re_engagement",
            NotifType::WeeklyDigest => "weekly_digest",
            NotifType::SuggestedContact => "suggested_contact",
        }
    }

    /// Position in [`NotifType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Population-wide open logit of the type.
    fn base_logit(self) -> f64 {
        match self {
            NotifType::ContactReminder => -1.5,
            NotifType::ReEngagement => -1.7,
            NotifType::WeeklyDigest => -2.1,
            NotifType::SuggestedContact => -1.9,
        }
    }
}

/// Where a user is in their life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not signed up yet.
    Prospect,
    /// Using the app.
    Alive,
    /// Lapsed at the end of an active day: silent through `until_day`.
    Lapsed {
        /// Last silent day.
        until_day: i32,
    },
    /// Gone quiet; comes back rarely, mostly through a notification or e-mail.
    Dormant,
}

/// Subscription state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// Free plan.
    Free,
    /// On a free trial that ends at the start of `ends_day`.
    Trial {
        /// Day the trial converts or expires.
        ends_day: i32,
    },
    /// Paying.
    Paid,
}

/// A user's changing state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Life-cycle status.
    pub status: Status,
    /// Recent engagement in [0, 1]: an exponential average of active days.
    pub momentum: f64,
    /// Recent notification volume: an exponential sum of sends (about the last four days).
    pub fatigue: f64,
    /// Last day with a session (negative before the window).
    pub last_active_day: i32,
    /// Push notifications turned off.
    pub opted_out: bool,
    /// Size of the contact book.
    pub contacts: f64,
    /// Contacts due for outreach.
    pub due: f64,
    /// Subscription.
    pub subscription: Subscription,
    /// Last day the pricing page was seen.
    pub last_pricing_day: Option<i32>,
    /// When the paywall was last shown (seconds since the start of day 0): the app shows
    /// it at most once per [`PAYWALL_COOLDOWN_SECS`], so a trial within 24 h of a view is
    /// a trial at that view.
    pub last_paywall_secs: Option<f64>,
    /// Analytics consent currently granted.
    pub consented: bool,
}

/// What happened on a day, as far as the state cares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DaySummary {
    /// At least one session.
    pub active: bool,
    /// Notifications sent.
    pub sends: u32,
    /// Outreach messages sent.
    pub outreach: u32,
    /// Contacts created.
    pub contacts_created: u32,
    /// The pricing page was seen.
    pub pricing_viewed: bool,
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Days since the last active day (1 = active yesterday).
pub fn days_inactive(state: &State, day: i32) -> i32 {
    day - state.last_active_day
}

/// Whether `day` is the last day an alive user can stay away: a session is certain.
pub fn is_forced_day(state: &State, day: i32) -> bool {
    state.status == Status::Alive && days_inactive(state, day) >= CHURN_WINDOW_DAYS
}

/// Fatigue a user shrugs off before it dampens their own use of the app.
const ORGANIC_FATIGUE_TOLERANCE: f64 = 2.0;
/// Fatigue a user shrugs off before it raises the risk of lapsing.
const LAPSE_FATIGUE_TOLERANCE: f64 = 1.5;

/// Fatigue above `tolerance`: a few pushes a week cost nothing but opens; more wear
/// engagement down.
fn excess_fatigue(state: &State, tolerance: f64) -> f64 {
    (state.fatigue - tolerance).max(0.0)
}

/// Expected organic sessions on `day`, fixed at the start of the day.
pub fn organic_rate(traits: &Traits, state: &State, day: i32) -> f64 {
    match state.status {
        Status::Prospect | Status::Lapsed { .. } => 0.0,
        Status::Dormant => 0.02 * traits.activity,
        Status::Alive => {
            // The longer away, the more contacts pile up and the likelier a return.
            let away = f64::from((days_inactive(state, day) - 1).clamp(0, 13));
            traits.activity
                * (0.3 + 0.9 * state.momentum)
                * (-0.15
                    * traits.fatigue_sensitivity
                    * excess_fatigue(state, ORGANIC_FATIGUE_TOLERANCE))
                .exp()
                * (1.0 + 0.06 * away)
        }
    }
}

/// Effect of the local hour of a push on its open rate (evenings work best).
fn hour_effect(local_hour: u8) -> f64 {
    match local_hour {
        7..=8 => 0.0,
        9..=11 => -0.1,
        12..=13 => 0.1,
        14..=16 => -0.1,
        17..=20 => 0.25,
        21 => 0.0,
        _ => -0.5,
    }
}

/// Probability that a push of `notif_type` sent at `local_hour` on `day` is opened.
pub fn open_probability(
    traits: &Traits,
    state: &State,
    day: i32,
    notif_type: NotifType,
    local_hour: u8,
) -> f64 {
    let dormant_penalty = match state.status {
        Status::Prospect | Status::Lapsed { .. } => return 0.0,
        Status::Dormant => -1.5,
        Status::Alive => 0.0,
    };
    let distance = {
        let d = (i32::from(local_hour) - i32::from(traits.preferred_hour)).rem_euclid(24);
        d.min(24 - d)
    };
    let hour_match = match distance {
        0..=1 => 0.45,
        2..=3 => 0.2,
        _ => 0.0,
    };
    let relevance = match notif_type {
        NotifType::ContactReminder => 0.3 * (1.0 + state.due).ln(),
        _ => 0.0,
    };
    let away = f64::from((days_inactive(state, day) - 1).clamp(0, 10));
    sigmoid(
        notif_type.base_logit()
            + traits.responsiveness[notif_type.index()]
            + 1.4 * (state.momentum - 0.5)
            - 0.30 * traits.fatigue_sensitivity * state.fatigue
            + hour_effect(local_hour)
            + hour_match
            + relevance
            - 0.08 * away
            + dormant_penalty,
    )
}

/// Probability that a push makes the user turn notifications off (instead of opening it).
pub fn opt_out_probability(traits: &Traits, state: &State) -> f64 {
    sigmoid(-6.8 + 0.45 * traits.fatigue_sensitivity * (state.fatigue + 1.0))
}

/// Probability that a push brings the user back: delivered (push not turned off), not
/// an opt-out, and opened.
pub fn push_return_probability(
    traits: &Traits,
    state: &State,
    day: i32,
    notif_type: NotifType,
    local_hour: u8,
) -> f64 {
    if state.opted_out {
        return 0.0;
    }
    (1.0 - opt_out_probability(traits, state))
        * open_probability(traits, state, day, notif_type, local_hour)
}

/// When the weekly e-mail arrives on `day`, if it does (seconds after UTC midnight).
pub fn email_time(
    traits: &Traits,
    state: &State,
    weekday: u8,
    signup_secs: Option<f64>,
) -> Option<f64> {
    let reachable = matches!(state.status, Status::Alive | Status::Dormant);
    let after_signup = signup_secs.is_none_or(|s| traits.email_secs > s);
    (traits.email_subscriber && weekday == traits.weekly_day && reachable && after_signup)
        .then_some(traits.email_secs)
}

/// Probability that the weekly e-mail is opened.
pub fn email_open_probability(state: &State) -> f64 {
    let dormant = if state.status == Status::Dormant {
        -1.5
    } else {
        0.0
    };
    sigmoid(-1.0 + 1.2 * (state.momentum - 0.5) + dormant)
}

/// Probability that an opened e-mail is clicked through to the app.
pub const EMAIL_CLICK_PROBABILITY: f64 = 0.3;

/// Probability that the weekly e-mail brings the user back to the app.
pub fn email_return_probability(state: &State) -> f64 {
    email_open_probability(state) * EMAIL_CLICK_PROBABILITY
}

/// Probability that a user lapses (goes silent for [`CHURN_WINDOW_DAYS`]) at the end of
/// an active day; `next` is the state after [`end_of_day`]. This is the true P(churn_14d).
pub fn lapse_probability(traits: &Traits, next: &State, day: i32) -> f64 {
    let new_user = if day - traits.signup_day() < 7 {
        0.8
    } else {
        0.0
    };
    sigmoid(
        -2.7 - 4.0 * (next.momentum - 0.5) - 0.5 * traits.activity.ln()
            + 0.30 * traits.fatigue_sensitivity * excess_fatigue(next, LAPSE_FATIGUE_TOLERANCE)
            + new_user,
    )
}

/// Where a paywall is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The free plan's contact limit was reached.
    ContactLimit,
    /// A paid feature was tapped.
    FeatureGate,
    /// From settings.
    Settings,
}

impl Placement {
    /// The `placement` property value.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::ContactLimit => "contact_limit",
            Placement::FeatureGate => "feature_gate",
            Placement::Settings => "settings",
        }
    }
}

/// Shortest time between two paywalls for one user.
pub const PAYWALL_COOLDOWN_SECS: f64 = 86_400.0;

/// Contact-book size above which the free plan's limit shows the paywall.
pub const FREE_CONTACT_LIMIT: f64 = 60.0;

/// Probability that a paywall view starts a trial (at once).
pub fn trial_probability(traits: &Traits, state: &State, day: i32, placement: Placement) -> f64 {
    let recent_pricing = state.last_pricing_day.is_some_and(|d| day - d <= 7);
    let placement_effect = match placement {
        Placement::ContactLimit => 0.5,
        Placement::FeatureGate => 0.0,
        Placement::Settings => -0.3,
    };
    sigmoid(
        -2.4 - 2.5 * (traits.price_sensitivity - 0.5)
            + if recent_pricing { 1.0 } else { 0.0 }
            + 1.0 * (state.momentum - 0.5)
            + placement_effect,
    )
}

/// Probability that a trial converts to a paid plan when it ends.
pub fn conversion_probability(traits: &Traits) -> f64 {
    0.2 + 0.5 * (1.0 - traits.price_sensitivity)
}

/// Daily probability that a paying user cancels.
pub const CANCEL_PROBABILITY: f64 = 0.004;

/// The state at the start of `day + 1`, before the lapse draw of an active day.
pub fn end_of_day(state: &State, today: &DaySummary, day: i32) -> State {
    let contacts = state.contacts + f64::from(today.contacts_created);
    let status = match state.status {
        Status::Lapsed { until_day } if until_day <= day => Status::Dormant,
        other => other,
    };
    State {
        status,
        momentum: 0.85 * state.momentum + if today.active { 0.15 } else { 0.0 },
        fatigue: 0.75 * state.fatigue + f64::from(today.sends),
        last_active_day: if today.active {
            day
        } else {
            state.last_active_day
        },
        contacts,
        due: (state.due + contacts / 40.0 - f64::from(today.outreach)).max(0.0),
        last_pricing_day: if today.pricing_viewed {
            Some(day)
        } else {
            state.last_pricing_day
        },
        ..state.clone()
    }
}

/// The status after an active day's lapse draw.
pub fn after_lapse_draw(lapsed: bool, day: i32) -> Status {
    if lapsed {
        Status::Lapsed {
            until_day: day + CHURN_WINDOW_DAYS,
        }
    } else {
        Status::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::hashing::UserHasher;
    use crate::sim::population::draw_user;

    fn user() -> (Traits, State) {
        let hasher = UserHasher::new(b"k");
        (0..)
            .map(|i| draw_user(3, i, 30, &hasher))
            .find(|(_, s)| s.status == Status::Alive)
            .expect("an existing alive user")
    }

    #[test]
    fn fatigue_lowers_opens_and_raises_opt_out_and_lapse() {
        let (traits, state) = user();
        let tired = State {
            fatigue: state.fatigue + 4.0,
            ..state.clone()
        };
        let p = |s: &State| open_probability(&traits, s, 5, NotifType::ContactReminder, 19);
        assert!(p(&tired) < p(&state));
        assert!(opt_out_probability(&traits, &tired) > opt_out_probability(&traits, &state));
        assert!(lapse_probability(&traits, &tired, 20) > lapse_probability(&traits, &state, 20));
        assert!(organic_rate(&traits, &tired, 5) < organic_rate(&traits, &state, 5));
    }

    #[test]
    fn lapsed_users_are_silent_and_become_dormant_after_the_window() {
        let (traits, state) = user();
        let lapsed = State {
            status: after_lapse_draw(true, 10),
            ..state
        };
        assert_eq!(organic_rate(&traits, &lapsed, 11), 0.0);
        assert_eq!(
            open_probability(&traits, &lapsed, 11, NotifType::WeeklyDigest, 19),
            0.0
        );
        let quiet = DaySummary::default();
        let on_last_day = end_of_day(&lapsed, &quiet, 10 + CHURN_WINDOW_DAYS - 1);
        assert!(matches!(on_last_day.status, Status::Lapsed { .. }));
        let after = end_of_day(&lapsed, &quiet, 10 + CHURN_WINDOW_DAYS);
        assert_eq!(after.status, Status::Dormant);
    }

    #[test]
    fn an_alive_user_must_return_within_the_churn_window() {
        let (_, state) = user();
        let last = state.last_active_day;
        assert!(!is_forced_day(&state, last + CHURN_WINDOW_DAYS - 1));
        assert!(is_forced_day(&state, last + CHURN_WINDOW_DAYS));
        let dormant = State {
            status: Status::Dormant,
            ..state
        };
        assert!(!is_forced_day(&dormant, last + CHURN_WINDOW_DAYS));
    }

    #[test]
    fn end_of_day_moves_momentum_fatigue_and_due() {
        let (_, state) = user();
        let busy = DaySummary {
            active: true,
            sends: 1,
            outreach: 1,
            contacts_created: 2,
            pricing_viewed: true,
        };
        let next = end_of_day(&state, &busy, 7);
        assert!(next.momentum > 0.85 * state.momentum);
        assert_eq!(next.last_active_day, 7);
        assert_eq!(next.contacts, state.contacts + 2.0);
        assert!((next.fatigue - (0.75 * state.fatigue + 1.0)).abs() < 1e-12);
        assert_eq!(next.last_pricing_day, Some(7));
        let idle = end_of_day(&state, &DaySummary::default(), 7);
        assert_eq!(idle.last_active_day, state.last_active_day);
        assert!(idle.momentum < next.momentum);
    }
}
