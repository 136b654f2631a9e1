//! The in-flight limit and the request timeout: beyond the limit a request is refused at
//! once with 503 and Retry-After (never queued), and the server recovers as soon as a
//! request finishes; a request slower than the timeout gets a 503 too. Operational
//! routes answer regardless.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::{TestDb, app_with_pool, config, send};
use tokio::sync::{mpsc, oneshot};

/// A capture request whose body arrives only through the returned sender; the receiver
/// fires when the handler first asks for the body (the request holds its slot by then).
fn held_request() -> (
    Request<Body>,
    mpsc::Sender<Result<Bytes, std::io::Error>>,
    oneshot::Receiver<()>,
) {
    let (chunks, rx) = mpsc::channel(1);
    let (polled_tx, polled) = oneshot::channel();
    let stream = futures_util::stream::unfold(
        (rx, Some(polled_tx)),
        |(mut rx, mut polled): (mpsc::Receiver<Result<Bytes, std::io::Error>>, _)| async move {
            if let Some(p) = polled.take() {
                let _ = p.send(());
            }
            rx.recv().await.map(|chunk| (chunk, (rx, polled)))
        },
    );
    let request = Request::post("/batch/")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    (request, chunks, polled)
}

fn capture(body: &str) -> Request<Body> {
    Request::post("/batch/")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn app(db: &TestDb, max_in_flight: usize, timeout: Duration) -> Router {
    let mut cfg = config(&db.url);
    cfg.max_in_flight = max_in_flight;
    cfg.request_timeout = timeout;
    app_with_pool(db.pool.clone(), &cfg)
}

#[tokio::test]
async fn beyond_the_in_flight_limit_requests_are_refused_with_503_not_queued() {
    let db = TestDb::migrated().await;
    let app = app(&db, 1, Duration::from_secs(30)).await;
    let (held, chunks, polled) = held_request();
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, held).await }
    });
    polled.await.expect("the first request reached its handler");

    let (status, headers, body) = send(&app, capture("[]")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "overloaded");
    // Operational routes are outside the limit.
    let health = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(send(&app, health).await.0, StatusCode::OK);

    // The held request completes normally, and its slot is free again.
    let event = common::app_opened("limit-user", "2026-11-22T12:00:00Z");
    let batch = serde_json::json!({"api_key": common::TOKEN, "batch": [event]}).to_string();
    chunks.send(Ok(Bytes::from(batch))).await.unwrap();
    drop(chunks);
    let (status, _, body) = first.await.unwrap();
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::OK, &serde_json::json!(1))
    );
    let again = serde_json::json!({"api_key": common::TOKEN, "batch": []}).to_string();
    assert_eq!(send(&app, capture(&again)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_a_503() {
    let db = TestDb::migrated().await;
    let app = app(&db, 8, Duration::from_millis(100)).await;
    let (held, _chunks, _polled) = held_request();
    let (status, headers, body) = send(&app, held).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "timeout");
}
