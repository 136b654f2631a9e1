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
    /// Another feature refresh holds the lock.
    #[error("another feature refresh is running; try again when it finishes")]
    RefreshRunning,
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

    /// Whether `day` is in the range.
    pub fn contains(&self, day: NaiveDate) -> bool {
        self.from <= day && day < self.to
    }

    /// Splits the range into at most `parts` contiguous ranges, in order, whose lengths
    /// differ by at most a day.
    pub fn split(&self, parts: usize) -> Vec<DayRange> {
        let days = self.days();
        let parts = (parts.max(1) as i64).min(days);
        let mut from = self.from;
        (0..parts)
            .map(|k| {
                let len = days / parts + i64::from(k < days % parts);
                let to = from + chrono::TimeDelta::days(len);
                let chunk = DayRange { from, to };
                from = to;
                chunk
            })
            .collect()
    }

    /// How many of the stored days `first ..= last` lie outside the range: what a refresh
    /// of the range leaves untouched.
    pub fn days_kept_of(&self, first: NaiveDate, last: NaiveDate) -> i64 {
        let after_last = last.succ_opt().unwrap_or(last);
        let before = (after_last.min(self.from) - first).num_days().max(0);
        let after = (after_last - self.to.max(first)).num_days().max(0);
        before + after
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
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_split_covers_the_range_in_order_with_near_equal_chunks(days in 1i64..400, parts in 0usize..10) {
            let from = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
            let range = DayRange::new(from, from + chrono::TimeDelta::days(days)).unwrap();
            let chunks = range.split(parts);
            prop_assert_eq!(chunks.len() as i64, (parts.max(1) as i64).min(days));
            prop_assert_eq!(chunks[0].from(), range.from());
            prop_assert_eq!(chunks[chunks.len() - 1].to(), range.to());
            prop_assert!(chunks.windows(2).all(|w| w[0].to() == w[1].from()));
            let lens: Vec<i64> = chunks.iter().map(DayRange::days).collect();
            prop_assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            prop_assert!(lens.iter().all(|&l| l >= 1));
        }
    }

    proptest! {
        #[test]
        fn the_days_kept_are_the_stored_days_outside_the_range(
            first in 0i64..100, len in 0i64..100, from in 0i64..200, days in 1i64..100,
        ) {
            let day = |k: i64| NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::TimeDelta::days(k);
            let range = DayRange::new(day(from), day(from + days)).unwrap();
            let outside = (first..=first + len).filter(|&k| !range.contains(day(k))).count() as i64;
            prop_assert_eq!(range.days_kept_of(day(first), day(first + len)), outside);
        }
    }

    #[test]
    fn a_daily_refresh_keeps_the_history_and_a_backfill_keeps_nothing() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let today = DayRange::new(d("2026-03-05"), d("2026-03-06")).unwrap();
        assert_eq!(today.days_kept_of(d("2026-01-04"), d("2026-03-05")), 60);
        let all = DayRange::new(d("2026-01-04"), d("2026-03-06")).unwrap();
        assert_eq!(all.days_kept_of(d("2026-01-04"), d("2026-03-05")), 0);
    }

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
