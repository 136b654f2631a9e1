//! The pure steps of a `POST /v1/score` request, one thread, no I/O:
//! `cargo bench --bench request_path`. The whole request under load is measured by
//! `benches/score_load.sh`; results of both are in BENCHMARKS.md.

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use nudge::features::catalog::{FeatureCatalog, FeatureKind};
use nudge::features::row::{FeatureRow, FeatureValue};
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

fn canary_bucket(c: &mut Criterion) {
    c.bench_function("canary_bucket", |b| {
        b.iter(|| nudge::rollout::bucket(black_box("salt"), black_box("u1234")))
    });
}

criterion_group!(
    request_path,
    parse_score_request,
    decode_feature_row,
    canary_bucket
);
criterion_main!(request_path);
