//! `nudge-train fit`: spec-driven training. A spec (`spec`) names a Postgres source; its
//! examples are read into columns (`dataset`), split by time or by a column (`split`),
//! checked for leaks (`leakage`), encoded, fitted by each candidate (`fit`), the best on
//! validation calibrated and measured on test, and saved with its card (`card`) in the
//! registry; `promotion` applies the spec's gates.

pub mod card;
pub mod dataset;
pub mod fit;
pub mod leakage;
pub mod spec;
pub mod split;
pub mod train;

/// Why training, evaluation or promotion failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The spec was refused.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The registry or an artifact failed.
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    /// A numeric feature has a type the trainer does not read.
    #[error(
        "column {column} is {found}; cast numeric features to an integer, real, double or boolean"
    )]
    ColumnType {
        /// The column.
        column: String,
        /// Its SQL type.
        found: String,
    },
    /// An example without label or timestamp.
    #[error("an example has a null {label} or {timestamp}; filter such rows in the spec's source")]
    NullLabelOrTime {
        /// Label column.
        label: String,
        /// Timestamp column.
        timestamp: String,
    },
    /// A split column value other than train, valid or test.
    #[error("split column {column} holds {value:?}; expected train, valid or test")]
    SplitValue {
        /// The column.
        column: String,
        /// The value.
        value: String,
    },
    /// A part of the split has no examples.
    #[error("the {0} part of the split has no examples; widen the data or shorten the windows")]
    EmptyPart(&'static str),
    /// A part holds one class only.
    #[error("the {0} part holds only one class; AUC and calibration need both")]
    OneClass(&'static str),
    /// A feature predicts the label (almost) perfectly on its own.
    #[error(
        "feature {feature} alone separates the label (AUC {auc:.3} on training examples): a leak of the label? Remove it from the spec"
    )]
    Leakage {
        /// The feature.
        feature: String,
        /// Its single-feature AUC (oriented ≥ 0.5).
        auc: f64,
    },
    /// An algorithm failed to fit.
    #[error("candidate {candidate}: {reason}")]
    Fit {
        /// The candidate.
        candidate: String,
        /// What went wrong.
        reason: String,
    },
    /// Promotion refused, with every reason.
    #[error("promotion of {name} {version} refused: {}", reasons.join("; "))]
    Refused {
        /// Model name.
        name: String,
        /// The version.
        version: String,
        /// Every gate it fails.
        reasons: Vec<String>,
    },
    /// A card could not be read or written.
    #[error("model card {path}: {reason}")]
    Card {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}
