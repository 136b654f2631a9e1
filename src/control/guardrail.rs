//! Guardrails: is the canary measurably worse than its control? Pure functions over the
//! per-arm KPIs.
//!
//! Each guardrail compares one proportion between the arms with a one-sided
//! two-proportion z-test against a margin: H0 "the canary is worse by at most the margin"
//! is rejected, and the guardrail breached, only when
//! `z = (harm − margin) / SE ≥ critical`, with `harm` the canary's excess (or shortfall)
//! and SE the unpooled standard error. The critical z ([`critical_z`]) is the fixed
//! test's z₁₋α, or a sequential test's bar, which keeps the chance of a false rollback
//! below α over a rollout's whole life. A single noisy day cannot trip it: both arms need
//! `min_samples` trials, and the excess must stand out of the sampling noise.
//!
//! D7 retention cannot be read from the users decided in the last days: none of their
//! 7th days has ended. Its guardrail weighs the users first decided up to
//! [`super::kpi::D7_KNOWN_AFTER`] earlier ([`super::kpi::d7_cohort`]), so it sees harm
//! about eight days after it begins.

use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use super::kpi::{ArmD7, ArmKpis, Span};
use crate::policy::{GuardrailTest, Guardrails};
use crate::rollout::Arm;

/// A count of successes out of trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Proportion {
    /// Successes.
    pub successes: u64,
    /// Trials.
    pub trials: u64,
}

impl Proportion {
    /// The share, when there are trials.
    pub fn rate(self) -> Option<f64> {
        (self.trials > 0).then(|| self.successes as f64 / self.trials as f64)
    }

    /// The share with one success and one failure added (Agresti–Caffo): kept off 0 and 1,
    /// so a rare event still has a spread.
    fn kept_off_the_edges(self) -> f64 {
        (self.successes as f64 + 1.0) / (self.trials as f64 + 2.0)
    }
}

/// Which guardrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Users who turned push off after their first decision: higher is worse.
    OptOutRate,
    /// Users active on the 7th day after their first decision: lower is worse.
    D7Retention,
    /// Decisions answered with a send: higher is worse.
    SendRate,
    /// Sends followed by an action within 24 h: lower is worse (the model's sends do
    /// less than the baseline's).
    Roi,
    /// Users who crashed (a fatal `$exception`) after their first decision: higher is
    /// worse (a notification that opens a broken screen shows here first).
    CrashRate,
}

impl Metric {
    /// Every guardrail.
    pub const ALL: [Metric; 5] = [
        Metric::OptOutRate,
        Metric::D7Retention,
        Metric::SendRate,
        Metric::Roi,
        Metric::CrashRate,
    ];

    /// The metric's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::OptOutRate => "opt_out_rate",
            Metric::D7Retention => "d7_retention",
            Metric::SendRate => "send_rate",
            Metric::Roi => "roi",
            Metric::CrashRate => "crash_rate",
        }
    }

    /// The metric's margin in `settings`; `None` when that guardrail is off.
    pub fn margin(self, settings: &Guardrails) -> Option<f64> {
        match self {
            Metric::OptOutRate => settings.opt_out_rate,
            Metric::D7Retention => settings.d7_retention,
            Metric::SendRate => settings.send_rate,
            Metric::Roi => settings.roi,
            Metric::CrashRate => settings.crash_rate,
        }
    }

    /// The metric named `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The metric's proportion in one arm.
    pub fn of(self, arm: &Evidence) -> Proportion {
        let kpis = arm.window;
        let (successes, trials) = match self {
            Metric::OptOutRate => (kpis.opted_out, kpis.users),
            Metric::D7Retention => (arm.d7.successes, arm.d7.trials),
            Metric::SendRate => (kpis.sends, kpis.decisions),
            Metric::Roi => (kpis.actioned, kpis.measured_sends),
            Metric::CrashRate => (kpis.crashed, kpis.users),
        };
        Proportion { successes, trials }
    }

    /// +1 when a higher rate in the canary is the harm, −1 when a lower one is.
    fn direction(self) -> f64 {
        match self {
            Metric::D7Retention | Metric::Roi => -1.0,
            Metric::OptOutRate | Metric::SendRate | Metric::CrashRate => 1.0,
        }
    }

    /// How much worse the canary's rate is than the control's (negative: better).
    fn harm(self, canary: f64, control: f64) -> f64 {
        self.direction() * (canary - control)
    }

    /// The rate `harm` worse than `rate` in this metric's bad direction, within 0..=1.
    fn harmed(self, rate: f64, harm: f64) -> f64 {
        (rate + self.direction() * harm).clamp(0.0, 1.0)
    }
}

/// What the guardrails weigh of one arm.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The arm's KPIs over the guardrail window: opt-outs, send rate, ROI.
    pub window: &'a ArmKpis,
    /// D7 retention (retained out of users) of the arm's [`super::kpi::d7_cohort`]: the
    /// users whose 7th day has been observed.
    pub d7: Proportion,
}

impl<'a> Evidence<'a> {
    /// An arm's evidence: its KPIs over the window, and its D7 from `cohort`, each arm's
    /// D7 of the users whose 7th day has been observed (no row: no such users).
    pub fn of(window: &'a ArmKpis, cohort: &[ArmD7]) -> Self {
        let d7 = cohort.iter().find(|a| a.arm == window.arm);
        Evidence {
            window,
            d7: Proportion {
                successes: d7.map_or(0, |a| a.retained),
                trials: d7.map_or(0, |a| a.users),
            },
        }
    }
}

/// What a round of checks weighed, the same for both arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighed {
    /// The guardrail window's decisions (opt-outs, send rate, ROI, crashes).
    pub window: Span,
    /// The D7 cohort ([`super::kpi::d7_cohort`]); `None` when no user's 7th day has ended
    /// since the window's earliest allowed decision.
    pub d7_cohort: Option<Span>,
}

impl Weighed {
    /// What `metric`'s check weighed.
    fn of(self, metric: Metric) -> Option<Span> {
        match metric {
            Metric::D7Retention => self.d7_cohort,
            _ => Some(self.window),
        }
    }
}

/// One guardrail's check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = GuardrailCheck)]
pub struct Check {
    /// Which guardrail.
    pub metric: Metric,
    /// The model arm compared with control: `canary`, or `full` when the control is the
    /// rollout's holdout.
    pub arm: Arm,
    /// The model arm's proportion (named for the canary, the usual model arm).
    pub canary: Proportion,
    /// The control's proportion.
    pub control: Proportion,
    /// The harm tolerated.
    pub margin: f64,
    /// The test statistic; `None` when an arm has fewer than `min_samples` trials.
    pub z: Option<f64>,
    /// The z at and above which it breaches ([`critical_z`]); `None` when `z` is (and for
    /// checks stored before it was kept).
    pub critical: Option<f64>,
    /// Whether the canary is worse than the margin allows, with the confidence required.
    pub breached: bool,
    /// What it weighed; `None` for D7 before any user's 7th day has ended (and for checks
    /// stored before spans were kept).
    pub weighed: Option<Span>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = |p: Proportion| {
            p.rate()
                .map_or_else(|| "n/a".into(), |r| format!("{:.2}%", 100.0 * r))
        };
        write!(
            f,
            "{} {} {} of {} vs control {} of {} (margin {:.2} points, z {})",
            self.metric.as_str(),
            self.arm.as_str(),
            percent(self.canary),
            self.canary.trials,
            percent(self.control),
            self.control.trials,
            100.0 * self.margin,
            match (self.z, self.critical) {
                (None, _) => "n/a: too few samples".into(),
                (Some(z), None) => format!("{z:.2}"),
                (Some(z), Some(critical)) => format!("{z:.2}, breach at {critical:.2}"),
            },
        )?;
        let Some(Span { from, to }) = self.weighed else {
            return Ok(());
        };
        let what = match self.metric {
            Metric::D7Retention => "users first decided",
            _ => "decisions",
        };
        const MINUTE: &str = "%Y-%m-%d %H:%M";
        write!(
            f,
            ", {what} {} → {} UTC",
            from.format(MINUTE),
            to.format(MINUTE)
        )
    }
}

/// One line per check, `BREACHED` or `ok` before it and, after it, the harm a check of
/// its sizes catches with 80 % power under `settings` ([`detectable_harm`]).
pub fn lines(checks: &[Check], settings: &Guardrails) -> String {
    checks.iter().fold(String::new(), |mut out, c| {
        let verdict = if c.breached { "BREACHED" } else { "ok      " };
        let power = detectable_harm(c, settings).map_or_else(String::new, |h| {
            format!("; 80 % power at a harm of {:.2} points", 100.0 * h)
        });
        out.push_str(&format!("{verdict} {c}{power}\n"));
        out
    })
}

/// The variance of one trial at `rate`.
fn variance(rate: f64) -> f64 {
    rate * (1.0 - rate)
}

/// The harm (how much worse the canary's rate is than the control's, a share) that a
/// check with `check`'s trials catches with 80 % power under `settings`: the least harm
/// whose expected excess over the breach bar (the margin plus the critical z times the
/// standard error) is z₀.₈ times that excess's spread. Both arms' rates move the bar (a
/// higher rate has a larger standard error, and under a sequential test a higher critical
/// z), so the spread is taken by the delta method, each arm's variance at its rate under
/// that harm. `None` without trials in both arms, or when no harm would be caught so
/// often. An ok check with a large detectable harm says the arms are too small to see a
/// smaller one.
pub fn detectable_harm(check: &Check, settings: &Guardrails) -> Option<f64> {
    let (n1, n2) = (check.canary.trials as f64, check.control.trials as f64);
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let margin = check.margin;
    let control = check.control.kept_off_the_edges();
    // The harm a check must see to breach, at these rates.
    let bar = |canary: f64, control: f64| {
        let spread = Spread::at((canary, n1), (control, n2));
        margin + critical_z(settings, spread) * spread.se
    };
    // The harm rises with the canary's rate when a higher rate is worse, else falls.
    let sign = check.metric.direction();
    // The spread of (harm seen − bar) at a canary rate: its slopes in each arm's rate
    // (numerical), each times that arm's standard error.
    let spread = |canary: f64| {
        const STEP: f64 = 1e-6;
        let slope = |f: &dyn Fn(f64) -> f64, at: f64| {
            let (lo, hi) = ((at - STEP).max(1e-9), (at + STEP).min(1.0 - 1e-9));
            (f(hi) - f(lo)) / (hi - lo)
        };
        let in_canary = sign - slope(&|c| bar(c, control), canary);
        let in_control = -sign - slope(&|c| bar(canary, c), control);
        (in_canary.powi(2) * variance(canary) / n1 + in_control.powi(2) * variance(control) / n2)
            .sqrt()
    };
    // Caught four times in five: the expected excess is z₀.₈ spreads.
    let z_power = Normal::standard().inverse_cdf(0.8);
    let shortfall = |harm: f64| {
        let canary = check.metric.harmed(control, harm);
        bar(canary, control) + z_power * spread(canary) - harm
    };
    // The largest harm the metric can reach from the control's rate.
    let mut high = check
        .metric
        .harm(check.metric.harmed(control, 1.0), control);
    if shortfall(high) > 0.0 {
        return None;
    }
    let mut low = margin;
    for _ in 0..60 {
        let mid = 0.5 * (low + high);
        if shortfall(mid) > 0.0 {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(high)
}

/// How precisely a check measures the harm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The standard error of the harm (unpooled).
    pub se: f64,
    /// The variance of one trial of each arm, summed (σ₁² + σ₂²): the standard error's
    /// square with one trial per arm.
    pub trial_variance: f64,
}

impl Spread {
    /// At each arm's rate and trials.
    fn at((canary, n1): (f64, f64), (control, n2): (f64, f64)) -> Self {
        Self {
            se: (variance(canary) / n1 + variance(control) / n2).sqrt(),
            trial_variance: variance(canary) + variance(control),
        }
    }
}

/// How far a check's harm stands above its margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Excess {
    /// The harm less the margin, in standard errors.
    pub z: f64,
    /// How precisely the harm is measured.
    pub spread: Spread,
}

/// The excess of the canary's harm over `margin` (one-sided, unpooled SE).
pub fn excess(
    metric: Metric,
    canary: Proportion,
    control: Proportion,
    margin: f64,
) -> Option<Excess> {
    let (p1, p2) = (canary.rate()?, control.rate()?);
    let harm = metric.harm(p1, p2);
    let (n1, n2) = (canary.trials as f64, control.trials as f64);
    let mut spread = Spread::at((p1, n1), (p2, n2));
    if spread.se == 0.0 {
        // Every trial alike in both arms (no crash reported anywhere, say): the rates with
        // one success and one failure added per arm (Agresti–Caffo) give the spread, so z
        // stays a finite measure of the evidence.
        spread = Spread::at(
            (canary.kept_off_the_edges(), n1 + 2.0),
            (control.kept_off_the_edges(), n2 + 2.0),
        );
    }
    Some(Excess {
        z: (harm - margin) / spread.se,
        spread,
    })
}

/// The sequential test's mixture scale, squared, in trial variances per `min_samples`
/// trials: with `min_samples` trials per arm the half-normal's scale is √10 ≈ 3.2
/// standard errors, about where a normal mixture's bar is lowest.
const MIXTURE_AT_MIN_SAMPLES: f64 = 10.0;

/// The z at and above which a check breaches under `settings`, for a harm measured with
/// `spread`.
///
/// A fixed test breaches at the one-sided critical value of `confidence`, whatever the
/// sizes. A sequential test breaches when its mixture likelihood ratio reaches
/// 1 / (1 − confidence): the likelihood of the harms above the margin, weighted by a
/// half-normal, over the likelihood at the margin, the estimate taken as normal with
/// standard error `spread.se`. Under any harm up to the margin that ratio is a
/// nonnegative supermartingale of mean at most 1, so by Ville's inequality it ever
/// reaches 1 / (1 − confidence) with a chance of at most 1 − confidence, however often
/// it is looked at. The half-normal's scale τ (τ² = 10 trial variances / `min_samples`)
/// tunes the test to catch harm soon after the arms reach `min_samples`; the price is a
/// higher bar than a fixed test's at each look (about 3.4 at 99 %), rising like √ln n.
pub fn critical_z(settings: &Guardrails, spread: Spread) -> f64 {
    let normal = Normal::standard();
    match settings.test {
        GuardrailTest::Fixed => normal.inverse_cdf(settings.confidence),
        GuardrailTest::Sequential => {
            let v = spread.se * spread.se;
            let tau2 = spread.trial_variance * MIXTURE_AT_MIN_SAMPLES / settings.min_samples as f64;
            let (shrink, tau_z) = (v / (v + tau2), (tau2 / (v + tau2)).sqrt());
            let bar = (1.0 / (1.0 - settings.confidence)).ln();
            // ln Λ(z) = ln 2 + ½ ln(v / (v + τ²)) + z²τ² / (2 (v + τ²)) + ln Φ(z τ / √(v + τ²)),
            // rising in z ≥ 0 from ½ ln(v / (v + τ²)) < 0.
            let log_ratio = |z: f64| {
                std::f64::consts::LN_2
                    + 0.5 * shrink.ln()
                    + 0.5 * (z * tau_z).powi(2)
                    + normal.cdf(z * tau_z).ln()
            };
            let (mut low, mut high) = (0.0, 1.0);
            while log_ratio(high) < bar {
                if high > 1e3 {
                    // No spread to mix over: nothing can breach.
                    return f64::INFINITY;
                }
                low = high;
                high *= 2.0;
            }
            for _ in 0..60 {
                let mid = 0.5 * (low + high);
                if log_ratio(mid) < bar {
                    low = mid;
                } else {
                    high = mid;
                }
            }
            high
        }
    }
}

/// What a breach takes under `settings`, in a line: the fixed test's z, or the sequential
/// test's confidence over the rollout's life.
pub fn test_summary(settings: &Guardrails) -> String {
    let percent = format!("{:.2}", 100.0 * settings.confidence);
    let confidence = percent.trim_end_matches('0').trim_end_matches('.');
    match settings.test {
        GuardrailTest::Fixed => format!(
            "a fixed test of the last {} days: each check breaches at z ≥ {:.2}, at \
             {confidence} % confidence per check",
            settings.window.num_days(),
            Normal::standard().inverse_cdf(settings.confidence)
        ),
        GuardrailTest::Sequential => format!(
            "a sequential test of all since the rollout began, at {confidence} % \
             confidence over its whole life: the z a breach needs rises slowly with the \
             evidence"
        ),
    }
}

/// Two arms of a simulated check: the control's rate, the canary's harm (how much worse
/// its rate is, in the metric's bad direction) and each arm's trials.
#[derive(Debug, Clone, Copy)]
pub struct Arms {
    /// The control's rate.
    pub control_rate: f64,
    /// How much worse the canary's rate is (0: equal arms).
    pub harm: f64,
    /// Trials per arm.
    pub trials: u64,
}

/// Both arms' binomials at `arms`' rates, for `trials` trials each.
fn binomials(metric: Metric, arms: Arms, trials: u64) -> Option<(Binomial, Binomial)> {
    let canary_rate = metric.harmed(arms.control_rate, arms.harm);
    let binomial = |rate: f64| Binomial::new(trials, rate.clamp(0.0, 1.0)).ok();
    Some((binomial(canary_rate)?, binomial(arms.control_rate)?))
}

/// Whether a check of `metric` under `settings` breaches on these counts (trials as
/// counted, `min_samples` aside).
fn breaches(
    settings: &Guardrails,
    metric: Metric,
    margin: f64,
    canary: Proportion,
    control: Proportion,
) -> bool {
    excess(metric, canary, control, margin).is_some_and(|e| e.z >= critical_z(settings, e.spread))
}

/// The share of `draws` simulated single checks of `metric` under `settings` that breach,
/// each arm's successes drawn from its binomial, seeded by `seed`: the test's operating
/// characteristic. Its size is the rate at a harm of exactly the margin, its false alarms
/// the rate between equal arms, its power any larger harm's. `None` when the metric's
/// guardrail is off.
pub fn breach_rate(
    settings: &Guardrails,
    metric: Metric,
    arms: Arms,
    draws: u32,
    seed: u64,
) -> Option<f64> {
    let margin = metric.margin(settings)?;
    let (canary, control) = binomials(metric, arms, arms.trials)?;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let breached = (0..draws)
        .filter(|_| {
            let mut draw = |arm: &Binomial| Proportion {
                successes: arm.sample(&mut rng),
                trials: arms.trials,
            };
            let (a, b) = (draw(&canary), draw(&control));
            breaches(settings, metric, margin, a, b)
        })
        .count();
    Some(breached as f64 / f64::from(draws))
}

/// A model arm's simulated life: `days` days, each bringing `arms.trials` new trials per
/// arm at `arms`' rates, and a check at the end of each.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    /// Rates and each day's new trials per arm.
    pub arms: Arms,
    /// Days it runs.
    pub days: usize,
}

/// The share of `runs` simulated lives that a check under `settings` breaches at least
/// once, seeded by `seed`: over its whole life, the chance a model arm is rolled back.
/// Each day's check weighs what `settings.test` weighs: under a fixed test the days of the
/// trailing `window`, under a sequential one every day so far; it tests only once both
/// arms have `min_samples` trials. Checks an hour apart read nearly the same evidence, so
/// a check a day is the independent part of the hourly ones. `None` when the metric's
/// guardrail is off.
pub fn lifetime_breach_rate(
    settings: &Guardrails,
    metric: Metric,
    life: Life,
    runs: u32,
    seed: u64,
) -> Option<f64> {
    let margin = metric.margin(settings)?;
    let per_day = life.arms.trials;
    let (canary, control) = binomials(metric, life.arms, per_day)?;
    let window_days = match settings.test {
        GuardrailTest::Fixed => usize::try_from(settings.window.num_days().max(1)).ok()?,
        GuardrailTest::Sequential => life.days,
    };
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let rolled_back = (0..runs)
        .filter(|_| {
            let mut days: Vec<(u64, u64)> = Vec::with_capacity(life.days);
            (0..life.days).any(|d| {
                days.push((canary.sample(&mut rng), control.sample(&mut rng)));
                let weighed = &days[(d + 1).saturating_sub(window_days)..];
                let trials = per_day * weighed.len() as u64;
                let (a, b) = weighed.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
                let arm = |successes| Proportion { successes, trials };
                trials >= settings.min_samples && breaches(settings, metric, margin, arm(a), arm(b))
            })
        })
        .count();
    Some(rolled_back as f64 / f64::from(runs))
}

/// Checks every configured guardrail of the model arm `arm`'s evidence `canary` against
/// `control`, both having weighed what `weighed` says.
pub fn check(
    settings: &Guardrails,
    weighed: Weighed,
    (arm, canary): (Arm, &Evidence),
    control: &Evidence,
) -> Vec<Check> {
    Metric::ALL
        .into_iter()
        .filter_map(|metric| metric.margin(settings).map(|m| (metric, m)))
        .map(|(metric, margin)| {
            let (a, b) = (metric.of(canary), metric.of(control));
            let enough = a.trials >= settings.min_samples && b.trials >= settings.min_samples;
            let tested = enough
                .then(|| excess(metric, a, b, margin))
                .flatten()
                .map(|e| (e.z, critical_z(settings, e.spread)));
            Check {
                metric,
                arm,
                canary: a,
                control: b,
                margin,
                z: tested.map(|t| t.0),
                critical: tested.map(|t| t.1),
                breached: tested.is_some_and(|(z, critical)| z >= critical),
                weighed: weighed.of(metric),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> Guardrails {
        Guardrails {
            enabled: true,
            test: GuardrailTest::Fixed,
            window: chrono::Duration::days(7),
            interval: chrono::Duration::hours(1),
            min_samples: 200,
            confidence: 0.99,
            opt_out_rate: Some(0.005),
            d7_retention: Some(0.03),
            send_rate: None,
            roi: None,
            crash_rate: Some(0.005),
        }
    }

    /// An arm of `users` of whom `opted_out` opted out, and of a D7 cohort of
    /// `d7_users` of whom `retained_d7` were retained.
    fn arm(users: u64, opted_out: u64, d7_users: u64, retained_d7: u64) -> (ArmKpis, Proportion) {
        let kpis = ArmKpis {
            arm: "x".into(),
            users,
            decisions: users * 3,
            sends: users,
            measured_sends: users,
            actioned: users / 4,
            opened: users / 3,
            opted_out,
            // The window's own users have no D7 yet: the guardrail must not read it.
            d7_users: 0,
            retained_d7: 0,
            crashed: 0,
        };
        let d7 = Proportion {
            successes: retained_d7,
            trials: d7_users,
        };
        (kpis, d7)
    }

    fn check_arms(
        settings: &Guardrails,
        canary: &(ArmKpis, Proportion),
        control: &(ArmKpis, Proportion),
    ) -> Vec<Check> {
        let (canary, control) = (
            Evidence {
                window: &canary.0,
                d7: canary.1,
            },
            Evidence {
                window: &control.0,
                d7: control.1,
            },
        );
        check(settings, weighed(), (Arm::Canary, &canary), &control)
    }

    /// A check at 2026-03-22: the week before, and the D7 cohort of the week that ended
    /// eight days earlier.
    fn weighed() -> Weighed {
        let day =
            |d| chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, d, 0, 0, 0).unwrap();
        Weighed {
            window: Span {
                from: day(15),
                to: day(22),
            },
            d7_cohort: Some(Span {
                from: day(7),
                to: day(14),
            }),
        }
    }

    fn breached(checks: &[Check], metric: Metric) -> bool {
        checks.iter().any(|c| c.metric == metric && c.breached)
    }

    #[test]
    fn a_clear_excess_of_opt_outs_breaches() {
        let checks = check_arms(&settings(), &arm(5_000, 250, 0, 0), &arm(5_000, 50, 0, 0));
        assert!(breached(&checks, Metric::OptOutRate), "{checks:?}");
    }

    #[test]
    fn a_small_sample_or_an_excess_within_noise_does_not() {
        // 5 % vs 1 % but only 100 users each: not enough evidence to act on.
        let small = check_arms(&settings(), &arm(100, 5, 0, 0), &arm(100, 1, 0, 0));
        assert!(!breached(&small, Metric::OptOutRate));
        assert_eq!(small[0].z, None);
        // 1.2 % vs 1.0 % over 5,000 users each: within the margin and the noise.
        let noise = check_arms(&settings(), &arm(5_000, 60, 0, 0), &arm(5_000, 50, 0, 0));
        assert!(!breached(&noise, Metric::OptOutRate), "{noise:?}");
    }

    #[test]
    fn retention_breaches_when_the_canary_falls_short_not_when_it_leads() {
        let short = check_arms(
            &settings(),
            &arm(5_000, 0, 5_000, 2_000),
            &arm(5_000, 0, 5_000, 2_500),
        );
        assert!(breached(&short, Metric::D7Retention), "{short:?}");
        let leads = check_arms(
            &settings(),
            &arm(5_000, 0, 5_000, 2_500),
            &arm(5_000, 0, 5_000, 2_000),
        );
        assert!(!breached(&leads, Metric::D7Retention));
    }

    #[test]
    fn retention_is_read_from_the_d7_cohort_not_from_the_windows_users() {
        let mut canary = arm(5_000, 0, 5_000, 2_000);
        let mut control = arm(5_000, 0, 5_000, 2_500);
        // The window's users' D7 fields say the opposite: they must not count.
        (canary.0.d7_users, canary.0.retained_d7) = (5_000, 2_500);
        (control.0.d7_users, control.0.retained_d7) = (5_000, 2_000);
        let checks = check_arms(&settings(), &canary, &control);
        let d7 = checks
            .iter()
            .find(|c| c.metric == Metric::D7Retention)
            .unwrap();
        assert_eq!((d7.canary.successes, d7.control.successes), (2_000, 2_500));
        assert!(d7.breached, "{d7:?}");
    }

    #[test]
    fn each_check_names_the_model_arm_it_compared_with_control() {
        let (full, holdout) = (arm(5_000, 250, 5_000, 2_000), arm(5_000, 50, 5_000, 2_500));
        let checks = check(
            &settings(),
            weighed(),
            (Arm::Full, &Evidence::of(&full.0, &[])),
            &Evidence::of(&holdout.0, &[]),
        );
        let opt_out = checks
            .iter()
            .find(|c| c.metric == Metric::OptOutRate)
            .unwrap();
        assert_eq!(opt_out.arm, Arm::Full);
        assert!(
            opt_out
                .to_string()
                .starts_with("opt_out_rate full 5.00% of 5000 vs control 1.00% of 5000"),
            "{opt_out}"
        );
    }

    #[test]
    fn each_check_names_what_it_weighed() {
        let checks = check_arms(
            &settings(),
            &arm(5_000, 250, 5_000, 2_000),
            &arm(5_000, 50, 5_000, 2_500),
        );
        let of = |metric| checks.iter().find(|c| c.metric == metric).unwrap();
        assert_eq!(of(Metric::OptOutRate).weighed, Some(weighed().window));
        assert_eq!(of(Metric::D7Retention).weighed, weighed().d7_cohort);
        assert!(
            of(Metric::OptOutRate)
                .to_string()
                .ends_with(", decisions 2026-03-15 00:00 → 2026-03-22 00:00 UTC"),
            "{}",
            of(Metric::OptOutRate)
        );
        assert!(
            of(Metric::D7Retention)
                .to_string()
                .ends_with(", users first decided 2026-03-07 00:00 → 2026-03-14 00:00 UTC"),
            "{}",
            of(Metric::D7Retention)
        );
        // No D7 cohort yet: the check says nothing of a span.
        let none = check(
            &settings(),
            Weighed {
                d7_cohort: None,
                ..weighed()
            },
            (Arm::Canary, &Evidence::of(&arm(5_000, 0, 0, 0).0, &[])),
            &Evidence::of(&arm(5_000, 0, 0, 0).0, &[]),
        );
        let d7 = none
            .iter()
            .find(|c| c.metric == Metric::D7Retention)
            .unwrap();
        assert_eq!(d7.weighed, None);
        assert!(d7.to_string().ends_with("z n/a: too few samples)"), "{d7}");
    }

    #[test]
    fn more_crashes_in_the_canary_breach_the_crash_guardrail() {
        let mut canary = arm(2_000, 0, 0, 0);
        let control = arm(2_000, 0, 0, 0);
        canary.0.crashed = 60; // 3 % crashed against none
        assert!(breached(
            &check_arms(&settings(), &canary, &control),
            Metric::CrashRate
        ));
        canary.0.crashed = 4; // 0.2 %: within the 0.5-point margin
        assert!(!breached(
            &check_arms(&settings(), &canary, &control),
            Metric::CrashRate
        ));
        // No crash reported in either arm: nothing to breach, and a z that still reads as
        // a measure of the evidence (not −5·10⁹ from a zero standard error).
        let none = check_arms(&settings(), &arm(2_000, 0, 0, 0), &control);
        let crash = none.iter().find(|c| c.metric == Metric::CrashRate).unwrap();
        assert!(!crash.breached, "{crash:?}");
        let z = crash.z.unwrap();
        assert!((-10.0..-1.0).contains(&z), "{crash:?}");
    }

    #[test]
    fn unset_margins_are_not_checked() {
        let checks = check_arms(&settings(), &arm(5_000, 0, 0, 0), &arm(5_000, 0, 0, 0));
        assert!(
            checks
                .iter()
                .all(|c| !matches!(c.metric, Metric::SendRate | Metric::Roi))
        );
    }

    #[test]
    fn sends_that_do_less_than_the_baselines_breach_the_roi_guardrail() {
        let settings = Guardrails {
            roi: Some(0.05),
            ..settings()
        };
        let mut canary = arm(1_000, 0, 0, 0);
        let control = arm(1_000, 0, 0, 0); // ROI 25 %
        canary.0.actioned = 50; // 5 %
        assert!(breached(
            &check_arms(&settings, &canary, &control),
            Metric::Roi
        ));
        canary.0.actioned = 400; // 40 %: better than the baseline
        assert!(!breached(
            &check_arms(&settings, &canary, &control),
            Metric::Roi
        ));
    }

    /// The shipped policy's margins, every guardrail on.
    fn settings_of_every_metric() -> Guardrails {
        Guardrails {
            send_rate: Some(0.10),
            roi: Some(0.05),
            ..settings()
        }
    }

    /// Every guardrail on, under `test`.
    fn settings_under(test: GuardrailTest) -> Guardrails {
        Guardrails {
            test,
            ..settings_of_every_metric()
        }
    }

    /// `breach_rate` of one check under a fixed test of every guardrail.
    fn breach_rate_at(metric: Metric, control_rate: f64, harm: f64, n: u64) -> f64 {
        breach_rate_under(GuardrailTest::Fixed, metric, control_rate, harm, n)
    }

    /// `breach_rate` of one check under `test`, every guardrail on.
    fn breach_rate_under(
        test: GuardrailTest,
        metric: Metric,
        control_rate: f64,
        harm: f64,
        n: u64,
    ) -> f64 {
        let arms = Arms {
            control_rate,
            harm,
            trials: n,
        };
        breach_rate(&settings_under(test), metric, arms, 20_000, 7).unwrap()
    }

    #[test]
    fn a_harm_of_exactly_the_margin_breaches_about_one_check_in_a_hundred_and_none_rarely() {
        // The policy asks 99 % confidence: a canary exactly at the margin should breach at
        // most about 1 % of checks (the z-test is approximate at these sizes: allow half a
        // point), and equal arms far less: one check of a healthy canary rarely breaches.
        // Rates and sizes as in the demo's checks; rare events at 200 users and more.
        let cases = [
            (Metric::OptOutRate, 0.03, 1_000),
            (Metric::OptOutRate, 0.01, 200),
            (Metric::CrashRate, 0.003, 1_000),
            (Metric::D7Retention, 0.20, 200),
            (Metric::Roi, 0.15, 200),
            (Metric::SendRate, 0.50, 200),
        ];
        for (metric, rate, n) in cases {
            let margin = metric.margin(&settings_of_every_metric()).unwrap();
            let at_margin = breach_rate_at(metric, rate, margin, n);
            assert!(at_margin <= 0.015, "{metric:?} {rate} {n}: {at_margin}");
            let equal = breach_rate_at(metric, rate, 0.0, n);
            assert!(equal <= 0.0025, "{metric:?} {rate} {n}: {equal}");
        }
        // A clear harm, opt-outs from 3 % to 8 % at 1,000 users, is caught almost always.
        let clear = breach_rate_at(Metric::OptOutRate, 0.03, 0.05, 1_000);
        assert!(clear >= 0.9, "{clear}");
    }

    #[test]
    fn a_check_catches_its_detectable_harm_about_four_times_in_five() {
        for test in [GuardrailTest::Fixed, GuardrailTest::Sequential] {
            catches_its_detectable_harm_about_four_times_in_five(test);
        }
    }

    fn catches_its_detectable_harm_about_four_times_in_five(test: GuardrailTest) {
        for (metric, rate, n) in [
            (Metric::OptOutRate, 0.03, 1_000),
            (Metric::CrashRate, 0.003, 1_000),
            (Metric::D7Retention, 0.20, 200),
            (Metric::Roi, 0.15, 1_000),
            (Metric::SendRate, 0.50, 200),
        ] {
            let margin = metric.margin(&settings_of_every_metric()).unwrap();
            let observed = (rate * n as f64).round() as u64;
            let check = Check {
                metric,
                arm: Arm::Canary,
                canary: Proportion {
                    successes: observed,
                    trials: n,
                },
                control: Proportion {
                    successes: observed,
                    trials: n,
                },
                margin,
                z: None,
                critical: None,
                breached: false,
                weighed: None,
            };
            let harm = detectable_harm(&check, &settings_under(test)).unwrap();
            assert!(harm > margin, "{test:?} {metric:?}: {harm}");
            let power = breach_rate_under(test, metric, rate, harm, n);
            assert!(
                (0.72..=0.88).contains(&power),
                "{test:?} {metric:?} at {harm}: {power}"
            );
        }
    }

    /// The share of 2,000 lives of 56 days, `per_day` new trials per arm a day, that a
    /// daily check under `test` rolls back, the canary's harm exactly the margin.
    fn lifetime_at_margin(test: GuardrailTest, metric: Metric, rate: f64, per_day: u64) -> f64 {
        let settings = settings_under(test);
        let life = Life {
            arms: Arms {
                control_rate: rate,
                harm: metric.margin(&settings).unwrap(),
                trials: per_day,
            },
            days: 56,
        };
        lifetime_breach_rate(&settings, metric, life, 2_000, 11).unwrap()
    }

    #[test]
    fn a_sequential_test_bounds_a_lifes_false_rollbacks_where_a_fixed_one_lets_them_add_up() {
        // A harm of exactly the margin is the worst a healthy arm can be. Checked every
        // day for eight weeks, a fixed test at 99 % rolls back several times 1 % of such
        // arms; a sequential one at most about 1 % (sampling error of 2,000 lives: ±0.45).
        for (metric, rate, per_day) in [
            (Metric::OptOutRate, 0.03, 150),
            (Metric::D7Retention, 0.20, 100),
            (Metric::Roi, 0.15, 400),
        ] {
            let fixed = lifetime_at_margin(GuardrailTest::Fixed, metric, rate, per_day);
            assert!(fixed >= 0.03, "{metric:?} fixed: {fixed}");
            let sequential = lifetime_at_margin(GuardrailTest::Sequential, metric, rate, per_day);
            assert!(sequential <= 0.015, "{metric:?} sequential: {sequential}");
        }
    }

    #[test]
    fn the_sequential_bar_is_the_mixture_ratios_and_rises_slowly_with_evidence() {
        let sequential = settings_under(GuardrailTest::Sequential);
        // Trials per arm of two arms of variance 0.05 each.
        let spread = |n: f64| Spread {
            se: (0.1 / n).sqrt(),
            trial_variance: 0.1,
        };
        let fixed = critical_z(&settings(), spread(200.0));
        // τ² = 10 × 0.1 / 200 = 0.005 = v at 20 per arm: there Λ = 2 √½ e^{z²/4} Φ(z/√2)
        // reaches 100 at z = 4.1281 (solved by hand: ln 100 = ln √2 + z²/4 + ln Φ(z/√2)).
        let at_twenty = critical_z(&sequential, spread(20.0));
        assert!((at_twenty - 4.1281).abs() < 1e-3, "{at_twenty}");
        // Lowest about min_samples, above the fixed test's bar at every size, and rising
        // only like √ln n.
        let bars: Vec<f64> = [200.0, 2_000.0, 20_000.0]
            .iter()
            .map(|&n| critical_z(&sequential, spread(n)))
            .collect();
        assert!(bars[0] < at_twenty && bars[0] < 3.5, "{bars:?}");
        assert!(bars.iter().all(|&b| b > fixed), "{bars:?} vs {fixed}");
        assert!(bars[0] < bars[1] && bars[1] < bars[2], "{bars:?}");
        assert!(bars[2] < bars[0] + 0.6, "{bars:?}");
        // No spread to mix over: nothing can breach.
        let none = Spread {
            se: 0.01,
            trial_variance: 0.0,
        };
        assert_eq!(critical_z(&sequential, none), f64::INFINITY);
    }

    #[test]
    fn a_sequential_test_still_breaches_on_a_clear_harm_and_not_on_noise() {
        let sequential = settings_under(GuardrailTest::Sequential);
        let clear = check_arms(&sequential, &arm(5_000, 250, 0, 0), &arm(5_000, 50, 0, 0));
        assert!(breached(&clear, Metric::OptOutRate), "{clear:?}");
        let opt_out = &clear[0];
        // Its bar is above the fixed test's 2.33.
        assert!(opt_out.critical.unwrap() > 3.0, "{opt_out:?}");
        assert!(opt_out.to_string().contains(", breach at "), "{opt_out}");
        let noise = check_arms(&sequential, &arm(5_000, 60, 0, 0), &arm(5_000, 50, 0, 0));
        assert!(!breached(&noise, Metric::OptOutRate), "{noise:?}");
    }

    proptest! {
        /// With equal rates in both arms, no guardrail ever breaches, whatever the sizes.
        #[test]
        fn equal_arms_never_breach(rate in 0.0..1.0f64, n1 in 1u64..100_000, n2 in 1u64..100_000) {
            let count = |n: u64| (rate * n as f64).round() as u64;
            let checks = check_arms(
                &settings(),
                &arm(n1, count(n1), n1, count(n1)),
                &arm(n2, count(n2), n2, count(n2)),
            );
            for c in checks {
                // Rounding can differ by one count; the margin covers it once samples are large.
                if c.canary.trials >= 2_000 && c.control.trials >= 2_000 {
                    prop_assert!(!c.breached, "{c:?}");
                }
            }
        }
    }
}
