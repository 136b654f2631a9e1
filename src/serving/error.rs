//! Every error a handler can return, mapped to its HTTP response in one place:
//! `{"error": {"code", "message", "field"}}` with a 4xx for the caller's mistakes and
//! 503 with `Retry-After` for a dependency the request cannot do without.

use super::body::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ingest::IngestError;
use crate::ingest::wire::{PayloadError, TokenMismatch};

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's code, message and the request field at fault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`, `overloaded`.
    pub code: &'static str,
    /// What a person should read.
    pub message: String,
    /// The request field at fault (e.g. `candidates[1].id`), or null.
    pub field: Option<String>,
}

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body could not be used.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The body could not be read (client went away, bad framing).
    #[error("request body could not be read: {0}")]
    UnreadableBody(String),
    /// The capture API's project token is wrong or missing.
    #[error(transparent)]
    WrongToken(#[from] TokenMismatch),
    /// The webhook signature header is absent.
    #[error("X-Nudge-Signature header is missing")]
    MissingSignature,
    /// The webhook signature does not match the body.
    #[error("X-Nudge-Signature does not match the body")]
    BadSignature,
    /// The endpoint is switched off in this deployment.
    #[error("{0} is not enabled on this server")]
    Disabled(&'static str),
    /// A dependency is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The online store failed; retry later.
    #[error("online store unavailable: {0}")]
    OnlineStore(#[from] crate::store::StoreError),
    /// No features are stored for the user.
    #[error("{0}")]
    UnknownUser(&'static str),
    /// A request field is missing or invalid (the field is named, e.g. `candidates[2].id`).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's path in the request.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The bearer token is missing or lacks the scope of the route.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Models and policy are not loaded yet.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The server is at its in-flight limit: the request was refused, not queued.
    #[error("server at its limit of requests in flight; retry shortly")]
    Overloaded,
    /// The request took longer than the server allows.
    #[error("request took longer than {0:?}; retry shortly")]
    TimedOut(std::time::Duration),
    /// No route has this path.
    #[error("no such route")]
    NoRoute,
    /// The route exists but not with this method (the `Allow` header lists its methods).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A bug: a handler panicked.
    #[error("internal error")]
    Internal,
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        ApiError::Unavailable(err.to_string())
    }
}

impl ApiError {
    /// A request field is missing or invalid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// This error with its field placed under `parent`: `id` under `candidates[2]` is
    /// `candidates[2].id`, and the empty field (the item itself) is `candidates[2]`.
    /// Other errors are returned as they are.
    pub fn under(self, parent: &str) -> Self {
        match self {
            ApiError::InvalidField { field, message } => ApiError::InvalidField {
                field: if field.is_empty() {
                    parent.to_owned()
                } else {
                    format!("{parent}.{field}")
                },
                message,
            },
            other => other,
        }
    }

    /// The request field at fault, as the response names it.
    #[cfg(test)]
    pub(crate) fn field(&self) -> Option<&str> {
        self.status_code_field().2
    }

    fn status_code_field(&self) -> (StatusCode, &'static str, Option<&str>) {
        match self {
            ApiError::InvalidField { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                Some(field.as_str()),
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                Some("authorization"),
            ),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", None),
            ApiError::Payload(PayloadError::TooLarge { .. }) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                Some("body"),
            ),
            ApiError::Payload(PayloadError::BadGzip(_)) => {
                (StatusCode::BAD_REQUEST, "bad_gzip", Some("body"))
            }
            ApiError::Payload(PayloadError::MalformedJson(_)) => {
                (StatusCode::BAD_REQUEST, "malformed_json", Some("body"))
            }
            ApiError::Payload(PayloadError::UnexpectedShape(_)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unexpected_shape",
                Some("body"),
            ),
            ApiError::UnreadableBody(_) => {
                (StatusCode::BAD_REQUEST, "unreadable_body", Some("body"))
            }
            ApiError::WrongToken(_) => (StatusCode::UNAUTHORIZED, "wrong_token", Some("api_key")),
            ApiError::MissingSignature => (
                StatusCode::UNAUTHORIZED,
                "missing_signature",
                Some("X-Nudge-Signature"),
            ),
            ApiError::BadSignature => (
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                Some("X-Nudge-Signature"),
            ),
            ApiError::Disabled(_) => (StatusCode::NOT_FOUND, "disabled", None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::OnlineStore(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "online_store_unavailable",
                None,
            ),
            ApiError::UnknownUser(_) => (StatusCode::NOT_FOUND, "unknown_user", Some("user_id")),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", None),
            ApiError::TimedOut(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout", None),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.status_code_field();
        match self {
            ApiError::Internal => tracing::error!(code, error = %self, "request failed"),
            // Counted in `nudge_http_refused_total`; a line per shed request would add
            // to the load that made the server shed it.
            ApiError::Overloaded => tracing::debug!(code, error = %self, "request failed"),
            _ if status.is_server_error() => tracing::warn!(code, error = %self, "request failed"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                field: field.map(str::to_owned),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
