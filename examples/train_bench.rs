//! Trainer benchmark on a synthetic logistic problem with interactions: fit time and test
//! AUC of logistic regression and of boosted trees (200 trees, depth 6), then the
//! single-thread scoring throughput of each saved artifact read back from JSON.
//!
//!   cargo run --release --example train_bench -- [--rows 1000000] [--features 24]

use std::time::Instant;

use nudge::evaluation::roc_auc;
use nudge::models::Model;
use nudge::models::artifact::{FORMAT, schema_hash};
use nudge::models::calibration::{Calibration, sigmoid};
use nudge::models::preprocess::{ModelInput, NumericSummary, Preprocessing};
use nudge::training::fit::{Encoded, fit};
use nudge::training::spec::{Algorithm, ClassWeight};
use rand::{Rng, SeedableRng};

struct Row<'a>(&'a [f64]);

impl ModelInput for Row<'_> {
    fn numeric(&self, index: usize) -> Option<f64> {
        Some(self.0[index])
    }
    fn categorical(&self, _: usize) -> Option<&str> {
        None
    }
}

/// `rows` examples of `features` standard normal features; the log-odds are linear in
/// the first eight and add pairwise products of the next eight.
fn problem(rows: usize, features: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let mut values = Vec::with_capacity(rows * features);
    let labels = (0..rows)
        .map(|_| {
            let start = values.len();
            values.extend((0..features).map(|_| rng.sample::<f64, _>(normal)));
            let x = &values[start..];
            let linear: f64 = (0..8.min(features))
                .map(|j| x[j] * (0.6 - 0.15 * j as f64))
                .sum();
            let interactions: f64 = (8..16.min(features))
                .step_by(2)
                .map(|j| 0.5 * x[j] * x[j + 1])
                .sum();
            rng.random::<f64>() < sigmoid(-1.0 + linear + interactions)
        })
        .collect();
    (values, labels)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let rows = arg("--rows", 1_000_000);
    let width = arg("--features", 24);
    let (train_x, train_y) = problem(rows, width, 1);
    let (valid_x, valid_y) = problem(rows / 5, width, 2);
    let (test_x, test_y) = problem(rows / 5, width, 3);
    let names: Vec<String> = (0..width).map(|j| format!("x{j}")).collect();
    // Standardisation fitted on training rows, as the trainer does.
    let numeric = names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let mut s = NumericSummary::default();
            train_x.chunks_exact(width).for_each(|r| s.push(Some(r[j])));
            (name.clone(), s)
        })
        .collect();
    let preprocessing = Preprocessing::fit(numeric, Vec::new(), 1);
    let encode = |x: &[f64]| {
        let mut out = Vec::with_capacity(x.len());
        x.chunks_exact(width)
            .for_each(|r| preprocessing.encode_into(&Row(r), &mut out));
        out
    };
    let train = Encoded {
        values: encode(&train_x),
        width,
        labels: train_y,
    };
    let valid = Encoded {
        values: encode(&valid_x),
        width,
        labels: valid_y,
    };
    println!(
        "synthetic logistic problem with interactions: {rows} training rows × {width} features \
         ({} validation, {} test), {} cores",
        valid.rows(),
        test_y.len(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let candidates = [
        (
            "logistic",
            // Every row: the benchmark measures a fit on all of them.
            Algorithm::Logistic {
                l2: 1.0,
                max_iterations: 200,
                max_rows: rows,
            },
        ),
        (
            "gbm",
            Algorithm::Gbm {
                trees: 200,
                max_depth: 6,
                learning_rate: 0.1,
                early_stopping_rounds: 200,
                min_leaf_weight: 1.0,
                l2: 1.0,
            },
        ),
    ];
    let test_rows: Vec<Row<'_>> = test_x.chunks_exact(width).map(Row).collect();
    for (name, algorithm) in candidates {
        let started = Instant::now();
        let estimator = fit(
            name,
            &algorithm,
            train.clone(),
            &valid,
            ClassWeight::None,
            1,
        )?;
        let fit_seconds = started.elapsed().as_secs_f64();
        let model = Model {
            format: FORMAT,
            name: "bench".into(),
            version: "bench".into(),
            label: "y".into(),
            candidate: name.into(),
            schema_hash: schema_hash(names.iter().map(String::as_str), []),
            preprocessing: preprocessing.clone(),
            estimator,
            calibration: Calibration::None,
        };
        let model = Model::from_json(&model.to_json()?)?;
        let scores = model.score_all(&test_rows);
        let auc = roc_auc(
            &scores
                .into_iter()
                .zip(test_y.iter().copied())
                .collect::<Vec<_>>(),
        );
        // One row at a time on this thread, as a request handler scores.
        let n = test_rows.len().min(100_000);
        let started = Instant::now();
        let mut sum = 0.0;
        for row in &test_rows[..n] {
            sum += model.score(row);
        }
        let per_second = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "{name:<9} fit {fit_seconds:>7.1} s · test AUC {:.4} · scoring {per_second:>10.0} rows/s (one thread, one row per call; checksum {sum:.3})",
            auc.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
