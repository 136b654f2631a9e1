//! What requests decide with: the validated policy and every served model's champion,
//! loaded together and swapped as one value, so no request sees half of a reload. A
//! reload that fails (a policy or model file refused) leaves the serving set untouched.

use std::path::Path;

use crate::features::catalog::FeatureCatalog;
use crate::models::ModelError;
use crate::models::registry::Registry;
use crate::policy::{Policy, PolicyError};

use super::served::{Served, ServedModel};

/// The policy and models one request decides with.
#[derive(Debug)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// Each served model's champion, in [`Served::ALL`] order; `None` where the registry
    /// has none yet.
    models: [Option<ServedModel>; 4],
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
    /// Reads and validates the policy and every served model's champion.
    pub fn load(
        policy_path: &Path,
        models_dir: &Path,
        catalog: &FeatureCatalog,
    ) -> Result<Self, LoadError> {
        let policy = Policy::load(policy_path)?;
        let registry = Registry::new(models_dir);
        let load = |served: Served| -> Result<Option<ServedModel>, ModelError> {
            match registry.champion(served.name())? {
                None => Ok(None),
                Some(version) => {
                    let model = registry.load(served.name(), &version)?;
                    ServedModel::new(served, model, version, catalog).map(Some)
                }
            }
        };
        let [a, b, c, d] = Served::ALL;
        Ok(Self {
            policy,
            models: [load(a)?, load(b)?, load(c)?, load(d)?],
        })
    }

    /// The champion of `served`, if one is loaded.
    pub fn model(&self, served: Served) -> Option<&ServedModel> {
        self.models[served as usize].as_ref()
    }

    /// The ranker's version, if one is loaded.
    pub fn ranker_version(&self) -> Option<&str> {
        self.model(Served::Ranker).map(|r| r.version.as_str())
    }

    /// The loaded models.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.iter().flatten()
    }
}
