//! The feature pipeline over the event store, refreshed day range by day range: silver
//! (events cleaned, identity-stitched and sessionised) and gold (per-user daily aggregates
//! and point-in-time feature snapshots, whose columns the [catalog] names).
//!
//! The SQL lives in `notebooks-sql/` (runnable in psql as it stands); this module runs it
//! with checked parameters.

pub mod catalog;
pub mod labels;
pub mod materialize;
pub mod refresh;
pub mod row;
pub mod status;

use chrono::NaiveDate;

/// A range of UTC days, `from` included and `to` excluded, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    from: NaiveDate,
    to: NaiveDate,
}

/// Why a feature command could not run.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// `from` is not before `to`.
    #[error("empty day range: --from {from} is not before --to {to}")]
    EmptyRange {
        /// First day.
        from: NaiveDate,
        /// Day after the last.
        to: NaiveDate,
    },
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The online store failed.
    #[error("online store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl DayRange {
    /// The days [`from`, `to`).
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, FeatureError> {
        if from < to {
            Ok(Self { from, to })
        } else {
            Err(FeatureError::EmptyRange { from, to })
        }
    }

    /// First day.
    pub fn from(&self) -> NaiveDate {
        self.from
    }

    /// Day after the last.
    pub fn to(&self) -> NaiveDate {
        self.to
    }

    /// Number of days.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days()
    }

    /// `sql` with psql's `:'from'` and `:'to'` variables replaced by the range's dates.
    /// Safe to send: dates print as `YYYY-MM-DD` and nothing else is substituted.
    pub(crate) fn substitute(&self, sql: &str) -> String {
        sql.replace(":'from'", &format!("'{}'", self.from))
            .replace(":'to'", &format!("'{}'", self.to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_and_substituted_as_date_literals() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert!(matches!(
            DayRange::new(d("2026-01-05"), d("2026-01-05")),
            Err(FeatureError::EmptyRange { .. })
        ));
        let r = DayRange::new(d("2026-01-05"), d("2026-01-07")).unwrap();
        assert_eq!(r.days(), 2);
        assert_eq!(
            r.substitute("ts >= :'from'::date AND ts < :'to'::date"),
            "ts >= '2026-01-05'::date AND ts < '2026-01-07'::date"
        );
    }
}
