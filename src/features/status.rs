//! `nudge-train features status`: how fresh the features are, and how clean the input.

use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;

/// Share of events that must pass validation over the last day (the seed plan's gate).
pub const VALIDATION_GATE: f64 = 0.95;

/// Freshness and input quality of the feature store.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStatus {
    /// Newest event time in bronze.
    pub newest_event: Option<DateTime<Utc>>,
    /// Newest snapshot's `as_of`.
    pub newest_snapshot: Option<NaiveDate>,
    /// Events received over the 24 hours before `now`.
    pub received_last_day: i64,
    /// Events refused over the same 24 hours.
    pub rejected_last_day: i64,
}

impl FeatureStatus {
    /// How far the newest snapshot trails the newest event: zero when the snapshot
    /// already covers it (`None` without both).
    pub fn lag(&self) -> Option<TimeDelta> {
        let snapshot = self.newest_snapshot?.and_hms_opt(0, 0, 0)?.and_utc();
        Some((self.newest_event? - snapshot).max(TimeDelta::zero()))
    }

    /// Share of the last day's events that passed validation (`None` without events).
    pub fn validation_pass_share(&self) -> Option<f64> {
        let total = self.received_last_day + self.rejected_last_day;
        (total > 0).then(|| self.received_last_day as f64 / total as f64)
    }
}

/// Reads the status as of `now`.
pub async fn status(pool: &PgPool, now: DateTime<Utc>) -> Result<FeatureStatus, sqlx::Error> {
    let since = now - TimeDelta::days(1);
    let (newest_event, newest_snapshot, received_last_day, rejected_last_day) = sqlx::query_as(
        "SELECT (SELECT max(ts) FROM bronze.events),
                (SELECT max(as_of) FROM gold.snapshots),
                (SELECT count(*) FROM bronze.events WHERE received_at > $1 AND received_at <= $2),
                (SELECT count(*) FROM bronze.rejects WHERE received_at > $1 AND received_at <= $2)",
    )
    .bind(since)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(FeatureStatus {
        newest_event,
        newest_snapshot,
        received_last_day,
        rejected_last_day,
    })
}

impl fmt::Display for FeatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        writeln!(
            f,
            "newest event:     {}",
            or_none(self.newest_event.map(|t| t.to_rfc3339()))
        )?;
        writeln!(
            f,
            "newest snapshot:  {}",
            or_none(self.newest_snapshot.map(|d| format!("as of {d} 00:00 UTC")))
        )?;
        writeln!(
            f,
            "lag:              {}",
            or_none(
                self.lag()
                    .map(|l| format!("{:.1} h", l.num_seconds() as f64 / 3600.0))
            )
        )?;
        match self.validation_pass_share() {
            Some(share) => writeln!(
                f,
                "validation, last 24 h: {:.2}% of {} events passed (gate ≥ {:.0}%: {})",
                100.0 * share,
                self.received_last_day + self.rejected_last_day,
                100.0 * VALIDATION_GATE,
                if share >= VALIDATION_GATE {
                    "pass"
                } else {
                    "FAIL"
                }
            ),
            None => writeln!(f, "validation, last 24 h: no events received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_pass_share_are_derived_from_the_counts() {
        let status = FeatureStatus {
            newest_event: Some("2026-01-10T06:00:00Z".parse().unwrap()),
            newest_snapshot: Some(NaiveDate::from_ymd_opt(2026, 1, 10).unwrap()),
            received_last_day: 96,
            rejected_last_day: 4,
        };
        assert_eq!(status.lag(), Some(TimeDelta::hours(6)));
        assert_eq!(status.validation_pass_share(), Some(0.96));
        assert!(
            status
                .to_string()
                .contains("96.00% of 100 events passed (gate ≥ 95%: pass)")
        );
        let empty = FeatureStatus {
            newest_event: None,
            newest_snapshot: None,
            received_last_day: 0,
            rejected_last_day: 0,
        };
        assert_eq!((empty.lag(), empty.validation_pass_share()), (None, None));
    }
}
