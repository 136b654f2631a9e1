//! Preprocessing fitted on the training window and saved with the model: numeric features
//! clipped to the range training saw, then standardised, with an explicit missing-value
//! indicator where training saw missing values (the value itself then imputed at the
//! training mean, i.e. 0 after standardisation); categorical features one-hot over the levels seen in training, plus
//! one column for any other level and one for a missing value. Trainer and server encode
//! through the same [`Preprocessing::encode_into`].

use serde::{Deserialize, Serialize};

/// A row of raw feature values, in the model's feature order: what the trainer reads
/// from Postgres and what nudge-serve assembles from the online store and the request.
pub trait ModelInput {
    /// Numeric feature `index` (`None` = missing).
    fn numeric(&self, index: usize) -> Option<f64>;
    /// Categorical feature `index` (`None` = missing).
    fn categorical(&self, index: usize) -> Option<&str>;
}

/// How one numeric feature is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericEncoding {
    /// Feature name.
    pub name: String,
    /// Training mean of the present values.
    pub mean: f64,
    /// Training standard deviation (1 when constant).
    pub scale: f64,
    /// Whether a column flags missing values.
    pub missing_indicator: bool,
    /// Smallest and largest training value: values outside are clipped to them, so a
    /// linear model does not extrapolate (a count that keeps growing, such as the hours
    /// since an opted-out user's last push, would otherwise grow its score without bound).
    /// Absent in models saved before it was kept, and when training saw no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
}

/// How one categorical feature is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalEncoding {
    /// Feature name.
    pub name: String,
    /// Levels with a column of their own, most frequent first.
    pub levels: Vec<String>,
}

/// The encoding of a model's raw features into its input columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Numeric features, in order.
    pub numeric: Vec<NumericEncoding>,
    /// Categorical features, in order.
    pub categorical: Vec<CategoricalEncoding>,
}

/// Most levels a categorical feature keeps; rarer ones share the "other" column.
pub const MAX_LEVELS: usize = 64;

impl Preprocessing {
    /// Fits the encoding to the training rows. `numeric[f]` yields feature f's values,
    /// `categorical[f]` the (level, count) pairs seen in training.
    pub fn fit(
        numeric: Vec<(String, NumericSummary)>,
        categorical: Vec<(String, Vec<(String, usize)>)>,
        min_level_count: usize,
    ) -> Self {
        let numeric = numeric
            .into_iter()
            .map(|(name, summary)| {
                let (mean, scale) = summary.mean_and_scale();
                NumericEncoding {
                    name,
                    mean,
                    scale,
                    missing_indicator: summary.missing > 0,
                    range: summary.range(),
                }
            })
            .collect();
        let categorical = categorical
            .into_iter()
            .map(|(name, mut counts)| {
                counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let levels = counts
                    .into_iter()
                    .filter(|(_, count)| *count >= min_level_count)
                    .take(MAX_LEVELS)
                    .map(|(level, _)| level)
                    .collect();
                CategoricalEncoding { name, levels }
            })
            .collect();
        Preprocessing {
            numeric,
            categorical,
        }
    }

    /// Columns of an encoded row.
    pub fn width(&self) -> usize {
        self.numeric
            .iter()
            .map(|n| 1 + usize::from(n.missing_indicator))
            .sum::<usize>()
            + self
                .categorical
                .iter()
                .map(|c| c.levels.len() + 2)
                .sum::<usize>()
    }

    /// The encoded columns' names, in order: `name`, `name:missing`, `name=level`,
    /// `name:other`.
    pub fn column_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for n in &self.numeric {
            names.push(n.name.clone());
            if n.missing_indicator {
                names.push(format!("{}:missing", n.name));
            }
        }
        for c in &self.categorical {
            names.extend(c.levels.iter().map(|level| format!("{}={level}", c.name)));
            names.push(format!("{}:other", c.name));
            names.push(format!("{}:missing", c.name));
        }
        names
    }

    /// Appends the encoded row of `input` to `out` ([`Self::width`] values).
    pub fn encode_into(&self, input: &impl ModelInput, out: &mut Vec<f64>) {
        for (index, n) in self.numeric.iter().enumerate() {
            match input.numeric(index).filter(|v| v.is_finite()) {
                Some(value) => {
                    let value = n.range.map_or(value, |[lo, hi]| value.clamp(lo, hi));
                    out.push((value - n.mean) / n.scale);
                    if n.missing_indicator {
                        out.push(0.0);
                    }
                }
                None => {
                    out.push(0.0);
                    if n.missing_indicator {
                        out.push(1.0);
                    }
                }
            }
        }
        for (index, c) in self.categorical.iter().enumerate() {
            let start = out.len();
            out.resize(start + c.levels.len() + 2, 0.0);
            let hot = match input.categorical(index) {
                Some(value) => c
                    .levels
                    .iter()
                    .position(|level| level == value)
                    .unwrap_or(c.levels.len()),
                None => c.levels.len() + 1,
            };
            out[start + hot] = 1.0;
        }
    }

    /// Whether the parameters can encode anything: finite means, positive scales, ordered
    /// finite ranges.
    pub fn is_valid(&self) -> bool {
        self.numeric.iter().all(|n| {
            n.mean.is_finite()
                && n.scale.is_finite()
                && n.scale > 0.0
                && n.range
                    .is_none_or(|[lo, hi]| lo.is_finite() && hi.is_finite() && lo <= hi)
        })
    }
}

/// Running mean and variance of a numeric feature's present values (Welford), their
/// range, and how many were missing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NumericSummary {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    /// Missing values seen.
    pub missing: u64,
}

impl NumericSummary {
    /// Adds one value.
    pub fn push(&mut self, value: Option<f64>) {
        match value.filter(|v| v.is_finite()) {
            Some(x) => {
                (self.min, self.max) = if self.count == 0 {
                    (x, x)
                } else {
                    (self.min.min(x), self.max.max(x))
                };
                self.count += 1;
                let delta = x - self.mean;
                self.mean += delta / self.count as f64;
                self.m2 += delta * (x - self.mean);
            }
            None => self.missing += 1,
        }
    }

    /// Smallest and largest value, when there was one.
    fn range(&self) -> Option<[f64; 2]> {
        (self.count > 0).then_some([self.min, self.max])
    }

    /// Mean and standard deviation; (0, 1) without values, scale 1 when constant.
    fn mean_and_scale(&self) -> (f64, f64) {
        if self.count == 0 {
            return (0.0, 1.0);
        }
        let sd = (self.m2 / self.count as f64).sqrt();
        (self.mean, if sd > 1e-12 { sd } else { 1.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(Vec<Option<f64>>, Vec<Option<&'static str>>);
    impl ModelInput for Row {
        fn numeric(&self, index: usize) -> Option<f64> {
            self.0[index]
        }
        fn categorical(&self, index: usize) -> Option<&str> {
            self.1[index]
        }
    }

    fn fitted() -> Preprocessing {
        let mut sessions = NumericSummary::default();
        for v in [Some(1.0), Some(3.0), None] {
            sessions.push(v);
        }
        let mut constant = NumericSummary::default();
        for _ in 0..3 {
            constant.push(Some(5.0));
        }
        Preprocessing::fit(
            vec![("sessions".into(), sessions), ("constant".into(), constant)],
            vec![(
                "type".into(),
                vec![
                    ("digest".into(), 2),
                    ("reminder".into(), 9),
                    ("rare".into(), 1),
                ],
            )],
            2,
        )
    }

    fn encode(p: &Preprocessing, row: &Row) -> Vec<f64> {
        let mut out = Vec::new();
        p.encode_into(row, &mut out);
        assert_eq!(out.len(), p.width());
        out
    }

    #[test]
    fn numeric_values_are_standardised_and_missing_ones_flagged() {
        let p = fitted();
        assert_eq!(
            p.column_names(),
            [
                "sessions",
                "sessions:missing",
                "constant",
                "type=reminder",
                "type=digest",
                "type:other",
                "type:missing"
            ]
        );
        // Mean 2, standard deviation 1; the constant keeps scale 1 and no indicator.
        assert_eq!(
            encode(&p, &Row(vec![Some(3.0), Some(5.0)], vec![Some("digest")])),
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(
            encode(&p, &Row(vec![None, Some(f64::NAN)], vec![Some("reminder")])),
            [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn values_outside_the_training_range_are_clipped_to_it() {
        let p = fitted();
        assert_eq!(p.numeric[0].range, Some([1.0, 3.0]));
        let encoded = |v: f64| encode(&p, &Row(vec![Some(v), Some(5.0)], vec![None]))[0];
        // Mean 2, standard deviation 1: the training range encodes to [-1, 1].
        assert_eq!(encoded(700.0), 1.0);
        assert_eq!(encoded(-40.0), -1.0);
        assert_eq!(encoded(2.5), 0.5);
        // The constant's range is its one value.
        assert_eq!(p.numeric[1].range, Some([5.0, 5.0]));
        assert_eq!(
            encode(&p, &Row(vec![Some(2.0), Some(9.0)], vec![None]))[2],
            0.0
        );
    }

    #[test]
    fn a_model_saved_without_ranges_encodes_as_before() {
        let mut p = fitted();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"range\":[1.0,3.0]"), "{json}");
        for n in &mut p.numeric {
            n.range = None;
        }
        let old = serde_json::to_string(&p).unwrap();
        assert!(!old.contains("range"), "{old}");
        let loaded: Preprocessing = serde_json::from_str(&old).unwrap();
        assert!(loaded.is_valid());
        let row = Row(vec![Some(700.0), Some(5.0)], vec![None]);
        assert_eq!(encode(&loaded, &row)[0], 698.0);
    }

    #[test]
    fn a_reversed_or_infinite_range_is_invalid() {
        let mut p = fitted();
        p.numeric[0].range = Some([3.0, 1.0]);
        assert!(!p.is_valid());
        p.numeric[0].range = Some([1.0, f64::INFINITY]);
        assert!(!p.is_valid());
        p.numeric[0].range = Some([1.0, 3.0]);
        assert!(p.is_valid());
    }

    #[test]
    fn unseen_rare_and_missing_levels_have_their_own_columns() {
        let p = fitted();
        let other = encode(
            &p,
            &Row(vec![Some(2.0), Some(5.0)], vec![Some("brand_new")]),
        );
        assert_eq!(&other[3..], [0.0, 0.0, 1.0, 0.0]);
        // Seen once in training: below the minimum count, so "other" too.
        let rare = encode(&p, &Row(vec![Some(2.0), Some(5.0)], vec![Some("rare")]));
        assert_eq!(&rare[3..], [0.0, 0.0, 1.0, 0.0]);
        let missing = encode(&p, &Row(vec![Some(2.0), Some(5.0)], vec![None]));
        assert_eq!(&missing[3..], [0.0, 0.0, 0.0, 1.0]);
    }
}
