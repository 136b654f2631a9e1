//! What `/v1/score` decides with: the validated policy and the ranker champion, loaded
//! together and swapped as one value, so no request sees half of a reload. A reload that
//! fails (a policy or model file refused) leaves the serving pair untouched.

use std::path::Path;

use crate::features::catalog::FeatureCatalog;
use crate::models::ModelError;
use crate::models::registry::Registry;
use crate::policy::{Policy, PolicyError};

use super::ranker::{RANKER, Ranker};

/// The policy and models one request decides with.
#[derive(Debug)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// The ranker champion; `None` when the registry has none yet (the baseline decides).
    pub ranker: Option<Ranker>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The policy file was refused.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A model or the registry was refused.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl Loaded {
    /// Reads and validates the policy and the ranker champion.
    pub fn load(
        policy_path: &Path,
        models_dir: &Path,
        catalog: &FeatureCatalog,
    ) -> Result<Self, LoadError> {
        let policy = Policy::load(policy_path)?;
        let registry = Registry::new(models_dir);
        let ranker = match registry.champion(RANKER)? {
            None => None,
            Some(version) => {
                let model = registry.load(RANKER, &version)?;
                Some(Ranker::new(model, version, catalog)?)
            }
        };
        Ok(Self { policy, ranker })
    }

    /// The ranker's version, if one is loaded.
    pub fn ranker_version(&self) -> Option<&str> {
        self.ranker.as_ref().map(|r| r.version.as_str())
    }
}
