//! Ingest over HTTP against a real Postgres: capture API, webhook, bad inputs, consent, PII.

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TOKEN, TestApp, app_opened, sign};
use serde_json::{Value, json};

fn batch(events: Vec<Value>) -> Value {
    json!({"api_key": TOKEN, "batch": events})
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn a_batch_is_stored_once_and_a_resend_stores_nothing_new() {
    let t = TestApp::new().await;
    let events: Vec<Value> = (0..5)
        .map(|i| app_opened(&format!("u{i}"), "2026-11-22T10:00:00Z"))
        .collect();
    let (status, body) = t.capture(&batch(events.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"accepted": 5, "duplicates": 0, "rejected": []})
    );
    let (_, again) = t.capture(&batch(events)).await;
    assert_eq!(
        again,
        json!({"accepted": 0, "duplicates": 5, "rejected": []})
    );
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 5);
    let source: String =
        t.db.scalar("SELECT DISTINCT source FROM bronze.events")
            .await;
    assert_eq!(source, "capture");
}

#[tokio::test]
async fn a_mixed_batch_keeps_its_good_events_and_names_each_bad_one() {
    let t = TestApp::new().await;
    let good = app_opened("u1", "2026-11-22T10:00:00Z");
    let mut no_ts = app_opened("u2", "2026-11-22T10:00:00Z");
    no_ts.as_object_mut().unwrap().remove("timestamp");
    let mut wrong_type = app_opened("u3", "2026-11-22T10:00:00Z");
    wrong_type["properties"]["source"] = json!(42);
    let mut unknown = app_opened("u4", "2026-11-22T10:00:00Z");
    unknown["event"] = json!("rocket_launched");
    let mut no_user = app_opened("u5", "2026-11-22T10:00:00Z");
    no_user.as_object_mut().unwrap().remove("distinct_id");
    let other_good = app_opened("u6", "2026-11-22T11:00:00Z");
    let events = vec![
        good.clone(),
        no_ts,
        wrong_type,
        unknown,
        good,
        no_user,
        json!("text"),
        other_good,
    ];

    let (status, body) = t.capture(&batch(events)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["duplicates"], 1, "the repeated uuid within the batch");
    assert_eq!(
        body["rejected"],
        json!([
            {"index": 1, "reason": "missing_timestamp", "field": "timestamp"},
            {"index": 2, "reason": "invalid_property", "field": "properties.source"},
            {"index": 3, "reason": "unknown_event", "field": "event"},
            {"index": 5, "reason": "missing_distinct_id", "field": "distinct_id"},
            {"index": 6, "reason": "not_an_object"},
        ])
    );
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 2);
    let reasons: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT event, reason FROM bronze.rejects ORDER BY id")
            .fetch_all(&t.db.pool)
            .await
            .unwrap();
    assert_eq!(reasons.len(), 5);
    assert!(
        reasons.contains(&(None, "unknown_event".into())),
        "unknown names are not stored"
    );
    assert!(reasons.contains(&(Some("app_opened".into()), "invalid_property".into())));
}

#[tokio::test]
async fn a_nul_character_in_a_string_property_rejects_that_event_alone() {
    let t = TestApp::new().await;
    let sent = |id: &str| {
        json!({"event": "notification_sent", "distinct_id": "u1",
               "timestamp": "2026-11-22T10:00:00Z",
               "properties": {"notification_id": id, "notif_type": "weekly_digest"}})
    };
    let events = vec![sent("n-1"), sent("n-\u{0}2"), sent("n-3")];
    let (status, body) = t.capture(&batch(events)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(
        body["rejected"],
        json!([{"index": 1, "reason": "invalid_property", "field": "properties.notification_id"}])
    );
}

#[tokio::test]
async fn malformed_json_gets_a_400_naming_the_body() {
    let t = TestApp::new().await;
    let (status, body) = t
        .post("/batch/", &[], "{\"api_key\": \"phc\", \"batch\": [")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_json");
    assert_eq!(body["error"]["field"], "body");
}

#[tokio::test]
async fn gzip_bodies_are_accepted_by_header_or_magic_bytes_and_truncated_ones_refused() {
    let t = TestApp::new().await;
    let payload = batch(vec![app_opened("u1", "2026-11-22T10:00:00Z")]).to_string();
    let zipped = gzip(payload.as_bytes());
    let (status, body) = t
        .post("/batch/", &[("content-encoding", "gzip")], zipped.clone())
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (StatusCode::OK, json!(1))
    );

    let payload = batch(vec![app_opened("u2", "2026-11-22T10:00:00Z")]).to_string();
    let (status, body) = t
        .post("/e/?compression=gzip-js", &[], gzip(payload.as_bytes()))
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (StatusCode::OK, json!(1))
    );

    let truncated = zipped[..zipped.len() - 12].to_vec();
    let (status, body) = t
        .post("/batch/", &[("content-encoding", "gzip")], truncated)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_gzip");
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 2);
}

#[tokio::test]
async fn every_capture_path_and_shape_is_accepted() {
    let t = TestApp::new().await;
    let mut single = app_opened("u1", "2026-11-22T10:00:00Z");
    single["api_key"] = json!(TOKEN);
    let mut js = app_opened("u2", "2026-11-22T10:00:00Z");
    js["properties"]["token"] = json!(TOKEN);
    let mut with_token = app_opened("u3", "2026-11-22T10:00:00Z");
    with_token["token"] = json!(TOKEN);
    for (path, body) in [
        ("/capture/", single),
        ("/e/", json!([js])),
        (
            "/i/v0/e/",
            json!({"token": TOKEN, "batch": [app_opened("u4", "2026-11-22T10:00:00Z")]}),
        ),
        ("/batch/", with_token),
    ] {
        let (status, resp) = t.post(path, &[], body.to_string()).await;
        assert_eq!(
            (status, resp["accepted"].clone()),
            (StatusCode::OK, json!(1)),
            "{path}: {resp}"
        );
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_stores_nothing() {
    let t = TestApp::new().await;
    let body = json!({"api_key": "phc_wrong", "batch": [app_opened("u1", "2026-11-22T10:00:00Z")]});
    let (status, resp) = t.capture(&body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp["error"]["code"], "wrong_token");
    let (status, _) = t
        .capture(&json!([app_opened("u1", "2026-11-22T10:00:00Z")]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token at all");
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 0);
}

#[tokio::test]
async fn an_oversize_body_gets_a_413_in_json() {
    let t = TestApp::new().await;
    let huge = vec![b' '; nudge::ingest::wire::MAX_BODY_BYTES + 1];
    let (status, body) = t.post("/batch/", &[], huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn the_webhook_checks_its_signature() {
    let t = TestApp::new().await;
    let body = json!([
        {"event": app_opened("u1", "2026-11-22T10:00:00Z"), "person": {"properties": {"email": "ann@example.com"}}},
        {"event": app_opened("u2", "2026-11-22T10:00:00Z")},
    ])
    .to_string();
    let (status, resp) = t.post("/v1/events", &[], body.clone()).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("missing_signature"))
    );
    let forged = sign(b"something else");
    let (status, resp) = t
        .post(
            "/v1/events",
            &[("x-nudge-signature", &forged)],
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("bad_signature"))
    );
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 0);

    let good = sign(body.as_bytes());
    let (status, resp) = t
        .post("/v1/events", &[("x-nudge-signature", &good)], body)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["accepted"], 2);
    assert_eq!(
        t.db.count("SELECT count(*) FROM bronze.events WHERE source = 'webhook'")
            .await,
        2
    );
}

#[tokio::test]
async fn disabled_endpoints_say_so() {
    let db = common::TestDb::migrated().await;
    let mut config = common::config(&db.url);
    config.webhook_secret = None;
    config.posthog_token = None;
    let app = common::app_with_pool(db.pool.clone(), &config);
    for path in ["/v1/events", "/batch/"] {
        let req = Request::post(path).body(Body::from("[]")).unwrap();
        let (status, _, body) = common::send(&app, req).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("disabled")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn personal_data_never_reaches_postgres_and_ids_are_keyed_hashes() {
    let t = TestApp::new().await;
    let mut ev = app_opened("ann.lee@example.com", "2026-11-22T10:00:00Z");
    ev["properties"]["$ip"] = json!("203.0.113.7");
    ev["properties"]["email"] = json!("ann.lee@example.com");
    ev["properties"]["phone"] = json!("+49 170 5550199");
    ev["properties"]["$set"] = json!({"name": "Ann Lee", "email": "ann.lee@example.com"});
    let (_, resp) = t.capture(&batch(vec![ev])).await;
    assert_eq!(resp["accepted"], 1);
    let everything: String =
        t.db.scalar("SELECT string_agg(e::text, ' ') FROM bronze.events e")
            .await;
    for pii in ["ann.lee", "203.0.113.7", "5550199", "Ann Lee", "$lib"] {
        assert!(!everything.contains(pii), "{pii} stored: {everything}");
    }
    assert!(everything.contains(&t.hasher.hash("ann.lee@example.com")));
}

#[tokio::test]
async fn events_without_uuid_are_idempotent_too() {
    let t = TestApp::new().await;
    let mut ev = app_opened("u1", "2026-11-22T10:00:00Z");
    ev.as_object_mut().unwrap().remove("uuid");
    let (_, first) = t.capture(&batch(vec![ev.clone()])).await;
    let (_, second) = t.capture(&batch(vec![ev])).await;
    assert_eq!(
        (first["accepted"].clone(), second["duplicates"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 1);
}

#[tokio::test]
async fn consent_withdrawal_stops_storage_until_granted_again() {
    let t = TestApp::new().await;
    let consent = |granted: bool, ts: &str| {
        json!({"uuid": uuid::Uuid::new_v4().to_string(), "event": "consent_analytics_changed",
               "distinct_id": "u1", "timestamp": ts, "properties": {"granted": granted}})
    };
    let events = vec![
        app_opened("u1", "2026-11-22T09:00:00Z"),
        consent(false, "2026-11-22T10:00:00Z"),
        app_opened("u1", "2026-11-22T11:00:00Z"),
        app_opened("u2", "2026-11-22T11:00:00Z"),
    ];
    let (_, resp) = t.capture(&batch(events)).await;
    assert_eq!(resp["accepted"], 3);
    assert_eq!(
        resp["rejected"],
        json!([{"index": 2, "reason": "consent_withdrawn"}])
    );

    // A later request is judged by the stored withdrawal.
    let (_, resp) = t
        .capture(&batch(vec![app_opened("u1", "2026-11-22T12:00:00Z")]))
        .await;
    assert_eq!(resp["rejected"][0]["reason"], "consent_withdrawn");

    let (_, resp) = t
        .capture(&batch(vec![
            consent(true, "2026-11-22T13:00:00Z"),
            app_opened("u1", "2026-11-22T14:00:00Z"),
        ]))
        .await;
    assert_eq!(resp["accepted"], 2, "{resp}");
    let u1 = t.hasher.hash("u1");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bronze.events WHERE user_hash = $1 AND event = 'app_opened'",
    )
    .bind(&u1)
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 2, "the 09:00 and 14:00 opens only");
}

#[tokio::test]
async fn identify_stores_the_anonymous_id_as_a_keyed_hash() {
    let t = TestApp::new().await;
    let identify = json!({"event": "$identify", "distinct_id": "u9", "timestamp": "2026-11-22T10:00:00Z",
                          "properties": {"$anon_distinct_id": "anon-123", "$set": {"email": "x@y.z"}}});
    let (_, resp) = t.capture(&batch(vec![identify])).await;
    assert_eq!(resp["accepted"], 1);
    let props: Value =
        t.db.scalar("SELECT properties FROM bronze.events WHERE event = '$identify'")
            .await;
    assert_eq!(
        props,
        json!({"$anon_distinct_id": t.hasher.hash("anon-123")})
    );
}

#[tokio::test]
async fn a_postgres_outage_gets_a_503_with_retry_after() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
        .unwrap();
    let app = common::app_with_pool(pool, &common::config("postgres://unused"));
    let body = batch(vec![app_opened("u1", "2026-11-22T10:00:00Z")]).to_string();
    let req = Request::post("/batch/").body(Body::from(body)).unwrap();
    let (status, headers, json) = common::send(&app, req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(json["error"]["code"], "unavailable");
}

#[tokio::test]
async fn metrics_count_ingest_by_event_and_reason_and_time_requests() {
    let t = TestApp::new().await;
    let mut bad = app_opened("u1", "2026-11-22T10:00:00Z");
    bad["properties"]["source"] = json!("carrier_pigeon");
    t.capture(&batch(vec![app_opened("u1", "2026-11-22T10:00:00Z"), bad]))
        .await;
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(t.app.clone(), req)
        .await
        .unwrap();
    let text = String::from_utf8(
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("nudge_ingest_events_total{event=\"app_opened\",outcome=\"accepted\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "nudge_ingest_rejects_total{reason=\"invalid_property\",event=\"app_opened\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "nudge_http_request_duration_seconds_bucket{route=\"/batch/\",status=\"200\""
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_multi_megabyte_batch_is_stored_whole_plain_or_gzipped() {
    let t = TestApp::new().await;
    let events = |user: &str| -> Vec<Value> {
        (0..3000)
            .map(|i| app_opened(&format!("{user}{i}"), "2026-11-22T10:00:00Z"))
            .collect()
    };
    let plain = batch(events("a")).to_string();
    assert!(
        plain.len() > 512 * 1024,
        "large enough to leave the inline path: {}",
        plain.len()
    );
    let (status, resp) = t.post("/batch/", &[], plain).await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (StatusCode::OK, json!(3000))
    );
    let zipped = gzip(batch(events("b")).to_string().as_bytes());
    let (status, resp) = t
        .post("/batch/", &[("content-encoding", "gzip")], zipped)
        .await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (StatusCode::OK, json!(3000))
    );
    assert_eq!(t.db.count("SELECT count(*) FROM bronze.events").await, 6000);
}
