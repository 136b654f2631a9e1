//! The request bodies PostHog sends: capture API batches and webhook destinations.
//!
//! Parsing a body either fails as a whole (the caller gets a 4xx naming the problem)
//! or yields the batch's elements, each of which is then checked on its own so one
//! bad event never costs the good ones beside it.

use std::borrow::Cow;
use std::io::Read;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::event::RejectReason;

/// The largest body accepted, compressed or not (PostHog's own batch limit).
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// The largest body accepted after gzip decompression (guards against gzip bombs).
pub const MAX_DECOMPRESSED_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Why a whole request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The body is gzip but cannot be decompressed (truncated or corrupt).
    #[error("body is not valid gzip: {0}")]
    BadGzip(String),
    /// The body, or its decompressed form, is larger than allowed.
    #[error("body is larger than {limit} bytes")]
    TooLarge {
        /// The limit that was crossed.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON is not one of the accepted shapes.
    #[error("{0}")]
    UnexpectedShape(&'static str),
}

/// Decompresses `body` when it is gzip, by declared encoding or by its magic bytes.
pub fn decode_body(body: &[u8], declared_gzip: bool) -> Result<Cow<'_, [u8]>, PayloadError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PayloadError::TooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let looks_gzip = body.starts_with(&[0x1f, 0x8b]);
    if !(declared_gzip || looks_gzip) {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::with_capacity(body.len() * 4);
    let mut decoder = flate2::read::GzDecoder::new(body).take(MAX_DECOMPRESSED_BYTES as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| PayloadError::BadGzip(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(PayloadError::TooLarge {
            limit: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(Cow::Owned(out))
}

fn parse_json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::MalformedJson(e.to_string()))
}

/// A capture API request: its events and the project token it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureBatch {
    /// The token of the `{api_key|token, batch}` wrapper, if the body had one.
    pub wrapper_token: Option<String>,
    /// The raw events, in request order.
    pub events: Vec<Value>,
}

/// Parses a capture API body: a single event, an array, or `{api_key|token, batch}`.
pub fn parse_capture(body: &[u8]) -> Result<CaptureBatch, PayloadError> {
    match parse_json(body)? {
        Value::Array(events) => Ok(CaptureBatch {
            wrapper_token: None,
            events,
        }),
        Value::Object(mut obj) => match obj.remove("batch") {
            Some(Value::Array(events)) => {
                let wrapper_token = ["api_key", "token"]
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(Value::as_str))
                    .map(str::to_owned);
                Ok(CaptureBatch {
                    wrapper_token,
                    events,
                })
            }
            Some(_) => Err(PayloadError::UnexpectedShape(
                "`batch` must be an array of events",
            )),
            None => Ok(CaptureBatch {
                wrapper_token: None,
                events: vec![Value::Object(obj)],
            }),
        },
        _ => Err(PayloadError::UnexpectedShape(
            "body must be an event, an array of events, or {api_key, batch: [...]}",
        )),
    }
}

/// The project token an event carries itself (`api_key`, `token` or `properties.token`).
pub fn event_token(event: &Value) -> Option<&str> {
    event
        .get("api_key")
        .or_else(|| event.get("token"))
        .or_else(|| event.get("properties").and_then(|p| p.get("token")))
        .and_then(Value::as_str)
}

/// Parses a webhook destination body: `{"event": {...}, "person": {...}}` or an array of
/// them. Person data is dropped here, unread. Elements without an `event` object are
/// returned as they are, so they are rejected one by one like any malformed event.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<Value>, PayloadError> {
    let unwrap = |item: Value| match item {
        Value::Object(mut obj) => obj.remove("event").unwrap_or(Value::Null),
        other => other,
    };
    match parse_json(body)? {
        Value::Array(items) => Ok(items.into_iter().map(unwrap).collect()),
        item @ Value::Object(_) => Ok(vec![unwrap(item)]),
        _ => Err(PayloadError::UnexpectedShape(
            "body must be {\"event\": {...}} or an array of them",
        )),
    }
}

/// Checks `X-Nudge-Signature: sha256=<hex>` against the HMAC-SHA-256 of the raw body,
/// in constant time.
pub fn signature_is_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// A token a request must present (the capture API's project token, a bearer scope's
/// token), kept as the MAC of it under a fixed key: a given token's MAC is compared with
/// it in constant time, which hides where two tokens differ and how long the expected one
/// is, and the expected token is MACed once, at start, not on every comparison.
pub struct ExpectedToken {
    /// The comparison's keyed MAC before any input.
    keyed: Hmac<Sha256>,
    /// The expected token's MAC.
    tag: [u8; 32],
}

impl ExpectedToken {
    /// The token requests must present.
    pub fn new(token: &str) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(b"nudge token comparison")
            .expect("HMAC accepts keys of any length");
        let mut mac = keyed.clone();
        mac.update(token.as_bytes());
        Self {
            tag: mac.finalize().into_bytes().into(),
            keyed,
        }
    }

    /// Whether `given` is the expected token, compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let mut mac = self.keyed.clone();
        mac.update(given.as_bytes());
        mac.verify_slice(&self.tag).is_ok()
    }
}

/// The project token of a capture request is wrong or absent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the project token is missing or does not match")]
pub struct TokenMismatch;

/// Screens a capture batch by project token. A wrapper token speaks for the whole batch;
/// otherwise each event's own token decides for that event, and a batch in which no
/// event carries the right token is refused as a whole.
pub fn screen_tokens<'a>(
    expected: &ExpectedToken,
    batch: &'a CaptureBatch,
) -> Result<Vec<Result<&'a Value, RejectReason>>, TokenMismatch> {
    if let Some(token) = &batch.wrapper_token {
        return if expected.matches(token) {
            Ok(batch.events.iter().map(Ok).collect())
        } else {
            Err(TokenMismatch)
        };
    }
    let screened: Vec<_> = batch
        .events
        .iter()
        .map(|ev| match event_token(ev) {
            Some(token) if expected.matches(token) => Ok(ev),
            _ => Err(RejectReason::WrongToken),
        })
        .collect();
    if !screened.is_empty() && screened.iter().all(Result::is_err) {
        return Err(TokenMismatch);
    }
    Ok(screened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use serde_json::json;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_is_detected_by_header_or_magic_bytes() {
        let body = br#"{"event":"x"}"#;
        let zipped = gzip(body);
        assert_eq!(decode_body(&zipped, false).unwrap().as_ref(), body);
        assert_eq!(decode_body(&zipped, true).unwrap().as_ref(), body);
        assert_eq!(decode_body(body, false).unwrap().as_ref(), body);
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let zipped = gzip(&[b'a'; 4096]);
        let cut = &zipped[..zipped.len() / 2];
        assert!(matches!(
            decode_body(cut, true),
            Err(PayloadError::BadGzip(_))
        ));
        assert!(matches!(
            decode_body(b"plain", true),
            Err(PayloadError::BadGzip(_))
        ));
    }

    #[test]
    fn gzip_bombs_are_refused() {
        let zipped = gzip(&vec![b' '; MAX_DECOMPRESSED_BYTES + 10]);
        assert!(zipped.len() < MAX_BODY_BYTES);
        assert_eq!(
            decode_body(&zipped, true),
            Err(PayloadError::TooLarge {
                limit: MAX_DECOMPRESSED_BYTES
            })
        );
    }

    #[test]
    fn capture_accepts_single_array_and_batch_shapes() {
        let single = parse_capture(br#"{"event":"a","api_key":"t"}"#).unwrap();
        assert_eq!((single.events.len(), single.wrapper_token), (1, None));
        assert_eq!(event_token(&single.events[0]), Some("t"));
        let array = parse_capture(br#"[{"event":"a"},{"event":"b"}]"#).unwrap();
        assert_eq!(array.events.len(), 2);
        let batch = parse_capture(br#"{"api_key":"t","batch":[{"event":"a"}]}"#).unwrap();
        assert_eq!(
            (batch.events.len(), batch.wrapper_token.as_deref()),
            (1, Some("t"))
        );
        let js = json!({"event": "a", "properties": {"token": "p"}});
        assert_eq!(event_token(&js), Some("p"));
        assert!(matches!(
            parse_capture(b"{\"batch\": 3}"),
            Err(PayloadError::UnexpectedShape(_))
        ));
        assert!(matches!(
            parse_capture(b"[{\"event\""),
            Err(PayloadError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_capture(b"42"),
            Err(PayloadError::UnexpectedShape(_))
        ));
    }

    #[test]
    fn webhook_unwraps_events_and_drops_person() {
        let one =
            parse_webhook(br#"{"event":{"event":"a"},"person":{"properties":{"email":"x"}}}"#);
        assert_eq!(one.unwrap(), vec![json!({"event": "a"})]);
        let many = parse_webhook(br#"[{"event":{"event":"a"}}, {"person":{}}, 7]"#).unwrap();
        assert_eq!(many, vec![json!({"event": "a"}), Value::Null, json!(7)]);
    }

    #[test]
    fn signatures_are_checked() {
        let body = b"{\"event\":{}}";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_is_valid(b"s3cret", body, &good));
        assert!(!signature_is_valid(b"other", body, &good));
        assert!(!signature_is_valid(b"s3cret", b"{}", &good));
        assert!(!signature_is_valid(b"s3cret", body, "sha256=zz"));
        assert!(!signature_is_valid(
            b"s3cret",
            body,
            &good.replace("sha256=", "sha1=")
        ));
    }

    #[test]
    fn tokens_screen_batches_and_events() {
        let wrapped = parse_capture(br#"{"api_key":"t","batch":[{"event":"a"}]}"#).unwrap();
        assert_eq!(
            screen_tokens(&ExpectedToken::new("t"), &wrapped)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            screen_tokens(&ExpectedToken::new("x"), &wrapped),
            Err(TokenMismatch)
        );
        let mixed = parse_capture(br#"[{"api_key":"t"},{"api_key":"x"},{}]"#).unwrap();
        let screened = screen_tokens(&ExpectedToken::new("t"), &mixed).unwrap();
        assert!(screened[0].is_ok());
        assert_eq!(screened[1], Err(RejectReason::WrongToken));
        assert_eq!(screened[2], Err(RejectReason::WrongToken));
        assert_eq!(
            screen_tokens(&ExpectedToken::new("other"), &mixed),
            Err(TokenMismatch)
        );
    }

    #[test]
    fn tokens_match_only_when_equal() {
        let expected = ExpectedToken::new("phc_abc");
        assert!(expected.matches("phc_abc"));
        assert!(!expected.matches("phc_abd"));
        assert!(!expected.matches(""));
    }
}
