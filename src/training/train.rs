//! The trainer: one spec's examples in, a saved, evaluated model out. The CPU-bound part
//! ([`train`]) is a plain function of the table; [`fit()`] and [`evaluate`] add the I/O
//! (Postgres, the registry) around it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::TrainError;
use super::card::{
    CARD_JSON, CARD_MD, CandidateResult, Card, ChampionComparison, DataWindows, GateResult,
    OracleComparison, SPEC_FILE, gate_failures,
};
use super::dataset::{self, Table};
use super::fit::{self, Encoded};
use super::leakage;
use super::spec::{ModelSpec, Split};
use super::split::{self, Part, Partition};
use crate::evaluation::{Metrics, log_loss, roc_auc};
use crate::models::artifact::Estimator;
use crate::models::artifact::{FORMAT, MODEL_FILE, Model, schema_hash, trees_used};
use crate::models::calibration::{Calibration, sigmoid};
use crate::models::preprocess::{ModelInput, NumericSummary, Preprocessing};
use crate::models::registry::Registry;

/// Test rows used for permutation importance at most.
const IMPORTANCE_ROWS: usize = 20_000;

/// The commit this binary was built from.
pub const GIT_COMMIT: &str = env!("NUDGE_GIT_COMMIT");

/// Progress bars of a run's stages, drawn by a shared [`MultiProgress`].
#[derive(Debug, Clone)]
pub struct Stages(MultiProgress);

impl Stages {
    /// Bars drawn on `progress` (hidden in tests).
    pub fn new(progress: MultiProgress) -> Self {
        Stages(progress)
    }

    /// A spinner for a stage of unknown length.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        let bar = self.0.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A bar of `len` steps.
    pub fn bar(&self, message: impl Into<String>, len: u64) -> ProgressBar {
        let bar = self.0.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(message.into());
        bar
    }
}

/// A fitted model, its card, and the spec it came from.
#[derive(Debug)]
pub struct Trained {
    /// The model (version filled in by [`fit()`]).
    pub model: Model,
    /// Its card.
    pub card: Card,
    /// Its calibrated probabilities of the test rows, in table order.
    pub test_probabilities: Vec<f64>,
}

/// A raw row read through a column map: model feature `i` is table column `map[i]`.
struct Mapped<'a> {
    table: &'a Table,
    row: usize,
    numeric: &'a [usize],
    categorical: &'a [usize],
    /// One numeric column read from another row (permutation importance).
    swap: Option<(Feature, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    Numeric(usize),
    Categorical(usize),
}

impl ModelInput for Mapped<'_> {
    fn numeric(&self, index: usize) -> Option<f64> {
        let column = self.numeric[index];
        let row = match self.swap {
            Some((Feature::Numeric(c), other)) if c == column => other,
            _ => self.row,
        };
        let v = self.table.numeric[column][row];
        (!v.is_nan()).then_some(v)
    }

    fn categorical(&self, index: usize) -> Option<&str> {
        let column = self.categorical[index];
        let row = match self.swap {
            Some((Feature::Categorical(c), other)) if c == column => other,
            _ => self.row,
        };
        self.table.categorical[column].get(row)
    }
}

/// Where a model's features sit among the spec's columns (`None` if one is absent).
fn column_map(model: &Model, spec: &ModelSpec) -> Option<(Vec<usize>, Vec<usize>)> {
    let find = |names: &[String], name: &str| names.iter().position(|n| n == name);
    let numeric = model
        .numeric_features()
        .map(|n| find(&spec.features.numeric, n))
        .collect::<Option<Vec<_>>>()?;
    let categorical = model
        .categorical_features()
        .map(|n| find(&spec.features.categorical, n))
        .collect::<Option<Vec<_>>>()?;
    Some((numeric, categorical))
}

/// A model's calibrated probabilities for `rows`, through [`Model::score_all`].
fn score(model: &Model, table: &Table, map: &(Vec<usize>, Vec<usize>), rows: &[usize]) -> Vec<f64> {
    let inputs: Vec<Mapped<'_>> = rows
        .iter()
        .map(|&row| Mapped {
            table,
            row,
            numeric: &map.0,
            categorical: &map.1,
            swap: None,
        })
        .collect();
    model.score_all(&inputs)
}

fn auc_of(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    roc_auc(&pairs)
}

fn partition(spec: &ModelSpec, table: &Table) -> Result<Partition, TrainError> {
    let partition = match &spec.split {
        Split::Time(t) => split::by_time(&table.times, *t)?,
        Split::Column(_) => split::by_column(&table.parts)?,
    };
    for (name, rows) in [
        ("train", &partition.train),
        ("validation", &partition.valid),
        ("test", &partition.test),
    ] {
        let positives = rows.iter().filter(|&&r| table.labels[r]).count();
        if positives == 0 || positives == rows.len() {
            return Err(TrainError::OneClass(name));
        }
    }
    Ok(partition)
}

fn encode(pre: &Preprocessing, table: &Table, rows: &[usize], bar: &ProgressBar) -> Encoded {
    let width = pre.width();
    let mut values = Vec::with_capacity(rows.len() * width);
    for (k, &r) in rows.iter().enumerate() {
        pre.encode_into(&table.row(r), &mut values);
        if k % 50_000 == 0 {
            bar.set_position(bar.position() + 50_000.min(rows.len() - k) as u64);
        }
    }
    Encoded {
        values,
        width,
        labels: table.labels_of(rows),
    }
}

fn fit_preprocessing(spec: &ModelSpec, table: &Table, rows: &[usize]) -> Preprocessing {
    let numeric = spec
        .features
        .numeric
        .iter()
        .zip(&table.numeric)
        .map(|(name, column)| {
            let mut summary = NumericSummary::default();
            for &r in rows {
                summary.push(Some(column[r]));
            }
            (name.clone(), summary)
        })
        .collect();
    let categorical = spec
        .features
        .categorical
        .iter()
        .zip(&table.categorical)
        .map(|(name, column)| {
            let mut counts: HashMap<u32, usize> = HashMap::new();
            for &r in rows {
                *counts.entry(column.codes[r]).or_default() += 1;
            }
            let levels = counts
                .into_iter()
                .filter(|(code, _)| *code != dataset::MISSING)
                .map(|(code, count)| (column.levels[code as usize].clone(), count))
                .collect();
            (name.clone(), levels)
        })
        .collect();
    Preprocessing::fit(numeric, categorical, spec.min_level_count)
}

/// The simulator's true probabilities by example key.
#[derive(Debug, Clone, Default)]
pub struct Truths {
    /// The oracle's: given what the data records.
    pub oracle: HashMap<String, f64>,
    /// Given hidden state the data never records, when the spec names them.
    pub hidden_state: HashMap<String, f64>,
}

/// Fits every candidate, keeps the best on validation, calibrates it and measures it on
/// test, against the simulator's truths and the current champion.
pub fn train(
    spec: &ModelSpec,
    table: &Table,
    truths: &Truths,
    champion: Option<(&str, &Model)>,
    stages: &Stages,
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let partition = partition(spec, table)?;
    leakage::check(
        table,
        &partition.train,
        &spec.features.numeric,
        &spec.features.categorical,
    )?;

    let preprocessing = fit_preprocessing(spec, table, &partition.train);
    let bar = stages.bar(
        "preprocessing",
        (partition.train.len() + partition.valid.len() + partition.test.len()) as u64,
    );
    let train_rows = encode(&preprocessing, table, &partition.train, &bar);
    let valid_rows = encode(&preprocessing, table, &partition.valid, &bar);
    let test_rows = encode(&preprocessing, table, &partition.test, &bar);
    bar.finish();

    let mut results = Vec::new();
    let mut best: Option<(f64, usize, Estimator)> = None;
    for (index, candidate) in spec.candidates.iter().enumerate() {
        let bar = stages.spinner(format!("fitting {}", candidate.name));
        let fit_started = Instant::now();
        let estimator = fit::fit(
            &candidate.name,
            &candidate.algorithm,
            train_rows.clone(),
            &valid_rows,
            spec.class_weight,
            spec.seed,
        )?;
        let fit_seconds = fit_started.elapsed().as_secs_f64();
        let valid_auc = auc_of(
            &estimator.logits(&valid_rows.values, valid_rows.width),
            &valid_rows.labels,
        );
        let test_auc = auc_of(
            &estimator.logits(&test_rows.values, test_rows.width),
            &test_rows.labels,
        );
        bar.finish_with_message(format!(
            "fitted {} in {fit_seconds:.1} s: validation AUC {}",
            candidate.name,
            valid_auc.map_or_else(|| "n/a".into(), |a| format!("{a:.4}"))
        ));
        results.push(CandidateResult {
            name: candidate.name.clone(),
            kind: estimator.kind().into(),
            fit_seconds,
            valid_auc,
            test_auc,
            trees: match &estimator {
                Estimator::Gbm { booster, .. } => Some(trees_used(booster)),
                Estimator::Logistic { .. } => None,
            },
        });
        let score = valid_auc.unwrap_or(0.0);
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, index, estimator));
        }
    }
    let Some((_, winner, estimator)) = best else {
        return Err(TrainError::EmptyPart("candidates"));
    };
    drop(train_rows);

    let bar = stages.spinner("calibrating and evaluating");
    let valid_logits = estimator.logits(&valid_rows.values, valid_rows.width);
    let calibration = Calibration::fit(spec.calibration, &valid_logits, &valid_rows.labels);
    let raw: Vec<f64> = valid_logits.iter().map(|&x| sigmoid(x)).collect();
    let calibrated: Vec<f64> = valid_logits.iter().map(|&x| calibration.apply(x)).collect();
    let model = Model {
        format: FORMAT,
        name: spec.name.clone(),
        version: String::new(),
        label: spec.label.clone(),
        candidate: spec.candidates[winner].name.clone(),
        schema_hash: schema_hash(
            spec.features.numeric.iter().map(String::as_str),
            spec.features.categorical.iter().map(String::as_str),
        ),
        preprocessing,
        estimator,
        calibration,
    };
    let (mut card, test_probabilities) =
        evaluate_on(spec, table, &partition, &model, truths, champion)?;
    card.candidates = results;
    let train_positives = partition.train.iter().filter(|&&r| table.labels[r]).count();
    card.notes.extend(thin_training_note(
        train_positives,
        partition.train.len() - train_positives,
        model.preprocessing.width(),
    ));
    card.valid_log_loss_raw = log_loss(&raw, &valid_rows.labels);
    card.valid_log_loss_calibrated = log_loss(&calibrated, &valid_rows.labels);
    card.training_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(Trained {
        model,
        card,
        test_probabilities,
    })
}

/// Examples of the rarer class wanted per model input (the usual "events per variable"
/// rule of thumb): below it a fit's coefficients and splits follow noise.
const EXAMPLES_PER_INPUT: usize = 10;

/// A warning for the card when the training window holds too few examples of its rarer
/// class for the model's `inputs` (columns after preprocessing); `None` when enough.
fn thin_training_note(positives: usize, negatives: usize, inputs: usize) -> Option<String> {
    let (rarer, class) = if positives <= negatives {
        (positives, "positive")
    } else {
        (negatives, "negative")
    };
    (rarer < EXAMPLES_PER_INPUT * inputs).then(|| {
        format!(
            "the training window holds only {rarer} {class} examples for {inputs} model inputs \
             (fewer than {EXAMPLES_PER_INPUT} per input): the fit may follow noise; a longer \
             data window would help"
        )
    })
}

/// The card of `model` on `partition`'s test rows: metrics, oracle, importance, champion
/// and gates (the candidates and validation figures are left for [`train`] to fill), with
/// the test probabilities behind them.
fn evaluate_on(
    spec: &ModelSpec,
    table: &Table,
    partition: &Partition,
    model: &Model,
    truths: &Truths,
    champion: Option<(&str, &Model)>,
) -> Result<(Card, Vec<f64>), TrainError> {
    let map = column_map(model, spec).ok_or_else(|| TrainError::Fit {
        candidate: model.candidate.clone(),
        reason: "the model's features are not all in the spec's source".into(),
    })?;
    let test = &partition.test;
    let labels = table.labels_of(test);
    let probabilities = score(model, table, &map, test);
    let metrics = Metrics::of(&probabilities, &labels);

    let oracle_comparison = (!truths.oracle.is_empty() && !table.keys.is_empty()).then(|| {
        let known: Vec<(usize, f64)> = test
            .iter()
            .zip(&probabilities)
            .filter(|&(&r, _)| truths.oracle.contains_key(&table.keys[r]))
            .map(|(&r, &p)| (r, p))
            .collect();
        // AUC of `truth` on the examples the oracle knows; None unless `truth` knows them all.
        let auc_on_known = |truth: &HashMap<String, f64>| {
            let scored = known
                .iter()
                .map(|&(r, _)| Some((*truth.get(&table.keys[r])?, table.labels[r])))
                .collect::<Option<Vec<_>>>()?;
            roc_auc(&scored)
        };
        let model_scores: Vec<(f64, bool)> =
            known.iter().map(|&(r, p)| (p, table.labels[r])).collect();
        OracleComparison {
            examples: known.len(),
            oracle_auc: auc_on_known(&truths.oracle),
            hidden_state_auc: (!truths.hidden_state.is_empty())
                .then(|| auc_on_known(&truths.hidden_state))
                .flatten(),
            model_auc: roc_auc(&model_scores),
        }
    });

    let mut notes = Vec::new();
    let champion_comparison = champion.map(|(version, champion)| {
        let test_auc =
            column_map(champion, spec).map(|m| auc_of(&score(champion, table, &m, test), &labels));
        if test_auc.is_none() {
            notes.push(format!(
                "champion {version} uses features this spec's source lacks; not compared"
            ));
        }
        ChampionComparison {
            version: version.to_owned(),
            test_auc: test_auc.flatten(),
        }
    });
    let failures = gate_failures(metrics.roc_auc, &spec.gates, champion_comparison.as_ref());
    let base_rate = |rows: &[usize]| {
        rows.iter().filter(|&&r| table.labels[r]).count() as f64 / rows.len().max(1) as f64
    };
    let card = Card {
        name: spec.name.clone(),
        version: model.version.clone(),
        description: spec.description.clone(),
        label: spec.label.clone(),
        created_at: Utc::now(),
        evaluated_at: Utc::now(),
        git_commit: GIT_COMMIT.into(),
        training_seconds: 0.0,
        examples: table.len(),
        windows: DataWindows {
            train: partition.window(Part::Train, &table.times),
            valid: partition.window(Part::Valid, &table.times),
            test: partition.window(Part::Test, &table.times),
            train_base_rate: base_rate(&partition.train),
            valid_base_rate: base_rate(&partition.valid),
        },
        candidates: Vec::new(),
        champion_candidate: model.candidate.clone(),
        calibration: match model.calibration {
            Calibration::None => "none",
            Calibration::Platt { .. } => "platt",
            Calibration::Isotonic { .. } => "isotonic",
        }
        .into(),
        valid_log_loss_raw: 0.0,
        valid_log_loss_calibrated: 0.0,
        importance: permutation_importance(spec, table, test, model, &map, metrics.roc_auc),
        test: metrics,
        oracle: oracle_comparison,
        champion: champion_comparison,
        gates: GateResult {
            gates: spec.gates,
            failures,
        },
        notes,
    };
    Ok((card, probabilities))
}

/// Test AUC lost when one raw feature is shuffled across (a sample of) the test rows,
/// most important first.
fn permutation_importance(
    spec: &ModelSpec,
    table: &Table,
    test: &[usize],
    model: &Model,
    map: &(Vec<usize>, Vec<usize>),
    baseline: Option<f64>,
) -> Vec<(String, f64)> {
    let Some(baseline) = baseline else {
        return Vec::new();
    };
    let mut rng = rand_pcg::Pcg64::seed_from_u64(spec.seed);
    let mut sample: Vec<usize> = test.to_vec();
    sample.shuffle(&mut rng);
    sample.truncate(IMPORTANCE_ROWS);
    let labels = table.labels_of(&sample);
    let features = (0..spec.features.numeric.len())
        .map(|c| (spec.features.numeric[c].clone(), Feature::Numeric(c)))
        .chain((0..spec.features.categorical.len()).map(|c| {
            (
                spec.features.categorical[c].clone(),
                Feature::Categorical(c),
            )
        }));
    let mut importance: Vec<(String, f64)> = features
        .map(|(name, feature)| {
            let mut donors = sample.clone();
            donors.shuffle(&mut rng);
            let inputs: Vec<Mapped<'_>> = sample
                .iter()
                .zip(&donors)
                .map(|(&row, &donor)| Mapped {
                    table,
                    row,
                    numeric: &map.0,
                    categorical: &map.1,
                    swap: Some((feature, donor)),
                })
                .collect();
            let auc = auc_of(&model.score_all(&inputs), &labels).unwrap_or(baseline);
            (name, baseline - auc)
        })
        .collect();
    importance.sort_by(|a, b| b.1.total_cmp(&a.1));
    importance
}

/// The simulator's truths for the spec's examples (empty when the spec names none, or
/// the simulator's schema is absent).
async fn load_truths(pool: &PgPool, spec: &ModelSpec) -> Result<Truths, TrainError> {
    let Some(oracle) = &spec.oracle else {
        return Ok(Truths::default());
    };
    let hidden_state = match &oracle.hidden_state_query {
        Some(query) => probabilities_by_key(pool, query).await?,
        None => HashMap::new(),
    };
    Ok(Truths {
        oracle: probabilities_by_key(pool, &oracle.query).await?,
        hidden_state,
    })
}

/// A truth query's `probability` by `key`.
async fn probabilities_by_key(
    pool: &PgPool,
    query: &str,
) -> Result<HashMap<String, f64>, TrainError> {
    let sql = format!("SELECT key::text, probability::float8 FROM ({query}) AS truth");
    let rows: Vec<(Option<String>, Option<f64>)> = match sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows,
        // No simulator here: undefined table (42P01).
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(rows
        .into_iter()
        .filter_map(|(k, p)| Some((k?, p?)))
        .collect())
}

/// The version of a model fitted now: UTC time and a hash of the spec and the fitted
/// parameters (the same spec and data give the same hash).
fn version_of(model: &Model, spec: &ModelSpec) -> Result<String, TrainError> {
    let params = serde_json::to_vec(&(&model.preprocessing, &model.estimator, &model.calibration))
        .map_err(|e| crate::models::ModelError::Invalid(e.to_string()))?;
    let mut hasher = Sha256::new();
    hasher.update(spec.text.as_bytes());
    hasher.update(&params);
    let hash = hex::encode(&hasher.finalize()[..4]);
    Ok(format!("{}-{hash}", Utc::now().format("%Y%m%dT%H%M%SZ")))
}

/// What `fit` saved.
#[derive(Debug)]
pub struct FitOutcome {
    /// The model, version filled in.
    pub model: Model,
    /// Its card.
    pub card: Card,
    /// Where it was saved.
    pub dir: std::path::PathBuf,
    /// Its test probabilities, in the order of the test rows (timestamp first).
    pub test_probabilities: Vec<f64>,
}

async fn load_table(pool: &PgPool, spec: &ModelSpec, stages: &Stages) -> Result<Table, TrainError> {
    let bar = stages.spinner(format!("reading {} examples", spec.name));
    let table = dataset::load(pool, spec, &bar).await?;
    bar.finish_with_message(format!("read {} examples of {}", table.len(), spec.name));
    Ok(table)
}

fn champion_of(registry: &Registry, name: &str) -> Result<Option<(String, Model)>, TrainError> {
    match registry.champion(name)? {
        Some(version) => {
            let model = registry.load(name, &version)?;
            Ok(Some((version, model)))
        }
        None => Ok(None),
    }
}

/// `nudge-train fit`: reads the spec's examples, trains, and saves the model, its card and
/// the spec as a new version (not promoted).
pub async fn fit(
    pool: &PgPool,
    registry: &Registry,
    spec: &ModelSpec,
    stages: &Stages,
) -> Result<FitOutcome, TrainError> {
    let table = load_table(pool, spec, stages).await?;
    let truths = load_truths(pool, spec).await?;
    let champion = champion_of(registry, &spec.name)?;
    let (spec_for_fit, stages_for_fit) = (spec.clone(), stages.clone());
    let trained = tokio::task::spawn_blocking(move || {
        train(
            &spec_for_fit,
            &table,
            &truths,
            champion.as_ref().map(|(v, m)| (v.as_str(), m)),
            &stages_for_fit,
        )
    })
    .await
    .map_err(|e| TrainError::Fit {
        candidate: "all".into(),
        reason: e.to_string(),
    })?;
    let Trained {
        mut model,
        mut card,
        test_probabilities,
    } = trained?;
    model.version = version_of(&model, spec)?;
    card.version = model.version.clone();
    let dir = save(registry, spec, &model, &card)?;
    Ok(FitOutcome {
        model,
        card,
        dir,
        test_probabilities,
    })
}

fn card_json(card: &Card) -> Result<String, TrainError> {
    serde_json::to_string_pretty(card).map_err(|e| TrainError::Card {
        path: CARD_JSON.into(),
        reason: e.to_string(),
    })
}

fn save(
    registry: &Registry,
    spec: &ModelSpec,
    model: &Model,
    card: &Card,
) -> Result<std::path::PathBuf, TrainError> {
    let model_json = model.to_json()?;
    let card_json = card_json(card)?;
    let card_md = card.to_markdown(spec);
    Ok(registry.save(
        &model.name,
        &model.version,
        &[
            (MODEL_FILE, &model_json),
            (CARD_JSON, &card_json),
            (CARD_MD, &card_md),
            (SPEC_FILE, &spec.text),
        ],
    )?)
}

/// Reads a saved version's card.
pub fn read_card(registry: &Registry, name: &str, version: &str) -> Result<Card, TrainError> {
    let path = registry.existing(name, version)?.join(CARD_JSON);
    let json = std::fs::read_to_string(&path).map_err(|e| TrainError::Card {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&json).map_err(|e| TrainError::Card {
        path,
        reason: e.to_string(),
    })
}

/// `nudge-train evaluate`: re-measures a saved version on its spec's current test window,
/// against the current champion, and rewrites its card (the fit-time figures kept).
pub async fn evaluate(
    pool: &PgPool,
    registry: &Registry,
    name: &str,
    version: &str,
    stages: &Stages,
) -> Result<Card, TrainError> {
    let dir = registry.existing(name, version)?;
    let spec_path = dir.join(SPEC_FILE);
    let spec_yaml = std::fs::read_to_string(&spec_path).map_err(|e| TrainError::Card {
        path: spec_path,
        reason: e.to_string(),
    })?;
    let spec = ModelSpec::from_yaml(&spec_yaml)?;
    let model = registry.load(name, version)?;
    let before = read_card(registry, name, version)?;
    let table = load_table(pool, &spec, stages).await?;
    let truths = load_truths(pool, &spec).await?;
    let champion = champion_of(registry, name)?;
    let bar = stages.spinner("evaluating");
    let partition = partition(&spec, &table)?;
    let (fresh, _) = evaluate_on(
        &spec,
        &table,
        &partition,
        &model,
        &truths,
        champion.as_ref().map(|(v, m)| (v.as_str(), m)),
    )?;
    bar.finish_and_clear();
    let card = Card {
        created_at: before.created_at,
        git_commit: before.git_commit,
        training_seconds: before.training_seconds,
        candidates: before.candidates,
        valid_log_loss_raw: before.valid_log_loss_raw,
        valid_log_loss_calibrated: before.valid_log_loss_calibrated,
        ..fresh
    };
    registry.rewrite(name, version, CARD_JSON, &card_json(&card)?)?;
    registry.rewrite(name, version, CARD_MD, &card.to_markdown(&spec))?;
    Ok(card)
}

/// `nudge-train promote`: makes `version` the champion if its card passes the gates and
/// was measured against the champion that is current now.
pub fn promote(registry: &Registry, name: &str, version: &str) -> Result<Card, TrainError> {
    let card = read_card(registry, name, version)?;
    // Refuse a corrupt artifact before it becomes what nudge-serve loads.
    registry.load(name, version)?;
    let current = registry.champion(name)?;
    let mut reasons = card.gates.failures.clone();
    if current.as_deref() == Some(version) {
        reasons.push("it is already the champion".into());
    }
    let compared = card.champion.as_ref().map(|c| c.version.as_str());
    if current.is_some() && current.as_deref() != compared && current.as_deref() != Some(version) {
        reasons.push(format!(
            "it was evaluated against champion {}, but the champion is now {}; run `nudge-train evaluate {name} {version}` first",
            compared.unwrap_or("(none)"),
            current.as_deref().unwrap_or("(none)")
        ));
    }
    if !reasons.is_empty() {
        return Err(TrainError::Refused {
            name: name.into(),
            version: version.into(),
            reasons,
        });
    }
    registry.set_champion(name, version)?;
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_window_thin_in_its_rarer_class_is_noted() {
        assert_eq!(thin_training_note(300, 5_000, 30), None);
        assert_eq!(thin_training_note(5_000, 300, 30), None);
        let note = thin_training_note(59, 1_347, 30).unwrap();
        assert!(
            note.contains("only 59 positive examples for 30 model inputs"),
            "{note}"
        );
        let note = thin_training_note(1_347, 59, 30).unwrap();
        assert!(note.contains("59 negative examples"), "{note}");
    }
}
