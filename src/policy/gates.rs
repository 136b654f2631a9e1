//! The gates a send passes in every arm, as pure functions: the kill switch, push opt-out
//! and quiet hours need only the request; the daily cap and minimum gap need the user's
//! recent sends, which the quota store keeps ([`crate::store::quota`]).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// Gate settings from policy.yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Sends allowed per user in any rolling 24 hours.
    pub max_sends_per_day: u32,
    /// Shortest time between two sends to a user.
    pub min_gap: Duration,
    /// No sends in this local-time window.
    pub quiet_hours: Option<QuietHours>,
}

/// A local-time window, in minutes after midnight; it may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// First quiet minute.
    pub start: u16,
    /// First minute that is no longer quiet.
    pub end: u16,
}

impl QuietHours {
    /// Whether `minute` (after local midnight) is quiet.
    pub fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Why a candidate was or was not sent: the `reason` of each decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Sent.
    Ok,
    /// The model's best candidate scored under the threshold.
    BelowThreshold,
    /// Another candidate was chosen.
    NotSelected,
    /// The user had the day's maximum of sends.
    DailyCap,
    /// The last send was too recent.
    MinGap,
    /// It is quiet hours in the user's local time.
    QuietHours,
    /// The user turned push notifications off.
    OptedOut,
    /// The kill switch is on.
    KillSwitch,
    /// The quota store could not be reached: nothing is sent rather than risk the cap.
    QuotaUnavailable,
}

impl Reason {
    /// The reason's name in responses, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::BelowThreshold => "below_threshold",
            Reason::NotSelected => "not_selected",
            Reason::DailyCap => "daily_cap",
            Reason::MinGap => "min_gap",
            Reason::QuietHours => "quiet_hours",
            Reason::OptedOut => "opted_out",
            Reason::KillSwitch => "kill_switch",
            Reason::QuotaUnavailable => "quota_unavailable",
        }
    }
}

/// The gate that stops every send to this user right now, if any, before quotas: the
/// kill switch, then opt-out, then quiet hours at `local_minute`.
pub fn blocking_gate(
    gates: &Gates,
    kill_switch: bool,
    opted_out: bool,
    local_minute: u16,
) -> Option<Reason> {
    if kill_switch {
        Some(Reason::KillSwitch)
    } else if opted_out {
        Some(Reason::OptedOut)
    } else if gates.quiet_hours.is_some_and(|q| q.contains(local_minute)) {
        Some(Reason::QuietHours)
    } else {
        None
    }
}

/// Whether one more send at `now` fits the quota, given the user's earlier sends (any
/// order; those older than a day are ignored). The Redis script of
/// [`crate::store::quota`] applies the same rule.
pub fn quota_check(
    gates: &Gates,
    sends: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<(), Reason> {
    let day_ago = now - Duration::days(1);
    let recent = sends.iter().filter(|&&t| t > day_ago);
    let (count, last) = recent.fold((0u32, None), |(n, last), &t| {
        (n + 1, Some(last.map_or(t, |l: DateTime<Utc>| l.max(t))))
    });
    if count >= gates.max_sends_per_day {
        Err(Reason::DailyCap)
    } else if last.is_some_and(|l| now - l < gates.min_gap) {
        Err(Reason::MinGap)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gates() -> Gates {
        Gates {
            max_sends_per_day: 2,
            min_gap: Duration::hours(8),
            quiet_hours: Some(QuietHours {
                start: 22 * 60,
                end: 8 * 60,
            }),
        }
    }

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + Duration::hours(hours)
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let q = gates().quiet_hours.unwrap();
        assert!(
            q.contains(22 * 60)
                && q.contains(23 * 60 + 59)
                && q.contains(0)
                && q.contains(7 * 60 + 59)
        );
        assert!(!q.contains(8 * 60) && !q.contains(21 * 60 + 59) && !q.contains(12 * 60));
        let day = QuietHours {
            start: 13 * 60,
            end: 14 * 60,
        };
        assert!(day.contains(13 * 60 + 30) && !day.contains(14 * 60) && !day.contains(0));
    }

    #[test]
    fn the_kill_switch_outranks_opt_out_which_outranks_quiet_hours() {
        let g = gates();
        assert_eq!(
            blocking_gate(&g, true, true, 23 * 60),
            Some(Reason::KillSwitch)
        );
        assert_eq!(
            blocking_gate(&g, false, true, 23 * 60),
            Some(Reason::OptedOut)
        );
        assert_eq!(
            blocking_gate(&g, false, false, 23 * 60),
            Some(Reason::QuietHours)
        );
        assert_eq!(blocking_gate(&g, false, false, 12 * 60), None);
    }

    #[test]
    fn the_daily_cap_and_the_minimum_gap_hold() {
        let g = gates();
        assert_eq!(quota_check(&g, &[], at(0)), Ok(()));
        assert_eq!(quota_check(&g, &[at(0)], at(7)), Err(Reason::MinGap));
        assert_eq!(quota_check(&g, &[at(0)], at(8)), Ok(()));
        assert_eq!(
            quota_check(&g, &[at(0), at(9)], at(20)),
            Err(Reason::DailyCap)
        );
        // The first send leaves the rolling day after 24 hours.
        assert_eq!(quota_check(&g, &[at(9), at(0)], at(25)), Ok(()));
    }

    proptest! {
        /// Whatever the history, granting every allowed send never puts more than the cap
        /// in any 24 hours, nor two sends closer than the gap.
        #[test]
        fn granted_sends_respect_cap_and_gap(asks in proptest::collection::vec(0i64..240, 1..60)) {
            let g = gates();
            let mut asks = asks;
            asks.sort_unstable();
            let mut granted: Vec<DateTime<Utc>> = Vec::new();
            for h in asks {
                if quota_check(&g, &granted, at(h)).is_ok() {
                    granted.push(at(h));
                }
            }
            for (i, &t) in granted.iter().enumerate() {
                let in_day = granted.iter().filter(|&&u| u <= t && u > t - Duration::days(1)).count();
                prop_assert!(in_day as u32 <= g.max_sends_per_day);
                if i > 0 {
                    prop_assert!(t - granted[i - 1] >= g.min_gap);
                }
            }
        }
    }
}
