//! The control loop in the server: `GET /admin/controller` (state, settings and history
//! of the PI controller, and the last guardrail checks), `POST /admin/controller/tick`
//! (one tick of the control loop now, or at a given time when a simulation drives it),
//! the ticks on the wall clock, the threshold in force and the guardrail gauges.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::body::{ADMIN_LIMIT, Json, LimitedBody, json_object, rfc3339};
use super::error::{ApiError, ErrorBody};
use super::spawn_every;
use crate::control::guardrail;
use crate::control::tick::{
    self, ControlError, ControllerReport, GuardrailReport, LatestChecks, StepRecord, Stored,
    TickReport, TickRun,
};
use crate::policy::Policy;
use crate::rollout::Comparison;
use crate::telemetry;

/// Steps shown by `GET /admin/controller`.
const HISTORY: i64 = 100;

/// The controller's settings as in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsView {
    /// Whether it steps.
    pub enabled: bool,
    /// Whether it only logs what it would do.
    pub dry_run: bool,
    /// Target ROI of the model arm.
    pub target_roi: f64,
    /// Proportional gain (log-odds per point).
    pub kp: f64,
    /// Integral gain (log-odds per accumulated point).
    pub ki: f64,
    /// Most the threshold moves per step.
    pub max_step: f64,
    /// Threshold bounds: lowest.
    pub min: f64,
    /// Threshold bounds: highest.
    pub max: f64,
    /// The threshold before any step.
    pub initial: f64,
    /// Seconds between steps.
    pub interval_secs: i64,
    /// Fewest model-arm sends a step acts on.
    pub min_sends: u64,
}

/// `GET /admin/controller`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ControllerView {
    /// The model arm's threshold under the stored state (what every replica serves once it has read it).
    pub threshold: f64,
    /// Settings from the policy.
    pub settings: SettingsView,
    /// Stored state; null before the first tick.
    pub state: Option<Stored>,
    /// When the next step is due; null before the first.
    pub next_step_at: Option<DateTime<Utc>>,
    /// When the guardrails are next checked (`guardrails.interval` after the last check);
    /// null before the first.
    pub next_guardrail_check_at: Option<DateTime<Utc>>,
    /// Latest steps, newest first.
    pub history: Vec<StepRecord>,
    /// The guardrail checks of the latest tick that ran them; null before the first.
    pub guardrails: Option<LatestChecks>,
}

/// `GET /admin/controller`: the controller's state, settings and latest steps, and the
/// latest guardrail checks.
#[utoipa::path(get, path = "/admin/controller", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = ControllerView), (status = 401, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn get_controller(
    State(ctx): State<ApiContext>,
) -> Result<Json<ControllerView>, ApiError> {
    let loaded = ctx.current()?;
    let policy = &loaded.policy;
    let unavailable = |e: sqlx::Error| ApiError::Unavailable(format!("controller state: {e}"));
    let state = tick::load(&ctx.pool).await.map_err(unavailable)?;
    let (history, guardrails) = tokio::try_join!(
        tick::history(&ctx.pool, HISTORY),
        tick::latest_checks(&ctx.pool)
    )
    .map_err(unavailable)?;
    let c = &policy.controller;
    Ok(Json(ControllerView {
        threshold: tick::threshold_in_force(policy, state.as_ref()),
        settings: SettingsView {
            enabled: c.enabled,
            dry_run: c.dry_run,
            target_roi: c.target_roi,
            kp: c.kp,
            ki: c.ki,
            max_step: c.max_step,
            min: policy.threshold.min,
            max: policy.threshold.max,
            initial: policy.threshold.initial,
            interval_secs: c.interval.num_seconds(),
            min_sends: c.min_sends,
        },
        next_step_at: state.as_ref().and_then(|s| s.next_step_at(c.interval)),
        next_guardrail_check_at: state
            .as_ref()
            .and_then(|s| s.next_guardrail_check_at(policy.guardrails.interval)),
        state,
        history,
        guardrails,
    }))
}

/// `POST /admin/controller/tick`'s optional body (null as absent, unknown fields ignored).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(expecting = "a JSON object")]
struct TickRequest {
    /// The tick's time (RFC 3339); now when absent.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    at: Option<String>,
}

impl TickRequest {
    /// The time a body asks the tick for; `None` for an empty or `null` body, or no `at`.
    fn parse(body: &[u8]) -> Result<Option<DateTime<Utc>>, ApiError> {
        if matches!(body.trim_ascii(), b"" | b"null") {
            return Ok(None);
        }
        let request: Self = json_object(body)?;
        request.at.map(|text| rfc3339(&text, "at")).transpose()
    }
}

/// `POST /admin/controller/tick` `{"at": "RFC 3339"}` (optional; now when absent): checks
/// the guardrails, then steps the controller if its interval has passed by `at`.
#[utoipa::path(post, path = "/admin/controller/tick", tag = "admin", security(("admin" = [])),
    request_body(content = Option<TickRequest>),
    responses((status = 200, body = TickReport), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn post_tick(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<ADMIN_LIMIT>,
) -> Result<Json<TickReport>, ApiError> {
    let at = TickRequest::parse(&body)?.unwrap_or_else(Utc::now);
    ctx.control_tick(at).await.map(Json)
}

impl ApiContext {
    /// Reads the controller's state from Postgres and puts its threshold in force. On
    /// failure the state last read stays (counted in `nudge_control_errors_total`).
    pub async fn refresh_controller(&self) -> Result<(), sqlx::Error> {
        match tick::load(&self.pool).await {
            Ok(stored) => {
                self.controller.store(stored.map(Arc::new));
                self.publish_threshold();
                Ok(())
            }
            Err(e) => {
                metrics::counter!(telemetry::CONTROL_ERRORS).increment(1);
                Err(e)
            }
        }
    }

    /// Sets the guardrail gauges from the latest stored checks when a model arm, its
    /// control and its guardrails are in force (else clears them): at start, so that an
    /// alert on them need not wait up to `guardrails.interval` for the next check, and at
    /// a tick between checks, whose latest may be another replica's.
    pub(super) async fn publish_stored_guardrails(&self) -> Result<(), sqlx::Error> {
        let Some(loaded) = self.loaded.load_full() else {
            return Ok(());
        };
        let policy = &loaded.policy;
        if !policy.guardrails.enabled {
            publish_guardrails(policy, Guardrails::NotInForce);
            return Ok(());
        }
        match self.in_force(policy).comparison() {
            Comparison::NoModelArm => publish_guardrails(policy, Guardrails::NotInForce),
            Comparison::NoControl => publish_guardrails(policy, Guardrails::Unchecked),
            Comparison::ModelArm(_) => match tick::latest_checks(&self.pool).await? {
                Some(latest) => {
                    publish_guardrails(policy, Guardrails::Checked(latest.at, &latest.checks));
                }
                None => publish_guardrails(policy, Guardrails::Unchecked),
            },
        }
        Ok(())
    }

    /// The model arm's threshold in force under `policy`.
    pub fn threshold(&self, policy: &Policy) -> f64 {
        tick::threshold_in_force(policy, self.controller.load().as_deref())
    }

    fn publish_threshold(&self) {
        if let Some(loaded) = self.loaded.load_full() {
            metrics::gauge!(telemetry::CONTROLLER_THRESHOLD).set(self.threshold(&loaded.policy));
        }
    }

    /// One tick of the control loop at `at` (guardrails, then the controller if due),
    /// under the policy and rollout in force; puts its results in force here at once.
    pub async fn control_tick(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<TickReport, ApiError> {
        let loaded = self.current()?;
        let in_force = self.in_force(&loaded.policy);
        let report = tick::tick(&self.pool, &self.flag_store, &loaded.policy, &in_force, at)
            .await
            .map_err(|e: ControlError| {
                metrics::counter!(telemetry::CONTROL_ERRORS).increment(1);
                ApiError::Unavailable(e.to_string())
            })?;
        if let TickReport::Ran(run) = &report {
            let TickRun {
                at,
                guardrails,
                controller,
                state,
            } = run.as_ref();
            self.controller.store(Some(Arc::new(state.clone())));
            self.publish_threshold();
            match guardrails {
                GuardrailReport::Passed { checks } | GuardrailReport::RolledBack { checks, .. } => {
                    publish_guardrails(&loaded.policy, Guardrails::Checked(*at, checks));
                }
                GuardrailReport::NoModelArm | GuardrailReport::Disabled => {
                    publish_guardrails(&loaded.policy, Guardrails::NotInForce);
                }
                GuardrailReport::NoControl => {
                    publish_guardrails(&loaded.policy, Guardrails::Unchecked);
                }
                // The check in force may be another replica's: show it here too, so the
                // replicas' gauges agree and none keeps an older check's z.
                GuardrailReport::NotDue { .. } => {
                    if let Err(e) = self.publish_stored_guardrails().await {
                        tracing::warn!(error = %e, "guardrail checks unreadable; their gauges keep the last values");
                    }
                }
            }
            if let GuardrailReport::RolledBack { .. } = guardrails {
                metrics::counter!(telemetry::GUARDRAIL_ROLLBACKS).increment(1);
                // Best effort: the watch loop reads the flag again within its interval.
                let _ = self.refresh_flags().await;
            }
            if let ControllerReport::Stepped(record) = controller {
                metrics::counter!(telemetry::CONTROLLER_STEPS, "outcome" => record.step.outcome.as_str(),
                                  "dry_run" => record.dry_run.to_string())
                .increment(1);
            }
        }
        Ok(report)
    }

    /// Ticks the control loop on the wall clock every `interval`.
    pub fn tick_controller(&self, interval: std::time::Duration) {
        let ctx = self.clone();
        spawn_every(interval, move || {
            let ctx = ctx.clone();
            async move {
                if let Err(e) = ctx.control_tick(chrono::Utc::now()).await {
                    tracing::warn!(error = %e, "control tick failed; the next one retries");
                }
            }
        });
    }
}

/// What the guardrail gauges show.
enum Guardrails<'a> {
    /// The checks in force, made at a time.
    Checked(chrono::DateTime<chrono::Utc>, &'a [guardrail::Check]),
    /// A model arm is in force with its guardrails on, and no check is: none was ever
    /// made, or there is no control to check against (the model decides for everyone).
    /// Every z is NaN and the check time 0, so an alert on the check's age fires.
    Unchecked,
    /// No guardrail is in force (the model decides for nobody, or guardrails are off): no
    /// guardrail is breached and every z is NaN, so an alert on a z left from before a
    /// rollback does not linger.
    NotInForce,
}

/// Sets the guardrail gauges (each metric's breached, z and the z a breach needs, and
/// when the checks were made).
fn publish_guardrails(policy: &Policy, guardrails: Guardrails<'_>) {
    let set = |metric: guardrail::Metric, breached: bool, z: [Option<f64>; 3]| {
        let metric = metric.as_str();
        let [z, critical, detectable] = z.map(|v| v.unwrap_or(f64::NAN));
        metrics::gauge!(telemetry::GUARDRAIL_BREACHED, "metric" => metric)
            .set(f64::from(u8::from(breached)));
        metrics::gauge!(telemetry::GUARDRAIL_Z, "metric" => metric).set(z);
        metrics::gauge!(telemetry::GUARDRAIL_Z_CRITICAL, "metric" => metric).set(critical);
        metrics::gauge!(telemetry::GUARDRAIL_DETECTABLE_HARM, "metric" => metric).set(detectable);
    };
    let clear = || {
        guardrail::Metric::ALL
            .into_iter()
            .for_each(|m| set(m, false, [None; 3]));
    };
    let checked_at = match guardrails {
        Guardrails::Checked(at, checks) => {
            for c in checks {
                let detectable = guardrail::detectable_harm(c, &policy.guardrails);
                set(c.metric, c.breached, [c.z, c.critical, detectable]);
            }
            at.timestamp() as f64
        }
        Guardrails::Unchecked => {
            clear();
            0.0
        }
        Guardrails::NotInForce => {
            clear();
            f64::NAN
        }
    };
    metrics::gauge!(telemetry::GUARDRAIL_CHECKED_AT).set(checked_at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::guardrail::{Check, Metric, Proportion};
    use crate::policy::Policy;

    /// The gauges `publish` sets, rendered by a recorder of the test's own (the process's
    /// is shared by every test).
    fn published(publish: impl FnOnce(&Policy)) -> String {
        let policy =
            Policy::parse(&std::fs::read_to_string("policy/policy.yaml").unwrap()).unwrap();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || publish(&policy));
        handle.render()
    }

    /// A check of `metric` with 15 % against 1 % of 400, its z and the z it breaches at.
    fn check(metric: Metric, tested: Option<(f64, f64)>, breached: bool) -> Check {
        Check {
            metric,
            arm: crate::rollout::Arm::Canary,
            canary: Proportion {
                successes: 60,
                trials: 400,
            },
            control: Proportion {
                successes: 4,
                trials: 400,
            },
            margin: 0.01,
            z: tested.map(|t| t.0),
            critical: tested.map(|t| t.1),
            breached,
            weighed: None,
        }
    }

    #[test]
    fn guardrail_gauges_carry_each_checks_verdict_and_z_beside_the_critical_z() {
        let checks = [
            check(Metric::OptOutRate, Some((5.25, 3.41)), true),
            check(Metric::D7Retention, None, false),
        ];
        let at = "2026-03-02T12:00:00Z".parse().unwrap();
        let mut settings = None;
        let text = published(|policy| {
            settings = Some(policy.guardrails);
            super::publish_guardrails(policy, super::Guardrails::Checked(at, &checks))
        });
        // The harm the opt-out check could catch, beside its verdict.
        let opt_out = guardrail::detectable_harm(&checks[0], &settings.unwrap()).unwrap();
        let opt_out =
            format!("nudge_guardrail_detectable_harm{{metric=\"opt_out_rate\"}} {opt_out}");
        assert!(
            text.lines().any(|l| l == opt_out),
            "{opt_out} not in {text}"
        );
        for line in [
            "nudge_guardrail_breached{metric=\"opt_out_rate\"} 1",
            "nudge_guardrail_z{metric=\"opt_out_rate\"} 5.25",
            "nudge_guardrail_z_critical{metric=\"opt_out_rate\"} 3.41",
            "nudge_guardrail_breached{metric=\"d7_retention\"} 0",
            "nudge_guardrail_z{metric=\"d7_retention\"} NaN",
            "nudge_guardrail_z_critical{metric=\"d7_retention\"} NaN",
            "nudge_guardrail_checked_at_seconds 1772452800",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }

    #[test]
    fn without_a_check_in_force_no_gauge_says_breached_and_every_z_is_nan() {
        // The breach that rolled the canary back, then a tick with no model arm in force
        // (no check time), or with one and no check (checked at the epoch, so the alert on
        // the check's age fires).
        for (then, checked_at) in [
            (super::Guardrails::NotInForce, "NaN"),
            (super::Guardrails::Unchecked, "0"),
        ] {
            let text = published(|policy| {
                let breach = [check(Metric::OptOutRate, Some((5.25, 3.41)), true)];
                let at = "2026-03-02T12:00:00Z".parse().unwrap();
                super::publish_guardrails(policy, super::Guardrails::Checked(at, &breach));
                super::publish_guardrails(policy, then);
            });
            for metric in Metric::ALL.map(Metric::as_str) {
                for line in [
                    format!("nudge_guardrail_breached{{metric=\"{metric}\"}} 0"),
                    format!("nudge_guardrail_z{{metric=\"{metric}\"}} NaN"),
                    format!("nudge_guardrail_z_critical{{metric=\"{metric}\"}} NaN"),
                    format!("nudge_guardrail_detectable_harm{{metric=\"{metric}\"}} NaN"),
                ] {
                    assert!(text.lines().any(|l| l == line), "{line} not in {text}");
                }
            }
            let line = format!("nudge_guardrail_checked_at_seconds {checked_at}");
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }

    #[test]
    fn a_tick_body_is_optional_and_its_time_checked() {
        for empty in ["", "  \n", "null", "{}", r#"{"at": null}"#] {
            assert_eq!(
                TickRequest::parse(empty.as_bytes()).unwrap(),
                None,
                "{empty:?}"
            );
        }
        assert_eq!(
            TickRequest::parse(br#"{"at": "2026-03-01T00:00:00+01:00"}"#).unwrap(),
            DateTime::parse_from_rfc3339("2026-02-28T23:00:00Z")
                .ok()
                .map(|t| t.to_utc())
        );
        for (body, field) in [
            (r#"{"at": "tomorrow"}"#, "at"),
            (r#"{"at": 5}"#, "at"),
            ("[]", "body"),
            ("{", "body"),
        ] {
            let error = TickRequest::parse(body.as_bytes()).unwrap_err();
            assert_eq!(error.field(), Some(field), "{body}");
        }
    }
}
