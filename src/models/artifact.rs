//! The saved model: a versioned JSON format of our own holding everything needed to turn
//! a raw feature row into a calibrated probability, and the one inference path that does
//! it, used by nudge-serve and by the trainer's test metrics alike.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use forust_ml::GradientBooster;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModelError;
use super::calibration::Calibration;
use super::forest::Forest;
use super::preprocess::{ModelInput, Preprocessing};

/// Version of the artifact format; a file with another is refused.
pub const FORMAT: u32 = 1;

/// File name of the artifact inside `models/<name>/<version>/`.
pub const MODEL_FILE: &str = "model.json";

/// The fitted estimator, producing log-odds from an encoded row.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Estimator {
    /// Logistic regression over the standardised columns.
    Logistic {
        /// One weight per encoded column.
        weights: Vec<f64>,
        /// The bias.
        intercept: f64,
    },
    /// Gradient-boosted trees (forust-ml, log loss); predictions are log-odds.
    Gbm {
        /// The booster as forust-ml saves it.
        booster: Box<GradientBooster>,
        /// Its trees laid out for scoring, built at the first use.
        #[serde(skip)]
        forest: OnceLock<Forest>,
    },
}

impl fmt::Debug for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Estimator::Logistic { weights, intercept } => f
                .debug_struct("Logistic")
                .field("weights", weights)
                .field("intercept", intercept)
                .finish(),
            Estimator::Gbm { booster, .. } => f
                .debug_struct("Gbm")
                .field("trees", &trees_used(booster))
                .finish(),
        }
    }
}

impl Estimator {
    /// `"logistic"` or `"gbm"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Estimator::Logistic { .. } => "logistic",
            Estimator::Gbm { .. } => "gbm",
        }
    }

    /// Log-odds of each row of `encoded` (row-major, `width` columns per row).
    pub fn logits(&self, encoded: &[f64], width: usize) -> Vec<f64> {
        match self {
            Estimator::Logistic { weights, intercept } => encoded
                .chunks_exact(width)
                .map(|row| intercept + row.iter().zip(weights).map(|(x, w)| x * w).sum::<f64>())
                .collect(),
            // Over the flattened trees: what forust-ml's batch prediction computes, without
            // allocating per tree and in a quarter of the memory.
            Estimator::Gbm { booster, forest } => forest
                .get_or_init(|| Forest::of(booster))
                .logits(encoded, width),
        }
    }

    fn accepts_width(&self, width: usize) -> bool {
        match self {
            Estimator::Logistic { weights, intercept } => {
                weights.len() == width
                    && intercept.is_finite()
                    && weights.iter().all(|w| w.is_finite())
            }
            // Walking a tree must end at a leaf without leaving the row: children come
            // after their parent, and splits read columns the encoding has.
            Estimator::Gbm { booster, .. } => {
                !booster.trees.is_empty()
                    && booster
                        .prediction_iteration
                        .is_none_or(|n| (1..=booster.trees.len()).contains(&n))
                    && booster.trees.iter().all(|tree| {
                        let nodes = tree.nodes.len();
                        nodes > 0
                            && tree.nodes.iter().enumerate().all(|(index, node)| {
                                node.is_leaf
                                    || (node.split_feature < width
                                        && [node.left_child, node.right_child, node.missing_node]
                                            .iter()
                                            .all(|&child| child > index && child < nodes))
                            })
                    })
            }
        }
    }
}

/// Trees a booster predicts with (early stopping may leave later ones unused).
pub fn trees_used(booster: &GradientBooster) -> usize {
    booster.prediction_iteration.unwrap_or(booster.trees.len())
}

/// Row-major to column-major.
pub fn to_column_major(rows_major: &[f64], rows: usize, width: usize) -> Vec<f64> {
    let mut columns = vec![0.0; rows * width];
    for (r, row) in rows_major.chunks_exact(width).enumerate() {
        for (c, &value) in row.iter().enumerate() {
            columns[c * rows + r] = value;
        }
    }
    columns
}

/// A saved model (`model.json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Artifact format ([`FORMAT`]).
    pub format: u32,
    /// The spec's name (`notif_ranker`, ...).
    pub name: String,
    /// `YYYYMMDDTHHMMSSZ-xxxxxxxx`: fit time and a hash of the parameters.
    pub version: String,
    /// The label it predicts.
    pub label: String,
    /// The winning candidate's name in the spec.
    pub candidate: String,
    /// Hash of the raw features' names and kinds in order: what a caller must supply.
    pub schema_hash: String,
    /// Raw features to encoded columns.
    pub preprocessing: Preprocessing,
    /// Encoded columns to log-odds.
    pub estimator: Estimator,
    /// Log-odds to probability.
    pub calibration: Calibration,
}

/// The schema hash of numeric and categorical feature names, in order.
pub fn schema_hash<'a>(
    numeric: impl IntoIterator<Item = &'a str>,
    categorical: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut hasher = Sha256::new();
    for name in numeric {
        hasher.update(b"numeric:");
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
    }
    for name in categorical {
        hasher.update(b"categorical:");
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize()[..8])
}

impl Model {
    /// The calibrated probability of one raw row.
    pub fn score(&self, input: &impl ModelInput) -> f64 {
        self.score_all(std::slice::from_ref(input))[0]
    }

    /// The calibrated probabilities of many raw rows: encode, estimate, calibrate.
    pub fn score_all<I: ModelInput>(&self, inputs: &[I]) -> Vec<f64> {
        self.logits(inputs)
            .into_iter()
            .map(|logit| self.calibration.apply(logit))
            .collect()
    }

    /// The uncalibrated log-odds of many raw rows.
    pub fn logits<I: ModelInput>(&self, inputs: &[I]) -> Vec<f64> {
        let width = self.preprocessing.width();
        let mut encoded = Vec::with_capacity(inputs.len() * width);
        for input in inputs {
            self.preprocessing.encode_into(input, &mut encoded);
        }
        self.estimator.logits(&encoded, width)
    }

    /// Numeric feature names, in input order.
    pub fn numeric_features(&self) -> impl Iterator<Item = &str> {
        self.preprocessing.numeric.iter().map(|n| n.name.as_str())
    }

    /// Categorical feature names, in input order.
    pub fn categorical_features(&self) -> impl Iterator<Item = &str> {
        self.preprocessing
            .categorical
            .iter()
            .map(|c| c.name.as_str())
    }

    /// Parses and checks an artifact: format, schema hash, parameter shapes.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let model: Model =
            serde_json::from_str(json).map_err(|e| ModelError::Invalid(e.to_string()))?;
        if model.format != FORMAT {
            return Err(ModelError::Invalid(format!(
                "format {} (this build reads {FORMAT})",
                model.format
            )));
        }
        let expected = schema_hash(model.numeric_features(), model.categorical_features());
        if model.schema_hash != expected {
            return Err(ModelError::Invalid(format!(
                "schema hash {} does not match its features ({expected})",
                model.schema_hash
            )));
        }
        if model.preprocessing.width() == 0 {
            return Err(ModelError::Invalid("the model has no features".into()));
        }
        if !model.preprocessing.is_valid()
            || !model.estimator.accepts_width(model.preprocessing.width())
            || !model.calibration.is_valid()
        {
            return Err(ModelError::Invalid(
                "parameters do not fit the feature encoding".into(),
            ));
        }
        Ok(model)
    }

    /// Loads and checks `dir/model.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(MODEL_FILE);
        let json = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&json).map_err(|e| match e {
            ModelError::Invalid(reason) => ModelError::Refused { path, reason },
            other => other,
        })
    }

    /// The artifact as JSON.
    pub fn to_json(&self) -> Result<String, ModelError> {
        serde_json::to_string(self).map_err(|e| ModelError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::calibration::Calibration;
    use crate::models::preprocess::{CategoricalEncoding, NumericEncoding};

    struct Row(f64, &'static str);
    impl ModelInput for Row {
        fn numeric(&self, _: usize) -> Option<f64> {
            Some(self.0)
        }
        fn categorical(&self, _: usize) -> Option<&str> {
            Some(self.1)
        }
    }

    fn logistic() -> Model {
        let preprocessing = Preprocessing {
            numeric: vec![NumericEncoding {
                name: "x".into(),
                mean: 1.0,
                scale: 2.0,
                missing_indicator: false,
                range: None,
            }],
            categorical: vec![CategoricalEncoding {
                name: "kind".into(),
                levels: vec!["a".into()],
            }],
        };
        Model {
            format: FORMAT,
            name: "test".into(),
            version: "v".into(),
            label: "y".into(),
            candidate: "logistic".into(),
            schema_hash: schema_hash(["x"], ["kind"]),
            preprocessing,
            estimator: Estimator::Logistic {
                weights: vec![2.0, 1.0, -1.0, 0.0],
                intercept: -0.5,
            },
            calibration: Calibration::None,
        }
    }

    #[test]
    fn a_row_is_encoded_estimated_and_calibrated() {
        let model = logistic();
        // (3 - 1) / 2 = 1 → 2·1 + 1 (level a) − 0.5 = 2.5.
        let p = model.score(&Row(3.0, "a"));
        assert!((p - crate::models::calibration::sigmoid(2.5)).abs() < 1e-15);
        // Another level: "other" weighs −1 → 2 − 1 − 0.5 = 0.5.
        let q = model.score(&Row(3.0, "b"));
        assert!((q - crate::models::calibration::sigmoid(0.5)).abs() < 1e-15);
        assert_eq!(model.score_all(&[Row(3.0, "a"), Row(3.0, "b")]), [p, q]);
    }

    #[test]
    fn a_saved_model_reads_back_and_a_tampered_one_is_refused() {
        let model = logistic();
        let json = model.to_json().unwrap();
        let back = Model::from_json(&json).unwrap();
        assert_eq!(back.score(&Row(0.5, "a")), model.score(&Row(0.5, "a")));

        let renamed = json.replace("\"name\":\"x\"", "\"name\":\"z\"");
        let err = Model::from_json(&renamed).unwrap_err().to_string();
        assert!(err.contains("schema hash"), "{err}");
        let short = json.replace("[2.0,1.0,-1.0,0.0]", "[2.0]");
        assert!(Model::from_json(&short).is_err());
        let future = json.replace("\"format\":1", "\"format\":2");
        assert!(
            Model::from_json(&future)
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
        assert!(Model::from_json("{not json").is_err());
    }
}
