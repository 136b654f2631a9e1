//! Fitting one candidate on encoded rows: logistic regression (linfa-logistic) or
//! gradient-boosted trees (forust-ml), both returned as an [`Estimator`] whose output is
//! the log-odds of the label being `true`.

use forust_ml::metric::Metric;
use forust_ml::{GradientBooster, Matrix};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use rand::SeedableRng;

use super::TrainError;
use super::spec::{Algorithm, ClassWeight};
use crate::models::artifact::{Estimator, to_column_major};

/// Logistic regression stops once the norm of the mean gradient is below this.
pub const MEAN_GRADIENT_TOLERANCE: f64 = 1e-4;

/// Encoded rows (row-major) with their labels.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `rows × width` values.
    pub values: Vec<f64>,
    /// Columns per row.
    pub width: usize,
    /// One label per row.
    pub labels: Vec<bool>,
}

impl Encoded {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Labels as 0/1.
    fn targets(&self) -> Vec<f64> {
        self.labels
            .iter()
            .map(|&y| f64::from(u8::from(y)))
            .collect()
    }
}

/// Per-example weights of a class weighting (`None`: all 1).
pub fn sample_weights(labels: &[bool], weighting: ClassWeight) -> Vec<f64> {
    let (positive, negative) = class_weights(labels, weighting);
    labels
        .iter()
        .map(|&y| if y { positive } else { negative })
        .collect()
}

/// The weight of a positive and of a negative example.
fn class_weights(labels: &[bool], weighting: ClassWeight) -> (f64, f64) {
    match weighting {
        ClassWeight::None => (1.0, 1.0),
        ClassWeight::Balanced => {
            let positives = labels.iter().filter(|&&y| y).count().max(1) as f64;
            let negatives = (labels.len() as f64 - positives).max(1.0);
            let n = labels.len() as f64;
            (n / (2.0 * positives), n / (2.0 * negatives))
        }
    }
}

/// At most `max_rows` of `rows`: all of them, or a seeded uniform sample in their order.
pub fn sample_rows(rows: Encoded, max_rows: usize, seed: u64) -> Encoded {
    if rows.rows() <= max_rows {
        return rows;
    }
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut keep = rand::seq::index::sample(&mut rng, rows.rows(), max_rows).into_vec();
    keep.sort_unstable();
    let width = rows.width;
    let mut values = Vec::with_capacity(max_rows * width);
    for &r in &keep {
        values.extend_from_slice(&rows.values[r * width..(r + 1) * width]);
    }
    Encoded {
        values,
        width,
        labels: keep.iter().map(|&r| rows.labels[r]).collect(),
    }
}

/// Fits `algorithm` on `train`; boosting stops early on `valid`.
pub fn fit(
    candidate: &str,
    algorithm: &Algorithm,
    train: Encoded,
    valid: &Encoded,
    weighting: ClassWeight,
    seed: u64,
) -> Result<Estimator, TrainError> {
    let failed = |reason: String| TrainError::Fit {
        candidate: candidate.to_owned(),
        reason,
    };
    match *algorithm {
        Algorithm::Logistic {
            l2,
            max_iterations,
            max_rows,
        } => {
            let (positive, negative) = class_weights(&train.labels, weighting);
            let train = sample_rows(train, max_rows, seed);
            let rows = train.rows();
            let records = Array2::from_shape_vec((rows, train.width), train.values)
                .map_err(|e| failed(e.to_string()))?;
            let dataset = Dataset::new(records, Array1::from(train.labels));
            // linfa-logistic sums the loss over rows: scale the stopping tolerance so it
            // means "mean gradient below 1e-4" whatever the number of rows.
            let fitted = LogisticRegression::default()
                .alpha(l2)
                .max_iterations(max_iterations)
                .gradient_tolerance(MEAN_GRADIENT_TOLERANCE * rows.max(1) as f64)
                .fit(&dataset)
                .map_err(|e| failed(e.to_string()))?;
            // linfa-logistic calls "positive" whichever class is more frequent, not
            // `true`: orient the parameters so they give the log-odds of `true`.
            let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
            // Class weights shift only the prior: add their log ratio to the intercept.
            let prior_shift = (positive / negative).ln();
            Ok(Estimator::Logistic {
                weights: fitted.params().iter().map(|w| sign * w).collect(),
                intercept: sign * fitted.intercept() + prior_shift,
            })
        }
        Algorithm::Gbm {
            trees,
            max_depth,
            learning_rate,
            early_stopping_rounds,
            min_leaf_weight,
            l2,
        } => {
            let train_weights = sample_weights(&train.labels, weighting);
            let valid_weights = sample_weights(&valid.labels, weighting);
            let train_columns = to_column_major(&train.values, train.rows(), train.width);
            let valid_columns = to_column_major(&valid.values, valid.rows(), valid.width);
            let (train_targets, valid_targets) = (train.targets(), valid.targets());
            let mut booster = GradientBooster::default()
                .set_iterations(trees)
                .set_max_depth(max_depth)
                .set_max_leaves(usize::MAX)
                .set_learning_rate(learning_rate)
                .set_min_leaf_weight(min_leaf_weight)
                .set_l2(l2)
                .set_seed(seed)
                .set_parallel(true)
                .set_evaluation_metric(Some(Metric::LogLoss))
                .set_early_stopping_rounds(Some(early_stopping_rounds));
            booster
                .fit(
                    &Matrix::new(&train_columns, train.rows(), train.width),
                    &train_targets,
                    &train_weights,
                    Some(vec![(
                        Matrix::new(&valid_columns, valid.rows(), valid.width),
                        &valid_targets,
                        &valid_weights,
                    )]),
                )
                .map_err(|e| failed(e.to_string()))?;
            Ok(Estimator::Gbm {
                booster: Box::new(booster),
                forest: Default::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::roc_auc;
    use forust_ml::Matrix;
    use rand::{Rng, SeedableRng};

    /// `x0` raises the odds of `true`, `x1` lowers them; positives are the minority.
    fn problem(n: usize, seed: u64) -> Encoded {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let mut values = Vec::with_capacity(n * 2);
        let labels = (0..n)
            .map(|_| {
                let (a, b): (f64, f64) = (rng.random_range(-2.0..2.0), rng.random_range(-2.0..2.0));
                values.extend([a, b]);
                rng.random::<f64>() < crate::models::calibration::sigmoid(-1.5 + 2.0 * a - b)
            })
            .collect();
        Encoded {
            values,
            width: 2,
            labels,
        }
    }

    #[test]
    fn logistic_regression_gives_the_log_odds_of_true_even_when_true_is_the_minority() {
        let train = problem(4_000, 1);
        assert!(train.labels.iter().filter(|&&y| y).count() * 2 < train.rows());
        let valid = problem(2_000, 2);
        let algorithm = Algorithm::Logistic {
            l2: 0.1,
            max_iterations: 100,
            max_rows: 3_000,
        };
        let estimator = fit(
            "lr",
            &algorithm,
            train.clone(),
            &valid,
            ClassWeight::None,
            0,
        )
        .unwrap();
        let Estimator::Logistic { weights, intercept } = &estimator else {
            panic!()
        };
        assert!(weights[0] > 1.5 && weights[1] < -0.7, "{weights:?}");
        assert!((intercept + 1.5).abs() < 0.3, "{intercept}");
        // The same with `true` the majority: flip the labels and the signs flip.
        let flipped = |e: &Encoded| Encoded {
            labels: e.labels.iter().map(|y| !y).collect(),
            ..e.clone()
        };
        let estimator = fit(
            "lr",
            &algorithm,
            flipped(&train),
            &flipped(&valid),
            ClassWeight::None,
            0,
        )
        .unwrap();
        let Estimator::Logistic { weights, .. } = &estimator else {
            panic!()
        };
        assert!(weights[0] < -1.5, "{weights:?}");
    }

    #[test]
    fn boosted_trees_rank_held_out_rows_and_stop_early() {
        let (train, valid, test) = (problem(4_000, 3), problem(2_000, 4), problem(2_000, 5));
        let algorithm = Algorithm::Gbm {
            trees: 500,
            max_depth: 3,
            learning_rate: 0.3,
            early_stopping_rounds: 10,
            min_leaf_weight: 1.0,
            l2: 1.0,
        };
        let estimator = fit("gbm", &algorithm, train, &valid, ClassWeight::Balanced, 0).unwrap();
        let Estimator::Gbm { booster, .. } = &estimator else {
            panic!()
        };
        assert!(crate::models::artifact::trees_used(booster) < 500);
        let logits = estimator.logits(&test.values, 2);
        // The row-by-row walk is forust-ml's own batch prediction, bit for bit.
        let columns = to_column_major(&test.values, test.rows(), 2);
        assert_eq!(
            logits,
            booster.predict(&Matrix::new(&columns, test.rows(), 2), false)
        );
        let auc = roc_auc(&logits.into_iter().zip(test.labels).collect::<Vec<_>>()).unwrap();
        assert!(auc > 0.75, "{auc}");
    }

    #[test]
    fn a_saved_booster_that_would_walk_off_the_row_is_refused() {
        use crate::models::Model;
        use crate::models::artifact::{FORMAT, schema_hash};
        use crate::models::calibration::Calibration;
        use crate::models::preprocess::{NumericEncoding, Preprocessing};
        let (train, valid) = (problem(2_000, 6), problem(1_000, 7));
        let algorithm = Algorithm::Gbm {
            trees: 5,
            max_depth: 2,
            learning_rate: 0.3,
            early_stopping_rounds: 5,
            min_leaf_weight: 1.0,
            l2: 1.0,
        };
        let estimator = fit("gbm", &algorithm, train, &valid, ClassWeight::None, 0).unwrap();
        let numeric = |name: &str| NumericEncoding {
            name: name.into(),
            mean: 0.0,
            scale: 1.0,
            missing_indicator: false,
            range: None,
        };
        let model = Model {
            format: FORMAT,
            name: "t".into(),
            version: "v".into(),
            label: "y".into(),
            candidate: "gbm".into(),
            schema_hash: schema_hash(["a", "b"], []),
            preprocessing: Preprocessing {
                numeric: vec![numeric("a"), numeric("b")],
                categorical: Vec::new(),
            },
            estimator,
            calibration: Calibration::None,
        };
        let json = model.to_json().unwrap();
        Model::from_json(&json).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["estimator"]["booster"]["trees"][0]["nodes"][0]["split_feature"] = 9.into();
        assert!(Model::from_json(&value.to_string()).is_err());
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["estimator"]["booster"]["trees"][0]["nodes"][0]["left_child"] = 0.into();
        assert!(Model::from_json(&value.to_string()).is_err());
    }

    #[test]
    fn a_row_sample_is_seeded_ordered_and_keeps_rows_whole() {
        let rows = Encoded {
            values: (0..200).map(f64::from).collect(),
            width: 2,
            labels: (0..100).map(|i| i % 2 == 0).collect(),
        };
        let a = sample_rows(rows.clone(), 10, 7);
        assert_eq!(a.rows(), 10);
        assert_eq!(a.values, sample_rows(rows.clone(), 10, 7).values);
        assert_ne!(a.values, sample_rows(rows.clone(), 10, 8).values);
        for (pair, label) in a.values.chunks_exact(2).zip(&a.labels) {
            // Row r holds (2r, 2r + 1) and is labelled r % 2 == 0.
            assert_eq!(pair[1], pair[0] + 1.0);
            assert_eq!(*label, ((pair[0] / 2.0) as usize).is_multiple_of(2));
        }
        assert!(a.values.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_rows(rows.clone(), 500, 7).values, rows.values);
    }

    #[test]
    fn balanced_weights_make_both_classes_weigh_the_same() {
        let labels = [true, false, false, false];
        let w = sample_weights(&labels, ClassWeight::Balanced);
        assert_eq!(w[0], 2.0);
        assert!((w[1] * 3.0 - 2.0).abs() < 1e-12);
        assert_eq!(sample_weights(&labels, ClassWeight::None), [1.0; 4]);
    }
}
