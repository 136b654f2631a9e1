//! One simulated user, one UTC day at a time: the scheduler's plan for the day
//! ([`plan_opportunity`]) and the day itself ([`UserSim::play_day`]), which emits the
//! user's events in time order and records the ground truth of every example.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use rand::Rng;
use rand_distr::{Distribution, Poisson};
use rand_pcg::Pcg64Mcg;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::behaviour::{
    self, CANCEL_PROBABILITY, CHURN_WINDOW_DAYS, DaySummary, FREE_CONTACT_LIMIT, NotifType,
    PAYWALL_COOLDOWN_SECS, Placement, State, Status, Subscription, after_lapse_draw,
    conversion_probability, days_inactive, email_open_probability, email_time, end_of_day,
    is_forced_day, lapse_probability, open_probability, opt_out_probability, organic_rate,
    push_return_probability, trial_probability,
};
use super::policy::{Candidate, Decision, Opportunity};
use super::population::{Cohort, Traits};
use super::random::{self, Stream};
use super::truth::{
    ActionProbabilities, DAY_SECS, EMAIL_CLICK_DELAY_SECS, OrganicRest, WindowStart, as_if,
    lapse_belief_after, lapse_is_hidden, no_return_probability, notification_return_probability,
    organic_silence, push_open_delay,
};

/// Share of days the suggestion engine has a fresh suggested contact for a user.
const SUGGESTION_SHARE: f64 = 0.4;
/// Days of inactivity after which the scheduler offers a re-engagement push.
const RE_ENGAGEMENT_AFTER_DAYS: i32 = 4;
/// Length of a free trial.
const TRIAL_DAYS: i32 = 7;
/// The fingerprints (PostHog's grouping of an exception by type and stack) of the app's
/// fatal crashes.
const CRASH_FINGERPRINTS: [&str; 3] = ["3f1c9a0e5b7d2468", "a4e07c91d35b8f26", "9b2d6e04f1a8c753"];

/// The scheduler's daily slot for a user, if it has anything to propose.
pub fn plan_opportunity(
    seed: u64,
    traits: &Traits,
    state: &State,
    day: i32,
    weekday: u8,
    signup_secs: Option<f64>,
) -> Option<Opportunity> {
    if state.status == Status::Prospect || signup_secs.is_some_and(|s| traits.notify_secs <= s) {
        return None;
    }
    let user = traits.index;
    let candidates: Vec<Candidate> = NotifType::ALL
        .into_iter()
        .filter(|t| match t {
            NotifType::ContactReminder => state.due >= 1.0,
            NotifType::ReEngagement => days_inactive(state, day) >= RE_ENGAGEMENT_AFTER_DAYS,
            NotifType::WeeklyDigest => weekday == traits.weekly_day,
            NotifType::SuggestedContact => {
                random::unit(seed, Stream::Suggestion, user, day) < SUGGESTION_SHARE
            }
        })
        .map(|t| Candidate {
            id: format!(
                "n-{:016x}",
                random::key(
                    seed,
                    Stream::NotificationId,
                    user,
                    day * 8 + t.index() as i32
                )
            ),
            notif_type: t,
            contacts_due: state.due.floor() as u32,
        })
        .collect();
    (!candidates.is_empty()).then(|| Opportunity {
        user,
        day,
        secs: traits.notify_secs,
        local_hour: traits.notify_local_hour,
        timezone: traits.timezone_name(),
        candidates,
        opted_out: state.opted_out,
    })
}

/// The simulator's truth for one notification sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationTruth {
    /// Simulated user index.
    pub user: u32,
    /// `notification_id` of the send.
    pub notification_id: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// Its type.
    pub notif_type: NotifType,
    /// The logging policy's propensity, when known.
    pub propensity: Option<f64>,
    /// P(the push itself is opened).
    pub p_open: f64,
    /// True P(any app open within 24 h).
    pub p_return: Option<f64>,
    /// P(any app open within 24 h) given what the logs show and the user's traits: the
    /// hidden lapse of a silent user is weighed by its posterior instead of known.
    pub p_return_attainable: Option<f64>,
    /// Whether the user did return (`None` when the window passes the simulated horizon).
    pub returned: Option<bool>,
}

/// The simulator's truth for one active user-day.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnTruth {
    /// Simulated user index.
    pub user: u32,
    /// The active day.
    pub day: NaiveDate,
    /// True P(no app open in the next 14 days).
    pub p_churn: f64,
    /// Whether the user churned (`None` when the window passes the horizon).
    pub churned: Option<bool>,
}

/// The simulator's truth for one paywall view.
#[derive(Debug, Clone, PartialEq)]
pub struct PaywallTruth {
    /// Simulated user index.
    pub user: u32,
    /// The `paywall_view` event's uuid.
    pub event_uuid: Uuid,
    /// When it was shown.
    pub viewed_at: DateTime<Utc>,
    /// Where.
    pub placement: Placement,
    /// True P(trial within 24 h).
    pub p_trial: f64,
    /// True P(no app open within 24 h), when the policy's probabilities are known.
    pub p_bounce: Option<f64>,
    /// Whether a trial started.
    pub trial: bool,
    /// Whether the user bounced (`None` when the window passes the horizon).
    pub bounced: Option<bool>,
}

/// Everything one simulated day produced.
#[derive(Debug, Default)]
pub struct DayOutput {
    /// Events in PostHog's JSON shape, user by user.
    pub events: Vec<Value>,
    /// `events` index where each user's events end (batches split only there, so a
    /// consent change is always ingested with, or before, the events it governs).
    pub user_ends: Vec<usize>,
    /// Events emitted, by name.
    pub event_counts: BTreeMap<&'static str, u64>,
    /// Notification truths whose window closed.
    pub notifications: Vec<NotificationTruth>,
    /// Churn truths of the day.
    pub churn: Vec<ChurnTruth>,
    /// Paywall truths whose window closed.
    pub paywalls: Vec<PaywallTruth>,
}

/// The fixed facts of the simulated window and day being played.
pub struct DayContext<'a> {
    /// Simulation seed.
    pub seed: u64,
    /// Midnight UTC of day 0.
    pub start: DateTime<Utc>,
    /// Days simulated in all (the horizon).
    pub days: i32,
    /// The day being played.
    pub day: i32,
    /// Its UTC weekday (0 = Monday).
    pub weekday: u8,
    /// The policy's action probabilities, for the truth of windows holding a slot.
    pub probabilities: &'a ActionProbabilities<'a>,
}

impl DayContext<'_> {
    /// The instant `secs` seconds after UTC midnight of day `day`.
    pub fn at(&self, day: i32, secs: f64) -> DateTime<Utc> {
        self.start
            + TimeDelta::milliseconds(i64::from(day) * 86_400_000 + (secs * 1000.0).round() as i64)
    }
}

/// A window whose outcome is not known yet.
#[derive(Debug, Clone)]
struct Pending {
    opens: DateTime<Utc>,
    closes: DateTime<Utc>,
    returned: bool,
    truth: PendingTruth,
}

#[derive(Debug, Clone)]
enum PendingTruth {
    Notification(NotificationTruth),
    Paywall(PaywallTruth),
}

impl Pending {
    fn close(self, known: bool, out: &mut DayOutput) {
        let outcome = known.then_some(self.returned);
        match self.truth {
            PendingTruth::Notification(t) => out.notifications.push(NotificationTruth {
                returned: outcome,
                ..t
            }),
            PendingTruth::Paywall(t) => out.paywalls.push(PaywallTruth {
                bounced: outcome.map(|r| !r),
                ..t
            }),
        }
    }
}

/// One simulated user.
#[derive(Debug, Clone)]
pub struct UserSim {
    /// Latent traits.
    pub traits: Traits,
    /// Current state.
    pub state: State,
    pending: Vec<Pending>,
    /// Whether this user's examples enter the ground truth (not for users who change consent).
    in_truth: bool,
    /// P(the user lapsed at the end of their last active day | the silence the logs show
    /// since), as the day starts. Only meaningful while [`lapse_is_hidden`].
    lapse_belief: f64,
}

/// How a session started.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Organic { forced_extra: bool },
    Push(String),
    Email,
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Session(Source),
    Signup,
    Slot,
    Email,
    Consent(bool),
    TrialEnds,
    Cancel,
}

impl UserSim {
    /// A user at the start of the window. Users who will change their analytics consent
    /// are left out of the ground truth, since part of their history is never stored.
    pub fn new(traits: Traits, state: State) -> Self {
        let in_truth = traits.consent.is_none();
        Self {
            traits,
            state,
            pending: Vec::new(),
            in_truth,
            // Users start in a known state.
            lapse_belief: 0.0,
        }
    }

    fn signup_secs(&self, day: i32) -> Option<f64> {
        match self.traits.cohort {
            Cohort::New { day: d, secs, .. } if d == day => Some(secs),
            _ => None,
        }
    }

    /// Starts `day`: a new user signs up when the day comes. Returns the scheduler's slot.
    pub fn begin_day(&mut self, seed: u64, day: i32, weekday: u8) -> Option<Opportunity> {
        if self.state.status == Status::Prospect && self.signup_secs(day).is_some() {
            self.state.status = Status::Alive;
            self.state.last_active_day = day - 1;
        }
        plan_opportunity(
            seed,
            &self.traits,
            &self.state,
            day,
            weekday,
            self.signup_secs(day),
        )
    }

    /// Plays `day` (after [`UserSim::begin_day`]) with the policy's decision for its slot.
    pub fn play_day(
        &mut self,
        ctx: &DayContext<'_>,
        slot: Option<(&Opportunity, &Decision)>,
        out: &mut DayOutput,
    ) {
        if self.state.status != Status::Prospect {
            let signup = self.signup_secs(ctx.day);
            let mut run = DayRun::new(self, ctx, slot, signup, out);
            run.play();
            run.finish();
        }
        out.user_ends.push(out.events.len());
    }

    /// Closes the windows still open at the end of the simulation (outcome unknown).
    pub fn finish(&mut self, out: &mut DayOutput) {
        for p in self.pending.drain(..) {
            p.close(false, out);
        }
    }
}

/// The state of one user-day being played.
struct DayRun<'a, 'c> {
    ctx: &'a DayContext<'c>,
    user: &'a mut UserSim,
    out: &'a mut DayOutput,
    slot: Option<(&'a Opportunity, &'a Decision)>,
    signup: Option<f64>,
    app_id: String,
    rng: Pcg64Mcg,
    /// The day's crash draws, apart from `rng` so that crashes move no other draw.
    crashes: Pcg64Mcg,
    /// When the latest event so far happened.
    last_event_secs: f64,
    /// The state as the day started (its slow fields do not change until midnight).
    start: State,
    rate: f64,
    forced: bool,
    agenda: Vec<(f64, u32, Item)>,
    next_seq: u32,
    so_far: DaySummary,
    organic_seen: bool,
    extra_seen: bool,
    slot_done: bool,
    /// P(an alive user would have let today's push go unopened): the push's part of
    /// [`DayRun::alive_silence`].
    alive_push_silence: f64,
    /// An e-mail was opened today: only an alive user opens one.
    email_opened: bool,
}

impl<'a, 'c> DayRun<'a, 'c> {
    fn new(
        user: &'a mut UserSim,
        ctx: &'a DayContext<'c>,
        slot: Option<(&'a Opportunity, &'a Decision)>,
        signup: Option<f64>,
        out: &'a mut DayOutput,
    ) -> Self {
        let rng = random::rng(ctx.seed, Stream::Behaviour, user.traits.index, ctx.day);
        let crashes = random::rng(ctx.seed, Stream::Crash, user.traits.index, ctx.day);
        let start = user.state.clone();
        let rate = organic_rate(&user.traits, &start, ctx.day);
        let forced = is_forced_day(&start, ctx.day);
        Self {
            app_id: user.traits.app_id(),
            ctx,
            user,
            out,
            slot,
            signup,
            rng,
            crashes,
            last_event_secs: 0.0,
            start,
            rate,
            forced,
            agenda: Vec::new(),
            next_seq: 0,
            so_far: DaySummary::default(),
            organic_seen: false,
            extra_seen: false,
            slot_done: false,
            alive_push_silence: 1.0,
            email_opened: false,
        }
    }

    fn schedule(&mut self, secs: f64, item: Item) {
        let key = (secs, self.next_seq);
        self.next_seq += 1;
        // Kept sorted latest-first, so the next item is popped from the end.
        let pos = self.agenda.partition_point(|(s, q, _)| (*s, *q) > key);
        self.agenda.insert(pos, (secs, key.1, item));
    }

    fn play(&mut self) {
        let traits = &self.user.traits;
        let profile = traits.profile.clone();
        let day = self.ctx.day;
        let from = self.signup.map_or(0.0, |s| profile.mass_until(s));
        let expected = self.rate * (1.0 - from);
        let sessions = match Poisson::new(expected) {
            Ok(poisson) if expected > 0.0 => poisson.sample(&mut self.rng) as u32,
            _ => 0,
        };
        for _ in 0..sessions {
            let u = from + self.rng.random::<f64>() * (1.0 - from);
            self.schedule(
                profile.sample_secs(u),
                Item::Session(Source::Organic {
                    forced_extra: false,
                }),
            );
        }
        if self.forced && sessions == 0 {
            let secs = profile.sample_secs(self.rng.random());
            self.schedule(secs, Item::Session(Source::Organic { forced_extra: true }));
        }
        if let Some(s) = self.signup {
            self.schedule(s, Item::Signup);
        }
        if let Some((opp, _)) = self.slot {
            self.schedule(opp.secs, Item::Slot);
        }
        if let Some(e) = email_time(
            &self.user.traits,
            &self.start,
            self.ctx.weekday,
            self.signup,
        ) {
            self.schedule(e, Item::Email);
        }
        if let Some(plan) = self.user.traits.consent.clone() {
            if plan.withdraw_day == day {
                self.schedule(plan.withdraw_secs, Item::Consent(false));
            }
            if plan.regrant_day == Some(day) {
                self.schedule(DAY_SECS / 2.0, Item::Consent(true));
            }
        }
        match self.start.subscription {
            Subscription::Trial { ends_day } if ends_day == day => {
                self.schedule(300.0, Item::TrialEnds)
            }
            Subscription::Paid if self.rng.random::<f64>() < CANCEL_PROBABILITY => {
                let secs = self.rng.random_range(0.0..DAY_SECS);
                self.schedule(secs, Item::Cancel);
            }
            _ => {}
        }
        while let Some((secs, _, item)) = self.agenda.pop() {
            match item {
                Item::Session(source) => self.session(secs, source),
                Item::Signup => self.signup_funnel(secs),
                Item::Slot => self.notification_slot(secs),
                Item::Email => self.email(secs),
                Item::Consent(granted) => self.consent(secs, granted),
                Item::TrialEnds => self.trial_ends(secs),
                Item::Cancel => {
                    self.user.state.subscription = Subscription::Free;
                    self.emit(
                        secs,
                        "subscription_cancelled",
                        json!({"plan": "pro_monthly"}),
                    );
                }
            }
        }
    }

    /// Midnight: the lapse draw of an active day, the state update, windows that closed.
    fn finish(&mut self) {
        let day = self.ctx.day;
        let mut next = end_of_day(&self.user.state, &self.so_far, day);
        // A silent day moves the belief in a lapse; an active day ends with its lapse draw.
        self.user.lapse_belief = self.lapse_belief_at(DAY_SECS);
        if self.so_far.active {
            let p_churn = lapse_probability(&self.user.traits, &next, day);
            self.user.lapse_belief = p_churn;
            let lapsed = self.rng.random::<f64>() < p_churn;
            next.status = after_lapse_draw(lapsed, day);
            if self.user.in_truth {
                self.out.churn.push(ChurnTruth {
                    user: self.user.traits.index,
                    day: self.ctx.at(day, 0.0).date_naive(),
                    p_churn,
                    churned: (day + CHURN_WINDOW_DAYS < self.ctx.days).then_some(lapsed),
                });
            }
        }
        self.user.state = next;
        let midnight = self.ctx.at(day + 1, 0.0);
        let (closed, open): (Vec<_>, Vec<_>) = self
            .user
            .pending
            .drain(..)
            .partition(|p| p.closes <= midnight);
        self.user.pending = open;
        for p in closed {
            p.close(true, self.out);
        }
    }

    fn emit_as(
        &mut self,
        secs: f64,
        event: &'static str,
        distinct_id: &str,
        properties: Value,
    ) -> Uuid {
        let uuid = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        self.record(uuid, secs, event, distinct_id, properties);
        uuid
    }

    /// Appends one event to the day's output.
    fn record(
        &mut self,
        uuid: Uuid,
        secs: f64,
        event: &'static str,
        distinct_id: &str,
        properties: Value,
    ) {
        self.last_event_secs = secs;
        let timestamp = self
            .ctx
            .at(self.ctx.day, secs)
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        self.out.events.push(json!({
            "uuid": uuid.to_string(),
            "event": event,
            "distinct_id": distinct_id,
            "timestamp": timestamp,
            "properties": properties,
        }));
        *self.out.event_counts.entry(event).or_default() += 1;
    }

    fn emit(&mut self, secs: f64, event: &'static str, properties: Value) -> Uuid {
        let id = std::mem::take(&mut self.app_id);
        let uuid = self.emit_as(secs, event, &id, properties);
        self.app_id = id;
        uuid
    }

    fn organic_rest(&self) -> OrganicRest {
        if self.extra_seen {
            OrganicRest::Exhausted
        } else if self.forced && !self.organic_seen {
            OrganicRest::ForcedPending
        } else {
            OrganicRest::Poisson(self.rate)
        }
    }

    fn window(&self, secs: f64, later_slot: Option<&'a Opportunity>) -> WindowStart<'_> {
        WindowStart {
            seed: self.ctx.seed,
            traits: &self.user.traits,
            state: &self.user.state,
            day: self.ctx.day,
            weekday: self.ctx.weekday,
            secs,
            so_far: self.so_far,
            organic: self.organic_rest(),
            later_slot,
            signup_secs: self.signup,
        }
    }

    /// P(an alive user would have been as silent as this user until `secs` today): no
    /// organic session, the e-mail (if one came) not opened, today's push (if one went
    /// out before) not opened. A lapsed user is silent for certain.
    fn alive_silence(&self, secs: f64) -> f64 {
        let (traits, day) = (&self.user.traits, self.ctx.day);
        let alive = as_if(&self.start, false);
        let organic = organic_silence(
            organic_rate(traits, &alive, day),
            is_forced_day(&alive, day),
            traits.profile.mass_until(secs),
        );
        let email = match email_time(traits, &alive, self.ctx.weekday, self.signup) {
            Some(e) if e < secs => 1.0 - email_open_probability(&alive),
            _ => 1.0,
        };
        organic * email * self.alive_push_silence
    }

    /// P(the user lapsed | what the logs show up to `secs` today); 0 once the user was
    /// seen alive today, or when their status is no secret.
    fn lapse_belief_at(&self, secs: f64) -> f64 {
        if self.so_far.active || self.email_opened || !lapse_is_hidden(&self.start) {
            0.0
        } else {
            lapse_belief_after(self.user.lapse_belief, self.alive_silence(secs))
        }
    }

    /// P(return within 24 h) of a push of `kind` sent at `secs`, given what the logs show:
    /// the truth of each reading of a silent user's status, weighed by its posterior;
    /// `p_return`, the truth, when the status is known.
    fn attainable_return(
        &self,
        secs: f64,
        kind: NotifType,
        hour: u8,
        p_return: Option<f64>,
    ) -> Option<f64> {
        let belief = self.lapse_belief_at(secs);
        if belief == 0.0 {
            return p_return;
        }
        let (traits, day) = (&self.user.traits, self.ctx.day);
        let world = |lapsed: bool| {
            let state = as_if(&self.user.state, lapsed);
            let start = as_if(&self.start, lapsed);
            let organic = match start.status {
                Status::Alive if is_forced_day(&start, day) => OrganicRest::ForcedPending,
                _ => OrganicRest::Poisson(organic_rate(traits, &start, day)),
            };
            let push = push_return_probability(traits, &state, day, kind, hour);
            let window = WindowStart {
                state: &state,
                organic,
                ..self.window(secs, None)
            };
            notification_return_probability(&window, push, self.ctx.probabilities)
        };
        Some(belief * world(true)? + (1.0 - belief) * world(false)?)
    }

    fn track(&mut self, secs: f64, truth: PendingTruth) {
        if self.user.in_truth {
            let opens = self.ctx.at(self.ctx.day, secs);
            let closes = opens + TimeDelta::days(1);
            self.user.pending.push(Pending {
                opens,
                closes,
                returned: false,
                truth,
            });
        }
    }

    fn session(&mut self, secs: f64, source: Source) {
        let properties = match &source {
            Source::Organic { .. } => json!({"source": "organic"}),
            Source::Push(id) => {
                self.emit(secs, "notification_opened", json!({"notification_id": id}));
                json!({"source": "push", "notification_id": id})
            }
            Source::Email => json!({"source": "email"}),
        };
        self.emit(secs, "app_opened", properties);
        let at = self.ctx.at(self.ctx.day, secs);
        for p in &mut self.user.pending {
            if p.opens < at && at <= p.closes {
                p.returned = true;
            }
        }
        self.so_far.active = true;
        if let Source::Organic { forced_extra } = source {
            self.organic_seen = true;
            self.extra_seen |= forced_extra;
        }
        self.in_session(secs);
        self.crash_draw();
    }

    /// Whether the session just played ended in a fatal crash, reported as the PostHog SDK
    /// does (`$exception` at level `fatal`) at the time of its last event, so on a day the
    /// user was active. Its draws come from their own stream.
    fn crash_draw(&mut self) {
        if self.crashes.random::<f64>() >= self.user.traits.crashes_per_session {
            return;
        }
        let uuid = uuid::Builder::from_random_bytes(self.crashes.random()).into_uuid();
        let fingerprint =
            CRASH_FINGERPRINTS[self.crashes.random_range(0..CRASH_FINGERPRINTS.len())];
        let id = std::mem::take(&mut self.app_id);
        self.record(
            uuid,
            self.last_event_secs,
            "$exception",
            &id,
            json!({"$exception_level": "fatal", "$exception_fingerprint": fingerprint}),
        );
        self.app_id = id;
    }

    fn step(&mut self, at: &mut f64) -> f64 {
        *at += 10.0 + 40.0 * self.rng.random::<f64>();
        *at
    }

    fn in_session(&mut self, start: f64) {
        let mut at = start;
        let views = Poisson::new(0.7).map_or(0.0, |p| p.sample(&mut self.rng)) as u32;
        for _ in 0..views {
            let since = self.rng.random_range(0..=60u32);
            let secs = self.step(&mut at);
            self.emit(
                secs,
                "contact_viewed",
                json!({"days_since_last_outreach": since}),
            );
        }
        if self.rng.random::<f64>() < 0.12 {
            self.so_far.contacts_created += 1;
            let count = self.start.contacts as u32 + self.so_far.contacts_created;
            let secs = self.step(&mut at);
            self.emit(secs, "contact_created", json!({"contact_count": count}));
        }
        if self.rng.random::<f64>() < 0.3 {
            let position = self.rng.random_range(1..=5u32);
            let secs = self.step(&mut at);
            self.emit(
                secs,
                "suggested_contact_shown",
                json!({"position": position}),
            );
            if self.rng.random::<f64>() < 0.3 {
                let secs = self.step(&mut at);
                self.emit(
                    secs,
                    "suggested_contact_clicked",
                    json!({"position": position}),
                );
            }
        }
        let due_now = self.start.due - f64::from(self.so_far.outreach);
        if due_now >= 1.0 && self.rng.random::<f64>() < self.user.traits.outreach_habit {
            self.so_far.outreach += 1;
            let channel =
                ["sms", "call", "email", "whatsapp", "other"][self.rng.random_range(0..5)];
            let secs = self.step(&mut at);
            self.emit(secs, "outreach_sent", json!({"channel": channel}));
        }
        if self.user.state.subscription == Subscription::Free {
            if self.rng.random::<f64>() < 0.03 {
                self.so_far.pricing_viewed = true;
                let secs = self.step(&mut at);
                self.emit(secs, "pricing_view", json!({"plan": "pro_monthly"}));
            }
            let over_limit = self.start.contacts > FREE_CONTACT_LIMIT;
            if self.rng.random::<f64>() < if over_limit { 0.08 } else { 0.03 } {
                let secs = self.step(&mut at);
                let now = f64::from(self.ctx.day) * DAY_SECS + secs;
                let last = self.user.state.last_paywall_secs;
                if last.is_none_or(|last| now - last > PAYWALL_COOLDOWN_SECS) {
                    self.user.state.last_paywall_secs = Some(now);
                    self.paywall(secs, over_limit);
                }
            }
        }
    }

    fn paywall(&mut self, secs: f64, over_limit: bool) {
        let placement = if over_limit {
            Placement::ContactLimit
        } else if self.rng.random::<f64>() < 0.7 {
            Placement::FeatureGate
        } else {
            Placement::Settings
        };
        let event_uuid = self.emit(
            secs,
            "paywall_view",
            json!({"placement": placement.as_str()}),
        );
        let p_trial = trial_probability(&self.user.traits, &self.start, self.ctx.day, placement);
        let trial = self.rng.random::<f64>() < p_trial;
        let later_slot = self
            .slot
            .filter(|_| !self.slot_done)
            .map(|(opp, _)| opp)
            .filter(|o| o.secs > secs);
        let p_bounce =
            no_return_probability(&self.window(secs, later_slot), self.ctx.probabilities);
        if trial {
            self.user.state.subscription = Subscription::Trial {
                ends_day: self.ctx.day + TRIAL_DAYS,
            };
            self.emit(
                secs + 30.0,
                "trial_started",
                json!({"plan": "pro_monthly", "placement": placement.as_str()}),
            );
        } else {
            self.emit(
                secs + 20.0,
                "paywall_dismissed",
                json!({"placement": placement.as_str()}),
            );
        }
        let truth = PaywallTruth {
            user: self.user.traits.index,
            event_uuid,
            viewed_at: self.ctx.at(self.ctx.day, secs),
            placement,
            p_trial,
            p_bounce,
            trial,
            bounced: None,
        };
        self.track(secs, PendingTruth::Paywall(truth));
    }

    fn notification_slot(&mut self, secs: f64) {
        self.slot_done = true;
        let Some((opp, decision)) = self.slot else {
            return;
        };
        let Some(candidate) = decision.send.and_then(|k| opp.candidates.get(k)) else {
            return;
        };
        self.so_far.sends += 1;
        let mut properties = Map::new();
        properties.insert("notification_id".into(), candidate.id.clone().into());
        properties.insert("notif_type".into(), candidate.notif_type.as_str().into());
        properties.insert("arm".into(), decision.arm.into());
        properties.insert("timezone".into(), opp.timezone.into());
        if let Some(p) = decision.propensity {
            properties.insert("propensity".into(), p.into());
        }
        if let Some(v) = &decision.model_version {
            properties.insert("model_version".into(), v.clone().into());
        }
        self.emit(secs, "notification_sent", Value::Object(properties));

        let traits = &self.user.traits;
        let (day, hour, kind) = (self.ctx.day, opp.local_hour, candidate.notif_type);
        let p_open = open_probability(traits, &self.start, day, kind, hour);
        let p_opt_out = opt_out_probability(traits, &self.start);
        let p_push = push_return_probability(traits, &self.user.state, day, kind, hour);
        let p_return = notification_return_probability(
            &self.window(secs, None),
            p_push,
            self.ctx.probabilities,
        );
        let (u_opt_out, u_open, u_dismiss, u_delay): (f64, f64, f64, f64) = (
            self.rng.random(),
            self.rng.random(),
            self.rng.random(),
            self.rng.random(),
        );
        let p_return_attainable = self.attainable_return(secs, kind, hour, p_return);
        let later = secs + push_open_delay(u_delay, secs);
        if !self.user.state.opted_out {
            if u_opt_out < p_opt_out {
                self.user.state.opted_out = true;
                self.emit(later, "push_opt_out", json!({}));
            } else {
                // Either reading turns a push into an opt-out alike; past that, only an
                // alive user may open it.
                let alive = as_if(&self.start, false);
                self.alive_push_silence *= 1.0 - open_probability(traits, &alive, day, kind, hour);
                if u_open < p_open {
                    self.schedule(later, Item::Session(Source::Push(candidate.id.clone())));
                } else if u_dismiss < 0.5 {
                    self.emit(
                        later,
                        "notification_dismissed",
                        json!({"notification_id": candidate.id}),
                    );
                }
            }
        }
        let truth = NotificationTruth {
            user: self.user.traits.index,
            notification_id: candidate.id.clone(),
            sent_at: self.ctx.at(day, secs),
            notif_type: kind,
            propensity: decision.propensity,
            p_open,
            p_return,
            p_return_attainable,
            returned: None,
        };
        self.track(secs, PendingTruth::Notification(truth));
    }

    fn email(&mut self, secs: f64) {
        if self.rng.random::<f64>() >= email_open_probability(&self.start) {
            return;
        }
        self.email_opened = true;
        self.emit(secs, "email_opened", json!({"campaign": "weekly_digest"}));
        if self.rng.random::<f64>() < behaviour::EMAIL_CLICK_PROBABILITY {
            self.emit(
                secs + EMAIL_CLICK_DELAY_SECS / 2.0,
                "email_clicked",
                json!({"campaign": "weekly_digest"}),
            );
            self.schedule(secs + EMAIL_CLICK_DELAY_SECS, Item::Session(Source::Email));
        }
    }

    fn signup_funnel(&mut self, secs: f64) {
        let anon = self.user.traits.anon_id.clone();
        let via_ad = matches!(self.user.traits.cohort, Cohort::New { via_ad: true, .. });
        let utm = json!({"campaign": "spring_reconnect", "creative": "cards_v2", "utm_source": "meta",
                         "utm_medium": "paid_social", "utm_campaign": "spring_reconnect"});
        if via_ad {
            self.emit_as(secs - 600.0, "ad_click", &anon, utm.clone());
            self.emit_as(secs - 540.0, "landing_view", &anon, utm);
        } else {
            self.emit_as(
                secs - 540.0,
                "landing_view",
                &anon,
                json!({"utm_source": "organic"}),
            );
        }
        self.emit_as(
            secs - 120.0,
            "app_opened",
            &anon,
            json!({"source": "organic"}),
        );
        self.emit(secs, "signup_completed", json!({"method": "apple"}));
        self.emit(secs + 1.0, "$identify", json!({"$anon_distinct_id": anon}));
        if self.rng.random::<f64>() < 0.75 {
            let steps = self.rng.random_range(3..=5u32);
            self.emit(secs + 60.0, "onboarding_completed", json!({"steps": steps}));
        }
        self.so_far.active = true;
        self.in_session(secs + 90.0);
    }

    fn consent(&mut self, secs: f64, granted: bool) {
        self.emit(
            secs,
            "consent_analytics_changed",
            json!({"granted": granted}),
        );
        self.user.state.consented = granted;
    }

    fn trial_ends(&mut self, secs: f64) {
        if self.rng.random::<f64>() < conversion_probability(&self.user.traits) {
            self.user.state.subscription = Subscription::Paid;
            self.emit(
                secs,
                "subscription_purchased",
                json!({"plan": "pro_monthly", "price_usd": 9.99}),
            );
        } else {
            self.user.state.subscription = Subscription::Free;
        }
    }
}
