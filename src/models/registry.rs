//! The model registry on disk: `<root>/<name>/<version>/` holds a model's files, and
//! `<root>/<name>/registry.json` points at the champion, keeping the stack of earlier
//! champions (for rollback) and a log of every change. Writes go to a temporary file or
//! directory first and are renamed into place, so a reader never sees half of one.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Model, ModelError};

/// The pointer file of a model name.
pub const POINTER_FILE: &str = "registry.json";

/// One change of champion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChampionChange {
    /// When.
    pub at: DateTime<Utc>,
    /// `promote` or `rollback`.
    pub action: String,
    /// The champion before (none for the first).
    pub from: Option<String>,
    /// The champion after.
    pub to: String,
}

/// `registry.json` of one model name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    /// Champions in the order they were promoted; the last is the current one.
    pub champions: Vec<String>,
    /// Every change, oldest first.
    pub log: Vec<ChampionChange>,
}

impl Pointer {
    /// The current champion.
    pub fn champion(&self) -> Option<&str> {
        self.champions.last().map(String::as_str)
    }
}

/// The registry rooted at a directory (`NUDGE_MODELS_DIR`).
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Registry {
    /// The registry under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Registry { root: root.into() }
    }

    /// Its root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of one version.
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    /// Writes a new version's files (`model.json` first), into a temporary directory
    /// renamed into place. Returns the version's directory.
    pub fn save(
        &self,
        name: &str,
        version: &str,
        files: &[(&str, &str)],
    ) -> Result<PathBuf, ModelError> {
        let dir = self.version_dir(name, version);
        if dir.exists() {
            return Err(ModelError::VersionExists(dir));
        }
        let staging = self.root.join(name).join(format!(".{version}.partial"));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for (file, content) in files {
            let path = staging.join(file);
            std::fs::write(&path, content).map_err(io(&path))?;
        }
        std::fs::rename(&staging, &dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Replaces one file of an existing version (a re-evaluated card).
    pub fn rewrite(
        &self,
        name: &str,
        version: &str,
        file: &str,
        content: &str,
    ) -> Result<(), ModelError> {
        let path = self.existing(name, version)?.join(file);
        write_atomically(&path, content)
    }

    /// A version's directory, if the version exists.
    pub fn existing(&self, name: &str, version: &str) -> Result<PathBuf, ModelError> {
        let dir = self.version_dir(name, version);
        if valid_component(name) && valid_component(version) && dir.is_dir() {
            Ok(dir)
        } else {
            Err(ModelError::UnknownVersion {
                name: name.into(),
                version: version.into(),
            })
        }
    }

    /// Loads one version.
    pub fn load(&self, name: &str, version: &str) -> Result<Model, ModelError> {
        Model::load(&self.existing(name, version)?)
    }

    /// Model names with at least one version, sorted.
    pub fn names(&self) -> Result<Vec<String>, ModelError> {
        let mut names = list_dirs(&self.root)?;
        names.retain(|name| {
            list_dirs(&self.root.join(name)).is_ok_and(|versions| !versions.is_empty())
        });
        Ok(names)
    }

    /// Versions of a model, oldest first (versions start with their UTC fit time).
    pub fn versions(&self, name: &str) -> Result<Vec<String>, ModelError> {
        list_dirs(&self.root.join(name))
    }

    /// The pointer of a model name (empty when it has none yet).
    pub fn pointer(&self, name: &str) -> Result<Pointer, ModelError> {
        let path = self.root.join(name).join(POINTER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(json) => serde_json::from_str(&json).map_err(|e| ModelError::Registry {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pointer::default()),
            Err(source) => Err(ModelError::Io { path, source }),
        }
    }

    /// The current champion's version.
    pub fn champion(&self, name: &str) -> Result<Option<String>, ModelError> {
        Ok(self.pointer(name)?.champion().map(str::to_owned))
    }

    /// Makes `version` the champion. Gates are the caller's business.
    pub fn set_champion(&self, name: &str, version: &str) -> Result<ChampionChange, ModelError> {
        self.existing(name, version)?;
        let mut pointer = self.pointer(name)?;
        let change = ChampionChange {
            at: Utc::now(),
            action: "promote".into(),
            from: pointer.champion().map(str::to_owned),
            to: version.into(),
        };
        pointer.champions.push(version.into());
        pointer.log.push(change.clone());
        self.write_pointer(name, &pointer)?;
        Ok(change)
    }

    /// Restores the champion before the current one.
    pub fn rollback(&self, name: &str) -> Result<ChampionChange, ModelError> {
        let mut pointer = self.pointer(name)?;
        if pointer.champions.len() < 2 {
            return Err(ModelError::NothingToRollBack(name.into()));
        }
        let from = pointer.champions.pop();
        let to = pointer.champion().unwrap_or_default().to_owned();
        self.existing(name, &to)?;
        let change = ChampionChange {
            at: Utc::now(),
            action: "rollback".into(),
            from,
            to,
        };
        pointer.log.push(change.clone());
        self.write_pointer(name, &pointer)?;
        Ok(change)
    }

    fn write_pointer(&self, name: &str, pointer: &Pointer) -> Result<(), ModelError> {
        let path = self.root.join(name).join(POINTER_FILE);
        let json = serde_json::to_string_pretty(pointer).map_err(|e| ModelError::Registry {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, &json)
    }
}

/// A name or version usable as one path component.
fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn write_atomically(path: &Path, content: &str) -> Result<(), ModelError> {
    let staging = path.with_extension("partial");
    std::fs::write(&staging, content).map_err(io(&staging))?;
    std::fs::rename(&staging, path).map_err(io(path))
}

/// Sub-directories of `dir` not starting with a dot, sorted; none when `dir` is absent.
fn list_dirs(dir: &Path) -> Result<Vec<String>, ModelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ModelError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with(versions: &[&str]) -> (Registry, PathBuf) {
        let root = std::env::temp_dir().join(format!("nudge-registry-{}", uuid::Uuid::new_v4()));
        let registry = Registry::new(&root);
        for v in versions {
            registry.save("ranker", v, &[("model.json", "{}")]).unwrap();
        }
        (registry, root)
    }

    #[test]
    fn rollback_restores_the_previous_champion_and_unwinds_in_order() {
        let (registry, root) = registry_with(&["v1", "v2", "v3"]);
        assert_eq!(registry.versions("ranker").unwrap(), ["v1", "v2", "v3"]);
        assert_eq!(registry.champion("ranker").unwrap(), None);
        assert!(matches!(
            registry.rollback("ranker"),
            Err(ModelError::NothingToRollBack(_))
        ));
        for v in ["v1", "v2", "v3"] {
            registry.set_champion("ranker", v).unwrap();
        }
        let change = registry.rollback("ranker").unwrap();
        assert_eq!(
            (change.from.as_deref(), change.to.as_str()),
            (Some("v3"), "v2")
        );
        assert_eq!(registry.champion("ranker").unwrap().as_deref(), Some("v2"));
        registry.rollback("ranker").unwrap();
        assert_eq!(registry.champion("ranker").unwrap().as_deref(), Some("v1"));
        assert!(registry.rollback("ranker").is_err());
        assert_eq!(registry.pointer("ranker").unwrap().log.len(), 5);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unknown_or_unsafe_versions_are_refused() {
        let (registry, root) = registry_with(&["v1"]);
        for bad in ["v9", "../v1", ".v1.partial", ""] {
            assert!(matches!(
                registry.set_champion("ranker", bad),
                Err(ModelError::UnknownVersion { .. })
            ));
        }
        assert_eq!(registry.names().unwrap(), ["ranker"]);
        std::fs::remove_dir_all(root).unwrap();
    }
}
