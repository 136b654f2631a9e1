//! The official PostHog Python SDK, pointed at a running nudge-serve, captures a few
//! hundred events (identify, alias, PII-laden properties, a consent withdrawal); then
//! Postgres must hold each allowed event exactly once, hashed and whitelisted.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::{TOKEN, TestDb, config};
use nudge::serving::{prepare, router};
use serde_json::Value;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Installs the SDK venv if needed and returns its python.
fn sdk_python() -> String {
    common::installed_tool(
        "tests/posthog_sdk/install.sh",
        "posthog-sdk-venv/bin/python",
    )
}

/// Runs the SDK script against `host`; returns its report of what it sent.
async fn run_sdk(python: &str, host: &str) -> Value {
    let python = python.to_owned();
    let host = host.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(format!("{MANIFEST_DIR}/tests/posthog_sdk/send_events.py"))
            .args(["--host", &host, "--token", TOKEN, "--users", "30"])
            .output()
            .expect("run the SDK script")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("SDK script report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_posthog_python_sdk_is_ingested_exactly_once_without_pii() {
    let python = sdk_python();
    let db = TestDb::migrated().await;
    let cfg = config(&db.url);
    let hasher = cfg.hasher.clone();
    let app = router(prepare(&cfg).await.expect("prepare").ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let report = run_sdk(&python, &host).await;
    let uuids = |key: &str| -> HashSet<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (kept, blocked) = (uuids("kept"), uuids("blocked"));
    assert!(kept.len() >= 300, "a few hundred events: {}", kept.len());
    assert!(!blocked.is_empty());

    let stored: Vec<(String, String, String, Value)> =
        sqlx::query_as("SELECT uuid::text, event, user_hash, properties FROM bronze.events")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let stored_uuids: HashSet<String> = stored.iter().map(|r| r.0.clone()).collect();
    assert_eq!(
        stored_uuids, kept,
        "every allowed event stored, nothing else"
    );
    assert_eq!(
        stored.iter().filter(|r| r.1 == "$create_alias").count(),
        30,
        "aliases stored"
    );
    assert!(
        stored_uuids.is_disjoint(&blocked),
        "events after a consent withdrawal were stored"
    );

    // Ids are keyed hashes; identify keeps the hashed anonymous id for stitching.
    let known_hashes: HashSet<String> = (0..30).map(|i| hasher.hash(&format!("u{i}"))).collect();
    assert!(
        stored
            .iter()
            .filter(|r| r.1 == "notification_sent")
            .all(|r| known_hashes.contains(&r.2))
    );
    let identify = stored
        .iter()
        .find(|r| r.1 == "$identify")
        .expect("identify stored");
    let anon_hash = identify.3["$anon_distinct_id"]
        .as_str()
        .expect("anon id kept");
    assert!(
        stored
            .iter()
            .any(|r| r.1 == "landing_view" && r.2 == anon_hash),
        "anon id hashed alike"
    );

    let dump: String = db
        .scalar("SELECT coalesce(string_agg(e::text, ' '), '') FROM bronze.events e")
        .await;
    for pii in report["pii"].as_array().unwrap() {
        let pii = pii.as_str().unwrap();
        assert!(
            !dump.contains(&format!("\"{pii}\"")),
            "{pii} reached Postgres"
        );
    }
    assert!(
        !dump.contains("example.com") && !dump.contains("203.0.113.9") && !dump.contains("$lib")
    );

    // The same run again stores nothing new.
    run_sdk(&python, &host).await;
    let after = db.count("SELECT count(*) FROM bronze.events").await;
    assert_eq!(
        after as usize,
        stored.len(),
        "a re-sent run must not duplicate"
    );
}
