//! Train / validation / test partitions: by time windows at the end of the data, or by a
//! split column. Pure functions of the examples' timestamps or parts.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::spec::TimeSplit;

/// Which part an example belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Fits the model.
    Train,
    /// Chooses the champion, stops boosting, fits the calibration.
    Valid,
    /// Measures the champion, once.
    Test,
}

impl std::str::FromStr for Part {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "train" => Ok(Part::Train),
            "valid" | "validation" => Ok(Part::Valid),
            "test" => Ok(Part::Test),
            _ => Err(()),
        }
    }
}

/// The first and last example time of a part, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Earliest example.
    pub from: Option<DateTime<Utc>>,
    /// Latest example.
    pub to: Option<DateTime<Utc>>,
    /// Examples.
    pub rows: usize,
}

/// Row indices of each part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows.
    pub valid: Vec<usize>,
    /// Test rows.
    pub test: Vec<usize>,
}

impl Partition {
    /// The window of a part's rows.
    pub fn window(&self, part: Part, times: &[DateTime<Utc>]) -> Window {
        let rows = match part {
            Part::Train => &self.train,
            Part::Valid => &self.valid,
            Part::Test => &self.test,
        };
        Window {
            from: rows.iter().map(|&r| times[r]).min(),
            to: rows.iter().map(|&r| times[r]).max(),
            rows: rows.len(),
        }
    }

    fn checked(self) -> Result<Self, TrainError> {
        for (part, rows) in [
            ("train", &self.train),
            ("validation", &self.valid),
            ("test", &self.test),
        ] {
            if rows.is_empty() {
                return Err(TrainError::EmptyPart(part));
            }
        }
        Ok(self)
    }
}

/// Splits by UTC days counted back from the last example's day: the last `test_days`
/// are test, the `validation_days` before them validation, then `gap_days` left out, and
/// everything earlier is training. Every training example is earlier than every
/// validation one, and every validation example earlier than every test one.
pub fn by_time(times: &[DateTime<Utc>], split: TimeSplit) -> Result<Partition, TrainError> {
    let Some(last) = times.iter().max() else {
        return Err(TrainError::EmptyPart("train"));
    };
    let end = last.date_naive().and_time(NaiveTime::MIN).and_utc() + TimeDelta::days(1);
    let test_from = end - TimeDelta::days(i64::from(split.test_days));
    let valid_from = test_from - TimeDelta::days(i64::from(split.validation_days));
    let train_before = valid_from - TimeDelta::days(i64::from(split.gap_days));
    let mut partition = Partition::default();
    for (row, &t) in times.iter().enumerate() {
        if t >= test_from {
            partition.test.push(row);
        } else if t >= valid_from {
            partition.valid.push(row);
        } else if t < train_before {
            partition.train.push(row);
        }
    }
    partition.checked()
}

/// Splits by a column's parts; rows without one are left out.
pub fn by_column(parts: &[Option<Part>]) -> Result<Partition, TrainError> {
    let mut partition = Partition::default();
    for (row, part) in parts.iter().enumerate() {
        match part {
            Some(Part::Train) => partition.train.push(row),
            Some(Part::Valid) => partition.valid.push(row),
            Some(Part::Test) => partition.test.push(row),
            None => {}
        }
    }
    partition.checked()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + minutes * 60, 0).unwrap()
    }

    proptest! {
        #[test]
        fn no_test_example_precedes_a_training_or_validation_one(
            minutes in prop::collection::vec(0i64..60 * 24 * 40, 50..400),
            validation_days in 1u32..5, test_days in 1u32..5, gap_days in 0u32..3,
        ) {
            let times: Vec<DateTime<Utc>> = minutes.into_iter().map(at).collect();
            let split = TimeSplit { validation_days, test_days, gap_days };
            if let Ok(p) = by_time(&times, split) {
                let max = |rows: &[usize]| rows.iter().map(|&r| times[r]).max().unwrap();
                let min = |rows: &[usize]| rows.iter().map(|&r| times[r]).min().unwrap();
                prop_assert!(max(&p.train) < min(&p.valid));
                prop_assert!(max(&p.valid) < min(&p.test));
                // The gap is respected, and nothing else is left out.
                prop_assert!(min(&p.valid) - max(&p.train) > TimeDelta::zero());
                let kept = p.train.len() + p.valid.len() + p.test.len();
                let gap_rows = times.iter().filter(|&&t| t < min(&p.valid) && t > max(&p.train)).count();
                prop_assert_eq!(kept + gap_rows, times.len());
                prop_assert!(gap_days > 0 || gap_rows == 0);
            }
        }
    }

    #[test]
    fn windows_count_whole_days_back_from_the_last_example() {
        // One example every 6 hours over 10 days.
        let times: Vec<DateTime<Utc>> = (0..40).map(|k| at(k * 360)).collect();
        let split = TimeSplit {
            validation_days: 2,
            test_days: 3,
            gap_days: 1,
        };
        let p = by_time(&times, split).unwrap();
        assert_eq!((p.train.len(), p.valid.len(), p.test.len()), (16, 8, 12));
        assert_eq!(p.window(Part::Test, &times).from, Some(at(7 * 1440)));
        let too_long = TimeSplit {
            validation_days: 8,
            test_days: 3,
            gap_days: 0,
        };
        assert!(matches!(
            by_time(&times, too_long),
            Err(TrainError::EmptyPart("train"))
        ));
    }

    #[test]
    fn a_split_column_assigns_rows_and_leaves_out_the_unassigned() {
        let parts = [
            Some(Part::Train),
            None,
            Some(Part::Test),
            Some(Part::Valid),
            Some(Part::Train),
        ];
        let p = by_column(&parts).unwrap();
        assert_eq!((p.train, p.valid, p.test), (vec![0, 4], vec![3], vec![2]));
        assert!(by_column(&[Some(Part::Train)]).is_err());
    }
}
