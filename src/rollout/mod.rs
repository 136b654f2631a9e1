//! Who gets the model: deterministic bucketing and the arm of a request.
//!
//! A user's bucket is the first 8 bytes of SHA-256(salt ":" user id), big-endian, mod
//! 10,000 (the Statsig scheme). In canary mode a bucket under percent × 100 is in the
//! canary, so raising the percent only adds users. The top holdout percent × 100 buckets
//! are the holdout: in canary and full modes they are always control, so the guardrails
//! keep an arm to compare the model with however far it is rolled out.
//!
//! The runtime [`Flags`] (shared by every replica through the flag store) override the
//! policy file's mode, percent and kill switch; the salt stays the policy's, so a flag
//! change never reshuffles users.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{Mode, Policy};

/// Buckets per population: a canary percent has two decimals.
pub const BUCKETS: u64 = 10_000;

/// The arm a request is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// Model switched off: the baseline decides, no score.
    Off,
    /// The baseline decides; the model's score and would-be decision are logged.
    Shadow,
    /// The model decides (canary mode, user in the canary).
    Canary,
    /// The baseline decides (canary mode, user outside the canary).
    Control,
    /// The model decides (full mode).
    Full,
}

impl Arm {
    /// Every arm.
    pub const ALL: [Arm; 5] = [Arm::Off, Arm::Shadow, Arm::Canary, Arm::Control, Arm::Full];

    /// The arm named `name` (as [`Arm::as_str`] writes it).
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The arm's name in responses, the decision log and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Off => "off",
            Arm::Shadow => "shadow",
            Arm::Canary => "canary",
            Arm::Control => "control",
            Arm::Full => "full",
        }
    }

    /// Whether the model's decision is the one acted on.
    pub fn model_decides(self) -> bool {
        matches!(self, Arm::Canary | Arm::Full)
    }
}

/// The user's bucket in `0..BUCKETS`.
pub fn bucket(salt: &str, user_id: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(b":")
        .chain_update(user_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// The first bucket of the holdout: the top `holdout_percent` × 100 buckets (rounded).
fn holdout_start(holdout_percent: f64) -> u64 {
    BUCKETS - percent_buckets(holdout_percent)
}

/// `percent` × 100 buckets, rounded to the nearest bucket (two decimals count).
fn percent_buckets(percent: f64) -> u64 {
    (percent * 100.0).round() as u64
}

/// The arm of a user in `bucket` under `mode` with `canary_percent` and
/// `holdout_percent` (each 0..=100): a user in the holdout is control whenever the model
/// decides for anyone.
pub fn assign(mode: Mode, canary_percent: f64, holdout_percent: f64, bucket: u64) -> Arm {
    let held_out = bucket >= holdout_start(holdout_percent);
    match mode {
        Mode::Off => Arm::Off,
        Mode::Shadow => Arm::Shadow,
        Mode::Full if held_out => Arm::Control,
        Mode::Full => Arm::Full,
        Mode::Canary if held_out || bucket >= percent_buckets(canary_percent) => Arm::Control,
        Mode::Canary => Arm::Canary,
    }
}

/// The arm of `user_id` under the rollout in force: `off` when no model can run.
pub fn arm(in_force: &InForce, salt: &str, user_id: &str, model_loaded: bool) -> Arm {
    if model_loaded {
        assign(
            in_force.mode,
            in_force.canary_percent,
            in_force.holdout_percent,
            bucket(salt, user_id),
        )
    } else {
        Arm::Off
    }
}

/// What the guardrails can compare under a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The model decides for nobody (off, shadow, or a canary of no bucket).
    NoModelArm,
    /// The model decides for everyone: no control to compare with (a canary of every
    /// bucket, or full mode without a holdout).
    NoControl,
    /// The model arm (canary or full) against control.
    ModelArm(Arm),
}

impl Comparison {
    /// The model arm's name, or `no_model_arm` or `no_control`.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::NoModelArm => "no_model_arm",
            Comparison::NoControl => "no_control",
            Comparison::ModelArm(arm) => arm.as_str(),
        }
    }
}

impl Serialize for Comparison {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A runtime override of the rollout, set by an operator or by a guardrail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutFlag {
    /// Mode in force.
    pub mode: Mode,
    /// Canary share in percent (0..=100).
    pub canary_percent: f64,
    /// Why it was set.
    pub reason: String,
    /// Who set it: `admin-api`, `cli` or `guardrail`.
    pub set_by: String,
    /// When.
    pub set_at: DateTime<Utc>,
}

/// Why a rollout flag was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutFlagError {
    /// The percent is not a number within 0..=100.
    #[error("must be within 0..=100, got {0}")]
    Percent(f64),
    /// Canary mode without a percent.
    #[error("required in canary mode")]
    MissingPercent,
}

/// A canary percent, checked to lie within 0..=100 (NaN does not).
pub fn checked_percent(percent: f64) -> Result<f64, RolloutFlagError> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(RolloutFlagError::Percent(percent))
    }
}

impl RolloutFlag {
    /// A checked flag: the percent is required in canary mode (0 otherwise) and must lie
    /// within 0..=100 whenever given.
    pub fn new(
        mode: Mode,
        canary_percent: Option<f64>,
        reason: String,
        set_by: &str,
        set_at: DateTime<Utc>,
    ) -> Result<Self, RolloutFlagError> {
        let canary_percent = match (mode, canary_percent) {
            (Mode::Canary, None) => return Err(RolloutFlagError::MissingPercent),
            (_, Some(p)) => checked_percent(p)?,
            (_, None) => 0.0,
        };
        Ok(Self {
            mode,
            canary_percent,
            reason,
            set_by: set_by.to_owned(),
            set_at,
        })
    }
}

/// A runtime kill switch: when on, nothing is sent in any arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KillSwitchFlag {
    /// On or off.
    pub on: bool,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub set_by: String,
    /// When.
    pub set_at: DateTime<Utc>,
}

/// The runtime flags every replica reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    /// Rollout override; `None` = the policy file's rollout.
    pub rollout: Option<RolloutFlag>,
    /// Kill switch override; `None` = the policy file's.
    pub kill_switch: Option<KillSwitchFlag>,
}

/// Where the rollout in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `policy/policy.yaml`.
    Policy,
    /// The runtime flag.
    Flag,
    /// The runtime flags have not been read yet (their store was down when this replica
    /// started): the policy file's mode, but at most shadow, so a rollback kept in a
    /// flag is never undone by a restart.
    Unread,
}

/// The rollout and kill switch in force: the flags where set, else the policy file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InForce {
    /// Mode.
    pub mode: Mode,
    /// Canary percent.
    pub canary_percent: f64,
    /// Where mode and percent come from.
    pub source: Source,
    /// The holdout's share in percent (always the policy's).
    pub holdout_percent: f64,
    /// Whether sends are stopped (the policy's or the flag's switch).
    pub kill_switch: bool,
}

impl InForce {
    /// What `flags` make of `policy`'s rollout. Either kill switch stops sends: a flag
    /// cannot release a switch the file turned on (edit the file and reload for that).
    /// Flags not read yet (`None`) hold the mode at shadow at most.
    pub fn of(policy: &Policy, flags: Option<&Flags>) -> Self {
        let rollout = &policy.rollout;
        let (mode, canary_percent, source) = match flags.map(|f| &f.rollout) {
            Some(Some(flag)) => (flag.mode, flag.canary_percent, Source::Flag),
            Some(None) => (rollout.mode, rollout.canary_percent, Source::Policy),
            None => {
                let capped = match rollout.mode {
                    Mode::Off => Mode::Off,
                    Mode::Shadow | Mode::Canary | Mode::Full => Mode::Shadow,
                };
                (capped, rollout.canary_percent, Source::Unread)
            }
        };
        let flag_kill = flags
            .and_then(|f| f.kill_switch.as_ref())
            .is_some_and(|k| k.on);
        Self {
            mode,
            canary_percent,
            source,
            holdout_percent: rollout.holdout_percent,
            kill_switch: policy.kill_switch || flag_kill,
        }
    }

    /// The arms this rollout gives the guardrails to compare.
    pub fn comparison(&self) -> Comparison {
        let holdout_start = holdout_start(self.holdout_percent);
        let (arm, model_buckets) = match self.mode {
            Mode::Off | Mode::Shadow => return Comparison::NoModelArm,
            Mode::Canary => (
                Arm::Canary,
                percent_buckets(self.canary_percent).min(holdout_start),
            ),
            Mode::Full => (Arm::Full, holdout_start),
        };
        match model_buckets {
            0 => Comparison::NoModelArm,
            BUCKETS => Comparison::NoControl,
            _ => Comparison::ModelArm(arm),
        }
    }

    /// What the guardrails' evidence belongs to under bucketing `salt`: what they
    /// compare and, for a model arm, its percent (a canary's), the holdout and the salt.
    /// Any of them changing moves users between arms; the kill switch and where the mode
    /// comes from move nobody.
    pub fn guarded(&self, salt: &str) -> String {
        let holdout = self.holdout_percent;
        match self.comparison() {
            Comparison::ModelArm(Arm::Canary) => format!(
                "canary {}% holdout {holdout}% salt {salt}",
                self.canary_percent
            ),
            Comparison::ModelArm(arm) => format!("{} holdout {holdout}% salt {salt}", arm.as_str()),
            other => other.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_follows_the_statsig_scheme() {
        // SHA-256("s:u1"), first 8 bytes big-endian, mod 10,000, computed independently.
        let digest = Sha256::digest(b"s:u1");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
        assert_eq!(bucket("s", "u1"), expected);
        assert_ne!(bucket("s", "u1"), bucket("t", "u1"));
    }

    #[test]
    fn canary_share_is_within_one_point_of_the_percent_over_100k_ids() {
        for percent in [1.0, 5.0, 20.0, 50.0, 90.0] {
            let canary = (0..100_000)
                .filter(|i| {
                    assign(
                        Mode::Canary,
                        percent,
                        0.0,
                        bucket("salt-1", &format!("user-{i}")),
                    ) == Arm::Canary
                })
                .count();
            let share = canary as f64 / 1_000.0;
            assert!((share - percent).abs() <= 1.0, "{percent}%: {share}%");
        }
    }

    #[test]
    fn without_a_holdout_modes_other_than_canary_ignore_the_bucket() {
        assert_eq!(assign(Mode::Shadow, 100.0, 0.0, 0), Arm::Shadow);
        assert_eq!(assign(Mode::Full, 0.0, 0.0, 9_999), Arm::Full);
        assert_eq!(assign(Mode::Off, 50.0, 0.0, 0), Arm::Off);
        assert_eq!(assign(Mode::Canary, 0.0, 0.0, 0), Arm::Control);
        assert_eq!(assign(Mode::Canary, 100.0, 0.0, 9_999), Arm::Canary);
    }

    #[test]
    fn the_holdout_is_the_top_buckets_and_control_whenever_the_model_decides() {
        // A 5 % holdout: buckets 9,500..10,000.
        for mode in [Mode::Canary, Mode::Full] {
            assert_eq!(assign(mode, 100.0, 5.0, 9_500), Arm::Control, "{mode:?}");
            assert_eq!(assign(mode, 100.0, 5.0, 9_999), Arm::Control, "{mode:?}");
        }
        assert_eq!(assign(Mode::Canary, 100.0, 5.0, 9_499), Arm::Canary);
        assert_eq!(assign(Mode::Full, 0.0, 5.0, 9_499), Arm::Full);
        assert_eq!(assign(Mode::Shadow, 100.0, 5.0, 9_999), Arm::Shadow);
        assert_eq!(assign(Mode::Off, 100.0, 5.0, 9_999), Arm::Off);
    }

    fn in_force(mode: Mode, canary_percent: f64, holdout_percent: f64) -> InForce {
        InForce {
            mode,
            canary_percent,
            source: Source::Policy,
            holdout_percent,
            kill_switch: false,
        }
    }

    #[test]
    fn a_full_rollout_is_compared_with_its_holdout_and_without_one_with_nothing() {
        let cases = [
            (Mode::Shadow, 50.0, 5.0, Comparison::NoModelArm),
            (Mode::Canary, 0.0, 5.0, Comparison::NoModelArm),
            (Mode::Canary, 50.0, 0.0, Comparison::ModelArm(Arm::Canary)),
            (Mode::Canary, 100.0, 5.0, Comparison::ModelArm(Arm::Canary)),
            (Mode::Canary, 100.0, 0.0, Comparison::NoControl),
            (Mode::Full, 0.0, 5.0, Comparison::ModelArm(Arm::Full)),
            (Mode::Full, 0.0, 0.0, Comparison::NoControl),
            (Mode::Full, 0.0, 100.0, Comparison::NoModelArm),
        ];
        for (mode, canary, holdout, expected) in cases {
            assert_eq!(
                in_force(mode, canary, holdout).comparison(),
                expected,
                "{mode:?} {canary} {holdout}"
            );
        }
    }

    #[test]
    fn a_guarded_rollout_is_its_arm_percent_holdout_and_salt_and_nothing_else() {
        let canary = in_force(Mode::Canary, 50.0, 5.0).guarded("s");
        assert_eq!(canary, "canary 50% holdout 5% salt s");
        for other in [
            in_force(Mode::Canary, 70.0, 5.0).guarded("s"),
            in_force(Mode::Canary, 50.0, 10.0).guarded("s"),
            in_force(Mode::Canary, 50.0, 5.0).guarded("t"),
        ] {
            assert_ne!(other, canary);
        }
        // A full rollout's percent moves nobody; the kill switch and the source move nobody.
        let full = |percent| in_force(Mode::Full, percent, 5.0).guarded("s");
        assert_eq!(full(10.0), full(90.0));
        assert_eq!(full(10.0), "full holdout 5% salt s");
        let mut switched = in_force(Mode::Canary, 50.0, 5.0);
        (switched.kill_switch, switched.source) = (true, Source::Flag);
        assert_eq!(switched.guarded("s"), canary);
        assert_eq!(
            in_force(Mode::Shadow, 50.0, 5.0).guarded("s"),
            "no_model_arm"
        );
    }

    #[test]
    fn flags_override_mode_and_percent_and_either_kill_switch_stops_sends() {
        let policy = Policy::parse(
            "rollout: { mode: shadow, salt: s }\nthreshold: { initial: 0.3, min: 0.05, max: 0.9 }\n",
        )
        .unwrap();
        let none = InForce::of(&policy, Some(&Flags::default()));
        assert_eq!(
            (
                none.mode,
                none.canary_percent,
                none.source,
                none.kill_switch
            ),
            (Mode::Shadow, 0.0, Source::Policy, false)
        );
        let at = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let flags = Flags {
            rollout: Some(RolloutFlag {
                mode: Mode::Canary,
                canary_percent: 5.0,
                reason: "r".into(),
                set_by: "cli".into(),
                set_at: at,
            }),
            kill_switch: Some(KillSwitchFlag {
                on: true,
                reason: "r".into(),
                set_by: "cli".into(),
                set_at: at,
            }),
        };
        let flagged = InForce::of(&policy, Some(&flags));
        assert_eq!(
            (
                flagged.mode,
                flagged.canary_percent,
                flagged.source,
                flagged.kill_switch
            ),
            (Mode::Canary, 5.0, Source::Flag, true)
        );
        let mut stopped_by_file = policy.clone();
        stopped_by_file.kill_switch = true;
        let mut released = flags.clone();
        released.kill_switch.as_mut().unwrap().on = false;
        assert!(InForce::of(&stopped_by_file, Some(&released)).kill_switch);
        assert!(!InForce::of(&policy, Some(&released)).kill_switch);
    }

    #[test]
    fn unread_flags_hold_the_mode_at_shadow_at_most_and_keep_the_files_kill_switch() {
        let with = |rollout: &str, kill: bool| {
            let mut policy = Policy::parse(&format!(
                "rollout: {rollout}\nthreshold: {{ initial: 0.3, min: 0.05, max: 0.9 }}\n"
            ))
            .unwrap();
            policy.kill_switch = kill;
            InForce::of(&policy, None)
        };
        let canary = with("{ mode: canary, canary_percent: 50, salt: s }", false);
        assert_eq!(
            (canary.mode, canary.source, canary.kill_switch),
            (Mode::Shadow, Source::Unread, false)
        );
        assert_eq!(with("{ mode: full, salt: s }", false).mode, Mode::Shadow);
        assert_eq!(with("{ mode: shadow, salt: s }", false).mode, Mode::Shadow);
        assert_eq!(with("{ mode: off, salt: s }", false).mode, Mode::Off);
        assert!(with("{ mode: shadow, salt: s }", true).kill_switch);
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::Off),
            Just(Mode::Shadow),
            Just(Mode::Canary),
            Just(Mode::Full)
        ]
    }

    proptest! {
        /// Raising the percent only adds users to the canary.
        #[test]
        fn raising_the_percent_only_adds_users(user in "[a-z0-9_]{1,20}", low in 0.0f64..100.0, raise in 0.0f64..100.0, holdout in 0.0f64..=100.0) {
            let high = (low + raise).min(100.0);
            let b = bucket("salt", &user);
            if assign(Mode::Canary, low, holdout, b) == Arm::Canary {
                prop_assert_eq!(assign(Mode::Canary, high, holdout, b), Arm::Canary);
            }
        }

        /// A user in the holdout is never in the model arm, whatever the mode and percent.
        #[test]
        fn the_holdout_never_gets_the_model(user in "[a-z0-9_]{1,20}", mode in mode(), canary in 0.0f64..=100.0, holdout in 0.0f64..=100.0) {
            let b = bucket("salt", &user);
            if b >= holdout_start(holdout) {
                prop_assert!(!assign(mode, canary, holdout, b).model_decides());
            }
        }

        /// The comparison says what the buckets hold: no model arm when no bucket is in
        /// it, no control when every bucket is, else the model arm every model bucket has.
        #[test]
        fn the_comparison_agrees_with_the_buckets(mode in mode(), canary in prop_oneof![Just(0.0), Just(100.0), 0.0f64..=100.0], holdout in prop_oneof![Just(0.0), Just(100.0), 0.0f64..=100.0]) {
            let arms: std::collections::HashSet<Arm> =
                (0..BUCKETS).map(|b| assign(mode, canary, holdout, b)).collect();
            let model: Vec<Arm> = arms.iter().copied().filter(|a| a.model_decides()).collect();
            let expected = match (model.as_slice(), arms.contains(&Arm::Control)) {
                ([], _) => Comparison::NoModelArm,
                (_, false) => Comparison::NoControl,
                ([arm], true) => Comparison::ModelArm(*arm),
                (several, true) => panic!("several model arms: {several:?}"),
            };
            prop_assert_eq!(in_force(mode, canary, holdout).comparison(), expected);
        }
    }
}
