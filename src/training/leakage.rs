//! The leakage guard: a feature that on its own (almost) perfectly separates the label in
//! training is far more likely a leak (a column computed from the outcome, or from after
//! the example's time) than a discovery, so the trainer refuses it.

use super::TrainError;
use super::dataset::{MISSING, Table};
use crate::evaluation::roc_auc;

/// Single-feature AUC (oriented, ≥ 0.5) at or above which a feature is refused.
pub const LEAK_AUC: f64 = 0.995;

/// Most training rows examined per feature.
const SAMPLE: usize = 200_000;

/// Refuses the first feature whose values alone separate the labels of `rows`.
/// Numeric features rank by value (missing lowest); categorical ones by their level's
/// positive rate among the rows.
pub fn check(
    table: &Table,
    rows: &[usize],
    numeric: &[String],
    categorical: &[String],
) -> Result<(), TrainError> {
    let step = rows.len().div_ceil(SAMPLE).max(1);
    let sample: Vec<usize> = rows.iter().copied().step_by(step).collect();
    let refuse = |feature: &str, scored: Vec<(f64, bool)>| match roc_auc(&scored) {
        Some(auc) if auc.max(1.0 - auc) >= LEAK_AUC => Err(TrainError::Leakage {
            feature: feature.to_owned(),
            auc: auc.max(1.0 - auc),
        }),
        _ => Ok(()),
    };
    for (name, column) in numeric.iter().zip(&table.numeric) {
        let scored = sample
            .iter()
            .map(|&r| {
                let v = column[r];
                (
                    if v.is_nan() { f64::NEG_INFINITY } else { v },
                    table.labels[r],
                )
            })
            .collect();
        refuse(name, scored)?;
    }
    for (name, column) in categorical.iter().zip(&table.categorical) {
        // (positives, count) per level, the last slot for missing.
        let mut counts = vec![(0usize, 0usize); column.levels.len() + 1];
        let slot = |code: u32| {
            if code == MISSING {
                column.levels.len()
            } else {
                code as usize
            }
        };
        for &r in &sample {
            let c = &mut counts[slot(column.codes[r])];
            c.0 += usize::from(table.labels[r]);
            c.1 += 1;
        }
        let scored = sample
            .iter()
            .map(|&r| {
                let (positives, count) = counts[slot(column.codes[r])];
                (positives as f64 / count as f64, table.labels[r])
            })
            .collect();
        refuse(name, scored)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::dataset::CategoricalColumn;

    fn table() -> Table {
        let labels: Vec<bool> = (0..1000).map(|i| i % 3 == 0).collect();
        let honest: Vec<f64> = (0..1000).map(|i| f64::from(i % 7)).collect();
        let mut kind = CategoricalColumn::default();
        for i in 0..1000 {
            kind.push(Some(if i % 2 == 0 { "even" } else { "odd" }));
        }
        Table {
            times: vec![chrono::DateTime::UNIX_EPOCH; 1000],
            numeric: vec![honest],
            categorical: vec![kind],
            labels,
            ..Table::default()
        }
    }

    #[test]
    fn honest_features_pass() {
        let t = table();
        let rows: Vec<usize> = (0..t.len()).collect();
        check(&t, &rows, &["honest".into()], &["kind".into()]).unwrap();
    }

    #[test]
    fn a_feature_equal_to_the_label_is_refused_by_name() {
        let mut t = table();
        let leak: Vec<f64> = t.labels.iter().map(|&y| f64::from(u8::from(y))).collect();
        t.numeric.push(leak);
        let rows: Vec<usize> = (0..t.len()).collect();
        let names = ["honest".to_owned(), "outcome".to_owned()];
        let err = check(&t, &rows, &names, &[]).unwrap_err();
        assert!(
            matches!(&err, TrainError::Leakage { feature, auc } if feature == "outcome" && *auc == 1.0)
        );
        // Its negation too, and as a category.
        t.numeric[1].iter_mut().for_each(|v| *v = 1.0 - *v);
        assert!(check(&t, &rows, &names, &[]).is_err());
        let mut category = CategoricalColumn::default();
        for &y in &t.labels {
            category.push(Some(if y { "won" } else { "lost" }));
        }
        t.categorical = vec![category];
        let err = check(&t, &rows, &names[..1], &["result".into()]).unwrap_err();
        assert!(err.to_string().contains("result"), "{err}");
    }
}
