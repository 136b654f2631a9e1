//! How much D7 retention can any notification policy buy in the simulator? Simulates the
//! closed-loop demo's timeline in memory (56 days under the logging policy, then 28
//! days with users split into two arms by a seeded hash). Control gets the scheduler's
//! baseline (its first candidate whenever push is on); canary gets one rule at a time,
//! and most rules read the simulator's hidden state (true P(return), the lapse, fatigue),
//! more than any model can know. The behaviour draws are
//! keyed by (seed, user, day), so every rule meets the same luck and control is the same
//! users under the same baseline in every row.
//!
//! D7 is the demo report's measure: a session on the 7th day after the user's first slot
//! of the 28 days. "Late D7" is the same from each user's first slot after 14 days of
//! the rule, when its effect on fatigue and lapses has built up.
//!
//!   cargo run --release --example retention_ceiling -- [--users 20000] [--seed 7]

use chrono::NaiveDate;
use clap::Parser;
use nudge::control::closed_loop::{DEMO_HISTORY_DAYS, DEMO_LOOP_DAYS};
use nudge::ingest::hashing::UserHasher;
use nudge::sim::behaviour::{NotifType, State, Status, push_return_probability};
use nudge::sim::policy::{DEFAULT_EXPLORATION, Decision, LoggingPolicy, Opportunity};
use nudge::sim::population::Traits;
use nudge::sim::random::{self, Stream};
use nudge::sim::{SimConfig, Simulation};

/// Days of history before the split, as in `nudge-train demo`.
const HISTORY_DAYS: i32 = DEMO_HISTORY_DAYS;
/// Days with the two arms, as in `nudge-train demo`.
const LOOP_DAYS: i32 = DEMO_LOOP_DAYS;
/// Day of the split from which the late cohort's first slots count.
const LATE_FROM: i32 = 14;

/// Measures the D7 retention lift of oracle notification rules over the baseline.
#[derive(Parser)]
struct Args {
    /// Simulated users (half in each arm).
    #[arg(long, default_value_t = 20_000)]
    users: u32,
    /// Simulation seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// A canary rule: the candidate to send, if any, knowing the user's hidden state.
type Rule = fn(&Opportunity, &Traits, &State) -> Option<usize>;

fn baseline(o: &Opportunity, _: &Traits, _: &State) -> Option<usize> {
    (!o.opted_out).then_some(0)
}

fn no_sends(_: &Opportunity, _: &Traits, _: &State) -> Option<usize> {
    None
}

/// The candidate with the highest true P(return) and that probability (0 when lapsed or
/// opted out).
fn best_return(o: &Opportunity, t: &Traits, s: &State) -> (usize, f64) {
    o.candidates
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let p = push_return_probability(t, s, o.day, c.notif_type, o.local_hour);
            (k, p)
        })
        .fold((0, 0.0), |best, c| if c.1 > best.1 { c } else { best })
}

/// The true-P(return) ranker with a threshold in percent: what a perfect model would do.
fn p_return_at_least<const PCT: u32>(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    let (k, p) = best_return(o, t, s);
    (p > 0.0 && p >= f64::from(PCT) / 100.0).then_some(k)
}

/// The best candidate whenever the push can be opened at all (not lapsed, push on).
fn not_lapsed(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    p_return_at_least::<0>(o, t, s)
}

/// [`not_lapsed`], and only while fatigue is below `TENTHS` / 10.
fn rested<const TENTHS: u32>(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    not_lapsed(o, t, s).filter(|_| s.fatigue < f64::from(TENTHS) / 10.0)
}

/// The baseline's candidate while fatigue is below 1.2. Fatigue is a decayed count of the
/// user's past sends, so unlike the other rules this one needs no hidden state.
fn baseline_rested(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    baseline(o, t, s).filter(|_| s.fatigue < 1.2)
}

/// The perfect ranker at `PCT` percent while fatigue is below 1.2.
fn p_return_rested<const PCT: u32>(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    p_return_at_least::<PCT>(o, t, s).filter(|_| s.fatigue < 1.2)
}

/// Dormant users whenever reachable (a revival is worth many days), others when rested.
fn dormant_or_rested(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    if s.status == Status::Dormant {
        not_lapsed(o, t, s)
    } else {
        rested::<12>(o, t, s)
    }
}

/// Only the "we miss you" push, when offered and reachable.
fn re_engagement_only(o: &Opportunity, t: &Traits, s: &State) -> Option<usize> {
    let (_, p) = best_return(o, t, s);
    o.candidates
        .iter()
        .position(|c| c.notif_type == NotifType::ReEngagement)
        .filter(|_| p > 0.0)
}

/// One arm's counts.
#[derive(Default)]
struct Arm {
    users: u32,
    sends: u64,
    /// Sum of the true P(return) of the candidates sent: the expected ROI's numerator.
    expected_returns: f64,
    retained: u32,
    late_users: u32,
    late_retained: u32,
}

impl Arm {
    fn sends_per_user(&self) -> f64 {
        self.sends as f64 / f64::from(self.users)
    }
    fn expected_roi(&self) -> f64 {
        self.expected_returns / self.sends as f64
    }
    fn d7(&self) -> f64 {
        f64::from(self.retained) / f64::from(self.users)
    }
    fn late_d7(&self) -> f64 {
        f64::from(self.late_retained) / f64::from(self.late_users)
    }
}

/// Index of the canary arm in [`run`]'s answer.
const CANARY: usize = 0;
/// Index of the control arm in [`run`]'s answer.
const CONTROL: usize = 1;

/// The population after the history under the logging policy, ready for the split.
fn history(users: u32, seed: u64) -> Simulation {
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).expect("a valid date");
    let config = SimConfig::new(
        users,
        HISTORY_DAYS + LOOP_DAYS,
        seed,
        start,
        DEFAULT_EXPLORATION,
    )
    .expect("users and days within the simulator's limits");
    let mut sim = Simulation::new(config, &UserHasher::new(b"retention-ceiling"));
    let mut logging = LoggingPolicy::new(seed, DEFAULT_EXPLORATION);
    for day in 0..HISTORY_DAYS {
        sim.step(day, &mut logging);
    }
    sim
}

/// Plays the split from `sim` with `rule` in canary; returns [canary, control].
fn run(mut sim: Simulation, rule: Rule) -> [Arm; 2] {
    let (users, seed) = (sim.config().users(), sim.config().seed());
    let arm_of = |user: u32| (random::key(seed, Stream::Policy, user, -1) % 2) as usize;
    let end = HISTORY_DAYS + LOOP_DAYS;
    let mut first_slot = vec![None; users as usize];
    let mut late_slot = vec![None; users as usize];
    let mut arms = [Arm::default(), Arm::default()];
    for day in HISTORY_DAYS..end {
        let opportunities = sim.plan_day(day);
        let decisions: Vec<Decision> = opportunities
            .iter()
            .map(|o| {
                let (user, arm) = (o.user as usize, arm_of(o.user));
                let sim_user = &sim.users()[user];
                let decide = if arm == CANARY { rule } else { baseline };
                let send = decide(o, &sim_user.traits, &sim_user.state);
                let counts = &mut arms[arm];
                if first_slot[user].is_none() {
                    first_slot[user] = Some(day);
                    counts.users += 1;
                }
                if day >= HISTORY_DAYS + LATE_FROM && day + 7 < end && late_slot[user].is_none() {
                    late_slot[user] = Some(day);
                    counts.late_users += 1;
                }
                counts.sends += u64::from(send.is_some());
                if let Some(k) = send {
                    let notif_type = o.candidates[k].notif_type;
                    counts.expected_returns += push_return_probability(
                        &sim_user.traits,
                        &sim_user.state,
                        o.day,
                        notif_type,
                        o.local_hour,
                    );
                }
                Decision {
                    send,
                    propensity: None,
                    arm: if arm == CANARY { "canary" } else { "control" },
                    model_version: None,
                }
            })
            .collect();
        sim.play_day(day, &opportunities, &decisions, &|_| None);
        for (user, sim_user) in sim.users().iter().enumerate() {
            let active = sim_user.state.last_active_day == day;
            let counts = &mut arms[arm_of(user as u32)];
            if active && first_slot[user] == Some(day - 7) {
                counts.retained += 1;
            }
            if active && late_slot[user] == Some(day - 7) {
                counts.late_retained += 1;
            }
        }
    }
    arms
}

fn main() {
    let args = Args::parse();
    let rules: [(&str, Rule); 15] = [
        ("baseline (A/A check)", baseline),
        ("no sends", no_sends),
        ("true P(return) ≥ 0.10", p_return_at_least::<10>),
        ("true P(return) ≥ 0.20", p_return_at_least::<20>),
        ("true P(return) ≥ 0.30", p_return_at_least::<30>),
        ("not lapsed: best candidate", not_lapsed),
        ("not lapsed, fatigue < 0.8", rested::<8>),
        ("not lapsed, fatigue < 1.2", rested::<12>),
        ("not lapsed, fatigue < 1.6", rested::<16>),
        ("dormant always, others fatigue < 1.2", dormant_or_rested),
        ("re-engagement only", re_engagement_only),
        (
            "baseline candidate, fatigue < 1.2 (sends only)",
            baseline_rested,
        ),
        ("true P(return) ≥ 0.05, fatigue < 1.2", p_return_rested::<5>),
        (
            "true P(return) ≥ 0.10, fatigue < 1.2",
            p_return_rested::<10>,
        ),
        (
            "true P(return) ≥ 0.20, fatigue < 1.2",
            p_return_rested::<20>,
        ),
    ];
    println!(
        "seed {}, {} users: canary rule against the baseline in control",
        args.seed, args.users
    );
    println!(
        "| canary rule | sends/user canary | control | expected ROI canary | control | D7 canary | control | D7 lift | late D7 lift |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let after_history = history(args.users, args.seed);
    for (name, rule) in rules {
        let arms = run(after_history.clone(), rule);
        let (canary, control) = (&arms[CANARY], &arms[CONTROL]);
        println!(
            "| {name} | {:.2} | {:.2} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:+.1} | {:+.1} |",
            canary.sends_per_user(),
            control.sends_per_user(),
            100.0 * canary.expected_roi(),
            100.0 * control.expected_roi(),
            100.0 * canary.d7(),
            100.0 * control.d7(),
            100.0 * (canary.d7() - control.d7()),
            100.0 * (canary.late_d7() - control.late_d7()),
        );
    }
}
