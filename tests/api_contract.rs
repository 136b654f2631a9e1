//! schemathesis, pointed at a running nudge-serve and its own `/openapi.json`, generates
//! requests from the document (valid ones and ones that break it) for every route: no
//! answer may be a server error, and every answer must be one the document describes
//! (status, content type, body schema), with every schema-breaking request refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ADMIN_TOKEN, SCHEDULER_TOKEN, TempDir, TestDb, config, write_logistic, write_ranker};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Installs the schemathesis venv if needed and returns its command.
fn schemathesis() -> String {
    common::installed_tool(
        "tests/schemathesis/install.sh",
        "schemathesis-venv/bin/schemathesis",
    )
}

/// A champion of every model nudge-serve loads, so no route answers "not ready".
fn write_models(models: &Path) {
    write_ranker(models, "r1");
    write_logistic(
        models,
        ("churn_14d", "churn_14d", "c1"),
        &["sessions_7d"],
        &[],
        &[("sessions_7d", -1.0)],
        0.0,
    );
    for (name, weight) in [("paywall_trial", 1.0), ("paywall_bounce", -1.0)] {
        write_logistic(
            models,
            (name, name, "p1"),
            &[],
            &[("placement", &["contact_limit", "settings"])],
            &[("placement=contact_limit", weight)],
            0.0,
        );
    }
}

/// Runs schemathesis on the routes matching `paths` with `token`; returns its report
/// when it found a failure.
async fn run(command: &str, base: &str, paths: &str, token: &str, work: &Path) -> Option<String> {
    let mut run = Command::new(command);
    run.current_dir(work)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--include-path-regex", paths])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // `positive_data_acceptance` is left out: JSON Schema's `format: date-time` is an
        // annotation, not a rule, and a request's `now` may not run an hour ahead of the
        // server's clock, so some schema-valid bodies are rightly refused.
        .args(["--checks", "all", "--exclude-checks"])
        .arg(
            "positive_data_acceptance,ignored_auth,use_after_free,\
             ensure_resource_availability,object_level_authorization",
        )
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--generation-deterministic",
        ])
        .args(["--workers", "1", "--no-color"]);
    let out = tokio::task::spawn_blocking(move || run.output().expect("run schemathesis"))
        .await
        .expect("join");
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_server_error_and_only_documented_answers() {
    let schemathesis = schemathesis();
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    write_models(&dir.0.join("models"));
    // Canary at 50 %: requests reach the model, the gates and the quota in both arms.
    let policy = std::fs::read_to_string(format!("{MANIFEST_DIR}/policy/policy.yaml"))
        .unwrap()
        .replace("  mode: shadow ", "  mode: canary ")
        .replace("  canary_percent: 0 ", "  canary_percent: 50 ");
    assert!(policy.contains("mode: canary") && policy.contains("canary_percent: 50"));
    std::fs::write(dir.0.join("policy.yaml"), policy).unwrap();
    let mut cfg = config(&db.url);
    cfg.models_dir = dir.0.join("models");
    cfg.policy_path = dir.0.join("policy.yaml");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nudge::serving::run_on(cfg, listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            !server.is_finished(),
            "nudge-serve stopped: {:?}",
            server.await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let scheduler = "^/(v1/(score|churn|paywall|features)|healthz|readyz|metrics|openapi.json)";
    let ingest = "^/(v1/events|batch/|capture/|e/|i/v0/e/)$";
    let mut failures = Vec::new();
    for (paths, token) in [
        (scheduler, SCHEDULER_TOKEN),
        ("^/(admin|dashboard)", ADMIN_TOKEN),
        (ingest, SCHEDULER_TOKEN),
    ] {
        if let Some(report) = run(&schemathesis, &base, paths, token, &dir.0).await {
            failures.push(report);
        }
    }
    let _ = stop.send(());
    server
        .await
        .unwrap()
        .expect("nudge-serve ran and stopped cleanly");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
