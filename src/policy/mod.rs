//! `policy/policy.yaml`: the gates every send passes, the rollout and the model arm's
//! score threshold. Parsed once into a validated [`Policy`] (unknown keys and out-of-range
//! values are errors naming the key), so serving code never re-checks it.

pub mod gates;

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use gates::{Gates, QuietHours, Reason, SendBudget};

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML does not match the schema (unknown key, wrong type).
    #[error("policy does not match its schema: {0}")]
    Schema(String),
    /// A value is out of range.
    #[error("policy {key}: {reason}")]
    Invalid {
        /// The offending key, dotted.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// How the model is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No model: the baseline decides and no score is computed.
    Off,
    /// The baseline decides; the model's score and would-be decision are logged.
    Shadow,
    /// Users under the canary percent get the model's decision, the rest the baseline.
    Canary,
    /// Everyone gets the model's decision.
    Full,
}

impl Mode {
    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
            Mode::Full => "full",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Mode::Off, Mode::Shadow, Mode::Canary, Mode::Full]
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not one of off, shadow, canary, full"))
    }
}

/// Rollout settings: the mode and canary percent a runtime flag may override, the holdout
/// and the bucketing salt.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Mode at start.
    pub mode: Mode,
    /// Share of users in the canary, in percent (0..=100, two decimals count).
    pub canary_percent: f64,
    /// Share of users the model never decides for, in percent (0..=100): in canary and
    /// full modes they are the control, so a full rollout keeps an arm to compare with.
    pub holdout_percent: f64,
    /// Salt of the bucketing hash: a new salt reshuffles users.
    pub salt: String,
}

/// The model arm's score threshold: its starting value and the bounds the controller keeps it in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Threshold until the controller moves it.
    pub initial: f64,
    /// Lowest allowed.
    pub min: f64,
    /// Highest allowed.
    pub max: f64,
}

/// A churn risk band: scores from `from` up to the next band's start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnBand {
    /// The band's name (`low`, `medium`, `high`, …).
    pub name: String,
    /// Lowest score in the band.
    pub from: f64,
}

/// `/v1/churn`'s bands, ordered by their start; the first starts at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnBands(Vec<ChurnBand>);

impl ChurnBands {
    /// The band of `score`.
    pub fn band(&self, score: f64) -> &str {
        self.0
            .iter()
            .rev()
            .find(|b| score >= b.from)
            .map_or(self.0[0].name.as_str(), |b| b.name.as_str())
    }
}

/// `/v1/paywall`'s economics: show when value_trial·P(trial) − cost_bounce·P(bounce)
/// exceeds `min_net_benefit`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paywall {
    /// Value of a started trial.
    pub value_trial: f64,
    /// Cost of a user who leaves after seeing the paywall.
    pub cost_bounce: f64,
    /// The net benefit a view must exceed for the model to show the paywall.
    pub min_net_benefit: f64,
}

impl Paywall {
    /// The expected net benefit of showing the paywall.
    pub fn net_benefit(&self, p_trial: f64, p_bounce: f64) -> f64 {
        self.value_trial * p_trial - self.cost_bounce * p_bounce
    }
}

/// The PI controller's settings (its bounds are [`Threshold`]'s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controller {
    /// Whether the controller steps at all.
    pub enabled: bool,
    /// Log what a step would do and change nothing.
    pub dry_run: bool,
    /// Target ROI of the model arm, a share in 0..1.
    pub target_roi: f64,
    /// Proportional gain (log-odds of the threshold per point of ROI error).
    pub kp: f64,
    /// Integral gain (log-odds per accumulated point of error).
    pub ki: f64,
    /// Most the threshold moves in one step.
    pub max_step: f64,
    /// Time between steps.
    pub interval: chrono::Duration,
    /// Fewer model-arm sends since the last step than this: hold and wait for more.
    pub min_sends: u64,
}

/// How a guardrail weighs its evidence, and what `confidence` bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailTest {
    /// Each check tests the trailing `window` at the confidence asked. Checks repeat, so a
    /// healthy model arm's chance of a false rollback grows with its life.
    Fixed,
    /// Each check tests everything since the rollout in force began with an always-valid
    /// test (a mixture sequential probability ratio test): however often it is checked and
    /// however long it runs, a healthy model arm is rolled back with a chance of at most
    /// 1 − confidence.
    Sequential,
}

impl GuardrailTest {
    /// The test's name.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardrailTest::Fixed => "fixed",
            GuardrailTest::Sequential => "sequential",
        }
    }
}

/// Guardrails of the canary against its control: a breach switches the rollout to shadow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guardrails {
    /// Whether guardrails are checked at all.
    pub enabled: bool,
    /// How checks weigh their evidence.
    pub test: GuardrailTest,
    /// Decisions a fixed test considers: the last `window` before the check (never before
    /// the rollout in force began).
    pub window: chrono::Duration,
    /// Shortest time between two checks: each check reads the whole window of the decision
    /// log, so ticks in between (every minute by default) skip it.
    pub interval: chrono::Duration,
    /// Fewest users (or decisions) per arm before a proportion is tested.
    pub min_samples: u64,
    /// One-sided confidence a breach must reach (a two-proportion z-test): of each check
    /// under a fixed test, of the rollout's whole life under a sequential one.
    pub confidence: f64,
    /// Most the canary's opt-out rate may exceed control's.
    pub opt_out_rate: Option<f64>,
    /// Most the canary's D7 retention may fall short of control's.
    pub d7_retention: Option<f64>,
    /// Most the canary's share of decisions that send may exceed control's.
    pub send_rate: Option<f64>,
    /// Most the canary's ROI may fall short of control's.
    pub roi: Option<f64>,
    /// Most the canary's share of users who crashed (a fatal `$exception`) may exceed
    /// control's.
    pub crash_rate: Option<f64>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// First 12 hex digits of the SHA-256 of the file: what decisions are logged under.
    pub version: String,
    /// Gates every send passes, in every arm.
    pub gates: Gates,
    /// Rollout.
    pub rollout: Rollout,
    /// Score threshold of the model arm.
    pub threshold: Threshold,
    /// The model arm's send budget, if any.
    pub send_budget: Option<SendBudget>,
    /// When on, nothing is sent.
    pub kill_switch: bool,
    /// Churn risk bands.
    pub churn_bands: ChurnBands,
    /// Paywall economics.
    pub paywall: Paywall,
    /// The threshold's PI controller.
    pub controller: Controller,
    /// The canary's guardrails.
    pub guardrails: Guardrails,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    gates: RawGates,
    rollout: RawRollout,
    threshold: RawThreshold,
    #[serde(default)]
    send_budget: Option<RawSendBudget>,
    #[serde(default)]
    kill_switch: bool,
    #[serde(default)]
    churn: RawChurn,
    #[serde(default = "default_paywall")]
    paywall: Paywall,
    #[serde(default)]
    controller: RawController,
    #[serde(default)]
    guardrails: RawGuardrails,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawController {
    enabled: bool,
    dry_run: bool,
    target_roi: f64,
    kp: f64,
    ki: f64,
    max_step: f64,
    interval: String,
    min_sends: u64,
}

impl Default for RawController {
    fn default() -> Self {
        Self {
            enabled: true,
            dry_run: false,
            target_roi: 0.30,
            kp: 0.05,
            ki: 0.01,
            max_step: 0.05,
            interval: "7d".into(),
            min_sends: 500,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGuardrails {
    enabled: bool,
    test: GuardrailTest,
    window: String,
    interval: String,
    min_samples: u64,
    confidence: f64,
    opt_out_rate: Option<f64>,
    d7_retention: Option<f64>,
    send_rate: Option<f64>,
    roi: Option<f64>,
    crash_rate: Option<f64>,
}

impl Default for RawGuardrails {
    fn default() -> Self {
        Self {
            enabled: true,
            // What a policy without the key always had.
            test: GuardrailTest::Fixed,
            window: "7d".into(),
            interval: "1h".into(),
            min_samples: 200,
            confidence: 0.99,
            opt_out_rate: Some(0.005),
            d7_retention: Some(0.03),
            send_rate: Some(0.10),
            roi: Some(0.05),
            crash_rate: Some(0.005),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChurn {
    bands: Vec<ChurnBand>,
}

impl Default for RawChurn {
    fn default() -> Self {
        let band = |name: &str, from| ChurnBand {
            name: name.into(),
            from,
        };
        Self {
            bands: vec![band("low", 0.0), band("medium", 0.3), band("high", 0.6)],
        }
    }
}

fn default_paywall() -> Paywall {
    Paywall {
        value_trial: 10.0,
        cost_bounce: 1.0,
        min_net_benefit: 0.0,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGates {
    max_sends_per_day: u32,
    min_gap_hours: f64,
    quiet_hours: Option<RawQuietHours>,
}

impl Default for RawGates {
    fn default() -> Self {
        Self {
            max_sends_per_day: 2,
            min_gap_hours: 8.0,
            quiet_hours: Some(RawQuietHours {
                start: "22:00".into(),
                end: "08:00".into(),
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuietHours {
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    mode: Mode,
    #[serde(default)]
    canary_percent: f64,
    #[serde(default)]
    holdout_percent: f64,
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSendBudget {
    half_life_hours: f64,
    max: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    initial: f64,
    min: f64,
    max: f64,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// A positive duration such as `7d`, `1d`, `6h` or `30m`.
fn duration(key: &'static str, text: &str) -> Result<chrono::Duration, PolicyError> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .filter(|d| *d > chrono::Duration::zero())
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?} is not a positive duration such as 7d or 6h"),
            )
        })
}

/// A duration of `h` hours (already checked to be in range), to the millisecond.
fn hours(h: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((h * 3_600_000.0).round() as i64)
}

/// A margin of a guardrail: a share in 0..1, or absent.
fn margin(key: &'static str, value: Option<f64>) -> Result<Option<f64>, PolicyError> {
    match value {
        Some(m) if !(0.0..1.0).contains(&m) => Err(invalid(key, "must be within 0..1")),
        other => Ok(other),
    }
}

/// Minutes after midnight of an `HH:MM` clock time.
fn clock_minutes(key: &'static str, text: &str) -> Result<u16, PolicyError> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
    });
    parsed.ok_or_else(|| invalid(key, format!("{text:?} is not an HH:MM time")))
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn parse(yaml: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_saphyr::from_str(yaml).map_err(|e| PolicyError::Schema(e.to_string()))?;
        if raw.gates.max_sends_per_day == 0 {
            return Err(invalid(
                "gates.max_sends_per_day",
                "must be at least 1 (use kill_switch to stop sends)",
            ));
        }
        if !(0.0..=24.0).contains(&raw.gates.min_gap_hours) {
            return Err(invalid("gates.min_gap_hours", "must be within 0..=24"));
        }
        let quiet_hours = match raw.gates.quiet_hours {
            None => None,
            Some(q) => {
                let start = clock_minutes("gates.quiet_hours.start", &q.start)?;
                let end = clock_minutes("gates.quiet_hours.end", &q.end)?;
                if start == end {
                    return Err(invalid(
                        "gates.quiet_hours",
                        "start equals end; omit quiet_hours for none",
                    ));
                }
                Some(QuietHours { start, end })
            }
        };
        if let Err(e) = crate::rollout::checked_percent(raw.rollout.canary_percent) {
            return Err(invalid("rollout.canary_percent", e.to_string()));
        }
        if let Err(e) = crate::rollout::checked_percent(raw.rollout.holdout_percent) {
            return Err(invalid("rollout.holdout_percent", e.to_string()));
        }
        if raw.rollout.salt.is_empty() {
            return Err(invalid("rollout.salt", "must not be empty"));
        }
        let t = raw.threshold;
        if !(0.0 <= t.min && t.min <= t.initial && t.initial <= t.max && t.max <= 1.0) {
            return Err(invalid(
                "threshold",
                "needs 0 <= min <= initial <= max <= 1",
            ));
        }
        let send_budget = match raw.send_budget {
            None => None,
            Some(b) => {
                // Up to 30 days: a load is remembered for 20 half-lives after a send.
                if !(b.half_life_hours > 0.0 && b.half_life_hours <= 720.0) {
                    return Err(invalid(
                        "send_budget.half_life_hours",
                        "must be within 0..=720, above 0",
                    ));
                }
                if !(b.max.is_finite() && b.max > 0.0) {
                    return Err(invalid("send_budget.max", "must be a number above 0"));
                }
                Some(SendBudget {
                    half_life: hours(b.half_life_hours),
                    max: b.max,
                })
            }
        };
        let bands = raw.churn.bands;
        let ordered = bands.windows(2).all(|w| w[0].from < w[1].from);
        if bands.first().is_none_or(|b| b.from != 0.0)
            || !ordered
            || bands.iter().any(|b| b.from >= 1.0 || b.name.is_empty())
        {
            return Err(invalid(
                "churn.bands",
                "needs named bands whose starts rise strictly from 0 and stay below 1",
            ));
        }
        let p = raw.paywall;
        if !(p.value_trial.is_finite() && p.value_trial >= 0.0) {
            return Err(invalid("paywall.value_trial", "must be a number >= 0"));
        }
        if !(p.cost_bounce.is_finite() && p.cost_bounce >= 0.0) {
            return Err(invalid("paywall.cost_bounce", "must be a number >= 0"));
        }
        if !p.min_net_benefit.is_finite() {
            return Err(invalid("paywall.min_net_benefit", "must be a number"));
        }
        let c = raw.controller;
        if !(c.target_roi > 0.0 && c.target_roi < 1.0) {
            return Err(invalid(
                "controller.target_roi",
                "must be within 0..1, exclusive",
            ));
        }
        if !(c.kp.is_finite() && c.kp >= 0.0) {
            return Err(invalid("controller.kp", "must be a number >= 0"));
        }
        if !(c.ki.is_finite() && c.ki >= 0.0) {
            return Err(invalid("controller.ki", "must be a number >= 0"));
        }
        if !(c.max_step > 0.0 && c.max_step <= 1.0) {
            return Err(invalid(
                "controller.max_step",
                "must be within 0..=1, above 0",
            ));
        }
        let g = raw.guardrails;
        if !(0.5..1.0).contains(&g.confidence) {
            return Err(invalid("guardrails.confidence", "must be within 0.5..1"));
        }
        if g.min_samples == 0 {
            return Err(invalid("guardrails.min_samples", "must be at least 1"));
        }
        let controller = Controller {
            enabled: c.enabled,
            dry_run: c.dry_run,
            target_roi: c.target_roi,
            kp: c.kp,
            ki: c.ki,
            max_step: c.max_step,
            interval: duration("controller.interval", &c.interval)?,
            min_sends: c.min_sends,
        };
        let guardrails = Guardrails {
            enabled: g.enabled,
            test: g.test,
            window: duration("guardrails.window", &g.window)?,
            interval: duration("guardrails.interval", &g.interval)?,
            min_samples: g.min_samples,
            confidence: g.confidence,
            opt_out_rate: margin("guardrails.opt_out_rate", g.opt_out_rate)?,
            d7_retention: margin("guardrails.d7_retention", g.d7_retention)?,
            send_rate: margin("guardrails.send_rate", g.send_rate)?,
            roi: margin("guardrails.roi", g.roi)?,
            crash_rate: margin("guardrails.crash_rate", g.crash_rate)?,
        };
        let digest = Sha256::digest(yaml.as_bytes());
        Ok(Self {
            version: hex::encode(&digest[..6]),
            gates: Gates {
                max_sends_per_day: raw.gates.max_sends_per_day,
                min_gap: hours(raw.gates.min_gap_hours),
                quiet_hours,
            },
            rollout: Rollout {
                mode: raw.rollout.mode,
                canary_percent: raw.rollout.canary_percent,
                holdout_percent: raw.rollout.holdout_percent,
                salt: raw.rollout.salt,
            },
            threshold: Threshold {
                initial: t.initial,
                min: t.min,
                max: t.max,
            },
            send_budget,
            kill_switch: raw.kill_switch,
            churn_bands: ChurnBands(bands),
            paywall: p,
            controller,
            guardrails,
        })
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "rollout: { mode: shadow, salt: s1 }\nthreshold: { initial: 0.3, min: 0.05, max: 0.9 }\n";

    #[test]
    fn the_shipped_policy_parses() {
        let policy = Policy::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policy/policy.yaml"
        )))
        .unwrap();
        assert_eq!(policy.version.len(), 12);
    }

    #[test]
    fn defaults_are_two_sends_eight_hours_and_quiet_from_22_to_8() {
        let policy = Policy::parse(MINIMAL).unwrap();
        assert_eq!(policy.gates.max_sends_per_day, 2);
        assert_eq!(policy.gates.min_gap, chrono::Duration::hours(8));
        assert_eq!(
            policy.gates.quiet_hours,
            Some(QuietHours {
                start: 22 * 60,
                end: 8 * 60
            })
        );
        assert!(!policy.kill_switch);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
        let unknown = format!("{MINIMAL}surprise: 1\n");
        assert!(matches!(
            Policy::parse(&unknown),
            Err(PolicyError::Schema(m)) if m.contains("surprise")
        ));
        let cases = [
            (
                "gates: { max_sends_per_day: 0 }\n",
                "gates.max_sends_per_day",
            ),
            (
                "gates: { quiet_hours: { start: '25:00', end: '08:00' } }\n",
                "gates.quiet_hours.start",
            ),
        ];
        for (extra, key) in cases {
            let text = format!("{MINIMAL}{extra}");
            match Policy::parse(&text) {
                Err(PolicyError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{extra}: {other:?}"),
            }
        }
        let bad_threshold = "rollout: { mode: shadow, salt: s }\nthreshold: { initial: 0.95, min: 0.05, max: 0.9 }\n";
        assert!(matches!(
            Policy::parse(bad_threshold),
            Err(PolicyError::Invalid {
                key: "threshold",
                ..
            })
        ));
        for (rollout, key) in [
            ("canary_percent: 101", "rollout.canary_percent"),
            ("holdout_percent: -5", "rollout.holdout_percent"),
            ("holdout_percent: .nan", "rollout.holdout_percent"),
        ] {
            let text = format!(
                "rollout: {{ mode: canary, {rollout}, salt: s }}\nthreshold: {{ initial: 0.3, min: 0.05, max: 0.9 }}\n"
            );
            match Policy::parse(&text) {
                Err(PolicyError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{rollout}: {other:?}"),
            }
        }
    }

    #[test]
    fn controller_and_guardrails_default_to_the_design_and_refuse_bad_values() {
        let policy = Policy::parse(MINIMAL).unwrap();
        let c = policy.controller;
        assert_eq!((c.target_roi, c.kp, c.ki), (0.30, 0.05, 0.01));
        assert_eq!(c.interval, chrono::Duration::days(7));
        assert!(c.enabled && !c.dry_run);
        assert_eq!(policy.guardrails.opt_out_rate, Some(0.005));
        assert_eq!(policy.guardrails.crash_rate, Some(0.005));
        assert_eq!(policy.guardrails.interval, chrono::Duration::hours(1));
        let custom = Policy::parse(&format!(
            "{MINIMAL}controller: {{ interval: 1d, dry_run: true }}\nguardrails: {{ window: 36h, interval: 15m, send_rate: null }}\n"
        ))
        .unwrap();
        assert_eq!(custom.controller.interval, chrono::Duration::days(1));
        assert!(custom.controller.dry_run);
        assert_eq!(custom.guardrails.window, chrono::Duration::hours(36));
        assert_eq!(custom.guardrails.interval, chrono::Duration::minutes(15));
        assert_eq!(custom.guardrails.send_rate, None);
        // A policy that does not name a test keeps the fixed one it always had.
        assert_eq!(policy.guardrails.test, GuardrailTest::Fixed);
        let sequential =
            Policy::parse(&format!("{MINIMAL}guardrails: {{ test: sequential }}\n")).unwrap();
        assert_eq!(sequential.guardrails.test, GuardrailTest::Sequential);
        match Policy::parse(&format!("{MINIMAL}guardrails: {{ test: bayesian }}\n")) {
            // The parser points at the line and column, and names the choices.
            Err(PolicyError::Schema(m)) => {
                assert!(
                    m.contains("line 3") && m.contains("fixed, sequential"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        for (extra, key) in [
            ("controller: { interval: soon }", "controller.interval"),
            ("controller: { interval: 0s }", "controller.interval"),
            ("controller: { target_roi: 1.5 }", "controller.target_roi"),
            ("controller: { kp: -1 }", "controller.kp"),
            ("controller: { max_step: 0 }", "controller.max_step"),
            ("guardrails: { interval: 0s }", "guardrails.interval"),
            ("guardrails: { confidence: 1 }", "guardrails.confidence"),
            ("guardrails: { opt_out_rate: 2 }", "guardrails.opt_out_rate"),
            ("guardrails: { crash_rate: -0.1 }", "guardrails.crash_rate"),
        ] {
            match Policy::parse(&format!("{MINIMAL}{extra}\n")) {
                Err(PolicyError::Invalid { key: k, .. }) => assert_eq!(k, key, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_send_budget_is_optional_and_bad_values_are_refused() {
        assert_eq!(Policy::parse(MINIMAL).unwrap().send_budget, None);
        let policy = Policy::parse(&format!(
            "{MINIMAL}send_budget: {{ half_life_hours: 57.8, max: 1.2 }}\n"
        ))
        .unwrap();
        let budget = policy.send_budget.unwrap();
        assert_eq!(budget.half_life, chrono::Duration::minutes(57 * 60 + 48));
        assert_eq!(budget.max, 1.2);
        for (extra, key) in [
            (
                "send_budget: { half_life_hours: 0, max: 1 }",
                "send_budget.half_life_hours",
            ),
            (
                "send_budget: { half_life_hours: 800, max: 1 }",
                "send_budget.half_life_hours",
            ),
            (
                "send_budget: { half_life_hours: 24, max: 0 }",
                "send_budget.max",
            ),
        ] {
            match Policy::parse(&format!("{MINIMAL}{extra}\n")) {
                Err(PolicyError::Invalid { key: k, .. }) => assert_eq!(k, key, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        let missing = format!("{MINIMAL}send_budget: {{ max: 1 }}\n");
        assert!(matches!(
            Policy::parse(&missing),
            Err(PolicyError::Schema(m)) if m.contains("half_life_hours")
        ));
    }

    #[test]
    fn churn_bands_cover_every_score_and_bad_bands_are_refused() {
        let policy = Policy::parse(MINIMAL).unwrap();
        let bands: Vec<&str> = [0.0, 0.29, 0.3, 0.59, 0.6, 1.0]
            .iter()
            .map(|&s| policy.churn_bands.band(s))
            .collect();
        assert_eq!(bands, ["low", "low", "medium", "medium", "high", "high"]);
        for bad in [
            "churn: { bands: [] }\n",
            "churn: { bands: [{ name: low, from: 0.1 }] }\n",
            "churn: { bands: [{ name: low, from: 0 }, { name: high, from: 0 }] }\n",
        ] {
            assert!(
                matches!(
                    Policy::parse(&format!("{MINIMAL}{bad}")),
                    Err(PolicyError::Invalid {
                        key: "churn.bands",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn net_benefit_weighs_the_trial_against_the_bounce() {
        let policy = Policy::parse(&format!(
            "{MINIMAL}paywall: {{ value_trial: 10, cost_bounce: 2, min_net_benefit: 0.5 }}\n"
        ))
        .unwrap();
        assert!((policy.paywall.net_benefit(0.1, 0.2) - 0.6).abs() < 1e-12);
        assert!(matches!(
            Policy::parse(&format!(
                "{MINIMAL}paywall: {{ value_trial: -1, cost_bounce: 2, min_net_benefit: 0 }}\n"
            )),
            Err(PolicyError::Invalid {
                key: "paywall.value_trial",
                ..
            })
        ));
    }

    #[test]
    fn the_version_changes_with_the_content() {
        let a = Policy::parse(MINIMAL).unwrap();
        let b = Policy::parse(&format!("{MINIMAL}kill_switch: true\n")).unwrap();
        assert_ne!(a.version, b.version);
        assert!(b.kill_switch);
    }
}
