//! How often does a guardrail check breach? For each guardrail of a policy, at the rates
//! the demo's checks see and at several arm sizes, the share of simulated single checks
//! that breach (`guardrail::breach_rate`, 200,000 draws each): between equal arms (a false
//! alarm: a healthy canary rolled back), at a harm of exactly the margin (the test's
//! size) and at twice and four times the margin (its power: how soon a harmful canary is
//! caught); then the harm such a check catches with 80 % power
//! (`guardrail::detectable_harm`, as the dashboard shows it) and the simulated share of
//! checks that breach at it. Last, a canary's whole life (`guardrail::lifetime_breach_rate`):
//! new users every day in both arms, a check each day, and the share of canaries rolled
//! back within four and within eight weeks, between equal arms and at a harm of exactly
//! the margin (false rollbacks), and within one and four weeks at three times the margin
//! (a harmful canary caught), under a fixed test of the policy's window and under a
//! sequential test, whatever the policy's own test is.
//!
//!   cargo run --release --example guardrail_size -- [--policy policy/policy.yaml]

use clap::Parser;
use nudge::control::guardrail::{
    Arms, Check, Life, Metric, Proportion, breach_rate, detectable_harm, lifetime_breach_rate,
    test_summary,
};
use nudge::policy::{GuardrailTest, Guardrails, Policy};
use nudge::rollout::Arm;

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
    /// Simulated checks per cell (a tenth as many lives).
    #[arg(long, default_value_t = 200_000)]
    draws: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let policy = Policy::load(&args.policy)?;
    let settings = &policy.guardrails;
    println!(
        "{}; share of single checks that breach",
        test_summary(settings)
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
                100.0 * breach_rate(settings, metric, arms, args.draws, 7).unwrap_or(f64::NAN)
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
                critical: None,
                breached: false,
                weighed: None,
            };
            // No harm the metric can reach is caught so often: say so.
            let (detectable, at_it) = match detectable_harm(&check, settings) {
                Some(harm) => (
                    format!("{:.2} pt", 100.0 * harm),
                    format!("{:.1}%", rate(harm)),
                ),
                None => ("none".to_owned(), "-".to_owned()),
            };
            println!(
                "{:<13} {:>6.3} {:>6.3} {:>7} {:>8.3}% {:>8.3}% {:>8.1}% {:>8.1}% {:>12} {:>9}",
                metric.as_str(),
                control_rate,
                margin,
                trials,
                rate(0.0),
                rate(margin),
                rate(2.0 * margin),
                rate(4.0 * margin),
                detectable,
                at_it,
            );
        }
    }
    println!(
        "\nA canary's life: each day's new trials per arm Binomial at the rate (equal arms, or \
         the canary worse by the margin or by 3× it), a check a day; share of canaries ever \
         rolled back"
    );
    println!(
        "{:<10} {:<13} {:>6} {:>6} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9}",
        "test",
        "guardrail",
        "rate",
        "n/day",
        "equal 4 wk",
        "equal 8 wk",
        "margin 4 wk",
        "margin 8 wk",
        "3× 1 wk",
        "3× 4 wk"
    );
    for test in [GuardrailTest::Fixed, GuardrailTest::Sequential] {
        let settings = Guardrails { test, ..*settings };
        for metric in Metric::ALL {
            let Some(margin) = metric.margin(&settings) else {
                continue;
            };
            for per_day in [30, 150, 700] {
                let share = |harm: f64, weeks: usize| {
                    let life = Life {
                        arms: Arms {
                            control_rate: demo_rate(metric),
                            harm,
                            trials: per_day,
                        },
                        days: 7 * weeks,
                    };
                    100.0
                        * lifetime_breach_rate(&settings, metric, life, args.draws / 10, 7)
                            .unwrap_or(f64::NAN)
                };
                println!(
                    "{:<10} {:<13} {:>6.3} {:>6} {:>9.2}% {:>9.2}% {:>10.2}% {:>10.2}% {:>8.1}% {:>8.1}%",
                    test.as_str(),
                    metric.as_str(),
                    demo_rate(metric),
                    per_day,
                    share(0.0, 4),
                    share(0.0, 8),
                    share(margin, 4),
                    share(margin, 8),
                    share(3.0 * margin, 1),
                    share(3.0 * margin, 4),
                );
            }
        }
    }
    Ok(())
}
