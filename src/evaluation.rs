//! Metrics of scored examples, shared by the simulator's oracle report and the trainer.

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
