//! Metrics of scored examples, shared by the simulator's oracle report and the trainer:
//! ranking (ROC AUC, PR AUC), probability quality (log loss, Brier score, a calibration
//! table) and lift by score decile. Pure functions of (probability, label) pairs.

use serde::{Deserialize, Serialize};

/// Area under the ROC curve of `scores` against `labels`: the probability that a random
/// positive scores above a random negative, ties counting half (the Mann–Whitney U
/// statistic). `None` when either class is absent.
pub fn roc_auc(examples: &[(f64, bool)]) -> Option<f64> {
    let positives = examples.iter().filter(|e| e.1).count();
    let negatives = examples.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = examples.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the (tie-averaged, 1-based) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += average_rank * sorted[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Average precision (the area under the precision–recall curve, as a step function
/// over the positives in decreasing score order, ties sharing one step). `None` without
/// positives.
pub fn average_precision(examples: &[(f64, bool)]) -> Option<f64> {
    let positives = examples.iter().filter(|e| e.1).count();
    if positives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = examples.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut seen, mut hits, mut area) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let new_hits = sorted[i..j].iter().filter(|e| e.1).count();
        seen += j - i;
        hits += new_hits;
        area += new_hits as f64 / positives as f64 * (hits as f64 / seen as f64);
        i = j;
    }
    Some(area)
}

/// Mean negative log-likelihood, probabilities clipped to [1e-15, 1 − 1e-15].
pub fn log_loss(probabilities: &[f64], labels: &[bool]) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / probabilities.len().max(1) as f64
}

/// Mean squared difference between probability and outcome.
pub fn brier(probabilities: &[f64], labels: &[bool]) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p - f64::from(u8::from(y))).powi(2))
        .sum();
    total / probabilities.len().max(1) as f64
}

/// One bin of predicted probability: how many fell in it, what they predicted and what
/// happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin (the bins split [0, 1] in ten).
    pub from: f64,
    /// Examples in the bin.
    pub count: usize,
    /// Mean predicted probability (`None` when empty).
    pub predicted: Option<f64>,
    /// Observed positive rate (`None` when empty).
    pub observed: Option<f64>,
}

/// Ten equal-width bins of predicted probability.
pub fn calibration_table(probabilities: &[f64], labels: &[bool]) -> Vec<CalibrationBin> {
    let mut sums = [(0usize, 0.0, 0usize); 10];
    for (&p, &y) in probabilities.iter().zip(labels) {
        let bin = ((p * 10.0).floor().max(0.0) as usize).min(9);
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += usize::from(y);
    }
    sums.iter()
        .enumerate()
        .map(|(k, &(count, predicted, positives))| CalibrationBin {
            from: k as f64 / 10.0,
            count,
            predicted: (count > 0).then(|| predicted / count as f64),
            observed: (count > 0).then(|| positives as f64 / count as f64),
        })
        .collect()
}

/// One tenth of the examples by score, highest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decile {
    /// 1 = the highest-scored tenth.
    pub decile: usize,
    /// Examples in it.
    pub count: usize,
    /// Lowest score in it.
    pub min_score: f64,
    /// Its positive rate.
    pub positive_rate: f64,
    /// Its positive rate over the overall one.
    pub lift: f64,
}

/// Positive rate and lift by score decile, highest scores first.
pub fn deciles(examples: &[(f64, bool)]) -> Vec<Decile> {
    let mut sorted: Vec<(f64, bool)> = examples.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let overall = sorted.iter().filter(|e| e.1).count() as f64 / sorted.len().max(1) as f64;
    (0..10)
        .filter_map(|k| {
            let part = &sorted[k * sorted.len() / 10..(k + 1) * sorted.len() / 10];
            let last = part.last()?;
            let rate = part.iter().filter(|e| e.1).count() as f64 / part.len() as f64;
            Some(Decile {
                decile: k + 1,
                count: part.len(),
                min_score: last.0,
                positive_rate: rate,
                lift: if overall > 0.0 { rate / overall } else { 0.0 },
            })
        })
        .collect()
}

/// Every metric of a model card, on one set of scored examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Examples scored.
    pub examples: usize,
    /// Their positive rate.
    pub base_rate: f64,
    /// ROC AUC (`None` with one class only).
    pub roc_auc: Option<f64>,
    /// Average precision.
    pub pr_auc: Option<f64>,
    /// Mean log loss.
    pub log_loss: f64,
    /// Brier score.
    pub brier: f64,
    /// Ten bins of predicted probability.
    pub calibration: Vec<CalibrationBin>,
    /// Lift by score decile.
    pub deciles: Vec<Decile>,
}

impl Metrics {
    /// The metrics of `probabilities` against `labels` (same length).
    pub fn of(probabilities: &[f64], labels: &[bool]) -> Self {
        let examples: Vec<(f64, bool)> = probabilities
            .iter()
            .copied()
            .zip(labels.iter().copied())
            .collect();
        Metrics {
            examples: examples.len(),
            base_rate: labels.iter().filter(|&&y| y).count() as f64 / labels.len().max(1) as f64,
            roc_auc: roc_auc(&examples),
            pr_auc: average_precision(&examples),
            log_loss: log_loss(probabilities, labels),
            brier: brier(probabilities, labels),
            calibration: calibration_table(probabilities, labels),
            deciles: deciles(&examples),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, pair by pair.
    fn auc_by_pairs(examples: &[(f64, bool)]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for p in examples.iter().filter(|e| e.1) {
            for n in examples.iter().filter(|e| !e.1) {
                pairs += 1.0;
                wins += if p.0 > n.0 {
                    1.0
                } else if p.0 == n.0 {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / pairs
    }

    #[test]
    fn perfect_inverted_and_uninformative_scores() {
        let perfect = [(0.1, false), (0.2, false), (0.8, true), (0.9, true)];
        assert_eq!(roc_auc(&perfect), Some(1.0));
        let inverted: Vec<_> = perfect.iter().map(|&(s, l)| (s, !l)).collect();
        assert_eq!(roc_auc(&inverted), Some(0.0));
        assert_eq!(roc_auc(&[(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(roc_auc(&[(0.5, true)]), None);
        assert_eq!(roc_auc(&[]), None);
    }

    #[test]
    fn probability_metrics_of_known_cases() {
        let labels = [true, false, true, false];
        assert!((log_loss(&[0.5; 4], &labels) - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(brier(&[1.0, 0.0, 1.0, 0.0], &labels), 0.0);
        assert!((brier(&[0.5; 4], &labels) - 0.25).abs() < 1e-12);
        // Ranked positives first: precision 1 at every recall.
        let perfect = [(0.9, true), (0.8, true), (0.2, false)];
        assert_eq!(average_precision(&perfect), Some(1.0));
        // One positive ranked second of two: precision 1/2 at its recall.
        assert_eq!(average_precision(&[(0.9, false), (0.1, true)]), Some(0.5));
        assert_eq!(average_precision(&[(0.3, false)]), None);
        let table = calibration_table(&[0.05, 0.95, 0.99], &[false, true, false]);
        assert_eq!(table.len(), 10);
        assert_eq!(table[0].count, 1);
        assert_eq!(table[9].count, 2);
        assert_eq!(table[9].observed, Some(0.5));
        assert_eq!(table[5].predicted, None);
    }

    #[test]
    fn deciles_put_the_highest_scores_first_with_their_lift() {
        // 100 examples: the top 10 scores are all positive, the rest one in ten.
        let examples: Vec<(f64, bool)> = (0..100)
            .map(|i| (f64::from(i), i >= 90 || i % 10 == 0))
            .collect();
        let table = deciles(&examples);
        assert_eq!(table.len(), 10);
        assert_eq!(table[0].decile, 1);
        assert_eq!(table[0].min_score, 90.0);
        assert_eq!(table[0].positive_rate, 1.0);
        assert!((table[0].lift - 1.0 / 0.19).abs() < 1e-9);
        assert!(table.iter().map(|d| d.count).sum::<usize>() == 100);
    }

    proptest! {
        #[test]
        fn equals_the_pairwise_definition(examples in prop::collection::vec((0u8..10, any::<bool>()), 2..60)) {
            let examples: Vec<(f64, bool)> = examples.into_iter().map(|(s, l)| (f64::from(s) / 10.0, l)).collect();
            if let Some(auc) = roc_auc(&examples) {
                prop_assert!((auc - auc_by_pairs(&examples)).abs() < 1e-12);
            }
        }
    }
}
