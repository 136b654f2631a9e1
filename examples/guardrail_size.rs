//! How often does a guardrail check breach? For each guardrail of a policy, at the rates
//! the demo's checks see and at several arm sizes, the share of simulated checks that
//! breach (`guardrail::breach_rate`, 200,000 draws each): between equal arms (a false
//! alarm: a healthy canary rolled back), at a harm of exactly the margin (the test's
//! size, at most 1 − confidence by design) and at twice and four times the margin (its
//! power: how soon a harmful canary is caught); then the harm such a check catches with
//! 80 % power (`guardrail::detectable_harm`, as the dashboard shows it) and the simulated
//! share of checks that breach at it.
//!
//!   cargo run --release --example guardrail_size -- [--policy policy/policy.yaml]

use clap::Parser;
use nudge::control::guardrail::{
    Arms, Check, Metric, Proportion, breach_rate, critical_z, detectable_harm,
};
use nudge::policy::Policy;
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
    Ok(())
}
