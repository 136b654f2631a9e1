//! Bearer-token scopes and the admin endpoints: the scheduler scope guards `/v1/score`,
//! the admin scope guards `/admin/*` (disabled without an admin token). Reloads come from
//! `POST /admin/reload` or SIGHUP; a refused file keeps the old policy and models serving.
//! `/admin/rollout` and `/admin/kill-switch` set the runtime flags every replica follows.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use super::ApiContext;
use super::body::{ADMIN_LIMIT, Json, LimitedBody, json_object};
use super::error::{ApiError, ErrorBody};
use crate::ingest::wire::ExpectedToken;
use crate::policy::{GuardrailTest, Mode};
use crate::rollout::{Comparison, InForce, KillSwitchFlag, RolloutFlag, Source};

/// Whether the request carries `Authorization: Bearer <expected>` (the scheme's name in
/// any case, as RFC 7235 has it).
fn bearer_admits(request: &Request, expected: &ExpectedToken) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| expected.matches(given))
}

/// Requires the scheduler token, when one is configured (without one: dev mode only).
pub async fn scheduler_scope(
    State(ctx): State<ApiContext>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &ctx.scheduler_token {
        Some(token) if !bearer_admits(&request, token) => Err(ApiError::Unauthorized(
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
        Some(token) if !bearer_admits(&request, token) => Err(ApiError::Unauthorized(
            "a bearer token of the admin scope is required",
        )),
        Some(_) => Ok(next.run(request).await),
    }
}

/// `POST /admin/reload`: reloads policy and models (seeding the send loads first when
/// the policy brings in a send budget); a refusal is a 422 naming the reason, and what
/// served before keeps serving.
#[utoipa::path(post, path = "/admin/reload", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "the policy version and the models now serving"),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reload(State(ctx): State<ApiContext>) -> Result<Json<Value>, ApiError> {
    let loaded = ctx.reload_and_seed().await.map_err(|e| {
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
            if let Err(e) = ctx.reload_and_seed().await {
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
    /// The holdout's percent (the policy file's): users the model never decides for, the
    /// control of a full rollout.
    pub holdout_percent: f64,
    /// What the guardrails compare with control: the model arm (`canary` or `full`), or
    /// `no_model_arm` (the model decides for nobody) or `no_control` (it decides for
    /// everyone, and nothing guards it: a canary of 100 % or full mode without a holdout).
    #[schema(value_type = String, example = "canary")]
    pub guardrails_compare: Comparison,
    /// How the guardrails weigh their evidence (`guardrails.test`): `fixed` (the last
    /// window, at the confidence per check) or `sequential` (all since the rollout began,
    /// at the confidence over its whole life).
    pub guardrails_test: GuardrailTest,
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
        holdout_percent: in_force.holdout_percent,
        guardrails_compare: in_force.comparison(),
        guardrails_test: policy.guardrails.test,
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

/// The longest `reason` a flag keeps, in characters.
const MAX_REASON: usize = 500;

/// A flag's optional `reason`: at most [`MAX_REASON`] characters without NUL (Postgres,
/// where the flags may be kept, stores no NUL character).
fn reason_field(reason: Option<String>) -> Result<String, ApiError> {
    match reason {
        None => Ok(String::new()),
        Some(r) if r.chars().count() <= MAX_REASON && !r.contains('\0') => Ok(r),
        Some(_) => Err(ApiError::invalid(
            "reason",
            format!("must be a string of at most {MAX_REASON} characters without NUL characters"),
        )),
    }
}

/// The schema of a flag's optional `reason`, as [`reason_field`] checks it.
fn reason_schema() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .max_length(Some(MAX_REASON))
        .pattern(Some(r"^[^\u0000]*$"))
        .description(Some("Why (kept with the flag)."))
        .build()
}

/// `PUT /admin/rollout`'s body: `{"mode": …, "canary_percent": …, "reason": …}` (null as
/// absent, unknown fields ignored).
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct RolloutChange {
    // A string, not a `Mode`: serde_json reads a number where an enum should be as bad
    // JSON, which would name the body instead of the field.
    mode: Option<String>,
    canary_percent: Option<f64>,
    reason: Option<String>,
}

impl RolloutChange {
    /// Parses a body into the flag it asks for, set by the admin API at `now`.
    fn parse(body: &[u8], now: DateTime<Utc>) -> Result<RolloutFlag, ApiError> {
        let change: Self = json_object(body)?;
        let mode = change
            .mode
            .ok_or_else(|| ApiError::invalid("mode", "required: off, shadow, canary or full"))?
            .parse::<Mode>()
            .map_err(|e| ApiError::invalid("mode", e))?;
        let reason = reason_field(change.reason)?;
        RolloutFlag::new(mode, change.canary_percent, reason, "admin-api", now)
            .map_err(|e| ApiError::invalid("canary_percent", e.to_string()))
    }
}

impl utoipa::PartialSchema for RolloutChange {
    /// One of two shapes, as [`RolloutFlag::new`] accepts them: canary with its percent,
    /// or another mode with an optional one.
    fn schema() -> RefOr<Schema> {
        let percent = || {
            ObjectBuilder::new()
                .schema_type(SchemaType::Array(vec![Type::Number, Type::Null]))
                .minimum(Some(0))
                .maximum(Some(100))
                .description(Some("Share of users in canary, in percent."))
        };
        let shape = |modes: &[Mode], percent_required: bool| {
            let mut shape = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "mode",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(modes.iter().map(|m| m.as_str()))),
                )
                .required("mode")
                .property("canary_percent", percent())
                .property("reason", reason_schema());
            if percent_required {
                shape = shape.required("canary_percent");
            }
            shape
        };
        OneOfBuilder::new()
            .item(shape(&[Mode::Canary], true))
            .item(shape(&[Mode::Off, Mode::Shadow, Mode::Full], false))
            .into()
    }
}

impl utoipa::ToSchema for RolloutChange {}

/// `POST /admin/kill-switch`'s body (null as absent, unknown fields ignored).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(expecting = "a JSON object")]
struct KillSwitchChange {
    /// Whether sends stop.
    #[schema(value_type = bool, required = true)]
    on: Option<bool>,
    /// Why (kept with the flag).
    #[schema(schema_with = reason_schema)]
    reason: Option<String>,
}

impl KillSwitchChange {
    /// Parses a body into the flag it asks for, set by the admin API at `now`.
    fn parse(body: &[u8], now: DateTime<Utc>) -> Result<KillSwitchFlag, ApiError> {
        let change: Self = json_object(body)?;
        let on = change
            .on
            .ok_or_else(|| ApiError::invalid("on", "required: true or false"))?;
        Ok(KillSwitchFlag {
            on,
            reason: reason_field(change.reason)?,
            set_by: "admin-api".into(),
            set_at: now,
        })
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
    request_body = RolloutChange,
    responses((status = 200, body = RolloutView), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn put_rollout(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<ADMIN_LIMIT>,
) -> Result<Json<RolloutView>, ApiError> {
    let flag = RolloutChange::parse(&body, Utc::now())?;
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
    request_body = KillSwitchChange,
    responses((status = 200, body = RolloutView), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn kill_switch(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<ADMIN_LIMIT>,
) -> Result<Json<RolloutView>, ApiError> {
    let flag = KillSwitchChange::parse(&body, Utc::now())?;
    ctx.flag_store
        .set_kill_switch(&flag)
        .await
        .map_err(flag_store_down)?;
    tracing::warn!(on = flag.on, reason = %flag.reason, "kill switch flag set");
    after_flag_write(&ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_bearer_token_admits_exactly_its_own_token() {
        let token = ExpectedToken::new("s3cret-token");
        let with = |value: Option<&str>| {
            let mut request = Request::builder();
            if let Some(value) = value {
                request = request.header(header::AUTHORIZATION, value);
            }
            bearer_admits(&request.body(axum::body::Body::empty()).unwrap(), &token)
        };
        assert!(with(Some("Bearer s3cret-token")));
        assert!(with(Some("bearer s3cret-token")));
        for refused in [
            None,
            Some("s3cret-token"),
            Some("Bearer  s3cret-token"),
            Some("Bearer s3cret"),
            Some("Bearer s3cret-token2"),
            Some("Bearer "),
            Some("Basic s3cret-token"),
        ] {
            assert!(!with(refused), "{refused:?}");
        }
    }

    #[test]
    fn a_rollout_change_becomes_the_flag_it_asks_for() {
        let flag = RolloutChange::parse(
            br#"{"mode": "canary", "canary_percent": 5, "reason": null, "extra": 1}"#,
            at(),
        )
        .unwrap();
        assert_eq!(
            flag,
            RolloutFlag::new(Mode::Canary, Some(5.0), String::new(), "admin-api", at()).unwrap()
        );
        let flag = RolloutChange::parse(br#"{"mode": "full", "reason": "ramp"}"#, at()).unwrap();
        assert_eq!((flag.mode, flag.reason.as_str()), (Mode::Full, "ramp"));
    }

    #[test]
    fn a_bad_change_is_refused_naming_its_field() {
        let long = format!(r#"{{"mode": "full", "reason": "{}"}}"#, "é".repeat(501));
        for (body, field) in [
            (r#"{"canary_percent": 5}"#, "mode"),
            (r#"{"mode": 3}"#, "mode"),
            (r#"{"mode": "canary"}"#, "canary_percent"),
            (
                r#"{"mode": "full", "canary_percent": -1}"#,
                "canary_percent",
            ),
            (r#"{"mode": "full", "reason": ["a"]}"#, "reason"),
            (long.as_str(), "reason"),
            ("[]", "body"),
        ] {
            let error = RolloutChange::parse(body.as_bytes(), at()).unwrap_err();
            assert_eq!(error.field(), Some(field), "{body}");
        }
        // 500 characters is the limit, whatever their bytes.
        let longest = format!(r#"{{"mode": "full", "reason": "{}"}}"#, "é".repeat(500));
        assert!(RolloutChange::parse(longest.as_bytes(), at()).is_ok());
    }

    #[test]
    fn a_kill_switch_change_needs_on() {
        let flag = KillSwitchChange::parse(br#"{"on": true, "reason": "incident"}"#, at()).unwrap();
        assert_eq!(
            (
                flag.on,
                flag.reason.as_str(),
                flag.set_by.as_str(),
                flag.set_at
            ),
            (true, "incident", "admin-api", at())
        );
        for body in [r#"{}"#, r#"{"on": null}"#, r#"{"on": "yes"}"#] {
            let error = KillSwitchChange::parse(body.as_bytes(), at()).unwrap_err();
            assert_eq!(error.field(), Some("on"), "{body}");
        }
    }
}
