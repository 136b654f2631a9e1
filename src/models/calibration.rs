//! Probability calibration on the validation window: Platt scaling (a logistic curve over
//! the model's log-odds) or isotonic regression (a monotone step curve, by pool adjacent
//! violators). Fitting and applying are pure functions of plain numbers.

use serde::{Deserialize, Serialize};

/// How a model's log-odds become a probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibration {
    /// The logistic function of the log-odds, unchanged.
    None,
    /// `sigmoid(slope · logit + intercept)`.
    Platt {
        /// Multiplies the log-odds.
        slope: f64,
        /// Added after.
        intercept: f64,
    },
    /// Linear interpolation through `(logits[i], probabilities[i])`, flat beyond the
    /// ends. `logits` increase strictly and `probabilities` never decrease.
    Isotonic {
        /// Knot positions on the log-odds axis.
        logits: Vec<f64>,
        /// The calibrated probability at each knot.
        probabilities: Vec<f64>,
    },
}

/// The method named in a model spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// Keep the model's own probabilities.
    None,
    /// Platt scaling.
    Platt,
    /// Isotonic regression.
    Isotonic,
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Calibration {
    /// Fits `method` to validation log-odds and their labels.
    pub fn fit(method: CalibrationMethod, logits: &[f64], labels: &[bool]) -> Self {
        match method {
            CalibrationMethod::None => Calibration::None,
            CalibrationMethod::Platt => fit_platt(logits, labels),
            CalibrationMethod::Isotonic => fit_isotonic(logits, labels),
        }
    }

    /// The calibrated probability of a log-odds.
    pub fn apply(&self, logit: f64) -> f64 {
        match self {
            Calibration::None => sigmoid(logit),
            Calibration::Platt { slope, intercept } => sigmoid(slope * logit + intercept),
            Calibration::Isotonic {
                logits,
                probabilities,
            } => interpolate(logits, probabilities, logit),
        }
    }

    /// Whether the parameters describe a monotone map into [0, 1]; a saved model with
    /// anything else is refused at load.
    pub fn is_valid(&self) -> bool {
        match self {
            Calibration::None => true,
            Calibration::Platt { slope, intercept } => slope.is_finite() && intercept.is_finite(),
            Calibration::Isotonic {
                logits,
                probabilities,
            } => {
                !logits.is_empty()
                    && logits.len() == probabilities.len()
                    && logits.iter().all(|x| x.is_finite())
                    && logits.windows(2).all(|w| w[0] < w[1])
                    && probabilities.windows(2).all(|w| w[0] <= w[1])
                    && probabilities.iter().all(|p| (0.0..=1.0).contains(p))
            }
        }
    }
}

/// Platt scaling by Newton's method with a backtracking line search on the two
/// parameters, and Platt's smoothed targets (so a separable validation set does not send
/// the slope to infinity).
fn fit_platt(logits: &[f64], labels: &[bool]) -> Calibration {
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let high = (positives + 1.0) / (positives + 2.0);
    let low = 1.0 / (negatives + 2.0);
    let target = |label: bool| if label { high } else { low };
    let loss = |slope: f64, intercept: f64| -> f64 {
        logits
            .iter()
            .zip(labels)
            .map(|(&x, &label)| {
                // log(1 + e^z) − t·z, written to stay finite for large |z|.
                let z = slope * x + intercept;
                let softplus = if z > 0.0 {
                    z + (-z).exp().ln_1p()
                } else {
                    z.exp().ln_1p()
                };
                softplus - target(label) * z
            })
            .sum()
    };
    let (mut slope, mut intercept) = (1.0, 0.0);
    let mut current = loss(slope, intercept);
    for _ in 0..100 {
        // Gradient and Hessian of the log loss in (slope, intercept).
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &label) in logits.iter().zip(labels) {
            let p = sigmoid(slope * x + intercept);
            let w = (p * (1.0 - p)).max(1e-12);
            ga += (p - target(label)) * x;
            gb += p - target(label);
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        let mut step = 1.0;
        while step > 1e-10 {
            let next = loss(slope - step * da, intercept - step * db);
            if next <= current {
                slope -= step * da;
                intercept -= step * db;
                let improvement = current - next;
                current = next;
                step = if improvement < 1e-12 * current.abs().max(1.0) {
                    0.0
                } else {
                    step
                };
                break;
            }
            step /= 2.0;
        }
        if step < 1e-10 {
            break;
        }
    }
    if slope.is_finite() && intercept.is_finite() {
        Calibration::Platt { slope, intercept }
    } else {
        Calibration::None
    }
}

/// Isotonic regression of the labels on the log-odds (pool adjacent violators); each
/// pooled block becomes a knot at its mean log-odds.
fn fit_isotonic(logits: &[f64], labels: &[bool]) -> Calibration {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    // Blocks of (sum of logits, sum of labels, count), merged while they decrease.
    let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
    for i in order {
        blocks.push((logits[i], f64::from(u8::from(labels[i])), 1.0));
        while blocks.len() > 1 {
            let (x2, y2, n2) = blocks[blocks.len() - 1];
            let (x1, y1, n1) = blocks[blocks.len() - 2];
            if y1 / n1 < y2 / n2 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (x1 + x2, y1 + y2, n1 + n2);
        }
    }
    let mut knots_x: Vec<f64> = Vec::with_capacity(blocks.len());
    let mut knots_y: Vec<f64> = Vec::with_capacity(blocks.len());
    for (x, y, n) in blocks {
        let (x, y) = (x / n, y / n);
        // Equal mean log-odds can only follow a merge-free tie; keep the later (higher).
        if knots_x.last().is_some_and(|&last| last >= x) {
            knots_y.pop();
            knots_x.pop();
        }
        knots_x.push(x);
        knots_y.push(y);
    }
    if knots_x.is_empty() {
        return Calibration::None;
    }
    Calibration::Isotonic {
        logits: knots_x,
        probabilities: knots_y,
    }
}

fn interpolate(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    let upper = xs.partition_point(|&k| k < x);
    if upper == 0 {
        return ys[0];
    }
    if upper == xs.len() {
        return ys[ys.len() - 1];
    }
    let (x0, x1, y0, y1) = (xs[upper - 1], xs[upper], ys[upper - 1], ys[upper]);
    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::log_loss;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// Labels drawn from `sigmoid(z)` while the model claims `sigmoid(3z + 1)`: too sure and
    /// biased upwards.
    fn miscalibrated(n: usize) -> (Vec<f64>, Vec<bool>) {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        (0..n)
            .map(|_| {
                let z: f64 = rng.random_range(-3.0..3.0);
                (3.0 * z + 1.0, rng.random::<f64>() < sigmoid(z))
            })
            .unzip()
    }

    fn loss(calibration: &Calibration, logits: &[f64], labels: &[bool]) -> f64 {
        let probabilities: Vec<f64> = logits.iter().map(|&x| calibration.apply(x)).collect();
        log_loss(&probabilities, labels)
    }

    #[test]
    fn platt_and_isotonic_improve_the_log_loss_of_a_miscalibrated_model() {
        let (fit_logits, fit_labels) = miscalibrated(20_000);
        let (logits, labels) = miscalibrated(20_000);
        let raw = loss(&Calibration::None, &logits, &labels);
        for method in [CalibrationMethod::Platt, CalibrationMethod::Isotonic] {
            let calibration = Calibration::fit(method, &fit_logits, &fit_labels);
            assert!(calibration.is_valid());
            let calibrated = loss(&calibration, &logits, &labels);
            assert!(calibrated < raw - 0.05, "{method:?}: {calibrated} vs {raw}");
        }
        // Platt recovers the true curve: slope 1/3, intercept -1/3.
        let Calibration::Platt { slope, intercept } =
            Calibration::fit(CalibrationMethod::Platt, &fit_logits, &fit_labels)
        else {
            panic!("platt")
        };
        assert!((slope - 1.0 / 3.0).abs() < 0.03, "{slope}");
        assert!((intercept + 1.0 / 3.0).abs() < 0.05, "{intercept}");
    }

    proptest! {
        #[test]
        fn isotonic_is_monotone_and_within_zero_one(
            points in prop::collection::vec((-5.0f64..5.0, any::<bool>()), 1..200),
            probes in prop::collection::vec(-8.0f64..8.0, 2..20),
        ) {
            let (logits, labels): (Vec<f64>, Vec<bool>) = points.into_iter().unzip();
            let calibration = Calibration::fit(CalibrationMethod::Isotonic, &logits, &labels);
            prop_assert!(calibration.is_valid());
            let mut probes = probes;
            probes.sort_by(f64::total_cmp);
            let values: Vec<f64> = probes.iter().map(|&x| calibration.apply(x)).collect();
            prop_assert!(values.windows(2).all(|w| w[0] <= w[1] + 1e-12));
            prop_assert!(values.iter().all(|p| (0.0..=1.0).contains(p)));
        }

        #[test]
        fn platt_is_monotone_increasing_for_informative_scores(shift in -2.0f64..2.0) {
            let (logits, labels) = miscalibrated(2_000);
            let shifted: Vec<f64> = logits.iter().map(|x| x + shift).collect();
            let calibration = Calibration::fit(CalibrationMethod::Platt, &shifted, &labels);
            prop_assert!(calibration.apply(1.0) > calibration.apply(-1.0));
        }
    }
}
