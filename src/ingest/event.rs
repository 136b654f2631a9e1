//! Turning one raw event (PostHog's JSON shape) into a stored event or a reject reason.
//!
//! Pure functions over plain data: nothing here touches the network or the database.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::catalog::{Catalog, PropertyViolation};
use super::hashing::UserHasher;

/// Namespace of the deterministic (v5) uuids given to events sent without one.
const EVENT_UUID_NAMESPACE: Uuid = Uuid::from_u128(0x8f1c_2b7e_4d0a_4e55_9a63_1c7d_0b2e_5f41);

/// The consent event, whose `granted` property switches storage for its user.
pub const CONSENT_EVENT: &str = "consent_analytics_changed";

/// Where a batch of events came from; stored with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The signed PostHog webhook destination (`POST /v1/events`).
    Webhook,
    /// The PostHog capture API (`/batch/`, `/capture/`, `/e/`, `/i/v0/e/`).
    Capture,
    /// The population simulator.
    Simulator,
}

impl Source {
    /// The name stored in the `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Capture => "capture",
            Source::Simulator => "simulator",
        }
    }
}

/// An event that passed the catalog: ids hashed, properties whitelisted.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The client's event uuid, or a deterministic one derived from the event.
    pub uuid: Uuid,
    /// Catalog event name.
    pub event: String,
    /// Keyed hash of the distinct id.
    pub user_hash: String,
    /// When the event happened (client time).
    pub timestamp: DateTime<Utc>,
    /// Whitelisted, type-checked properties.
    pub properties: Map<String, Value>,
}

impl StoredEvent {
    /// For a consent event, whether consent was granted.
    pub fn consent_granted(&self) -> Option<bool> {
        (self.event == CONSENT_EVENT)
            .then(|| self.properties.get("granted").and_then(Value::as_bool))
            .flatten()
    }
}

/// Why one event of a request was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The batch element is not a JSON object.
    NotAnObject,
    /// No `event` name.
    MissingEvent,
    /// The event name is not in the catalog.
    UnknownEvent,
    /// No `distinct_id` (top level or in properties).
    MissingDistinctId,
    /// No `timestamp`.
    MissingTimestamp,
    /// `timestamp` is not RFC 3339.
    InvalidTimestamp,
    /// `uuid` is present but not a uuid.
    InvalidUuid,
    /// A required property is absent.
    MissingProperty(String),
    /// A property has the wrong type or value.
    InvalidProperty(String),
    /// The event carries a project token other than the configured one.
    WrongToken,
    /// The user withdrew analytics consent before this event.
    ConsentWithdrawn,
}

impl RejectReason {
    /// Stable machine-readable code, used in responses, the rejects table and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingEvent => "missing_event",
            RejectReason::UnknownEvent => "unknown_event",
            RejectReason::MissingDistinctId => "missing_distinct_id",
            RejectReason::MissingTimestamp => "missing_timestamp",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::InvalidUuid => "invalid_uuid",
            RejectReason::MissingProperty(_) => "missing_property",
            RejectReason::InvalidProperty(_) => "invalid_property",
            RejectReason::WrongToken => "wrong_token",
            RejectReason::ConsentWithdrawn => "consent_withdrawn",
        }
    }

    /// The field the reason is about, when there is one.
    pub fn field(&self) -> Option<String> {
        match self {
            RejectReason::MissingEvent | RejectReason::UnknownEvent => Some("event".into()),
            RejectReason::MissingDistinctId => Some("distinct_id".into()),
            RejectReason::MissingTimestamp | RejectReason::InvalidTimestamp => {
                Some("timestamp".into())
            }
            RejectReason::InvalidUuid => Some("uuid".into()),
            RejectReason::MissingProperty(p) | RejectReason::InvalidProperty(p) => {
                Some(format!("properties.{p}"))
            }
            RejectReason::NotAnObject
            | RejectReason::WrongToken
            | RejectReason::ConsentWithdrawn => None,
        }
    }
}

/// One rejected element of a request, as reported to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// Position of the event in the request's batch.
    pub index: usize,
    /// Reason code.
    pub reason: &'static str,
    /// The field at fault, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The catalog event name, when the event was a catalog event (never free text).
    #[serde(skip)]
    pub event: Option<String>,
}

impl Rejected {
    /// A rejection of element `index` for `reason`.
    pub fn new(index: usize, reason: &RejectReason, event: Option<String>) -> Self {
        Self {
            index,
            reason: reason.code(),
            field: reason.field(),
            event,
        }
    }
}

/// The `distinct_id` of a raw event: top level, or in properties as posthog-js sends it.
fn distinct_id(obj: &Map<String, Value>) -> Option<String> {
    let from_props = || obj.get("properties").and_then(|p| p.get("distinct_id"));
    match obj.get("distinct_id").or_else(from_props)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks one raw event against the catalog and turns it into a [`StoredEvent`].
///
/// On failure, also returns the catalog name of the event when it has one, so rejects
/// can be counted per event without storing names that may be free text.
pub fn normalize(
    raw: &Value,
    catalog: &Catalog,
    hasher: &UserHasher,
) -> Result<StoredEvent, (RejectReason, Option<String>)> {
    let obj = raw.as_object().ok_or((RejectReason::NotAnObject, None))?;
    let name = match obj.get("event") {
        Some(Value::String(name)) if !name.is_empty() => name,
        _ => return Err((RejectReason::MissingEvent, None)),
    };
    let rule = catalog
        .event(name)
        .ok_or((RejectReason::UnknownEvent, None))?;
    let fail = |reason| (reason, Some(rule.name.clone()));

    let user = distinct_id(obj).ok_or_else(|| fail(RejectReason::MissingDistinctId))?;
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => return Err(fail(RejectReason::MissingTimestamp)),
        Some(Value::String(ts)) => DateTime::parse_from_rfc3339(ts)
            .map_err(|_| fail(RejectReason::InvalidTimestamp))?
            .with_timezone(&Utc),
        Some(_) => return Err(fail(RejectReason::InvalidTimestamp)),
    };
    let properties = rule
        .filter_properties(obj.get("properties").and_then(Value::as_object), |id| {
            hasher.hash(id)
        })
        .map_err(|violation| {
            fail(match violation {
                PropertyViolation::Missing(p) => RejectReason::MissingProperty(p),
                PropertyViolation::Invalid(p) => RejectReason::InvalidProperty(p),
            })
        })?;
    let user_hash = hasher.hash(&user);
    let uuid = match obj.get("uuid") {
        None | Some(Value::Null) => derived_uuid(&rule.name, &user_hash, &timestamp, &properties),
        Some(Value::String(s)) => {
            Uuid::parse_str(s).map_err(|_| fail(RejectReason::InvalidUuid))?
        }
        Some(_) => return Err(fail(RejectReason::InvalidUuid)),
    };
    Ok(StoredEvent {
        uuid,
        event: rule.name.clone(),
        user_hash,
        timestamp,
        properties,
    })
}

/// A uuid that is the same whenever the same event is sent again without one.
fn derived_uuid(
    event: &str,
    user_hash: &str,
    timestamp: &DateTime<Utc>,
    properties: &Map<String, Value>,
) -> Uuid {
    // serde_json's Map is ordered by key, so this text is canonical.
    let properties = serde_json::to_string(properties).unwrap_or_default();
    let canonical = format!(
        "{event}\u{0}{user_hash}\u{0}{}\u{0}{properties}",
        timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    Uuid::new_v5(&EVENT_UUID_NAMESPACE, canonical.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::catalog::{EventRule, PropertyType};
    use proptest::prelude::*;
    use serde_json::json;

    fn fixture() -> (Catalog, UserHasher) {
        (Catalog::builtin().unwrap(), UserHasher::new(b"test-key"))
    }

    fn reason(raw: Value) -> RejectReason {
        let (catalog, hasher) = fixture();
        normalize(&raw, &catalog, &hasher)
            .expect_err("should be rejected")
            .0
    }

    #[test]
    fn a_valid_event_is_hashed_and_whitelisted() {
        let (catalog, hasher) = fixture();
        let raw = json!({
            "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "event": "app_opened",
            "distinct_id": "u_42", "timestamp": "2026-11-22T18:05:00+01:00",
            "properties": {"source": "push", "$ip": "10.0.0.1", "$set": {"email": "a@b.c"}}
        });
        let ev = normalize(&raw, &catalog, &hasher).unwrap();
        assert_eq!(ev.user_hash, hasher.hash("u_42"));
        assert_eq!(ev.timestamp.to_rfc3339(), "2026-11-22T17:05:00+00:00");
        assert_eq!(Value::Object(ev.properties), json!({"source": "push"}));
        assert_eq!(ev.uuid.to_string(), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    }

    #[test]
    fn distinct_id_is_also_read_from_properties() {
        let (catalog, hasher) = fixture();
        let raw = json!({"event": "push_opt_out", "timestamp": "2026-11-22T18:05:00Z",
                         "properties": {"distinct_id": "u_7"}});
        assert_eq!(
            normalize(&raw, &catalog, &hasher).unwrap().user_hash,
            hasher.hash("u_7")
        );
    }

    #[test]
    fn events_without_uuid_get_the_same_uuid_every_time() {
        let (catalog, hasher) = fixture();
        let raw = json!({"event": "app_opened", "distinct_id": "u_1",
                         "timestamp": "2026-11-22T18:05:00Z", "properties": {"source": "organic"}});
        let a = normalize(&raw, &catalog, &hasher).unwrap().uuid;
        let b = normalize(&raw, &catalog, &hasher).unwrap().uuid;
        assert_eq!(a, b);
        let mut later = raw.clone();
        later["timestamp"] = json!("2026-11-22T18:05:01Z");
        assert_ne!(a, normalize(&later, &catalog, &hasher).unwrap().uuid);
    }

    #[test]
    fn each_defect_has_its_own_reason() {
        let ok = json!({"event": "app_opened", "distinct_id": "u", "timestamp": "2026-11-22T18:05:00Z",
                        "properties": {"source": "push"}});
        let with = |key: &str, value: Value| {
            let mut v = ok.clone();
            v[key] = value;
            v
        };
        let without = |key: &str| {
            let mut v = ok.clone();
            v.as_object_mut().unwrap().remove(key);
            v
        };
        assert_eq!(reason(json!([1])), RejectReason::NotAnObject);
        assert_eq!(reason(without("event")), RejectReason::MissingEvent);
        assert_eq!(
            reason(with("event", json!("teleported"))),
            RejectReason::UnknownEvent
        );
        assert_eq!(
            reason(without("distinct_id")),
            RejectReason::MissingDistinctId
        );
        assert_eq!(reason(without("timestamp")), RejectReason::MissingTimestamp);
        assert_eq!(
            reason(with("timestamp", json!("yesterday"))),
            RejectReason::InvalidTimestamp
        );
        assert_eq!(
            reason(with("uuid", json!("not-a-uuid"))),
            RejectReason::InvalidUuid
        );
        assert_eq!(
            reason(with("properties", json!({"source": 3}))),
            RejectReason::InvalidProperty("source".into())
        );
        assert_eq!(
            reason(with("properties", json!({}))),
            RejectReason::MissingProperty("source".into())
        );
    }

    /// Appears in every id and personal value the generated events carry, so a stored
    /// event holding any of them raw would contain it.
    const PERSONAL: &str = "Pers0nal";

    /// A value of `kind`: mostly a valid one (a user id carries [`PERSONAL`]), sometimes
    /// anything.
    fn property_value(kind: &PropertyType) -> BoxedStrategy<Value> {
        let valid = match kind {
            PropertyType::String => "[a-z_]{0,12}".prop_map(Value::from).boxed(),
            PropertyType::Integer => any::<i32>().prop_map(Value::from).boxed(),
            PropertyType::Number => (-1e6..1e6f64).prop_map(Value::from).boxed(),
            PropertyType::Boolean => any::<bool>().prop_map(Value::from).boxed(),
            PropertyType::Enum(values) => proptest::sample::select(values.clone())
                .prop_map(Value::from)
                .boxed(),
            PropertyType::UserId => "[a-z]{0,4}"
                .prop_map(|s| Value::from(format!("contact-{PERSONAL}-{s}")))
                .boxed(),
        };
        let anything = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
            Just(json!([PERSONAL])),
        ];
        prop_oneof![4 => valid, 1 => anything].boxed()
    }

    /// A raw event as a client might send it: a catalog event (or an unknown one) with
    /// its properties, valid or not, beside personal data no event may keep.
    fn any_event() -> impl Strategy<Value = Value> {
        let (catalog, _) = fixture();
        let mut rules: Vec<EventRule> = catalog.events().cloned().collect();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        proptest::sample::select(rules).prop_flat_map(|rule| {
            let properties: Vec<_> = rule
                .properties
                .iter()
                .map(|p| {
                    (
                        Just(p.name.clone()),
                        proptest::option::weighted(0.9, property_value(&p.kind)),
                    )
                })
                .collect();
            let name = prop_oneof![9 => Just(rule.name.clone()), 1 => "[a-z_]{1,10}".boxed()];
            let id_in_properties = any::<bool>();
            (name, properties, id_in_properties, any::<bool>()).prop_map(
                |(name, properties, id_in_properties, with_time)| {
                    let mut props: Map<String, Value> = properties
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v?)))
                        .collect();
                    props.insert("$ip".into(), json!(format!("10.0.0.1-{PERSONAL}")));
                    props.insert("email".into(), json!(format!("{PERSONAL}@example.com")));
                    props.insert("$set".into(), json!({"name": PERSONAL}));
                    let mut event = json!({"event": name, "properties": props});
                    let user = json!(format!("user-{PERSONAL}"));
                    if id_in_properties {
                        event["properties"]["distinct_id"] = user;
                    } else {
                        event["distinct_id"] = user;
                    }
                    if with_time {
                        event["timestamp"] = json!("2026-11-22T18:05:00Z");
                    }
                    event
                },
            )
        })
    }

    proptest! {
        #[test]
        fn a_stored_event_keeps_only_whitelisted_properties_and_no_raw_personal_data(
            raw in any_event()
        ) {
            let (catalog, hasher) = fixture();
            match normalize(&raw, &catalog, &hasher) {
                Ok(stored) => {
                    let rule = catalog.event(&stored.event).unwrap();
                    for key in stored.properties.keys() {
                        prop_assert!(rule.properties.iter().any(|p| &p.name == key), "{key}");
                    }
                    prop_assert_eq!(&stored.user_hash, &hasher.hash(&format!("user-{PERSONAL}")));
                    let kept = json!([stored.event, stored.user_hash, stored.properties]);
                    prop_assert!(!kept.to_string().contains(PERSONAL), "{kept}");
                }
                // A reject names an event only when it is a catalog one.
                Err((_, Some(name))) => prop_assert!(catalog.event(&name).is_some()),
                Err((_, None)) => {}
            }
        }
    }

    #[test]
    fn reject_codes_name_their_field() {
        let r = Rejected::new(3, &RejectReason::InvalidProperty("granted".into()), None);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"index": 3, "reason": "invalid_property", "field": "properties.granted"})
        );
    }
}
