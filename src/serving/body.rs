//! Request bodies read under a size limit of their route, so an oversized body is refused
//! like every other bad input: a JSON error (413, field `body`) that names the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http_body_util::LengthLimitError;

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
