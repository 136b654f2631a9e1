//! Logs and metrics: one tracing subscriber and one Prometheus recorder per process, and
//! the report a binary prints when it fails.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Name of the request latency histogram.
pub const HTTP_LATENCY: &str = "nudge_http_request_duration_seconds";
/// Counter of requests refused with 503 by the in-flight limit or the timeout (label `cause`).
pub const REFUSED: &str = "nudge_http_refused_total";
/// Counter of `/v1/score` decisions, by arm and reason of the candidate acted on.
pub const DECISIONS: &str = "nudge_decisions_total";
/// Gauge of decisions waiting in the log's queue.
pub const DECISION_QUEUE_DEPTH: &str = "nudge_decision_log_queue_depth";
/// Counter of decisions the log could not keep (queue full).
pub const DECISION_LOG_DROPPED: &str = "nudge_decision_log_dropped_total";
/// Counter of decisions Postgres refused as data (each logged by request id; retrying the
/// same row cannot succeed, so it is not retried and does not hold up the others).
pub const DECISION_LOG_REFUSED: &str = "nudge_decision_log_refused_total";
/// Counter of decision-log rows written to Postgres: a decision, a paywall answer, or one
/// user's churn score (a rewrite of a row already there is not counted).
pub const DECISIONS_LOGGED: &str = "nudge_decision_log_written_total";
/// Counter of failed decision-log batch writes (each is retried).
pub const DECISION_LOG_ERRORS: &str = "nudge_decision_log_errors_total";
/// Counter of quota-store failures on `/v1/score` (the send is refused, reason `quota_unavailable`).
pub const QUOTA_ERRORS: &str = "nudge_quota_errors_total";
/// Counter of what the quota store was seeded with from the recorded notifications, by
/// `kind` (`sends` of the last day, `loads` of the send budget).
pub const QUOTA_SEEDED: &str = "nudge_quota_seeded_total";
/// Counter of seedings of the quota store that failed (the quotas then count from nothing).
pub const QUOTA_SEED_ERRORS: &str = "nudge_quota_seed_errors_total";
/// Counter of online-feature lookups that failed on `/v1/score` (scored as a cold start).
pub const FEATURE_ERRORS: &str = "nudge_score_feature_errors_total";
/// Counter of failed reads of the runtime flags (the last ones read stay in force).
pub const FLAG_ERRORS: &str = "nudge_flag_errors_total";
/// Gauge per mode (label `mode`): 1 for the rollout mode in force, 0 for the others.
pub const ROLLOUT_MODE: &str = "nudge_rollout_mode";
/// Gauge: the canary percent in force.
pub const CANARY_PERCENT: &str = "nudge_rollout_canary_percent";
/// Gauge: 1 while the kill switch (file or flag) stops sends.
pub const KILL_SWITCH: &str = "nudge_kill_switch";
/// Gauge: the model arm's threshold in force (the controller's output).
pub const CONTROLLER_THRESHOLD: &str = "nudge_controller_threshold";
/// Controller steps by outcome (`stepped`, `held_small_sample`) and dry run.
pub const CONTROLLER_STEPS: &str = "nudge_controller_steps_total";
/// Control ticks that failed (Postgres or the flag store).
pub const CONTROL_ERRORS: &str = "nudge_control_errors_total";
/// 1 while a guardrail's last check of the model arm in force found a breach, by metric
/// (0 once no model arm is in force).
pub const GUARDRAIL_BREACHED: &str = "nudge_guardrail_breached";
/// A guardrail's last z statistic, by metric: it breaches at
/// `nudge_guardrail_z_critical`; NaN while an arm has too few samples or no model arm is
/// in force.
pub const GUARDRAIL_Z: &str = "nudge_guardrail_z";
/// The harm (a share) a guardrail's last check could catch with 80 % power, by metric
/// (`guardrail::detectable_harm`): what an `ok` leaves unseen. NaN when no check is in
/// force.
pub const GUARDRAIL_DETECTABLE_HARM: &str = "nudge_guardrail_detectable_harm";
/// The z a guardrail's last check breached at, by metric (`guardrail::critical_z`: the
/// same for every check under a fixed test, rising slowly with the evidence under a
/// sequential one); NaN when its z is.
pub const GUARDRAIL_Z_CRITICAL: &str = "nudge_guardrail_z_critical";
/// When the guardrail checks in force were made (Unix seconds): 0 while a model arm is in
/// force and none was ever made (or it has no control), NaN while none is in force.
pub const GUARDRAIL_CHECKED_AT: &str = "nudge_guardrail_checked_at_seconds";
/// Rollouts switched to shadow by a guardrail.
pub const GUARDRAIL_ROLLBACKS: &str = "nudge_guardrail_rollbacks_total";
/// Gauge set to 1 for the loaded model and policy versions.
pub const LOADED_VERSION: &str = "nudge_loaded_version";
/// Counter of ingested events by catalog name and outcome (`accepted`, `duplicate`).
pub const INGEST_EVENTS: &str = "nudge_ingest_events_total";
/// Counter of refused events by reason and catalog name.
pub const INGEST_REJECTS: &str = "nudge_ingest_rejects_total";
/// Gauge: how far the newest snapshot trails the newest event, in seconds.
pub const FEATURES_LAG: &str = "nudge_features_lag_seconds";
/// Gauge: seconds from the newest snapshot's as_of to now.
pub const SNAPSHOT_AGE: &str = "nudge_features_snapshot_age_seconds";
/// Gauge: share of the last 24 hours' events that passed validation.
pub const VALIDATION_PASS_SHARE: &str = "nudge_events_validation_pass_share";
/// Gauge: users in the embedded store's current feature version.
pub const EMBEDDED_USERS: &str = "nudge_features_embedded_users";

/// Every metric `nudge-serve` exports (each named only here), for what reads them from
/// outside: the alert rules in `ops/alerts.yml` are checked against it.
pub const EXPORTED: [&str; 32] = [
    HTTP_LATENCY,
    REFUSED,
    DECISIONS,
    DECISION_QUEUE_DEPTH,
    DECISION_LOG_DROPPED,
    DECISION_LOG_REFUSED,
    DECISIONS_LOGGED,
    DECISION_LOG_ERRORS,
    QUOTA_ERRORS,
    QUOTA_SEEDED,
    QUOTA_SEED_ERRORS,
    FEATURE_ERRORS,
    FLAG_ERRORS,
    ROLLOUT_MODE,
    CANARY_PERCENT,
    KILL_SWITCH,
    CONTROLLER_THRESHOLD,
    CONTROLLER_STEPS,
    CONTROL_ERRORS,
    GUARDRAIL_BREACHED,
    GUARDRAIL_Z,
    GUARDRAIL_DETECTABLE_HARM,
    GUARDRAIL_Z_CRITICAL,
    GUARDRAIL_CHECKED_AT,
    GUARDRAIL_ROLLBACKS,
    LOADED_VERSION,
    INGEST_EVENTS,
    INGEST_REJECTS,
    FEATURES_LAG,
    SNAPSHOT_AGE,
    VALIDATION_PASS_SHARE,
    EMBEDDED_USERS,
];

/// Initialises logging to stderr (`RUST_LOG` filters, else `default_filter`). Safe to call twice.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `nudge-serve`'s default log filter: slow statements are worth a warning there.
pub const SERVE_LOG_FILTER: &str = "info,sqlx=warn";
/// `nudge-train`'s default log filter: long bulk queries are its job, not a warning.
pub const TRAIN_LOG_FILTER: &str = "info,sqlx=error";
/// The demo's default log filter: its printed summaries say what each stage did, so the
/// per-day refresh and the in-process server's routine logs would only bury them.
pub const DEMO_LOG_FILTER: &str =
    "info,sqlx=error,nudge::features::refresh=warn,nudge::serving=warn,nudge::control=warn";

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_LATENCY.into()), &buckets)
                .expect("bucket list is non-empty")
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            // Histograms are drained into their buckets by upkeep; do it off the request path.
            let upkeep = handle.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// A binary's exit status for what it did, after printing [`error_report`] when it failed.
pub fn exit_status<E>(outcome: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_report(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a binary prints when it fails: the error, then each cause on its own line, except
/// a cause whose text is already printed (our messages often quote their source, which
/// the error also exposes as its cause).
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut report = format!("error: {error}");
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !report.contains(&text) {
            report.push_str("\n  caused by: ");
            report.push_str(&text);
        }
        cause = error.source();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading the spec: {0}")]
        Quoting(#[source] std::io::Error),
        #[error("reading the spec")]
        Silent(#[source] std::io::Error),
    }

    #[test]
    fn every_metric_this_module_names_is_exported() {
        let named: std::collections::BTreeSet<&str> = include_str!("telemetry.rs")
            .lines()
            .filter(|line| line.starts_with("pub const ") && line.contains(": &str = \"nudge_"))
            .filter_map(|line| line.split('"').nth(1))
            .collect();
        let exported: std::collections::BTreeSet<&str> = EXPORTED.into_iter().collect();
        assert_eq!(named.len(), EXPORTED.len(), "a metric is listed twice");
        assert_eq!(named, exported);
    }

    #[test]
    fn a_cause_is_reported_once() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            error_report(&Outer::Quoting(missing())),
            "error: reading the spec: no such file"
        );
        assert_eq!(
            error_report(&Outer::Silent(missing())),
            "error: reading the spec\n  caused by: no such file"
        );
    }
}
