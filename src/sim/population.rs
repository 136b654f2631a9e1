//! The simulated population: each user's latent traits and starting state.
//!
//! Traits never change; they are what a perfect model would know and a real one has to
//! infer from behaviour. Users are `u0` … `u<N-1>`, drawn independently from the seed.

use rand::Rng;
use rand_distr::{Beta, Distribution, LogNormal, Normal};

use super::behaviour::{NotifType, State, Status, Subscription};
use super::profile::HourProfile;
use super::random::{self, Stream};
use crate::ingest::hashing::UserHasher;

/// Timezones of simulated users: whole-hour offsets without daylight saving, so local
/// time is a fixed shift of UTC; weights roughly follow an app with a US-heavy base.
pub const TIMEZONES: [(&str, i32, f64); 16] = [
    ("America/Phoenix", -7, 0.10),
    ("America/Mexico_City", -6, 0.10),
    ("America/Bogota", -5, 0.10),
    ("America/Lima", -5, 0.04),
    ("America/Sao_Paulo", -3, 0.10),
    ("Pacific/Honolulu", -10, 0.03),
    ("UTC", 0, 0.05),
    ("Africa/Lagos", 1, 0.06),
    ("Africa/Nairobi", 3, 0.04),
    ("Europe/Istanbul", 3, 0.06),
    ("Asia/Dubai", 4, 0.05),
    ("Asia/Karachi", 5, 0.04),
    ("Asia/Dhaka", 6, 0.03),
    ("Asia/Jakarta", 7, 0.04),
    ("Asia/Singapore", 8, 0.08),
    ("Asia/Tokyo", 9, 0.08),
];

/// Share of users already signed up before the simulated window.
const EXISTING_SHARE: f64 = 0.7;
/// Share of existing users who had already gone quiet (dormant) at the start.
const DORMANT_AT_START: f64 = 0.15;
/// Share of existing users who had already turned push off.
const OPTED_OUT_AT_START: f64 = 0.06;
/// Share of existing users paying at the start.
const PAID_AT_START: f64 = 0.08;
/// Share of users who withdraw analytics consent during the window.
const CONSENT_WITHDRAWAL_SHARE: f64 = 0.01;
/// Share of the users who withdraw consent and grant it again later.
const CONSENT_REGRANT_SHARE: f64 = 0.4;
/// Share of users who receive lifecycle e-mails.
const EMAIL_SUBSCRIBER_SHARE: f64 = 0.8;
/// Share of new users who arrive through an ad (the rest find the app organically).
const AD_ACQUIRED_SHARE: f64 = 0.6;
/// Share of users on a device or OS build the app often crashes on.
const UNSTABLE_DEVICE_SHARE: f64 = 0.02;
/// Chance that a session ends in a fatal crash, on a stable device and on an unstable one.
const CRASHES_PER_SESSION: (f64, f64) = (0.000_5, 0.01);

/// How a user entered the window.
#[derive(Debug, Clone, PartialEq)]
pub enum Cohort {
    /// Signed up `tenure_days` before the first simulated day.
    Existing {
        /// Days between signup and the first simulated day.
        tenure_days: i32,
    },
    /// Signs up during the window.
    New {
        /// Day of signup (0-based).
        day: i32,
        /// Seconds after UTC midnight of the signup.
        secs: f64,
        /// Whether an ad click preceded the landing page.
        via_ad: bool,
    },
}

/// A planned analytics-consent withdrawal.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentPlan {
    /// Day of the withdrawal.
    pub withdraw_day: i32,
    /// Seconds after UTC midnight of the withdrawal.
    pub withdraw_secs: f64,
    /// Day consent is granted again, if it is.
    pub regrant_day: Option<i32>,
}

/// A user's latent traits (fixed for the whole simulation).
#[derive(Debug, Clone)]
pub struct Traits {
    /// Index `i` of the app id `u<i>`.
    pub index: u32,
    /// Keyed hash of `u<i>`, as the event store holds it.
    pub user_hash: String,
    /// The anonymous distinct id used before signup.
    pub anon_id: String,
    /// Organic sessions per day at full engagement.
    pub activity: f64,
    /// Logit offset of the response to each notification type.
    pub responsiveness: [f64; NotifType::COUNT],
    /// Local hour the user is most often in the app.
    pub preferred_hour: u8,
    /// Index into [`TIMEZONES`].
    pub timezone: usize,
    /// When in the day (session-time distribution, UTC) the user opens the app.
    pub profile: HourProfile,
    /// Local hour of the scheduler's daily slot (the user's reminder time).
    pub notify_local_hour: u8,
    /// Seconds after UTC midnight of the daily notification slot.
    pub notify_secs: f64,
    /// Whether the user receives the weekly e-mail.
    pub email_subscriber: bool,
    /// UTC weekday (0 = Monday) of the weekly e-mail and digest.
    pub weekly_day: u8,
    /// Seconds after UTC midnight the weekly e-mail arrives (10:00 local).
    pub email_secs: f64,
    /// How strongly recent notification volume wears the user down (1 = typical).
    pub fatigue_sensitivity: f64,
    /// 0 = indifferent to price, 1 = very price-sensitive.
    pub price_sensitivity: f64,
    /// Chance of reaching out to a due contact in a session.
    pub outreach_habit: f64,
    /// How the user entered the window.
    pub cohort: Cohort,
    /// Planned consent withdrawal, for a small share of users.
    pub consent: Option<ConsentPlan>,
    /// Chance that one of the user's sessions ends in a fatal crash. Nothing else depends
    /// on it, and no notification policy changes it.
    pub crashes_per_session: f64,
}

impl Traits {
    /// The IANA timezone name.
    pub fn timezone_name(&self) -> &'static str {
        TIMEZONES[self.timezone].0
    }

    /// Offset of local time from UTC, in hours.
    pub fn utc_offset_hours(&self) -> i32 {
        TIMEZONES[self.timezone].1
    }

    /// The app's distinct id of the user.
    pub fn app_id(&self) -> String {
        app_id(self.index)
    }

    /// The day (possibly negative) the user signed up.
    pub fn signup_day(&self) -> i32 {
        match self.cohort {
            Cohort::Existing { tenure_days } => -tenure_days,
            Cohort::New { day, .. } => day,
        }
    }
}

/// The app id of simulated user `index`.
pub fn app_id(index: u32) -> String {
    format!("u{index}")
}

/// Seconds after UTC midnight of `local_hour:minute` local time at `offset` hours from UTC.
fn utc_secs(local_hour: f64, offset: i32) -> f64 {
    (local_hour - f64::from(offset)).rem_euclid(24.0) * 3600.0
}

fn pick_timezone(u: f64) -> usize {
    let total: f64 = TIMEZONES.iter().map(|t| t.2).sum();
    let mut acc = 0.0;
    for (i, tz) in TIMEZONES.iter().enumerate() {
        acc += tz.2 / total;
        if u < acc {
            return i;
        }
    }
    TIMEZONES.len() - 1
}

/// User `index`'s chance of a crash per session, from a stream of its own so that adding
/// it left every other trait's draw unchanged.
fn crashes_per_session(seed: u64, index: u32) -> f64 {
    let (stable, unstable) = CRASHES_PER_SESSION;
    if random::unit(seed, Stream::Device, index, 0) < UNSTABLE_DEVICE_SHARE {
        unstable
    } else {
        stable
    }
}

/// Draws user `index`'s traits and starting state for a window of `days` days.
pub fn draw_user(seed: u64, index: u32, days: i32, hasher: &UserHasher) -> (Traits, State) {
    let mut rng = random::rng(seed, Stream::Traits, index, 0);
    let std_normal = Normal::new(0.0, 1.0).expect("valid normal");

    let activity = LogNormal::new(0.75f64.ln(), 0.7)
        .expect("valid lognormal")
        .sample(&mut rng)
        .clamp(0.05, 6.0);
    let general = 0.5 * std_normal.sample(&mut rng);
    let responsiveness = std::array::from_fn(|_| general + 0.45 * std_normal.sample(&mut rng));
    let peak: f64 = match rng.random::<f64>() {
        x if x < 0.3 => 8.0,
        x if x < 0.5 => 12.5,
        _ => 20.0,
    };
    let preferred_hour = (peak + 1.5 * std_normal.sample(&mut rng))
        .round()
        .rem_euclid(24.0) as u8;
    let timezone = pick_timezone(rng.random());
    let offset = TIMEZONES[timezone].1;
    let profile = HourProfile::new(preferred_hour, offset);
    // Most users set their reminder near when they use the app; some pick any daytime hour.
    let notify_local_hour = if rng.random::<f64>() < 0.6 {
        (f64::from(preferred_hour) + rng.random_range(-1.0..=1.0f64))
            .round()
            .clamp(8.0, 21.0) as u8
    } else {
        rng.random_range(8..=21)
    };
    let notify_minute = f64::from(rng.random_range(0..60u8));
    let notify_secs = utc_secs(f64::from(notify_local_hour) + notify_minute / 60.0, offset);
    let email_subscriber = rng.random::<f64>() < EMAIL_SUBSCRIBER_SHARE;
    let weekly_day = rng.random_range(0..7);
    let email_secs = utc_secs(10.0, offset);
    let fatigue_sensitivity = LogNormal::new(0.0f64, 0.5)
        .expect("valid lognormal")
        .sample(&mut rng)
        .clamp(0.2, 4.0);
    let price_sensitivity = Beta::new(2.0, 2.0).expect("valid beta").sample(&mut rng);
    let outreach_habit = Beta::new(2.0, 4.0).expect("valid beta").sample(&mut rng);
    let contacts = LogNormal::new(45f64.ln(), 0.8)
        .expect("valid lognormal")
        .sample(&mut rng)
        .round()
        .max(1.0);

    let existing = rng.random::<f64>() < EXISTING_SHARE;
    let cohort = if existing {
        Cohort::Existing {
            tenure_days: rng.random_range(7..=400),
        }
    } else {
        Cohort::New {
            day: rng.random_range(0..days),
            secs: profile.sample_secs(rng.random()),
            via_ad: rng.random::<f64>() < AD_ACQUIRED_SHARE,
        }
    };
    let consent = (days >= 10 && rng.random::<f64>() < CONSENT_WITHDRAWAL_SHARE).then(|| {
        let withdraw_day = rng.random_range(2..days - 3);
        ConsentPlan {
            withdraw_day,
            withdraw_secs: rng.random_range(0.0..86_400.0),
            regrant_day: (rng.random::<f64>() < CONSENT_REGRANT_SHARE)
                .then(|| withdraw_day + rng.random_range(3..=20)),
        }
    });

    let state = if existing {
        let dormant = rng.random::<f64>() < DORMANT_AT_START;
        State {
            status: if dormant {
                Status::Dormant
            } else {
                Status::Alive
            },
            momentum: if dormant {
                0.05
            } else {
                rng.random_range(0.3..0.9)
            },
            fatigue: rng.random_range(0.0..2.0),
            last_active_day: if dormant {
                -rng.random_range(20..90)
            } else {
                -rng.random_range(1..=4)
            },
            opted_out: rng.random::<f64>() < OPTED_OUT_AT_START,
            contacts,
            due: rng.random_range(0.0..5.0),
            subscription: if rng.random::<f64>() < PAID_AT_START {
                Subscription::Paid
            } else {
                Subscription::Free
            },
            last_pricing_day: None,
            last_paywall_secs: None,
            consented: true,
        }
    } else {
        State {
            status: Status::Prospect,
            momentum: 0.6,
            fatigue: 0.0,
            last_active_day: i32::MIN / 2,
            opted_out: false,
            contacts: (contacts / 4.0).round().max(1.0),
            due: 0.0,
            subscription: Subscription::Free,
            last_pricing_day: None,
            last_paywall_secs: None,
            consented: true,
        }
    };

    let anon_id = format!("anon-{:016x}", rng.random::<u64>());
    let traits = Traits {
        index,
        user_hash: hasher.hash(&app_id(index)),
        anon_id,
        activity,
        responsiveness,
        preferred_hour,
        timezone,
        profile,
        notify_local_hour,
        notify_secs,
        email_subscriber,
        weekly_day,
        email_secs,
        fatigue_sensitivity,
        price_sensitivity,
        outreach_habit,
        cohort,
        consent,
        crashes_per_session: crashes_per_session(seed, index),
    };
    (traits, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_reproducible_from_the_seed() {
        let hasher = UserHasher::new(b"k");
        let (a, sa) = draw_user(5, 17, 30, &hasher);
        let (b, sb) = draw_user(5, 17, 30, &hasher);
        assert_eq!(
            (a.activity, a.cohort.clone(), a.anon_id.clone()),
            (b.activity, b.cohort, b.anon_id)
        );
        assert_eq!(sa, sb);
        let (c, _) = draw_user(6, 17, 30, &hasher);
        assert_ne!(a.activity, c.activity);
        assert_eq!(a.user_hash, hasher.hash("u17"));
    }

    #[test]
    fn a_few_users_have_a_device_the_app_often_crashes_on() {
        let hasher = UserHasher::new(b"k");
        let rates: Vec<f64> = (0..20_000)
            .map(|i| draw_user(3, i, 30, &hasher).0.crashes_per_session)
            .collect();
        let (stable, unstable) = CRASHES_PER_SESSION;
        assert!(rates.iter().all(|&r| r == stable || r == unstable));
        let share = rates.iter().filter(|&&r| r == unstable).count() as f64 / 20_000.0;
        // 2 % ± 0.4 points is four standard errors.
        assert!((share - UNSTABLE_DEVICE_SHARE).abs() < 0.004, "{share}");
    }

    #[test]
    fn slots_fall_in_daytime_local_hours() {
        let hasher = UserHasher::new(b"k");
        for i in 0..500 {
            let (t, _) = draw_user(1, i, 30, &hasher);
            assert!((8..=21).contains(&t.notify_local_hour));
            let local = (t.notify_secs / 3600.0 + f64::from(t.utc_offset_hours())).rem_euclid(24.0);
            assert_eq!(local.floor() as u8, t.notify_local_hour);
            assert!((0.0..86_400.0).contains(&t.notify_secs));
        }
    }
}
