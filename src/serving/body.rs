//! Request bodies: read under a size limit of their route, so an oversized body is refused
//! like every other bad input (a JSON error, 413, field `body`, that names the limit), and
//! parsed in one pass into a request's wire type, an error naming the field it is in.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http_body_util::LengthLimitError;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::error::Category;

use super::error::ApiError;
use crate::ingest::wire::PayloadError;

/// Largest body of a scheduler request (`/v1/score`, `/v1/churn`, `/v1/paywall`): 50
/// candidates with their context, or 1,000 user ids, fit in it many times over.
pub const SCHEDULER_LIMIT: usize = 1 << 20;

/// Largest body of an admin request (a rollout, a kill switch, a tick).
pub const ADMIN_LIMIT: usize = 64 << 10;

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

/// A required identifier: a non-empty string of at most `max` bytes without control
/// characters (an id has none, and Postgres refuses the NUL character outright: one such
/// id in the decision log would stop its batch).
pub fn identifier(value: Option<String>, path: &str, max: usize) -> Result<String, ApiError> {
    match value {
        Some(s) if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) => Ok(s),
        _ => Err(ApiError::invalid(
            path,
            format!(
                "required: a non-empty string of at most {max} bytes without control characters"
            ),
        )),
    }
}
