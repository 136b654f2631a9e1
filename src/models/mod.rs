//! Saved models: the artifact format and its one inference path (`artifact`, walking
//! boosted trees through `forest`), the feature encoding (`preprocess`), calibration, and
//! the on-disk registry of versions and champions (`registry`). The trainer writes here;
//! nudge-serve only reads.

pub mod artifact;
pub mod calibration;
pub mod forest;
pub mod preprocess;
pub mod registry;

use std::path::PathBuf;

pub use artifact::Model;

/// Why a model or the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An artifact's content is not a usable model.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// A saved artifact was refused, with the reason.
    #[error("{path} refused: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A registry pointer is unreadable.
    #[error("registry {path}: {reason}")]
    Registry {
        /// The pointer file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No such model version.
    #[error("no version {version} of model {name}")]
    UnknownVersion {
        /// Model name.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// A version is written once.
    #[error("{0} already exists (the same spec and data fitted twice in one second)")]
    VersionExists(PathBuf),
    /// Rollback needs an earlier champion.
    #[error("model {0} has no earlier champion to roll back to")]
    NothingToRollBack(String),
}
