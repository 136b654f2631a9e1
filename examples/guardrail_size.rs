//! How often does a guardrail check breach? For each guardrail of a policy, at the rates
//! the demo's checks see and at several arm sizes, the share of simulated checks that
//! breach (`guardrail::breach_rate`, 200,000 draws each): between equal arms (a false
//! alarm: a healthy canary rolled back), at a harm of exactly the margin (the test's
//! size, at most 1 − confidence by design) and at twice and four times the margin (its
//! power: how soon a harmful canary is caught); then the harm such a check catches with
//! 80 % power (`guardrail::detectable_harm`, as the dashboard shows it) and the simulated
//! share of checks that breach at it. Last, a healthy canary's whole life: new users
//! every day in both arms alike, a check each day of the last `window` days, and the share
//! of canaries rolled back by chance within four weeks.
//!
//!   cargo run --release --example guardrail_size -- [--policy policy/policy.yaml]

use clap::Parser;
use nudge::control::guardrail::{
    Arms, Check, Metric, Proportion, breach_rate, critical_z, detectable_harm, harm_z,
};
use nudge::policy::Policy;
use nudge::rollout::Arm;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};

/// The rate each guardrail's control arm has in the demo's last checks (seed 7).
fn demo_rate(metric: Metric) -> f64 {
    match metric {
        Metric::OptOutRate => 0.03,
        Metric::D7Retention => 0.19,
        Metric::SendRate => 0.55,
        Metric::Roi => 0.14,
        Metric::CrashRate => 0.003,
    }
}

#[derive(Parser)]
struct Args {
    /// The policy whose guardrails are measured.
    #[arg(long, default_value = "policy/policy.yaml")]
    policy: std::path::PathBuf,
    /// Simulated checks per cell.
    #[arg(long, default_value_t = 200_000)]
    draws: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let policy = Policy::load(&args.policy)?;
    let settings = &policy.guardrails;
    let critical = critical_z(settings);
    println!(
        "confidence {} (breach at z ≥ {critical:.3}); share of checks that breach",
        settings.confidence
    );
    println!(
        "{:<13} {:>6} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "guardrail",
        "rate",
        "margin",
        "n/arm",
        "equal",
        "margin",
        "2×",
        "4×",
        "80 % power",
        "at it"
    );
    for metric in Metric::ALL {
        let Some(margin) = metric.margin(settings) else {
            continue;
        };
        let control_rate = demo_rate(metric);
        for trials in [200, 1_000, 5_000] {
            let rate = |harm: f64| {
                let arms = Arms {
                    control_rate,
                    harm,
                    trials,
                };
                100.0 * breach_rate(metric, margin, critical, arms, args.draws, 7)
            };
            // A check that saw the control's rate in both arms.
            let seen = Proportion {
                successes: (control_rate * trials as f64).round() as u64,
                trials,
            };
            let check = Check {
                metric,
                arm: Arm::Canary,
                canary: seen,
                control: seen,
                margin,
                z: None,
                breached: false,
                weighed: None,
            };
            let detectable = detectable_harm(&check, critical).unwrap_or(f64::NAN);
            println!(
                "{:<13} {:>6.3} {:>6.3} {:>7} {:>8.3}% {:>8.3}% {:>8.1}% {:>8.1}% {:>9.2} pt {:>8.1}%",
                metric.as_str(),
                control_rate,
                margin,
                trials,
                rate(0.0),
                rate(margin),
                rate(2.0 * margin),
                rate(4.0 * margin),
                100.0 * detectable,
                rate(detectable),
            );
        }
    }
    println!(
        "\nequal arms for {LIFE_DAYS} days, each day's new trials Binomial at the rate, a check a \
         day of the last {WINDOW_DAYS} days' trials: share of canaries ever rolled back"
    );
    println!(
        "{:<13} {:>6} {:>10} {:>12}",
        "guardrail", "rate", "n/window", "rolled back"
    );
    for metric in Metric::ALL {
        let Some(margin) = metric.margin(settings) else {
            continue;
        };
        for per_window in [200, 1_000, 5_000] {
            let share = lifetime_false_rollbacks(
                metric,
                (margin, critical, settings.min_samples),
                demo_rate(metric),
                per_window,
                args.draws / 10,
            );
            println!(
                "{:<13} {:>6.3} {:>10} {:>11.3}%",
                metric.as_str(),
                demo_rate(metric),
                per_window,
                100.0 * share
            );
        }
    }
    Ok(())
}

/// Days a canary runs in the lifetime simulation.
const LIFE_DAYS: usize = 28;
/// Days a check reads, as `guardrails.window`'s default.
const WINDOW_DAYS: usize = 7;

/// The share of `runs` healthy canaries (both arms at `rate`, `per_window` trials per arm
/// in any `WINDOW_DAYS` days) that a daily check breaches at least once within
/// `LIFE_DAYS`, a check testing only once both arms have `min_samples` trials. Checks an
/// hour apart read nearly the same window, so a check a day is the independent part of
/// the hourly ones.
fn lifetime_false_rollbacks(
    metric: Metric,
    (margin, critical, min_samples): (f64, f64, u64),
    rate: f64,
    per_window: u64,
    runs: u32,
) -> f64 {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    let per_day = per_window.div_ceil(WINDOW_DAYS as u64);
    let Ok(day) = Binomial::new(per_day, rate) else {
        return f64::NAN;
    };
    let rolled_back = (0..runs)
        .filter(|_| {
            let mut days: Vec<(u64, u64)> = Vec::with_capacity(LIFE_DAYS);
            (0..LIFE_DAYS).any(|d| {
                days.push((day.sample(&mut rng), day.sample(&mut rng)));
                let window = &days[(d + 1).saturating_sub(WINDOW_DAYS)..];
                let trials = per_day * window.len() as u64;
                let (canary, control) = window.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
                let arm = |successes| Proportion { successes, trials };
                trials >= min_samples
                    && harm_z(metric, arm(canary), arm(control), margin)
                        .is_some_and(|z| z >= critical)
            })
        })
        .count();
    rolled_back as f64 / f64::from(runs)
}
