//! The online feature store: versions switch in one step (Redis and embedded),
//! `GET /v1/features` answers from it, training examples join snapshots point in time,
//! and the trainer's feature vector equals the one nudge-serve returns.

mod common;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::NaiveDate;
use common::{HASH_KEY, RedisPrefix, TestDb, ingest_all as ingest, numbered_event as event};
use http_body_util::BodyExt;
use indicatif::ProgressBar;
use nudge::features::catalog::{FeatureCatalog, FeatureKind};
use nudge::features::materialize::materialize;
use nudge::features::row::{FeatureRow, FeatureValue};
use nudge::features::{DayRange, refresh};
use nudge::ingest::catalog::Catalog;
use nudge::ingest::hashing::UserHasher;
use nudge::serving::{ApiContext, router};
use nudge::sim::SimConfig;
use nudge::store::StoreError;
use nudge::store::online::{FeatureLookup, OnlineStore, VERSION_FIELD};
use serde_json::json;
use serde_json::value::RawValue;

fn catalog() -> FeatureCatalog {
    FeatureCatalog::builtin().unwrap()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// A row whose every count is `n` (other kinds missing).
fn row_of(n: i32) -> FeatureRow {
    let catalog = catalog();
    FeatureRow {
        as_of: day("2026-02-01"),
        values: catalog
            .features()
            .iter()
            .map(|f| match f.kind {
                nudge::features::catalog::FeatureKind::Count => FeatureValue::Count(n),
                _ => FeatureValue::Missing,
            })
            .collect(),
    }
}

async fn lookup(store: &OnlineStore, user: &str) -> FeatureLookup {
    store.features(&catalog(), user).await.unwrap()
}

/// Writes `rows` as a new version and commits it.
async fn publish(store: &OnlineStore, rows: &[(&str, i32)]) -> String {
    let mut writer = store.begin_features(&catalog());
    writer
        .write(
            rows.iter()
                .map(|(u, n)| (u.to_string(), row_of(*n)))
                .collect(),
        )
        .await
        .unwrap();
    let version = writer.version().to_owned();
    assert_eq!(writer.commit().await.unwrap(), rows.len() as u64);
    version
}

/// The version protocol, the same for both stores: readers see the committed version
/// only, whole, until the next commit.
async fn versions_switch_in_one_step(store: &OnlineStore) {
    assert_eq!(lookup(store, "a").await, FeatureLookup::NotMaterialized);
    let first = publish(store, &[("a", 1), ("b", 1)]).await;
    assert!(first.ends_with(catalog().fingerprint()));
    assert_eq!(lookup(store, "a").await, FeatureLookup::Found(row_of(1)));

    // A second version, written but not yet committed, is invisible.
    let mut writer = store.begin_features(&catalog());
    writer
        .write(vec![("b".into(), row_of(2)), ("c".into(), row_of(2))])
        .await
        .unwrap();
    assert_eq!(lookup(store, "b").await, FeatureLookup::Found(row_of(1)));
    assert_eq!(lookup(store, "c").await, FeatureLookup::Unknown);
    let second = writer.version().to_owned();
    writer.commit().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(store.feature_version().await.unwrap(), Some(second.clone()));
    assert_eq!(lookup(store, "a").await, FeatureLookup::Unknown);
    assert_eq!(lookup(store, "b").await, FeatureLookup::Found(row_of(2)));
    assert_eq!(lookup(store, "c").await, FeatureLookup::Found(row_of(2)));

    // A writer dropped before commit (its rows stored) changes nothing.
    let mut abandoned = store.begin_features(&catalog());
    abandoned
        .write(vec![("b".into(), row_of(3))])
        .await
        .unwrap();
    abandoned.flush().await.unwrap();
    drop(abandoned);
    assert_eq!(store.feature_version().await.unwrap(), Some(second));
    assert_eq!(lookup(store, "b").await, FeatureLookup::Found(row_of(2)));
}

#[tokio::test]
async fn embedded_versions_switch_in_one_step() {
    versions_switch_in_one_step(&OnlineStore::embedded()).await;
}

#[tokio::test]
async fn redis_versions_switch_in_one_step_and_leave_no_old_version_behind() {
    let prefix = RedisPrefix::new();
    let store = prefix.store().await;
    versions_switch_in_one_step(&store).await;
    let keys = prefix.keys();
    let live = format!("{}features:live", prefix.0);
    // The live version, and the abandoned write, which expires by itself.
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&live));
    assert_eq!(prefix.ttl(&live), -1, "the live version never expires");
    let abandoned = keys.iter().find(|k| k.contains(":v:")).unwrap();
    assert!((1..=3_600).contains(&prefix.ttl(abandoned)));

    // A version written under another catalog is refused, not misread.
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&live)
        .arg(VERSION_FIELD)
        .arg("20260101T000000.000Z-00000000")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        store.features(&catalog(), "b").await,
        Err(StoreError::CatalogMismatch { .. })
    ));
}

/// An app over `db` with the given online store.
fn app(db: &TestDb, online: OnlineStore) -> axum::Router {
    router(ApiContext::new(
        &common::config(&db.url),
        Catalog::builtin().unwrap(),
        catalog(),
        db.pool.clone(),
        online,
    ))
}

/// `GET /v1/features/{user}` with the scheduler token: the status and the raw body.
async fn get_features(app: &axum::Router, user: &str) -> (StatusCode, String) {
    get_raw(
        app,
        &format!("/v1/features/{user}"),
        Some(common::SCHEDULER_TOKEN),
    )
    .await
}

/// GETs any path, with a bearer token if given: status and raw body.
async fn get_raw(app: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = tower::ServiceExt::oneshot(app.clone(), request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Reads a `GET /v1/features` body back into a row, each value parsed by its kind as
/// the store parses it, and checks the keys are the catalog's, in order.
fn served_row(body: &str) -> FeatureRow {
    #[derive(serde::Deserialize)]
    struct Served {
        as_of: chrono::DateTime<chrono::Utc>,
        features: HashMap<String, Box<RawValue>>,
    }
    let served: Served = serde_json::from_str(body).unwrap();
    let catalog = catalog();
    assert_eq!(served.features.len(), catalog.features().len());
    let positions: Vec<usize> = catalog
        .names()
        .map(|n| body.find(&format!("\"{n}\":")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "catalog order: {body}"
    );
    FeatureRow {
        as_of: served.as_of.date_naive(),
        values: catalog
            .features()
            .iter()
            .map(|f| served_value(f.kind, served.features[&f.name].get()))
            .collect(),
    }
}

/// One served JSON value of a feature of `kind`, read exactly: reals straight into `f32`,
/// so the shortest form the API writes reads back bit for bit.
fn served_value(kind: FeatureKind, json: &str) -> FeatureValue {
    if json == "null" {
        return FeatureValue::Missing;
    }
    match kind {
        FeatureKind::Count => FeatureValue::Count(json.parse().unwrap()),
        FeatureKind::Hours
        | FeatureKind::Days
        | FeatureKind::Rate
        | FeatureKind::Score
        | FeatureKind::HourOfDay => FeatureValue::Real(json.parse().unwrap()),
        FeatureKind::Flag => FeatureValue::Flag(json.parse().unwrap()),
        FeatureKind::Band | FeatureKind::Timezone => {
            FeatureValue::Text(serde_json::from_str(json).unwrap())
        }
    }
}

/// Hand-made history: u1 opens the app on 01-05; a notification goes out on 01-06 at
/// 12:00, after a 09:00 session that day.
async fn small_history(db: &TestDb) {
    let organic = json!({"source": "organic"});
    ingest(
        db,
        &[
            event(
                1,
                "app_opened",
                "u1",
                "2026-01-05T10:00:00Z",
                organic.clone(),
            ),
            event(
                2,
                "app_opened",
                "u1",
                "2026-01-06T09:00:00Z",
                organic.clone(),
            ),
            event(
                3,
                "notification_sent",
                "u1",
                "2026-01-06T12:00:00Z",
                json!({"notification_id": "n-1", "notif_type": "contact_reminder"}),
            ),
        ],
    )
    .await;
}

async fn refresh_days(db: &TestDb, from: &str, to: &str) {
    refresh::refresh(&db.pool, DayRange::new(day(from), day(to)).unwrap())
        .await
        .unwrap();
}

/// The training row of notification `id`.
async fn training_row(db: &TestDb, id: &str) -> Option<FeatureRow> {
    let row = sqlx::query(
        "SELECT * FROM gold.training_returned_24h_after_notif WHERE notification_id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    FeatureRow::from_pg_row(&catalog(), &row).unwrap()
}

#[tokio::test]
async fn training_examples_join_the_newest_snapshot_before_them_and_ignore_later_events() {
    let db = TestDb::migrated().await;
    small_history(&db).await;
    refresh_days(&db, "2026-01-05", "2026-01-08").await;
    let before = training_row(&db, "n-1").await.expect("a snapshot");
    // Sent 01-06 12:00: the 01-06 snapshot (events before 01-06 00:00) is the newest at
    // or before the send; it holds the 01-05 session, not the 09:00 one.
    assert_eq!(before.as_of, day("2026-01-06"));
    let sessions_1d = catalog().names().position(|n| n == "sessions_1d").unwrap();
    assert_eq!(before.values[sessions_1d], FeatureValue::Count(1));

    // Events after the send (one the same day, one the next) change the label and the
    // later snapshots, never the example's features.
    ingest(
        &db,
        &[
            event(
                4,
                "app_opened",
                "u1",
                "2026-01-06T12:00:01Z",
                json!({"source": "push"}),
            ),
            event(
                5,
                "app_opened",
                "u1",
                "2026-01-07T08:00:00Z",
                json!({"source": "organic"}),
            ),
        ],
    )
    .await;
    refresh_days(&db, "2026-01-05", "2026-01-08").await;
    assert_eq!(
        training_row(&db, "n-1").await.unwrap().encode(),
        before.encode()
    );
    let returned: bool = sqlx::query_scalar(
        "SELECT returned_24h_after_notif FROM gold.training_returned_24h_after_notif WHERE notification_id = 'n-1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(returned, "the later open is the label");
    let later: i32 =
        sqlx::query_scalar("SELECT sessions_1d FROM gold.snapshots WHERE as_of = '2026-01-07'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(later, 2, "the 01-07 snapshot sees both 01-06 sessions");
}

#[tokio::test]
async fn a_first_day_example_is_a_cold_start_with_no_features() {
    let db = TestDb::migrated().await;
    ingest(
        &db,
        &[event(
            1,
            "notification_sent",
            "u2",
            "2026-01-05T12:00:00Z",
            json!({"notification_id": "n-2", "notif_type": "weekly_digest"}),
        )],
    )
    .await;
    refresh_days(&db, "2026-01-05", "2026-01-07").await;
    assert_eq!(training_row(&db, "n-2").await, None);
}

#[tokio::test]
async fn get_features_answers_from_the_embedded_store_and_follows_refreshes() {
    let db = TestDb::migrated().await;
    small_history(&db).await;
    let ctx = ApiContext::new(
        &common::config(&db.url),
        Catalog::builtin().unwrap(),
        catalog(),
        db.pool.clone(),
        OnlineStore::embedded(),
    );
    let app = router(ctx.clone());

    // Nothing refreshed yet: the store loads empty, and says so.
    let mut refresher = nudge::serving::features::FeatureRefresher::start(ctx)
        .await
        .unwrap();
    let (status, body) = get_features(&app, "u1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unknown_user");
    assert_eq!(body["error"]["field"], "user_id");

    // A refresh is picked up at the next tick.
    refresh_days(&db, "2026-01-05", "2026-01-07").await;
    refresher.tick().await;
    let (status, body) = get_features(&app, "u1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["user_id"], "u1");
    assert_eq!(parsed["as_of"], "2026-01-07T00:00:00Z");
    assert_eq!(parsed["features"]["sessions_7d"], 2);
    assert_eq!(served_row(&body).as_of, day("2026-01-07"));
    let (status, _) = get_features(&app, "u-nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The freshness gauges are on /metrics.
    let (_, metrics) = get_raw(&app, "/metrics", None).await;
    for gauge in [
        "nudge_features_lag_seconds",
        "nudge_features_snapshot_age_seconds",
        "nudge_events_validation_pass_share",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing");
    }
}

#[tokio::test]
async fn the_trainer_and_nudge_serve_see_the_same_features_value_for_value() {
    let db = TestDb::migrated().await;
    let start = day("2026-01-05");
    let (users, days) = (300, 16);
    let hasher = UserHasher::new(HASH_KEY.as_bytes());
    common::simulate(&db, SimConfig::new(users, days, 11, start, 0.3).unwrap()).await;
    let last_day = start + chrono::TimeDelta::days(i64::from(days) - 1);
    refresh::refresh(
        &db.pool,
        DayRange::new(start.pred_opt().unwrap(), last_day.succ_opt().unwrap()).unwrap(),
    )
    .await
    .unwrap();

    let prefix = RedisPrefix::new();
    let redis = prefix.store().await;
    let embedded = OnlineStore::embedded();
    for store in [&redis, &embedded] {
        let report = materialize(&db.pool, &catalog(), store, &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(report.users > 200, "{report}");
    }

    // Churn examples of the last day are dated at its end, the newest snapshot's as_of:
    // the trainer joins them to the snapshot the online store holds.
    let examples = sqlx::query(
        "SELECT * FROM gold.training_churn_14d
         WHERE as_of = (SELECT max(as_of) FROM gold.snapshots)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(examples.len() >= 30, "{} examples", examples.len());
    let ids: HashMap<String, String> = (0..users)
        .map(|i| (hasher.hash(&format!("u{i}")), format!("u{i}")))
        .collect();
    let apps = [app(&db, redis), app(&db, embedded)];
    let mut reals = 0;
    for example in &examples {
        let trained = FeatureRow::from_pg_row(&catalog(), example)
            .unwrap()
            .unwrap();
        let user_hash: String = sqlx::Row::get(example, "user_hash");
        let user = &ids[&user_hash];
        for app in &apps {
            let (status, body) = get_features(app, user).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            // Encoded side by side: equal strings are equal values, reals bit for bit.
            assert_eq!(served_row(&body).encode(), trained.encode(), "user {user}");
        }
        reals += trained
            .values
            .iter()
            .filter(|v| matches!(v, FeatureValue::Real(x) if x.fract() != 0.0))
            .count();
    }
    assert!(
        reals > 100,
        "the comparison covers fractional reals: {reals}"
    );
}
