//! The feature catalog (`notebooks-sql/gold/feature_catalog.yaml`): every feature's name,
//! view, type, window and meaning. One source: the snapshot table's columns, the
//! trainer's feature names and the API's are these, in this order.

use serde::Deserialize;

/// The catalog shipped with this build.
pub const BUILTIN_FEATURE_CATALOG_YAML: &str =
    include_str!("../../notebooks-sql/gold/feature_catalog.yaml");

/// The feature view a feature belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// Sessions, activity and contact work.
    UserEngagementFeatures,
    /// Notifications sent, opened, dismissed; opt-out.
    NotifHygieneFeatures,
    /// Outreach recency and the contact book.
    ContactRecencyFeatures,
}

/// What kind of value a feature holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A non-negative integer.
    Count,
    /// Hours (null before the first occurrence).
    Hours,
    /// Days (null before the first occurrence).
    Days,
    /// A share in [0, 1] (null without a denominator).
    Rate,
    /// A score in [0, 100].
    Score,
    /// A boolean.
    Flag,
    /// A band name.
    Band,
    /// An hour of the UTC day in [0, 24) (null when there is nothing to average).
    HourOfDay,
    /// An IANA timezone name (null before any is known).
    Timezone,
}

impl FeatureKind {
    /// The kind's name in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Count => "count",
            FeatureKind::Hours => "hours",
            FeatureKind::Days => "days",
            FeatureKind::Rate => "rate",
            FeatureKind::Score => "score",
            FeatureKind::Flag => "flag",
            FeatureKind::Band => "band",
            FeatureKind::HourOfDay => "hour_of_day",
            FeatureKind::Timezone => "timezone",
        }
    }

    /// The Postgres type of a snapshot column of this kind.
    pub fn sql_type(self) -> &'static str {
        match self {
            FeatureKind::Count => "integer",
            FeatureKind::Hours
            | FeatureKind::Days
            | FeatureKind::Rate
            | FeatureKind::Score
            | FeatureKind::HourOfDay => "real",
            FeatureKind::Flag => "boolean",
            FeatureKind::Band | FeatureKind::Timezone => "text",
        }
    }
}

/// One feature.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Name: the snapshot column and the API key.
    pub name: String,
    /// Its view.
    pub view: View,
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: FeatureKind,
    /// Look-back in days; `None` = all history.
    pub window: Option<u32>,
    /// What it means.
    pub meaning: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    features: Vec<Feature>,
}

/// Why a feature catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeatureCatalogError {
    /// Not the catalog's shape.
    #[error("feature catalog is not valid YAML for the catalog schema: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    /// A name is not a lowercase SQL identifier.
    #[error("feature catalog: {0:?} is not a lowercase identifier")]
    BadName(String),
    /// A name appears twice.
    #[error("feature catalog: {0} is listed twice")]
    Duplicate(String),
}

/// The checked feature catalog, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCatalog {
    features: Vec<Feature>,
    fingerprint: String,
}

impl FeatureCatalog {
    /// Parses and checks a catalog.
    pub fn from_yaml(yaml: &str) -> Result<Self, FeatureCatalogError> {
        let raw: RawCatalog = serde_saphyr::from_str(yaml)?;
        let mut seen = std::collections::HashSet::new();
        for f in &raw.features {
            let identifier = f.name.starts_with(|c: char| c.is_ascii_lowercase())
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !identifier {
                return Err(FeatureCatalogError::BadName(f.name.clone()));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(FeatureCatalogError::Duplicate(f.name.clone()));
            }
        }
        let fingerprint = fingerprint(&raw.features);
        Ok(Self {
            features: raw.features,
            fingerprint,
        })
    }

    /// The catalog compiled into this build.
    pub fn builtin() -> Result<Self, FeatureCatalogError> {
        Self::from_yaml(BUILTIN_FEATURE_CATALOG_YAML)
    }

    /// The features, in order.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// The position of feature `name` in catalog order (and in every feature row).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    /// The feature names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// A short digest of the names and kinds, in order, and of the row encoding: two
    /// catalogs with the same fingerprint encode feature rows the same way.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// 8 hex digits of SHA-256 over the row encoding and the names and kinds, in order.
fn fingerprint(features: &[Feature]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update([super::row::ROW_FORMAT]);
    for f in features {
        digest.update(f.name.as_bytes());
        digest.update(b":");
        digest.update(f.kind.as_str().as_bytes());
        digest.update(b";");
    }
    hex::encode(&digest.finalize()[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_parses() {
        let catalog = FeatureCatalog::builtin().unwrap();
        assert!(catalog.names().any(|n| n == "sessions_7d"));
        let opted_out = catalog
            .features()
            .iter()
            .find(|f| f.name == "opted_out")
            .unwrap();
        assert_eq!(
            (opted_out.view, opted_out.kind),
            (View::NotifHygieneFeatures, FeatureKind::Flag)
        );
    }

    #[test]
    fn the_fingerprint_follows_names_kinds_and_order_only() {
        let line = |name: &str, kind: &str, meaning: &str| {
            format!(
                "  - {{ name: {name}, view: notif_hygiene_features, type: {kind}, meaning: {meaning} }}\n"
            )
        };
        let catalog = |lines: &[String]| {
            FeatureCatalog::from_yaml(&format!("features:\n{}", lines.concat()))
                .unwrap()
                .fingerprint()
                .to_owned()
        };
        let base = catalog(&[line("a", "count", "x"), line("b", "rate", "y")]);
        assert_eq!(base.len(), 8);
        assert_eq!(
            base,
            catalog(&[line("a", "count", "other"), line("b", "rate", "words")])
        );
        assert_ne!(
            base,
            catalog(&[line("b", "rate", "y"), line("a", "count", "x")])
        );
        assert_ne!(
            base,
            catalog(&[line("a", "count", "x"), line("b", "score", "y")])
        );
    }

    #[test]
    fn duplicates_bad_names_and_unknown_keys_are_refused() {
        let one =
            "- { name: a_1, view: notif_hygiene_features, type: count, window: 7, meaning: m }";
        let twice = format!("features:\n  {one}\n  {one}\n");
        assert!(
            matches!(FeatureCatalog::from_yaml(&twice), Err(FeatureCatalogError::Duplicate(n)) if n == "a_1")
        );
        let bad =
            "features:\n  - { name: A-1, view: notif_hygiene_features, type: count, meaning: m }\n";
        assert!(matches!(
            FeatureCatalog::from_yaml(bad),
            Err(FeatureCatalogError::BadName(_))
        ));
        let unknown = "features:\n  - { name: a, view: notif_hygiene_features, type: count, meaning: m, sql: x }\n";
        assert!(matches!(
            FeatureCatalog::from_yaml(unknown),
            Err(FeatureCatalogError::Yaml(_))
        ));
    }
}
