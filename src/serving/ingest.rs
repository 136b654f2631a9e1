//! Ingest endpoints: the signed webhook (`POST /v1/events`) and the PostHog capture API.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

use super::ApiContext;
use super::body::{Json, LimitedBody};
use super::error::{ApiError, ErrorBody};
use crate::ingest::IngestReport;
use crate::ingest::event::Source;
use crate::ingest::wire;

/// Query parameters PostHog SDKs add to capture requests.
#[derive(Debug, Default, Deserialize)]
pub struct CaptureQuery {
    /// `gzip-js` (posthog-js) or `gzip` marks a gzip body.
    compression: Option<String>,
}

/// Bodies up to this size are parsed inline; larger ones on the blocking pool, so a
/// 20 MB batch never stalls the async workers that answer other requests.
const INLINE_PARSE_BYTES: usize = 256 * 1024;

/// Runs CPU-heavy body work (gunzip, JSON parsing) where it does not block other requests.
async fn parse_off_runtime<T: Send + 'static>(
    body: Bytes,
    parse: impl FnOnce(&[u8]) -> Result<T, wire::PayloadError> + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() <= INLINE_PARSE_BYTES {
        return Ok(parse(&body)?);
    }
    let parsed = tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(parsed?)
}

fn declared_gzip(headers: &HeaderMap, query: Option<&CaptureQuery>) -> bool {
    let by_header = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let by_query = query
        .and_then(|q| q.compression.as_deref())
        .is_some_and(|c| c.starts_with("gzip"));
    by_header || by_query
}

/// An ingest body's JSON: an object (an event, or a capture batch envelope) or an array
/// of events.
struct EventsPayload;

impl utoipa::PartialSchema for EventsPayload {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Object, Type::Array]))
            .into()
    }
}

impl utoipa::ToSchema for EventsPayload {}

/// The paths of PostHog's capture API, each served by [`capture`]: the SDKs post to
/// different ones.
pub const CAPTURE_PATHS: [&str; 4] = ["/batch/", "/capture/", "/e/", "/i/v0/e/"];

/// `POST /batch/`, `/capture/`, `/e/`, `/i/v0/e/` ([`CAPTURE_PATHS`]): PostHog's capture
/// API. The OpenAPI document repeats this path's description for the other three.
#[utoipa::path(post, path = "/batch/", tag = "events",
    request_body(content = inline(EventsPayload), description = "a PostHog capture payload: one event, an array of events, or {api_key|token, batch: [...]}; gzip bodies accepted"),
    responses((status = 200, body = IngestReport), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn capture(
    State(ctx): State<ApiContext>,
    Query(query): Query<CaptureQuery>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody<{ wire::MAX_BODY_BYTES }>,
) -> Result<Json<IngestReport>, ApiError> {
    let expected = ctx
        .posthog_token
        .as_ref()
        .ok_or(ApiError::Disabled("the capture API"))?;
    let gzip = declared_gzip(&headers, Some(&query));
    let batch = parse_off_runtime(body, move |b| {
        wire::parse_capture(&wire::decode_body(b, gzip)?)
    })
    .await?;
    let screened = wire::screen_tokens(expected, &batch)?;
    let report = ctx.ingestor.ingest(Source::Capture, screened).await?;
    Ok(Json(report))
}

/// `POST /v1/events`: PostHog webhook destination, signed with `X-Nudge-Signature`.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = inline(EventsPayload), description = "a webhook event ({event, person}) or an array of them"),
    params(("X-Nudge-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body>")),
    responses((status = 200, body = IngestReport), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn webhook(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody<{ wire::MAX_BODY_BYTES }>,
) -> Result<Json<IngestReport>, ApiError> {
    let secret = ctx
        .webhook_secret
        .as_deref()
        .ok_or(ApiError::Disabled("the events webhook"))?;
    let signature = headers
        .get("x-nudge-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::MissingSignature)?;
    if !wire::signature_is_valid(secret.as_bytes(), &body, signature) {
        return Err(ApiError::BadSignature);
    }
    let gzip = declared_gzip(&headers, None);
    let events = parse_off_runtime(body, move |b| {
        wire::parse_webhook(&wire::decode_body(b, gzip)?)
    })
    .await?;
    let report = ctx
        .ingestor
        .ingest(Source::Webhook, events.iter().map(Ok))
        .await?;
    Ok(Json(report))
}
