//! Model specs (`training/*.yaml`): what to train, from where, and how it is judged.
//! A spec is parsed once into a checked [`ModelSpec`]; the trainer never re-checks it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::models::calibration::CalibrationMethod;

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not YAML of the spec's shape (unknown keys included).
    #[error("model spec is not valid YAML for the spec schema: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    /// A field breaks a rule; names the field.
    #[error("model spec: {field}: {reason}")]
    Field {
        /// The offending field.
        field: String,
        /// The rule it breaks.
        reason: String,
    },
}

fn field(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Where the examples come from: a relation or a query, optionally filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A table or view, `schema.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// A query, instead of a relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A SQL condition on its rows (e.g. `complete`: the label's window has passed).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Feature columns of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Features {
    /// Numeric (integer, real or boolean) columns: standardised, missing values flagged.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Categorical columns (read as text): one-hot over the levels seen in training.
    #[serde(default)]
    pub categorical: Vec<String>,
}

/// Time-based windows at the end of the data, by the example timestamp's UTC day:
/// `[train] gap [validation] [test]`. The gap (at least the label's horizon) keeps
/// training labels from looking into the validation and test days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSplit {
    /// Days of validation examples.
    pub validation_days: u32,
    /// Days of test examples (the last ones).
    pub test_days: u32,
    /// Days left out between training and validation.
    #[serde(default)]
    pub gap_days: u32,
}

/// How examples are split into train, validation and test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Split {
    /// By time (the default for anything with a timestamp).
    Time(TimeSplit),
    /// By a column holding `train`, `valid` or `test` (sources with no time order).
    Column(String),
}

/// Class weights for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeight {
    /// Every example weighs 1.
    #[default]
    None,
    /// Positives and negatives weigh the same in total.
    Balanced,
}

/// One algorithm with its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum Algorithm {
    /// Logistic regression (linfa-logistic, L-BFGS) on the standardised columns.
    Logistic {
        /// L2 penalty.
        #[serde(default = "default_l2")]
        l2: f64,
        /// Optimiser iterations at most (it stops earlier once the mean gradient's norm
        /// is below 1e-4).
        #[serde(default = "default_max_iterations")]
        max_iterations: u64,
        /// Training rows at most: above it, a seeded uniform sample of the training
        /// window. Each optimiser step reads every row, and a few hundred thousand rows
        /// pin down a linear model's parameters as well as millions do.
        #[serde(default = "default_max_rows")]
        max_rows: usize,
    },
    /// Gradient-boosted trees (forust-ml, log loss), stopped early on the validation
    /// window's log loss.
    Gbm {
        /// Trees at most.
        trees: usize,
        /// Maximum depth.
        max_depth: usize,
        /// Shrinkage.
        #[serde(default = "default_learning_rate")]
        learning_rate: f32,
        /// Stop after this many trees without improvement.
        #[serde(default = "default_early_stopping")]
        early_stopping_rounds: usize,
        /// Minimum hessian weight in a leaf.
        #[serde(default = "default_min_leaf_weight")]
        min_leaf_weight: f32,
        /// L2 penalty on leaf weights.
        #[serde(default = "default_l2_f32")]
        l2: f32,
    },
}

fn default_l2() -> f64 {
    1.0
}
fn default_l2_f32() -> f32 {
    1.0
}
fn default_max_iterations() -> u64 {
    200
}
fn default_max_rows() -> usize {
    500_000
}
fn default_learning_rate() -> f32 {
    0.1
}
fn default_early_stopping() -> usize {
    20
}
fn default_min_leaf_weight() -> f32 {
    1.0
}

/// A named candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its name in cards.
    pub name: String,
    /// Algorithm and hyper-parameters.
    #[serde(flatten)]
    pub algorithm: Algorithm,
}

/// Promotion gates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Test ROC AUC below this is never promoted.
    pub min_test_auc: f64,
    /// How much worse than the champion's test AUC (same test window) is tolerated.
    #[serde(default)]
    pub max_auc_regression: f64,
}

/// The simulator's ground truth for the examples, when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oracle {
    /// A query returning `key` (text, matching the spec's key) and `probability`: the
    /// true probability given what the data records, the best any model of it can reach.
    pub query: String,
    /// The same given hidden state the data never records (a draw no event shows), when
    /// the simulator has one: a looser ceiling, reported beside the oracle.
    #[serde(default)]
    pub hidden_state_query: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: String,
    source: Source,
    #[serde(default)]
    key: Option<String>,
    label: String,
    timestamp: String,
    features: Features,
    split: Split,
    #[serde(default)]
    class_weight: ClassWeight,
    #[serde(default = "default_min_level_count")]
    min_level_count: usize,
    candidates: Vec<Candidate>,
    calibration: CalibrationMethod,
    gates: Gates,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    oracle: Option<Oracle>,
}

fn default_min_level_count() -> usize {
    20
}

/// A checked model spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// Model name: the registry directory.
    pub name: String,
    /// What it predicts, for people.
    pub description: String,
    /// Where the examples come from.
    pub source: Source,
    /// A SQL expression identifying an example (matched with the oracle's keys).
    pub key: Option<String>,
    /// The boolean label column.
    pub label: String,
    /// The example timestamp column.
    pub timestamp: String,
    /// Feature columns.
    pub features: Features,
    /// Train / validation / test split.
    pub split: Split,
    /// Class weights.
    pub class_weight: ClassWeight,
    /// Levels seen fewer times in training share the "other" column.
    pub min_level_count: usize,
    /// Candidates, fitted in order.
    pub candidates: Vec<Candidate>,
    /// Calibration of the champion on the validation window.
    pub calibration: CalibrationMethod,
    /// Promotion gates.
    pub gates: Gates,
    /// Seed of every random choice.
    pub seed: u64,
    /// Ground truth, for simulated sources.
    pub oracle: Option<Oracle>,
    /// The YAML it was parsed from: saved beside each model fitted from it and part of
    /// the model's version hash.
    #[serde(skip)]
    pub text: String,
}

/// A lowercase SQL identifier, safe to quote.
fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl ModelSpec {
    /// Parses and checks a spec.
    pub fn from_yaml(yaml: &str) -> Result<Self, SpecError> {
        let raw: RawSpec = serde_saphyr::from_str(yaml)?;
        if !is_identifier(&raw.name) {
            return Err(field("name", "must be a lowercase identifier"));
        }
        match (&raw.source.relation, &raw.source.query) {
            (Some(relation), None) => {
                if !relation.split('.').all(is_identifier) || relation.split('.').count() > 2 {
                    return Err(field(
                        "source.relation",
                        "must be [schema.]name in lowercase",
                    ));
                }
            }
            (None, Some(query)) if !query.trim().is_empty() => {}
            _ => return Err(field("source", "give exactly one of relation and query")),
        }
        let mut seen = HashSet::new();
        let columns = [("label", &raw.label), ("timestamp", &raw.timestamp)]
            .into_iter()
            .chain(raw.features.numeric.iter().map(|f| ("features.numeric", f)))
            .chain(
                raw.features
                    .categorical
                    .iter()
                    .map(|f| ("features.categorical", f)),
            )
            .chain(match &raw.split {
                Split::Column(c) => Some(("split.column", c)),
                Split::Time(_) => None,
            });
        for (name, column) in columns {
            if !is_identifier(column) {
                return Err(field(
                    name,
                    format!("{column:?} is not a lowercase column name"),
                ));
            }
            if !seen.insert(column.as_str()) {
                return Err(field(name, format!("{column} is used twice")));
            }
        }
        if raw.key.as_ref().is_some_and(|k| k.trim().is_empty()) {
            return Err(field("key", "must not be empty"));
        }
        if raw.features.numeric.is_empty() && raw.features.categorical.is_empty() {
            return Err(field("features", "list at least one feature"));
        }
        if let Split::Time(t) = raw.split
            && (t.validation_days == 0 || t.test_days == 0)
        {
            return Err(field(
                "split.time",
                "validation_days and test_days must be at least 1",
            ));
        }
        if raw.candidates.is_empty() {
            return Err(field("candidates", "list at least one candidate"));
        }
        let mut names = HashSet::new();
        for c in &raw.candidates {
            if !is_identifier(&c.name) || !names.insert(c.name.as_str()) {
                return Err(field(
                    "candidates",
                    format!("{:?}: names must be unique lowercase identifiers", c.name),
                ));
            }
            check_algorithm(&c.algorithm)?;
        }
        if !(0.5..=1.0).contains(&raw.gates.min_test_auc) {
            return Err(field("gates.min_test_auc", "must be in [0.5, 1]"));
        }
        if !(0.0..=0.5).contains(&raw.gates.max_auc_regression) {
            return Err(field("gates.max_auc_regression", "must be in [0, 0.5]"));
        }
        if raw.oracle.is_some() && raw.key.is_none() {
            return Err(field("oracle", "needs the spec's key to match examples"));
        }
        Ok(ModelSpec {
            name: raw.name,
            description: raw.description,
            source: raw.source,
            key: raw.key,
            label: raw.label,
            timestamp: raw.timestamp,
            features: raw.features,
            split: raw.split,
            class_weight: raw.class_weight,
            min_level_count: raw.min_level_count.max(1),
            candidates: raw.candidates,
            calibration: raw.calibration,
            gates: raw.gates,
            seed: raw.seed,
            oracle: raw.oracle,
            text: yaml.to_owned(),
        })
    }
}

fn check_algorithm(algorithm: &Algorithm) -> Result<(), SpecError> {
    match *algorithm {
        Algorithm::Logistic {
            l2,
            max_iterations,
            max_rows,
        } => {
            if !(l2 >= 0.0 && l2.is_finite()) {
                return Err(field("candidates.l2", "must be ≥ 0"));
            }
            if max_iterations == 0 || max_rows == 0 {
                return Err(field(
                    "candidates",
                    "max_iterations and max_rows must be ≥ 1",
                ));
            }
        }
        Algorithm::Gbm {
            trees,
            max_depth,
            learning_rate,
            early_stopping_rounds,
            min_leaf_weight,
            l2,
        } => {
            if trees == 0 || !(1..=16).contains(&max_depth) {
                return Err(field(
                    "candidates",
                    "gbm needs trees ≥ 1 and max_depth in 1..=16",
                ));
            }
            if !(learning_rate > 0.0 && learning_rate <= 1.0) {
                return Err(field("candidates.learning_rate", "must be in (0, 1]"));
            }
            if early_stopping_rounds == 0
                || min_leaf_weight.is_nan()
                || min_leaf_weight < 0.0
                || l2.is_nan()
                || l2 < 0.0
            {
                return Err(field(
                    "candidates",
                    "early_stopping_rounds ≥ 1, min_leaf_weight ≥ 0 and l2 ≥ 0",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name: toy
source: { relation: gold.toy, where: complete }
key: id
label: y
timestamp: at
features: { numeric: [a, b], categorical: [kind] }
split: { time: { validation_days: 2, test_days: 3, gap_days: 1 } }
candidates:
  - { name: lr, algorithm: logistic, l2: 0.5 }
  - { name: trees, algorithm: gbm, trees: 50, max_depth: 3 }
calibration: platt
gates: { min_test_auc: 0.65, max_auc_regression: 0.01 }
oracle: { query: "SELECT id AS key, p AS probability FROM truth" }
"#;

    #[test]
    fn a_spec_parses_with_defaults() {
        let spec = ModelSpec::from_yaml(SPEC).unwrap();
        assert_eq!(spec.name, "toy");
        assert_eq!(spec.source.filter.as_deref(), Some("complete"));
        assert_eq!(
            spec.split,
            Split::Time(TimeSplit {
                validation_days: 2,
                test_days: 3,
                gap_days: 1
            })
        );
        assert_eq!(spec.class_weight, ClassWeight::None);
        assert_eq!(
            spec.candidates[0].algorithm,
            Algorithm::Logistic {
                l2: 0.5,
                max_iterations: 200,
                max_rows: 500_000
            }
        );
        assert!(matches!(
            spec.candidates[1].algorithm,
            Algorithm::Gbm {
                trees: 50,
                max_depth: 3,
                early_stopping_rounds: 20,
                ..
            }
        ));
        assert_eq!(spec.min_level_count, 20);
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        let cases = [
            ("name: toy", "name: Toy", "name"),
            ("numeric: [a, b]", "numeric: [a, a]", "features.numeric"),
            ("numeric: [a, b]", "numeric: [a, y]", "features.numeric"),
            (
                "numeric: [a, b]",
                "numeric: [\"a; DROP\"]",
                "features.numeric",
            ),
            ("test_days: 3", "test_days: 0", "split.time"),
            (
                "min_test_auc: 0.65",
                "min_test_auc: 1.5",
                "gates.min_test_auc",
            ),
            ("trees: 50", "trees: 0", "candidates"),
            (
                "relation: gold.toy,",
                "relation: gold.toy, query: x,",
                "source",
            ),
            ("key: id\n", "", "oracle"),
        ];
        for (from, to, field_name) in cases {
            let yaml = SPEC.replace(from, to);
            assert_ne!(yaml, SPEC, "{from}");
            let err = ModelSpec::from_yaml(&yaml).unwrap_err();
            assert!(
                matches!(&err, SpecError::Field { field, .. } if field == field_name),
                "{from} → {to}: {err}"
            );
        }
        let unknown = SPEC.replace("calibration: platt", "calibration: platt\ncalibrate: true");
        assert!(matches!(
            ModelSpec::from_yaml(&unknown),
            Err(SpecError::Yaml(_))
        ));
        let typo = SPEC.replace("max_depth: 3", "max_depht: 3");
        assert!(ModelSpec::from_yaml(&typo).is_err());
    }
}
