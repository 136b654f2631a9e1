//! Model cards: `card.json` (read back by promotion) and `card.md` (for people), written
//! next to each saved model.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::spec::{Gates, ModelSpec};
use super::split::Window;
use crate::evaluation::Metrics;

/// File names inside a version's directory.
pub const CARD_JSON: &str = "card.json";
/// The human-readable card.
pub const CARD_MD: &str = "card.md";
/// The spec the model was fitted from.
pub const SPEC_FILE: &str = "spec.yaml";

/// One candidate's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// Its name in the spec.
    pub name: String,
    /// `logistic` or `gbm`.
    pub kind: String,
    /// Seconds to fit.
    pub fit_seconds: f64,
    /// Validation ROC AUC (chooses the champion).
    pub valid_auc: Option<f64>,
    /// Test ROC AUC (reported, never used to choose).
    pub test_auc: Option<f64>,
    /// Trees kept after early stopping (boosting only).
    pub trees: Option<usize>,
}

/// Train, validation and test windows with their base rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataWindows {
    /// Training examples.
    pub train: Window,
    /// Validation examples.
    pub valid: Window,
    /// Test examples.
    pub test: Window,
    /// Positive rate in training.
    pub train_base_rate: f64,
    /// Positive rate in validation.
    pub valid_base_rate: f64,
}

/// The oracle's AUC next to the model's, on the test examples the simulator knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleComparison {
    /// Test examples with a known true probability.
    pub examples: usize,
    /// AUC of the true probabilities given what the data records.
    pub oracle_auc: Option<f64>,
    /// AUC of the true probabilities given hidden state too, when the spec names them.
    #[serde(default)]
    pub hidden_state_auc: Option<f64>,
    /// AUC of the model on the same examples.
    pub model_auc: Option<f64>,
}

impl OracleComparison {
    /// The headline's note of the oracle, of a model measured on `test_examples`: its AUC
    /// alone when it knows every test example, else also the model's on the examples it
    /// knows (a few known examples say little, and not of the whole test AUC).
    pub fn beside(&self, test_examples: usize) -> String {
        let auc = |a: Option<f64>| a.map_or_else(|| "n/a".into(), |a| format!("{a:.3}"));
        match self.oracle_auc {
            None => String::new(),
            Some(_) if self.examples == test_examples => {
                format!(" (oracle {})", auc(self.oracle_auc))
            }
            Some(_) => format!(
                " (oracle {} on the {} test examples it knows, where the model has {})",
                auc(self.oracle_auc),
                self.examples,
                auc(self.model_auc)
            ),
        }
    }
}

/// The champion of the time, scored on this model's test examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChampionComparison {
    /// The champion's version.
    pub version: String,
    /// Its test AUC on the same examples.
    pub test_auc: Option<f64>,
}

/// Whether the gates pass, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// The spec's gates.
    pub gates: Gates,
    /// Every failed gate (empty = promotable).
    pub failures: Vec<String>,
}

/// What `card.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// What it predicts.
    pub description: String,
    /// The label.
    pub label: String,
    /// When it was fitted.
    pub created_at: DateTime<Utc>,
    /// When these metrics were computed (fit, or a later `evaluate`).
    pub evaluated_at: DateTime<Utc>,
    /// Commit of the code that fitted it.
    pub git_commit: String,
    /// Wall time of the whole fit, seconds.
    pub training_seconds: f64,
    /// Examples read from the source.
    pub examples: usize,
    /// The windows.
    pub windows: DataWindows,
    /// Every candidate.
    pub candidates: Vec<CandidateResult>,
    /// The winning candidate.
    pub champion_candidate: String,
    /// `none`, `platt` or `isotonic`.
    pub calibration: String,
    /// Validation log loss before calibration.
    pub valid_log_loss_raw: f64,
    /// Validation log loss after calibration.
    pub valid_log_loss_calibrated: f64,
    /// Test metrics of the calibrated model.
    pub test: Metrics,
    /// The oracle, for simulated sources.
    pub oracle: Option<OracleComparison>,
    /// Permutation importance: test AUC lost when the feature is shuffled.
    pub importance: Vec<(String, f64)>,
    /// The champion when this was evaluated.
    pub champion: Option<ChampionComparison>,
    /// Gate results.
    pub gates: GateResult,
    /// Anything the ML engineer should read.
    pub notes: Vec<String>,
}

/// Every gate `test_auc` fails against `gates` and the champion's AUC on the same test.
pub fn gate_failures(
    test_auc: Option<f64>,
    gates: &Gates,
    champion: Option<&ChampionComparison>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let Some(auc) = test_auc else {
        return vec!["no test AUC (one class in the test window)".into()];
    };
    if auc < gates.min_test_auc {
        failures.push(format!(
            "test AUC {auc:.4} is below the floor {:.2}",
            gates.min_test_auc
        ));
    }
    if let Some(ChampionComparison {
        version,
        test_auc: Some(champion_auc),
    }) = champion
        && auc < champion_auc - gates.max_auc_regression
    {
        failures.push(format!(
            "test AUC {auc:.4} is worse than champion {version}'s {champion_auc:.4} on the same test examples by more than {:.3}",
            gates.max_auc_regression
        ));
    }
    failures
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.4}"))
}

fn day(w: &Window) -> String {
    match (w.from, w.to) {
        (Some(a), Some(b)) => format!(
            "{} … {}",
            a.format("%Y-%m-%d %H:%M"),
            b.format("%Y-%m-%d %H:%M")
        ),
        _ => "empty".into(),
    }
}

impl Card {
    /// One line: name, version, test AUC (and oracle), gates.
    pub fn headline(&self) -> String {
        let oracle = self
            .oracle
            .as_ref()
            .map(|o| o.beside(self.test.examples))
            .unwrap_or_default();
        let verdict = if self.gates.failures.is_empty() {
            "gates passed".to_owned()
        } else {
            format!("gates failed: {}", self.gates.failures.join("; "))
        };
        format!(
            "{} {}: {} test AUC {}{oracle}, log loss {:.4}, {} test examples; {verdict}",
            self.name,
            self.version,
            self.champion_candidate,
            opt(self.test.roc_auc),
            self.test.log_loss,
            self.test.examples,
        )
    }

    /// `card.md`.
    pub fn to_markdown(&self, spec: &ModelSpec) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {} {}\n", self.name, self.version);
        if !self.description.is_empty() {
            let _ = writeln!(md, "{}\n", self.description);
        }
        let _ = writeln!(md, "**{}**\n", self.headline());
        let _ = writeln!(
            md,
            "Label `{}`. Fitted {} from commit `{}` in {:.1} s; metrics from {}.\n",
            self.label,
            self.created_at.format("%Y-%m-%d %H:%M UTC"),
            self.git_commit,
            self.training_seconds,
            self.evaluated_at.format("%Y-%m-%d %H:%M UTC"),
        );
        let _ = writeln!(
            md,
            "## Data\n\n| part | window | examples | base rate |\n|---|---|---|---|"
        );
        let w = &self.windows;
        let _ = writeln!(
            md,
            "| train | {} | {} | {:.4} |",
            day(&w.train),
            w.train.rows,
            w.train_base_rate
        );
        let _ = writeln!(
            md,
            "| validation | {} | {} | {:.4} |",
            day(&w.valid),
            w.valid.rows,
            w.valid_base_rate
        );
        let _ = writeln!(
            md,
            "| test | {} | {} | {:.4} |\n",
            day(&w.test),
            w.test.rows,
            self.test.base_rate
        );
        let _ = writeln!(
            md,
            "Features: {} numeric ({}), {} categorical ({}).\n",
            spec.features.numeric.len(),
            spec.features.numeric.join(", "),
            spec.features.categorical.len(),
            spec.features.categorical.join(", ")
        );
        let _ = writeln!(
            md,
            "## Candidates\n\n| candidate | kind | fit s | valid AUC | test AUC | trees |\n|---|---|---|---|---|---|"
        );
        for c in &self.candidates {
            let _ = writeln!(
                md,
                "| {}{} | {} | {:.1} | {} | {} | {} |",
                c.name,
                if c.name == self.champion_candidate {
                    " (champion)"
                } else {
                    ""
                },
                c.kind,
                c.fit_seconds,
                opt(c.valid_auc),
                opt(c.test_auc),
                c.trees.map_or_else(|| "-".into(), |t| t.to_string()),
            );
        }
        let _ = writeln!(
            md,
            "\nCalibration: {} on validation (log loss {:.4} → {:.4}).\n",
            self.calibration, self.valid_log_loss_raw, self.valid_log_loss_calibrated
        );
        let t = &self.test;
        let _ = writeln!(
            md,
            "## Test metrics\n\n| ROC AUC | PR AUC | log loss | Brier |\n|---|---|---|---|"
        );
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} |\n",
            opt(t.roc_auc),
            opt(t.pr_auc),
            t.log_loss,
            t.brier
        );
        if let Some(o) = &self.oracle {
            let _ = write!(
                md,
                "Oracle (the simulator's true probabilities given what the data records) on {} of the test examples: AUC {} vs the model's {} on the same examples.",
                o.examples,
                opt(o.oracle_auc),
                opt(o.model_auc)
            );
            if let Some(hidden) = o.hidden_state_auc {
                let _ = write!(
                    md,
                    " Given also the hidden state the data never records: AUC {hidden:.4}."
                );
            }
            let _ = writeln!(md, "\n");
        }
        let _ = writeln!(
            md,
            "### Calibration\n\n| predicted | examples | mean predicted | observed |\n|---|---|---|---|"
        );
        for b in &t.calibration {
            let _ = writeln!(
                md,
                "| {:.1}–{:.1} | {} | {} | {} |",
                b.from,
                b.from + 0.1,
                b.count,
                opt(b.predicted),
                opt(b.observed)
            );
        }
        let _ = writeln!(
            md,
            "\n### Lift by score decile\n\n| decile | examples | min score | positive rate | lift |\n|---|---|---|---|---|"
        );
        for d in &t.deciles {
            let _ = writeln!(
                md,
                "| {} | {} | {:.4} | {:.4} | {:.2} |",
                d.decile, d.count, d.min_score, d.positive_rate, d.lift
            );
        }
        let _ = writeln!(
            md,
            "\n### Feature importance (test AUC lost when shuffled)\n\n| feature | AUC drop |\n|---|---|"
        );
        for (name, drop) in &self.importance {
            let _ = writeln!(md, "| {name} | {drop:.4} |");
        }
        let _ = writeln!(md, "\n## Promotion\n");
        match &self.champion {
            Some(c) => {
                let _ = writeln!(
                    md,
                    "Champion at evaluation: {} (test AUC {} on the same examples).",
                    c.version,
                    opt(c.test_auc)
                );
            }
            None => {
                let _ = writeln!(md, "No champion at evaluation.");
            }
        }
        let _ = writeln!(
            md,
            "Gates: test AUC ≥ {:.2}, at most {:.3} below the champion.",
            self.gates.gates.min_test_auc, self.gates.gates.max_auc_regression
        );
        if self.gates.failures.is_empty() {
            let _ = writeln!(md, "All gates pass.");
        } else {
            for f in &self.gates.failures {
                let _ = writeln!(md, "- fails: {f}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATES: Gates = Gates {
        min_test_auc: 0.65,
        max_auc_regression: 0.01,
    };

    #[test]
    fn the_oracle_is_set_beside_the_test_auc_only_when_it_knows_every_test_example() {
        let oracle = |examples| OracleComparison {
            examples,
            oracle_auc: Some(1.0),
            hidden_state_auc: None,
            model_auc: Some(0.75),
        };
        assert_eq!(oracle(163).beside(163), " (oracle 1.000)");
        assert_eq!(
            oracle(8).beside(163),
            " (oracle 1.000 on the 8 test examples it knows, where the model has 0.750)"
        );
        let unknown = OracleComparison {
            oracle_auc: None,
            ..oracle(0)
        };
        assert_eq!(unknown.beside(163), "");
    }

    #[test]
    fn gates_refuse_a_low_auc_and_a_regression_beyond_the_tolerance() {
        assert!(gate_failures(Some(0.70), &GATES, None).is_empty());
        let low = gate_failures(Some(0.60), &GATES, None);
        assert_eq!(low.len(), 1);
        assert!(low[0].contains("below the floor 0.65"), "{low:?}");
        let champion = ChampionComparison {
            version: "v1".into(),
            test_auc: Some(0.75),
        };
        assert!(gate_failures(Some(0.745), &GATES, Some(&champion)).is_empty());
        let worse = gate_failures(Some(0.73), &GATES, Some(&champion));
        assert!(worse[0].contains("worse than champion v1"), "{worse:?}");
        assert_eq!(gate_failures(Some(0.6), &GATES, Some(&champion)).len(), 2);
        assert_eq!(gate_failures(None, &GATES, None).len(), 1);
    }
}
