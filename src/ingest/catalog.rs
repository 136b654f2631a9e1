//! The event catalog: which events are stored and which of their properties are kept.
//!
//! The catalog is data (`policy/event_catalog.yaml`), parsed once into a [`Catalog`]
//! whose invariants (known types, non-empty enums, no personal-data keys) hold from
//! then on, so the ingest path never re-checks them.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value};

/// The catalog shipped with this build.
pub const BUILTIN_CATALOG_YAML: &str = include_str!("../../policy/event_catalog.yaml");

/// The longest string property kept; longer values are rejected, since they are free text.
pub const MAX_STRING_LEN: usize = 128;

/// Property keys that name personal data. The catalog refuses to whitelist them.
const PERSONAL_DATA_KEYS: &[&str] = &[
    "email",
    "$email",
    "name",
    "$name",
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "phone_number",
    "$phone",
    "ip",
    "$ip",
    "address",
    "text",
    "message",
    "note",
    "notes",
    "body",
    "comment",
];

/// Why a catalog file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The YAML did not parse into the catalog's shape.
    #[error("event catalog is not valid YAML for the catalog schema: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    /// An enum property lists no values.
    #[error("event catalog: {event}.{property} is an enum without values")]
    EmptyEnum {
        /// Event name.
        event: String,
        /// Property name.
        property: String,
    },
    /// `values` given for a property that is not an enum.
    #[error("event catalog: {event}.{property} lists values but is not an enum")]
    ValuesOnNonEnum {
        /// Event name.
        event: String,
        /// Property name.
        property: String,
    },
    /// A property key that names personal data was whitelisted.
    #[error("event catalog: {event}.{property} names personal data and may not be stored")]
    PersonalData {
        /// Event name.
        event: String,
        /// Property name.
        property: String,
    },
}

/// The type name of a whitelisted property, as written in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TypeName {
    String,
    Integer,
    Number,
    Boolean,
    Enum,
    UserId,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertySpec {
    #[serde(rename = "type")]
    kind: TypeName,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    description: String,
    #[serde(default)]
    properties: BTreeMap<String, PropertySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    events: BTreeMap<String, EventSpec>,
}

/// A property's checked type.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyType {
    /// Short identifier-like text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of a fixed set of values (never empty).
    Enum(Vec<String>),
    /// Another distinct id; stored only as its keyed hash.
    UserId,
}

/// One whitelisted property of an event.
#[derive(Debug, Clone)]
pub struct PropertyRule {
    /// Property key as sent by clients.
    pub name: String,
    /// Its type.
    pub kind: PropertyType,
    /// Whether an event without it is rejected.
    pub required: bool,
}

/// The rules of one catalog event.
#[derive(Debug, Clone)]
pub struct EventRule {
    /// Event name.
    pub name: String,
    /// What the event means, from the catalog.
    pub description: String,
    /// Whitelisted properties, in catalog order.
    pub properties: Vec<PropertyRule>,
}

/// A property value that does not fit its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyViolation {
    /// A required property is absent.
    Missing(String),
    /// A property has the wrong type, an unknown enum value, or is too long.
    Invalid(String),
}

/// The validated event catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    events: HashMap<String, EventRule>,
}

impl Catalog {
    /// Parses and checks a catalog document.
    pub fn from_yaml(yaml: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = serde_saphyr::from_str(yaml)?;
        let mut events = HashMap::with_capacity(file.events.len());
        for (event, spec) in file.events {
            let mut properties = Vec::with_capacity(spec.properties.len());
            for (property, prop) in spec.properties {
                if PERSONAL_DATA_KEYS.contains(&property.to_ascii_lowercase().as_str()) {
                    return Err(CatalogError::PersonalData { event, property });
                }
                let kind = match (prop.kind, prop.values) {
                    (TypeName::Enum, values) if values.is_empty() => {
                        return Err(CatalogError::EmptyEnum { event, property });
                    }
                    (TypeName::Enum, values) => PropertyType::Enum(values),
                    (_, values) if !values.is_empty() => {
                        return Err(CatalogError::ValuesOnNonEnum { event, property });
                    }
                    (TypeName::String, _) => PropertyType::String,
                    (TypeName::Integer, _) => PropertyType::Integer,
                    (TypeName::Number, _) => PropertyType::Number,
                    (TypeName::Boolean, _) => PropertyType::Boolean,
                    (TypeName::UserId, _) => PropertyType::UserId,
                };
                properties.push(PropertyRule {
                    name: property,
                    kind,
                    required: prop.required,
                });
            }
            let rule = EventRule {
                name: event.clone(),
                description: spec.description,
                properties,
            };
            events.insert(event, rule);
        }
        Ok(Self { events })
    }

    /// The catalog compiled into this build.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::from_yaml(BUILTIN_CATALOG_YAML)
    }

    /// The rules of `event`, if it is in the catalog.
    pub fn event(&self, event: &str) -> Option<&EventRule> {
        self.events.get(event)
    }

    /// Every event's rules, in no particular order.
    #[cfg(test)]
    pub(crate) fn events(&self) -> impl Iterator<Item = &EventRule> {
        self.events.values()
    }
}

impl EventRule {
    /// Keeps the whitelisted properties of `raw` (checked against their types) and drops
    /// the rest. `hash_user_id` turns a `user_id` property into its keyed hash.
    pub fn filter_properties(
        &self,
        raw: Option<&Map<String, Value>>,
        hash_user_id: impl Fn(&str) -> String,
    ) -> Result<Map<String, Value>, PropertyViolation> {
        let mut kept = Map::new();
        for rule in &self.properties {
            let value = raw
                .and_then(|props| props.get(&rule.name))
                .filter(|v| !v.is_null());
            let Some(value) = value else {
                if rule.required {
                    return Err(PropertyViolation::Missing(rule.name.clone()));
                }
                continue;
            };
            let invalid = || PropertyViolation::Invalid(rule.name.clone());
            let stored = match (&rule.kind, value) {
                // Postgres stores no NUL character: one would fail the event's whole batch.
                (PropertyType::String, Value::String(s))
                    if s.chars().count() <= MAX_STRING_LEN && !s.contains('\0') =>
                {
                    value.clone()
                }
                (PropertyType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                    value.clone()
                }
                (PropertyType::Number, Value::Number(_)) => value.clone(),
                (PropertyType::Boolean, Value::Bool(_)) => value.clone(),
                (PropertyType::Enum(values), Value::String(s)) if values.contains(s) => {
                    value.clone()
                }
                (PropertyType::UserId, Value::String(s)) if !s.is_empty() => {
                    Value::String(hash_user_id(s))
                }
                _ => return Err(invalid()),
            };
            kept.insert(rule.name.clone(), stored);
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn builtin_catalog_parses_and_holds_the_core_events() {
        let catalog = Catalog::builtin().expect("builtin catalog");
        for name in [
            "$identify",
            "app_opened",
            "notification_sent",
            "notification_opened",
            "consent_analytics_changed",
            "paywall_view",
            "trial_started",
            "push_opt_out",
        ] {
            assert!(catalog.event(name).is_some(), "{name} missing from catalog");
        }
    }

    #[test]
    fn personal_data_keys_are_refused() {
        let yaml =
            "events:\n  x:\n    description: d\n    properties:\n      Email: { type: string }\n";
        assert!(matches!(
            Catalog::from_yaml(yaml),
            Err(CatalogError::PersonalData { .. })
        ));
    }

    #[test]
    fn empty_enums_and_unknown_types_are_refused() {
        let empty = "events:\n  x:\n    description: d\n    properties:\n      p: { type: enum, values: [] }\n";
        assert!(matches!(
            Catalog::from_yaml(empty),
            Err(CatalogError::EmptyEnum { .. })
        ));
        let unknown =
            "events:\n  x:\n    description: d\n    properties:\n      p: { type: blob }\n";
        assert!(matches!(
            Catalog::from_yaml(unknown),
            Err(CatalogError::Yaml(_))
        ));
        let typo = "events:\n  x:\n    description: d\n    properties:\n      p: { type: string, requird: true }\n";
        assert!(matches!(
            Catalog::from_yaml(typo),
            Err(CatalogError::Yaml(_))
        ));
        let stray = "events:\n  x:\n    description: d\n    properties:\n      p: { type: string, values: [a] }\n";
        assert!(matches!(
            Catalog::from_yaml(stray),
            Err(CatalogError::ValuesOnNonEnum { .. })
        ));
    }

    #[test]
    fn unlisted_properties_are_dropped_and_listed_ones_checked() {
        let catalog = Catalog::builtin().unwrap();
        let rule = catalog.event("app_opened").unwrap();
        let kept = rule
            .filter_properties(
                Some(&props(
                    json!({"source": "push", "$ip": "1.2.3.4", "email": "a@b.c"}),
                )),
                |s| s.to_string(),
            )
            .unwrap();
        assert_eq!(Value::Object(kept), json!({"source": "push"}));

        let bad = rule.filter_properties(Some(&props(json!({"source": "fax"}))), |s| s.to_string());
        assert_eq!(bad, Err(PropertyViolation::Invalid("source".into())));
        let missing = rule.filter_properties(None, |s| s.to_string());
        assert_eq!(missing, Err(PropertyViolation::Missing("source".into())));
    }

    #[test]
    fn an_exception_keeps_its_level_and_fingerprint_never_its_message_or_stack() {
        let catalog = Catalog::builtin().unwrap();
        let rule = catalog.event("$exception").unwrap();
        let kept = rule
            .filter_properties(
                Some(&props(json!({
                    "$exception_level": "fatal",
                    "$exception_fingerprint": "9f86d081884c7d65",
                    "$exception_list": [{"type": "NullPointerException",
                                         "value": "contact ada@example.com has no phone",
                                         "stacktrace": {"frames": []}}],
                    "$exception_message": "contact ada@example.com has no phone",
                }))),
                |s| s.to_string(),
            )
            .unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({"$exception_level": "fatal", "$exception_fingerprint": "9f86d081884c7d65"})
        );
    }

    #[test]
    fn user_id_properties_are_hashed_and_long_strings_refused() {
        let catalog = Catalog::builtin().unwrap();
        let identify = catalog.event("$identify").unwrap();
        let kept = identify
            .filter_properties(Some(&props(json!({"$anon_distinct_id": "anon-1"}))), |s| {
                format!("h({s})")
            })
            .unwrap();
        assert_eq!(kept.get("$anon_distinct_id"), Some(&json!("h(anon-1)")));

        let paywall = catalog.event("paywall_view").unwrap();
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let res = paywall.filter_properties(Some(&props(json!({"placement": long}))), |s| s.into());
        assert_eq!(res, Err(PropertyViolation::Invalid("placement".into())));
        let int_as_string = catalog
            .event("contact_created")
            .unwrap()
            .filter_properties(Some(&props(json!({"contact_count": "3"}))), |s| s.into());
        assert_eq!(
            int_as_string,
            Err(PropertyViolation::Invalid("contact_count".into()))
        );
    }
}
