//! Start-up and readiness: migrations, schema checks, Redis or embedded online store.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestDb, config, run_bin};
use nudge::serving::{StartError, prepare, router};
use nudge::store::StoreError;
use nudge::store::database::{AtStart, SchemaMismatch};
use serde_json::json;

#[tokio::test]
async fn nudge_train_migrate_creates_the_database_and_applies_the_schema() {
    let url = TestDb::fresh_url();
    let _cleanup = common::DropOnExit(url.clone());
    let migrate = ["migrate", "--database-url", url.as_str()];
    let out = run_bin(env!("CARGO_BIN_EXE_nudge-train"), &migrate);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("created database") && stdout.contains("schema current"),
        "{stdout}"
    );
    let pool = nudge::store::database::connect(&url, 1).await.unwrap();
    nudge::store::database::check_schema(&pool)
        .await
        .expect("schema current");
    pool.close().await;
    // Running it again is a no-op.
    let again = run_bin(env!("CARGO_BIN_EXE_nudge-train"), &migrate);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stdout).contains("created database"));
}

#[tokio::test]
async fn serve_refuses_a_database_without_the_schema() {
    let db = TestDb::unmigrated().await;
    let err = prepare(&config(&db.url)).await.err().expect("refused");
    assert!(
        matches!(
            err,
            StartError::Store(StoreError::Schema(SchemaMismatch::NotMigrated))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nudge-train migrate"));

    let out = run_bin(
        env!("CARGO_BIN_EXE_nudge-serve"),
        &[
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `nudge-train migrate` first"));
}

#[tokio::test]
async fn serve_refuses_a_schema_from_a_newer_build() {
    let db = TestDb::migrated().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let err = prepare(&config(&db.url)).await.err().expect("refused");
    assert!(
        matches!(err, StartError::Store(StoreError::Schema(SchemaMismatch::Unknown { ref unknown })) if unknown == &[9999]),
        "{err}"
    );
}

#[tokio::test]
async fn serve_without_a_hash_key_refuses_to_start_outside_dev() {
    let out = run_bin(
        env!("CARGO_BIN_EXE_nudge-serve"),
        &["--listen", "127.0.0.1:0"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NUDGE_HASH_KEY"));
}

#[tokio::test]
async fn a_canary_flag_without_a_valid_percent_is_refused_naming_the_option_and_nothing_is_written()
{
    let db = TestDb::migrated().await;
    let set = ["flag", "--database-url", &db.url, "set", "--mode", "canary"];
    for (extra, says) in [
        (&[][..], "--percent"),
        (&["--percent", "150"][..], "must be within 0..=100, got 150"),
        (&["--percent", "half"][..], "--percent"),
    ] {
        let args: Vec<&str> = set.iter().chain(extra).copied().collect();
        let out = run_bin(env!("CARGO_BIN_EXE_nudge-serve"), &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(says) && stderr.contains("--percent"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM serving.flags").await, 0);
}

#[tokio::test]
async fn readiness_reports_postgres_and_the_redis_online_store() {
    let db = TestDb::migrated().await;
    let dir = common::TempDir::new();
    let mut cfg = config(&db.url);
    cfg.redis_url = Some(common::redis_url());
    cfg.models_dir = dir.0.clone();
    let prepared = prepare(&cfg).await.expect("ready");
    assert!(
        matches!(prepared.postgres, AtStart::SchemaCurrent),
        "{:?}",
        prepared.postgres
    );
    let ctx = prepared.ctx;
    let app = router(ctx.clone());
    // Not ready until a policy and a ranker champion are loaded.
    let (status, _, body) =
        common::send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["models"]["ok"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!(false))
    );
    assert!(ctx.reload().is_ok());
    let (status, _, body) =
        common::send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no champion yet: {body}"
    );
    assert!(
        body["models"]["detail"]
            .as_str()
            .unwrap()
            .contains("no notif_ranker champion")
    );
    common::write_ranker(&dir.0, "v1");
    ctx.reload().expect("reload");
    let (status, _, body) =
        common::send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(
        body["online_store"]["detail"],
        "redis store answers; features: none materialised"
    );
    let (status, _, body) =
        common::send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn readiness_fails_when_the_schema_is_gone_and_says_why() {
    let db = TestDb::migrated().await;
    let app = router(prepare(&config(&db.url)).await.expect("ready").ctx);
    let (_, _, body) =
        common::send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        body["online_store"]["detail"],
        "embedded store answers; features: none materialised"
    );
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, _, body) =
        common::send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], false);
    assert!(
        body["database"]["detail"]
            .as_str()
            .unwrap()
            .contains("nudge-train migrate"),
        "{body}"
    );
}
