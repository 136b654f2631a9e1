//! The trainer on a toy problem in Postgres with a known true probability: it trains
//! close to the oracle, the saved artifact reproduces the trainer's test probabilities
//! exactly, the same data and seed give the same model, a leaky feature is refused,
//! promotion gates refuse what they should, and rollback restores the champion.

mod common;

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta};
use common::TestDb;
use indicatif::{MultiProgress, ProgressDrawTarget};
use nudge::models::Model;
use nudge::models::preprocess::ModelInput;
use nudge::models::registry::Registry;
use nudge::training::TrainError;
use nudge::training::spec::ModelSpec;
use nudge::training::train::{self, FitOutcome, Stages};
use rand::{Rng, SeedableRng};

const SPEC: &str = r#"
name: toy
source: { relation: toy, where: "at IS NOT NULL" }
key: id
label: y
timestamp: at
features: { numeric: [x1, x2], categorical: [kind] }
split: { time: { validation_days: 4, test_days: 4, gap_days: 1 } }
candidates:
  - { name: logistic, algorithm: logistic, l2: 1.0 }
  - { name: gbm, algorithm: gbm, trees: 60, max_depth: 3, learning_rate: 0.2, early_stopping_rounds: 10 }
calibration: platt
gates: { min_test_auc: 0.65, max_auc_regression: 0.02 }
seed: 3
oracle:
  query: "SELECT id AS key, p AS probability FROM toy_truth"
  hidden_state_query: "SELECT id AS key, y::int AS probability FROM toy"
"#;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// 20 days of examples: P(y) = sigmoid(−1 + 1.5·x1 − x2 + [kind = b]); x2 is missing for
/// one row in ten (and then weighs nothing), kind for one in twenty.
async fn toy(db: &TestDb, rows: usize) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
    let start = DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let (mut ids, mut ats, mut x1s, mut x2s, mut kinds, mut ys, mut ps) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rows {
        let x1: f64 = rng.random_range(-2.0..2.0);
        let x2: Option<f64> = (rng.random::<f64>() > 0.1).then(|| rng.random_range(-2.0..2.0));
        let kind: Option<&str> =
            (rng.random::<f64>() > 0.05).then(|| ["a", "b", "c"][rng.random_range(0..3)]);
        let p = sigmoid(
            -1.0 + 1.5 * x1 - x2.unwrap_or(0.0) + if kind == Some("b") { 1.0 } else { 0.0 },
        );
        ids.push(format!("e{i}"));
        ats.push(start + TimeDelta::seconds((i * 20 * 86_400 / rows) as i64));
        x1s.push(x1);
        x2s.push(x2);
        kinds.push(kind.map(str::to_owned));
        ys.push(rng.random::<f64>() < p);
        ps.push(p);
    }
    sqlx::raw_sql(
        "CREATE TABLE toy (id text, at timestamptz, x1 float8, x2 real, kind text, y boolean, y_copy integer);
         CREATE TABLE toy_truth (id text, p float8);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let x2s: Vec<Option<f32>> = x2s.iter().map(|v| v.map(|v| v as f32)).collect();
    sqlx::query(
        "INSERT INTO toy SELECT *, y::int FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::real[], $5::text[], $6::boolean[]) AS u(id, at, x1, x2, kind, y)",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(&x1s)
    .bind(&x2s)
    .bind(&kinds)
    .bind(&ys)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO toy_truth SELECT * FROM UNNEST($1::text[], $2::float8[])")
        .bind(&ids)
        .bind(&ps)
        .execute(&db.pool)
        .await
        .unwrap();
}

fn stages() -> Stages {
    Stages::new(MultiProgress::with_draw_target(ProgressDrawTarget::hidden()))
}

/// Fits the spec `yaml` (which must parse) into `registry`.
async fn fit(
    pool: &sqlx::PgPool,
    registry: &Registry,
    yaml: &str,
) -> Result<FitOutcome, TrainError> {
    let spec = ModelSpec::from_yaml(yaml).expect("a valid spec");
    train::fit(pool, registry, &spec, &stages()).await
}

/// A registry in a fresh temporary directory, removed when dropped.
struct TempRegistry(Registry);

impl TempRegistry {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("nudge-models-{}", uuid::Uuid::new_v4()));
        TempRegistry(Registry::new(root))
    }
}

impl Drop for TempRegistry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.root());
    }
}

/// The toy table's rows as the server would assemble them: values by feature name.
struct NamedRow {
    numeric: HashMap<String, Option<f64>>,
    categorical: HashMap<String, Option<String>>,
    numeric_order: Vec<String>,
    categorical_order: Vec<String>,
}

impl ModelInput for NamedRow {
    fn numeric(&self, index: usize) -> Option<f64> {
        self.numeric[&self.numeric_order[index]]
    }
    fn categorical(&self, index: usize) -> Option<&str> {
        self.categorical[&self.categorical_order[index]].as_deref()
    }
}

#[tokio::test]
async fn a_toy_problem_trains_close_to_its_oracle_and_the_saved_artifact_scores_the_test_rows_alike()
 {
    let db = TestDb::migrated().await;
    toy(&db, 12_000).await;
    let registry = TempRegistry::new();
    let outcome = fit(&db.pool, &registry.0, SPEC).await.unwrap();
    let card = &outcome.card;
    assert_eq!(card.candidates.len(), 2);
    let auc = card.test.roc_auc.unwrap();
    let oracle = card.oracle.as_ref().unwrap();
    assert_eq!(oracle.examples, card.test.examples);
    assert!(
        auc > 0.75 && oracle.oracle_auc.unwrap() - auc < 0.03,
        "{auc} vs {oracle:?}"
    );
    // The hidden-state truth here is the outcome itself, on the same test examples.
    assert_eq!(oracle.hidden_state_auc, Some(1.0));
    assert!(card.gates.failures.is_empty(), "{:?}", card.gates.failures);
    assert_eq!(card.windows.test.rows, card.test.examples);
    assert!(card.windows.train.to < card.windows.valid.from);
    assert!(card.windows.valid.to < card.windows.test.from);
    // x1 matters most; the card's files are all there.
    assert_eq!(card.importance[0].0, "x1");
    for file in ["model.json", "card.json", "card.md", "spec.yaml"] {
        assert!(outcome.dir.join(file).is_file(), "{file}");
    }
    let md = std::fs::read_to_string(outcome.dir.join("card.md")).unwrap();
    assert!(
        md.contains("Oracle")
            && md.contains("hidden state the data never records: AUC 1.0000")
            && md.contains("Lift by score decile"),
        "{md}"
    );

    // The artifact read back, fed one named row at a time as nudge-serve would, gives
    // exactly the probabilities behind the card's test metrics.
    let saved = registry.0.load("toy", &card.version).unwrap();
    type ToyRow = (Option<f64>, Option<f32>, Option<String>, bool);
    let rows: Vec<ToyRow> =
        sqlx::query_as("SELECT x1, x2, kind, y FROM toy WHERE at >= $1 ORDER BY at, id")
            .bind(card.windows.test.from.unwrap())
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), card.test.examples);
    let (probabilities, labels): (Vec<f64>, Vec<bool>) = rows
        .into_iter()
        .map(|(x1, x2, kind, y)| {
            let row = NamedRow {
                numeric: HashMap::from([("x1".into(), x1), ("x2".into(), x2.map(f64::from))]),
                categorical: HashMap::from([("kind".into(), kind)]),
                numeric_order: saved.numeric_features().map(str::to_owned).collect(),
                categorical_order: saved.categorical_features().map(str::to_owned).collect(),
            };
            (saved.score(&row), y)
        })
        .unzip();
    assert_eq!(probabilities, outcome.test_probabilities);
    let metrics = nudge::evaluation::Metrics::of(&probabilities, &labels);
    assert_eq!(metrics, card.test);
    // An unseen level and missing values score without error.
    let unseen = NamedRow {
        numeric: HashMap::from([("x1".into(), None), ("x2".into(), None)]),
        categorical: HashMap::from([("kind".into(), Some("zzz".into()))]),
        numeric_order: vec!["x1".into(), "x2".into()],
        categorical_order: vec!["kind".into()],
    };
    assert!((0.0..=1.0).contains(&saved.score(&unseen)));
}

#[tokio::test]
async fn the_same_data_and_seed_give_the_same_model() {
    let db = TestDb::migrated().await;
    toy(&db, 4_000).await;
    let (first, second) = (TempRegistry::new(), TempRegistry::new());
    let a = fit(&db.pool, &first.0, SPEC).await.unwrap();
    let b = fit(&db.pool, &second.0, SPEC).await.unwrap();
    let params = |m: &Model| {
        let json: serde_json::Value = serde_json::from_str(&m.to_json().unwrap()).unwrap();
        (
            json["preprocessing"].clone(),
            json["estimator"].clone(),
            json["calibration"].clone(),
        )
    };
    assert_eq!(params(&a.model), params(&b.model));
    let hash = |v: &str| v.rsplit('-').next().unwrap().to_owned();
    assert_eq!(hash(&a.model.version), hash(&b.model.version));
    assert_eq!(a.test_probabilities, b.test_probabilities);
}

#[tokio::test]
async fn a_feature_equal_to_the_label_is_refused_with_its_name() {
    let db = TestDb::migrated().await;
    toy(&db, 3_000).await;
    let registry = TempRegistry::new();
    let leaky = SPEC.replace("numeric: [x1, x2]", "numeric: [x1, x2, y_copy]");
    let err = fit(&db.pool, &registry.0, &leaky).await.unwrap_err();
    assert!(
        matches!(&err, TrainError::Leakage { feature, .. } if feature == "y_copy"),
        "{err}"
    );
    assert!(registry.0.names().unwrap().is_empty(), "nothing saved");
}

#[tokio::test]
async fn promotion_refuses_a_low_or_regressing_model_and_rollback_restores_the_champion() {
    let db = TestDb::migrated().await;
    toy(&db, 6_000).await;
    let registry = TempRegistry::new();
    let r = &registry.0;

    // Below the floor: refused, with the reason.
    let strict = SPEC.replace("min_test_auc: 0.65", "min_test_auc: 0.99");
    let low = fit(&db.pool, r, &strict).await.unwrap();
    let err = train::promote(r, "toy", &low.card.version)
        .unwrap_err()
        .to_string();
    assert!(err.contains("below the floor 0.99"), "{err}");
    assert_eq!(r.champion("toy").unwrap(), None);

    let good = fit(&db.pool, r, SPEC).await.unwrap();
    train::promote(r, "toy", &good.card.version).unwrap();
    assert_eq!(r.champion("toy").unwrap(), Some(good.card.version.clone()));

    // One stump: far worse than the champion on the same test examples.
    let stump = SPEC
        .replace("  - { name: logistic, algorithm: logistic, l2: 1.0 }\n", "")
        .replace("trees: 60, max_depth: 3", "trees: 1, max_depth: 1");
    let weak = fit(&db.pool, r, &stump).await.unwrap();
    let compared = weak.card.champion.as_ref().unwrap();
    assert_eq!(compared.version, good.card.version);
    let err = train::promote(r, "toy", &weak.card.version)
        .unwrap_err()
        .to_string();
    assert!(err.contains("worse than champion"), "{err}");

    // Another good model passes, then rollback restores the first.
    let isotonic = SPEC.replace("calibration: platt", "calibration: isotonic");
    let next = fit(&db.pool, r, &isotonic).await.unwrap();
    assert_ne!(next.card.version, good.card.version);
    train::promote(r, "toy", &next.card.version).unwrap();
    // The weak one was measured against a champion that is no longer current.
    let err = train::promote(r, "toy", &weak.card.version)
        .unwrap_err()
        .to_string();
    assert!(err.contains("run `nudge-train evaluate"), "{err}");
    // Re-measured against the current champion, it is refused for what it is: worse.
    let card = train::evaluate(&db.pool, r, "toy", &weak.card.version, &stages())
        .await
        .unwrap();
    assert_eq!(card.champion.as_ref().unwrap().version, next.card.version);
    assert_eq!(
        card.candidates, weak.card.candidates,
        "fit-time figures kept"
    );
    let err = train::promote(r, "toy", &weak.card.version)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("worse than champion") && !err.contains("evaluate"),
        "{err}"
    );
    let change = r.rollback("toy").unwrap();
    assert_eq!(change.to, good.card.version);
    assert_eq!(r.champion("toy").unwrap(), Some(good.card.version.clone()));
    // The restored champion is loadable: what nudge-serve would load now.
    assert_eq!(
        r.load("toy", &change.to).unwrap().version,
        good.card.version
    );
}

#[test]
fn the_shipped_specs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("training");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let spec = nudge::training::spec::ModelSpec::from_yaml(
                &std::fs::read_to_string(&path).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(spec.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "churn_14d",
            "notif_ranker",
            "paywall_bounce",
            "paywall_trial"
        ]
    );
}

#[test]
fn nudge_train_fit_refuses_a_bad_spec_before_it_connects_to_the_database() {
    let dir = common::TempDir::new();
    let spec = dir.0.join("bad.yaml");
    std::fs::write(&spec, SPEC.replace("name: toy", "name: Toy")).unwrap();
    // Nothing listens on port 1: reaching for the database would fail differently.
    let out = common::run_bin(
        env!("CARGO_BIN_EXE_nudge-train"),
        &[
            "fit",
            spec.to_str().unwrap(),
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid model spec"), "{stderr}");
    assert!(stderr.contains("name"), "{stderr}");
    assert!(!stderr.contains("postgres"), "{stderr}");
}

#[tokio::test]
async fn nudge_train_fit_of_a_directory_fits_every_spec_though_one_fails() {
    let db = TestDb::migrated().await;
    toy(&db, 3_000).await;
    let registry = TempRegistry::new();
    let specs = common::TempDir::new();
    // Fitted first, by name, and failing: its source does not exist.
    std::fs::write(
        specs.0.join("a_missing.yaml"),
        SPEC.replace("name: toy", "name: missing")
            .replace("relation: toy", "relation: no_such_table"),
    )
    .unwrap();
    std::fs::write(specs.0.join("b_toy.yaml"), SPEC).unwrap();
    let out = common::run_bin(
        env!("CARGO_BIN_EXE_nudge-train"),
        &[
            "fit",
            specs.0.to_str().unwrap(),
            "--promote",
            "--database-url",
            &db.url,
            "--models-dir",
            registry.0.root().to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // The good spec was fitted and promoted after the bad one failed...
    let toy = registry.0.champion("toy").unwrap().expect("toy promoted");
    let table = stdout
        .split("model cards:")
        .nth(1)
        .expect("a closing table");
    assert!(table.contains("missing: not fitted"), "{stdout}");
    assert!(table.contains(&format!("toy {toy}")), "{stdout}");
    assert!(table.contains("→ champion"), "{stdout}");
    // ...and the run still fails, saying why.
    assert!(!out.status.success());
    assert!(
        stderr.contains("1 of 2 specs could not be fitted"),
        "{stderr}"
    );
    assert_eq!(registry.0.champion("missing").unwrap(), None);
}
