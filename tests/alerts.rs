//! The Prometheus alert rules in `ops/alerts.yml`: valid for promtool, true to their unit
//! tests (`ops/alerts.test.yml`), and reading only metrics nudge-serve exports.

mod common;

use std::process::Command;

use nudge::telemetry;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Runs promtool with `args` from `ops/` and returns its output, failing the test with it
/// when promtool fails.
fn promtool(args: &[&str]) -> String {
    let promtool = common::installed_tool("tests/promtool/install.sh", "promtool/usr/bin/promtool");
    let output = Command::new(promtool)
        .args(args)
        .current_dir(format!("{MANIFEST_DIR}/ops"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_prometheus_rules() {
    let out = promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS: 14 rules found"), "{out}");
}

#[test]
fn each_alert_fires_when_its_unit_tests_say_and_not_otherwise() {
    let out = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_metric_an_alert_reads_is_one_nudge_serve_exports() {
    let rules: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{MANIFEST_DIR}/ops/alerts.yml")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<&str> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .map(|rule| rule["expr"].as_str().unwrap())
        .collect();
    assert_eq!(exprs.len(), 14);
    let mut read = 0;
    for expr in exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("nudge_"))
        {
            // A histogram is read through its buckets.
            let metric = name.strip_suffix("_bucket").unwrap_or(name);
            assert!(
                telemetry::EXPORTED.contains(&metric),
                "{name} in `{expr}` is not a metric nudge-serve exports"
            );
            read += 1;
        }
    }
    assert!(read >= 14, "only {read} metrics read");
}
