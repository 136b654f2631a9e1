//! Who gets the model: deterministic bucketing and the arm of a request.
//!
//! A user's bucket is the first 8 bytes of SHA-256(salt ":" user id), big-endian, mod
//! 10,000 (the Statsig scheme). In canary mode a bucket under percent × 100 is in the
//! canary, so raising the percent only adds users.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::policy::Mode;

/// Buckets per population: a canary percent has two decimals.
pub const BUCKETS: u64 = 10_000;

/// The arm a request is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// The arm of a user in `bucket` under `mode` with `canary_percent` (0..=100).
pub fn assign(mode: Mode, canary_percent: f64, bucket: u64) -> Arm {
    match mode {
        Mode::Off => Arm::Off,
        Mode::Shadow => Arm::Shadow,
        Mode::Full => Arm::Full,
        Mode::Canary => {
            // Percent × 100 buckets, rounded to the nearest bucket (two decimals count).
            let cutoff = (canary_percent * 100.0).round() as u64;
            if bucket < cutoff {
                Arm::Canary
            } else {
                Arm::Control
            }
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
                        bucket("salt-1", &format!("user-{i}")),
                    ) == Arm::Canary
                })
                .count();
            let share = canary as f64 / 1_000.0;
            assert!((share - percent).abs() <= 1.0, "{percent}%: {share}%");
        }
    }

    #[test]
    fn modes_other_than_canary_ignore_the_bucket() {
        assert_eq!(assign(Mode::Shadow, 100.0, 0), Arm::Shadow);
        assert_eq!(assign(Mode::Full, 0.0, 9_999), Arm::Full);
        assert_eq!(assign(Mode::Off, 50.0, 0), Arm::Off);
        assert_eq!(assign(Mode::Canary, 0.0, 0), Arm::Control);
        assert_eq!(assign(Mode::Canary, 100.0, 9_999), Arm::Canary);
    }

    proptest! {
        /// Raising the percent only adds users to the canary.
        #[test]
        fn raising_the_percent_only_adds_users(user in "[a-z0-9_]{1,20}", low in 0.0f64..100.0, raise in 0.0f64..100.0) {
            let high = (low + raise).min(100.0);
            let b = bucket("salt", &user);
            if assign(Mode::Canary, low, b) == Arm::Canary {
                prop_assert_eq!(assign(Mode::Canary, high, b), Arm::Canary);
            }
        }
    }
}
