//! Bearer-token scopes and the admin endpoints: the scheduler scope guards `/v1/score`,
//! the admin scope guards `/admin/*` (disabled without an admin token). Reloads come from
//! `POST /admin/reload` or SIGHUP; a refused file keeps the old policy and models serving.
//! `/admin/rollout` and `/admin/kill-switch` set the runtime flags every replica follows.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ApiContext;
use super::body::{ADMIN_LIMIT, LimitedBody};
use super::error::{ApiError, ErrorBody};
use crate::policy::Mode;
use crate::rollout::{InForce, KillSwitchFlag, RolloutFlag, Source};

/// Whether the request carries `Authorization: Bearer <expected>`. Both sides are hashed
/// first, so the comparison takes the same time wherever they differ.
fn bearer_matches(request: &Request, expected: &str) -> bool {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|token| Sha256::digest(token) == Sha256::digest(expected))
}

/// Requires the scheduler token, when one is configured (without one: dev mode only).
pub async fn scheduler_scope(
    State(ctx): State<ApiContext>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &ctx.scheduler_token {
        Some(token) if !bearer_matches(&request, token) => Err(ApiError::Unauthorized(
            "a bearer token of the scheduler scope is required",
        )),
        _ => Ok(next.run(request).await),
    }
}

/// Requires the admin token; without one the admin API does not exist.
pub async fn admin_scope(
    State(ctx): State<ApiContext>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &ctx.admin_token {
        None => Err(ApiError::Disabled("the admin API (set NUDGE_ADMIN_TOKEN)")),
        Some(token) if !bearer_matches(&request, token) => Err(ApiError::Unauthorized(
            "a bearer token of the admin scope is required",
        )),
        Some(_) => Ok(next.run(request).await),
    }
}

/// `POST /admin/reload`: reloads policy and models; a refusal is a 422 naming the
/// reason, and what served before keeps serving.
#[utoipa::path(post, path = "/admin/reload", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "the policy version and the models now serving"),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reload(State(ctx): State<ApiContext>) -> Result<Json<Value>, ApiError> {
    let loaded = ctx.reload().map_err(|e| {
        tracing::warn!(error = %e, "reload refused; the previous policy and models keep serving");
        ApiError::InvalidField {
            field: "files".into(),
            message: format!("reload refused, previous policy and models keep serving: {e}"),
        }
    })?;
    Ok(Json(json!({
        "policy_version": loaded.policy.version,
        "models": loaded.models().map(|m| json!({"name": m.served.name(), "version": m.version})).collect::<Vec<_>>(),
    })))
}

/// Reloads on every SIGHUP (Unix), logging refusals.
pub fn reload_on_sighup(ctx: ApiContext) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(e) = ctx.reload() {
                tracing::warn!(error = %e, "SIGHUP reload refused; the previous policy and models keep serving");
            }
        }
    });
}

/// The rollout as `GET /admin/rollout` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    /// Mode in force.
    pub mode: Mode,
    /// Canary percent in force.
    pub canary_percent: f64,
    /// Whether mode and percent come from the runtime flag or the policy file, or the
    /// flags are unread (`unread`: their store has been down since start).
    pub source: Source,
    /// The bucketing salt (the policy file's; a flag never changes it).
    pub salt: String,
    /// Whether sends are stopped.
    pub kill_switch: bool,
    /// The runtime rollout flag, if set: who set it, when and why.
    pub flag: Option<RolloutFlag>,
    /// The runtime kill switch flag, if set.
    pub kill_switch_flag: Option<KillSwitchFlag>,
    /// What the policy file says.
    pub policy: PolicyRollout,
    /// Where the flags live: `redis` or `postgres`.
    pub flag_store: &'static str,
}

/// The policy file's rollout.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyRollout {
    /// Mode.
    pub mode: Mode,
    /// Canary percent.
    pub canary_percent: f64,
    /// Kill switch.
    pub kill_switch: bool,
    /// Policy version.
    pub version: String,
}

pub(super) fn rollout_view(ctx: &ApiContext) -> Result<RolloutView, ApiError> {
    let loaded = ctx.current()?;
    let policy = &loaded.policy;
    let flags = ctx.flags.load_full();
    let in_force = InForce::of(policy, flags.as_deref());
    Ok(RolloutView {
        mode: in_force.mode,
        canary_percent: in_force.canary_percent,
        source: in_force.source,
        salt: policy.rollout.salt.clone(),
        kill_switch: in_force.kill_switch,
        flag: flags.as_ref().and_then(|f| f.rollout.clone()),
        kill_switch_flag: flags.as_ref().and_then(|f| f.kill_switch.clone()),
        policy: PolicyRollout {
            mode: policy.rollout.mode,
            canary_percent: policy.rollout.canary_percent,
            kill_switch: policy.kill_switch,
            version: policy.version.clone(),
        },
        flag_store: ctx.flag_store.kind(),
    })
}

/// A flag store failure: the request cannot be done without it.
fn flag_store_down(error: crate::store::StoreError) -> ApiError {
    ApiError::Unavailable(format!("flag store: {error}"))
}

/// Reads the flags back after a write, so this replica answers with what is now in force.
async fn after_flag_write(ctx: &ApiContext) -> Result<Json<RolloutView>, ApiError> {
    ctx.refresh_flags().await.map_err(flag_store_down)?;
    rollout_view(ctx).map(Json)
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("not JSON: {e}"))),
    }
}

fn reason_field(body: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match body.get("reason") {
        None | Some(Value::Null) => Ok(String::new()),
        // Postgres, where the flag may be kept, stores no NUL character.
        Some(Value::String(r)) if r.len() <= 500 && !r.contains('\0') => Ok(r.clone()),
        Some(_) => Err(ApiError::invalid(
            "reason",
            "must be a string of at most 500 bytes without NUL characters",
        )),
    }
}

/// `GET /admin/rollout`: the rollout in force, where it comes from, and the flags.
#[utoipa::path(get, path = "/admin/rollout", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = RolloutView), (status = 401, body = ErrorBody)))]
pub async fn get_rollout(State(ctx): State<ApiContext>) -> Result<Json<RolloutView>, ApiError> {
    rollout_view(&ctx).map(Json)
}

/// `PUT /admin/rollout` `{"mode": "canary", "canary_percent": 5, "reason": "…"}`: sets the
/// runtime flag every replica follows within its poll interval.
#[utoipa::path(put, path = "/admin/rollout", tag = "admin", security(("admin" = [])),
    request_body(content = Object, description = r#"{"mode": "off|shadow|canary|full", "canary_percent": 0..100 (required for canary), "reason": "..."}"#),
    responses((status = 200, body = RolloutView), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn put_rollout(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<ADMIN_LIMIT>,
) -> Result<Json<RolloutView>, ApiError> {
    let body = parse_object(&body)?;
    let mode = match body.get("mode") {
        Some(Value::String(m)) => m
            .parse::<Mode>()
            .map_err(|e| ApiError::invalid("mode", e))?,
        _ => {
            return Err(ApiError::invalid(
                "mode",
                "required: off, shadow, canary or full",
            ));
        }
    };
    let percent = match body.get("canary_percent") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(ApiError::invalid("canary_percent", "must be a number")),
    };
    let flag = RolloutFlag::new(mode, percent, reason_field(&body)?, "admin-api", Utc::now())
        .map_err(|e| ApiError::invalid("canary_percent", e.to_string()))?;
    ctx.flag_store
        .set_rollout(Some(&flag))
        .await
        .map_err(flag_store_down)?;
    tracing::info!(mode = flag.mode.as_str(), percent = flag.canary_percent, reason = %flag.reason, "rollout flag set");
    after_flag_write(&ctx).await
}

/// `DELETE /admin/rollout`: clears the runtime flag; the policy file's rollout is in force again.
#[utoipa::path(delete, path = "/admin/rollout", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = RolloutView), (status = 401, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn delete_rollout(State(ctx): State<ApiContext>) -> Result<Json<RolloutView>, ApiError> {
    ctx.flag_store
        .set_rollout(None)
        .await
        .map_err(flag_store_down)?;
    tracing::info!("rollout flag cleared; the policy file's rollout is in force");
    after_flag_write(&ctx).await
}

/// `POST /admin/kill-switch` `{"on": true, "reason": "…"}`: stops (or resumes) sends on
/// every replica. It cannot release a kill switch the policy file turned on.
#[utoipa::path(post, path = "/admin/kill-switch", tag = "admin", security(("admin" = [])),
    request_body(content = Object, description = r#"{"on": true|false, "reason": "..."}"#),
    responses((status = 200, body = RolloutView), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn kill_switch(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<ADMIN_LIMIT>,
) -> Result<Json<RolloutView>, ApiError> {
    let body = parse_object(&body)?;
    let on = match body.get("on") {
        Some(Value::Bool(on)) => *on,
        _ => return Err(ApiError::invalid("on", "required: true or false")),
    };
    let flag = KillSwitchFlag {
        on,
        reason: reason_field(&body)?,
        set_by: "admin-api".into(),
        set_at: Utc::now(),
    };
    ctx.flag_store
        .set_kill_switch(&flag)
        .await
        .map_err(flag_store_down)?;
    tracing::warn!(on, reason = %flag.reason, "kill switch flag set");
    after_flag_write(&ctx).await
}
