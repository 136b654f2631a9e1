//! `GET /admin/controller` (state, settings and history of the PI controller, and the
//! last guardrail checks) and `POST /admin/controller/tick` (one tick of the control
//! loop now, or at a given time when a simulation drives it).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::body::{ADMIN_LIMIT, Json, LimitedBody, json_object, rfc3339};
use super::error::{ApiError, ErrorBody};
use crate::control::tick::{self, LatestChecks, StepRecord, Stored, TickReport};

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
        next_step_at: state.and_then(|s| s.next_step_at(c.interval)),
        next_guardrail_check_at: state
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

#[cfg(test)]
mod tests {
    use super::*;

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
