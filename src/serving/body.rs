//! Request bodies: read under a size limit of their route, so an oversized body is refused
//! like every other bad input (a JSON error, 413, field `body`, that names the limit), and
//! parsed in one pass into a request's wire type, an error naming the field it is in.
//! And response bodies: JSON, serialised in one pass into one buffer.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http_body_util::LengthLimitError;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::error::ApiError;
use crate::ingest::wire::PayloadError;

/// Largest body of a scheduler request (`/v1/score`, `/v1/churn`, `/v1/paywall`): 50
/// candidates with their context, or 1,000 user ids, fit in it many times over.
pub const SCHEDULER_LIMIT: usize = 1 << 20;

/// Largest body of an admin request (a rollout, a kill switch, a tick).
pub const ADMIN_LIMIT: usize = 64 << 10;

/// Bytes reserved for a JSON response: a score answer for 5 candidates (about 620 bytes)
/// fits, and a larger one grows its buffer a few times.
const RESPONSE_CAPACITY: usize = 1024;

/// A JSON response of every route. Unlike axum's `Json`, which writes through `io::Write`
/// into a buffer grown from 128 bytes, the value is serialised straight into a vector of
/// 1 KiB: a score answer in 1.1 µs instead of 2.3 (BENCHMARKS.md, "The pure steps of a
/// request").
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(RESPONSE_CAPACITY);
        if let Err(error) = serde_json::to_writer(&mut body, &self.0) {
            // Only a map with keys that are not strings fails, and no answer has one;
            // the error body itself is plain strings.
            tracing::error!(%error, "response not serialisable");
            return ApiError::Internal.into_response();
        }
        let json = HeaderValue::from_static("application/json");
        ([(header::CONTENT_TYPE, json)], body).into_response()
    }
}

/// A request body of at most `LIMIT` bytes.
pub struct LimitedBody<const LIMIT: usize>(pub Bytes);

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for LimitedBody<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        match axum::body::to_bytes(request.into_body(), LIMIT).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(error) => {
                let message = error.to_string();
                Err(if error.into_inner().is::<LengthLimitError>() {
                    ApiError::Payload(PayloadError::TooLarge { limit: LIMIT })
                } else {
                    ApiError::UnreadableBody(message)
                })
            }
        }
    }
}

/// Parses `json`, which must be one JSON object, into `T`. An error names the field it
/// is in (`user_id`, `candidates[2].id`), else `body`.
pub fn json_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, ApiError> {
    let not_json = |e: serde_json::Error| ApiError::invalid("body", format!("not JSON: {e}"));
    // Checked first: a struct would also deserialise from an array, field by position.
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(json) {
            Ok(_) => ApiError::invalid("body", "must be a JSON object"),
            Err(e) => not_json(e),
        });
    }
    match serde_json::from_slice(json) {
        Ok(parsed) => Ok(parsed),
        // Well-formed JSON of the wrong shape (a field of the wrong type, or given twice):
        // read again, tracking the path, only to name the field. Tracking costs an
        // allocation per key, too much for every request.
        Err(e) if e.classify() == Category::Data => {
            let mut reader = serde_json::Deserializer::from_slice(json);
            let path = serde_path_to_error::deserialize::<_, T>(&mut reader)
                .err()
                .map(|e| e.path().to_string())
                .filter(|path| path != ".");
            Err(ApiError::invalid(
                path.as_deref().unwrap_or("body"),
                e.to_string(),
            ))
        }
        Err(e) => Err(not_json(e)),
    }
}

/// The RFC 3339 time `text` at `path` of a request, in UTC.
pub fn rfc3339(text: &str, path: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.to_utc())
        .map_err(|e| ApiError::invalid(path, format!("not an RFC 3339 time: {e}")))
}

/// A required identifier of at most `MAX` characters: a non-empty string without control
/// characters (an id has none, and Postgres refuses the NUL character outright: one such id
/// in the decision log would stop its batch). Its rule is written once: requests check ids
/// with [`Identifier::parse`], and the OpenAPI document describes them with its schema.
pub struct Identifier<const MAX: usize>;

/// A user id as callers know it (hashed before anything stores it).
pub type UserId = Identifier<256>;

/// The pattern of an identifier: no character of Unicode's control category (Cc), the
/// ones `char::is_control` finds.
const WITHOUT_CONTROL_CHARACTERS: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

impl<const MAX: usize> Identifier<MAX> {
    /// Checks the identifier at `path` of a request.
    pub fn parse(value: Option<String>, path: &str) -> Result<String, ApiError> {
        match value {
            Some(s)
                if !s.is_empty()
                    && s.chars().count() <= MAX
                    && !s.chars().any(char::is_control) =>
            {
                Ok(s)
            }
            _ => Err(ApiError::invalid(
                path,
                format!(
                    "required: a non-empty string of at most {MAX} characters without control characters"
                ),
            )),
        }
    }
}

impl<const MAX: usize> utoipa::PartialSchema for Identifier<MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX))
            .pattern(Some(WITHOUT_CONTROL_CHARACTERS))
            .into()
    }
}

impl<const MAX: usize> utoipa::ToSchema for Identifier<MAX> {}

/// An IANA timezone name, as `chrono-tz` knows them (the same names a request's
/// `timezone` is checked against).
pub struct TimezoneName;

impl utoipa::PartialSchema for TimezoneName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
            .examples(["Europe/Berlin"])
            .into()
    }
}

impl utoipa::ToSchema for TimezoneName {}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn an_identifier_counts_characters_and_refuses_control_characters() {
        type Short = Identifier<3>;
        let parse = |s: &str| Short::parse(Some(s.to_owned()), "id");
        assert_eq!(parse("abc").unwrap(), "abc");
        // Three characters in six bytes: within the limit, as JSON Schema counts them.
        assert_eq!(parse("éèê").unwrap(), "éèê");
        for refused in ["", "abcd", "a\u{0}", "a\nb", "a\u{85}"] {
            let error = parse(refused).unwrap_err();
            assert_eq!(error.field(), Some("id"), "{refused:?}");
        }
        assert_eq!(Short::parse(None, "id").unwrap_err().field(), Some("id"));
    }

    #[test]
    fn an_identifier_schema_states_the_rule_parse_applies() {
        let schema = serde_json::to_value(Identifier::<3>::schema()).unwrap();
        assert_eq!(
            (
                &schema["minLength"],
                &schema["maxLength"],
                &schema["pattern"]
            ),
            (
                &serde_json::json!(1),
                &serde_json::json!(3),
                &serde_json::json!(WITHOUT_CONTROL_CHARACTERS)
            )
        );
        // The pattern's two ranges are exactly the characters `char::is_control` finds.
        let in_pattern = |c: char| matches!(c as u32, 0..=0x1F | 0x7F..=0x9F);
        assert!(
            (0..=char::MAX as u32)
                .filter_map(char::from_u32)
                .all(|c| c.is_control() == in_pattern(c))
        );
    }

    #[test]
    fn the_timezone_schema_lists_every_name_a_request_may_give() {
        let schema = serde_json::to_value(TimezoneName::schema()).unwrap();
        let names = schema["enum"].as_array().unwrap();
        assert_eq!(names.len(), chrono_tz::TZ_VARIANTS.len());
        for name in names {
            let name = name.as_str().unwrap();
            assert!(name.parse::<chrono_tz::Tz>().is_ok(), "{name}");
        }
        assert!(names.contains(&"Europe/Berlin".into()) && names.contains(&"UTC".into()));
    }

    #[test]
    fn a_time_is_read_as_rfc_3339_in_utc() {
        assert_eq!(
            rfc3339("2026-11-22T19:05:00+01:00", "now").unwrap(),
            rfc3339("2026-11-22T18:05:00Z", "now").unwrap()
        );
        assert_eq!(rfc3339("tomorrow", "at").unwrap_err().field(), Some("at"));
    }
}
