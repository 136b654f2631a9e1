//! Bearer-token scopes and the admin endpoints: the scheduler scope guards `/v1/score`,
//! the admin scope guards `/admin/*` (disabled without an admin token). Reloads come from
//! `POST /admin/reload` or SIGHUP; a refused file keeps the old policy and models serving.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ApiContext;
use super::error::ApiError;

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
        "model": loaded.ranker_version().map(|v| json!({"name": super::ranker::RANKER, "version": v})),
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
