//! The pure steps of a `POST /v1/score` request (parse, feature row, ranker, bucket,
//! answer), one thread, no I/O: `cargo bench --bench request_path`. The whole request
//! under load is measured by `benches/score_load.sh`; results of both are in BENCHMARKS.md.

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use forust_ml::{GradientBooster, Matrix};
use nudge::features::catalog::{FeatureCatalog, FeatureKind};
use nudge::features::row::{FeatureRow, FeatureValue};
use nudge::models::artifact::to_column_major;
use nudge::models::forest::Forest;
use nudge::serving::score::ScoreRequest;
use std::hint::black_box;

/// The body `benches/score.lua` sends: five candidates.
const SCORE_BODY: &str = r#"{"user_id":"u1234","now":"2026-11-22T12:00:00Z","timezone":"UTC","candidates":[{"id":"n-1","type":"contact_reminder"},{"id":"n-2","type":"weekly_digest"},{"id":"n-3","type":"re_engagement"},{"id":"n-4","type":"suggested_contact"},{"id":"n-5","type":"contact_reminder"}]}"#;

fn parse_score_request(c: &mut Criterion) {
    let server_now = Utc.with_ymd_and_hms(2026, 11, 22, 12, 30, 0).unwrap();
    c.bench_function("score_request_parse_5_candidates", |b| {
        b.iter(|| ScoreRequest::parse(black_box(SCORE_BODY.as_bytes()), server_now).unwrap())
    });
}

/// A row with a plausible value of each feature's kind.
fn sample_row(catalog: &FeatureCatalog) -> FeatureRow {
    let values = catalog
        .features()
        .iter()
        .map(|f| match f.kind {
            FeatureKind::Count => FeatureValue::Count(7),
            FeatureKind::Hours | FeatureKind::Days => FeatureValue::Real(13.25),
            FeatureKind::Rate => FeatureValue::Real(0.375),
            FeatureKind::Score => FeatureValue::Real(61.0),
            FeatureKind::HourOfDay => FeatureValue::Real(18.5),
            FeatureKind::Flag => FeatureValue::Flag(false),
            FeatureKind::Band => FeatureValue::Text("warm".into()),
            FeatureKind::Timezone => FeatureValue::Text("Europe/Berlin".into()),
        })
        .collect();
    FeatureRow {
        as_of: NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
        values,
    }
}

fn decode_feature_row(c: &mut Criterion) {
    let catalog = FeatureCatalog::builtin().unwrap();
    let encoded = sample_row(&catalog).encode();
    c.bench_function("feature_row_decode", |b| {
        b.iter(|| FeatureRow::decode(&catalog, black_box(&encoded)).unwrap())
    });
}

/// Columns of the synthetic rows the forest is fitted on (the ranker encodes about 40).
const WIDTH: usize = 40;

/// A forest the size of the demo's ranker (300 trees of depth 6), fitted on a synthetic
/// problem with interactions, and rows to score with it.
fn ranker_sized_forest() -> (Forest, Vec<f64>) {
    let rows = 20_000;
    let mut state = 7u64;
    let mut uniform = move || {
        // xorshift: reproducible without another dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let values: Vec<f64> = (0..rows * WIDTH).map(|_| uniform() * 2.0 - 1.0).collect();
    let targets: Vec<f64> = values
        .chunks_exact(WIDTH)
        .map(|r| {
            f64::from(u8::from(
                r[0] * r[1] + r[2] - r[3] * r[4] + 0.3 * uniform() > 0.0,
            ))
        })
        .collect();
    let columns = to_column_major(&values, rows, WIDTH);
    let mut booster = GradientBooster::default()
        .set_iterations(300)
        .set_max_depth(6)
        .set_learning_rate(0.05)
        .set_parallel(false);
    booster
        .fit(
            &Matrix::new(&columns, rows, WIDTH),
            &targets,
            &vec![1.0; rows],
            None,
        )
        .unwrap();
    (Forest::of(&booster), values)
}

fn ranker_rows(c: &mut Criterion) {
    let (forest, values) = ranker_sized_forest();
    let five = &values[..5 * WIDTH];
    c.bench_function("forest_5_rows_together", |b| {
        b.iter(|| forest.logits(black_box(five), WIDTH))
    });
    c.bench_function("forest_5_rows_one_by_one", |b| {
        b.iter(|| {
            black_box(five)
                .chunks_exact(WIDTH)
                .map(|row| forest.logits(row, WIDTH)[0])
                .sum::<f64>()
        })
    });
}

fn canary_bucket(c: &mut Criterion) {
    c.bench_function("canary_bucket", |b| {
        b.iter(|| nudge::rollout::bucket(black_box("salt"), black_box("u1234")))
    });
}

criterion_group!(
    request_path,
    parse_score_request,
    decode_feature_row,
    ranker_rows,
    canary_bucket,
    score_response
);
criterion_main!(request_path);

/// A score answer for the five candidates of [`SCORE_BODY`].
fn sample_response() -> nudge::serving::score::ScoreResponse {
    use nudge::policy::gates::Reason;
    use nudge::serving::score::{CandidateDecision, ModelRef, ScoreResponse};
    ScoreResponse {
        request_id: uuid::Uuid::now_v7(),
        arm: nudge::rollout::Arm::Canary,
        mode: nudge::policy::Mode::Canary,
        model: Some(ModelRef {
            name: "notif_ranker",
            version: "20261206T051144Z-b210da99".into(),
        }),
        policy_version: "a29a126f0e09".into(),
        threshold: 0.2016978412,
        cold_start: false,
        timezone: "UTC",
        timezone_assumed_utc: false,
        decisions: (1..=5)
            .map(|i| CandidateDecision {
                id: format!("n-{i}"),
                score: Some(0.5700177282580629 / f64::from(i)),
                send: i == 1,
                reason: if i == 1 {
                    Reason::Ok
                } else {
                    Reason::NotSelected
                },
            })
            .collect(),
    }
}

fn score_response(c: &mut Criterion) {
    use axum::response::IntoResponse;
    c.bench_function("score_response_into_response", |b| {
        b.iter_batched(
            sample_response,
            |answer| nudge::serving::body::Json(answer).into_response(),
            criterion::BatchSize::SmallInput,
        )
    });
}
