//! `POST /v1/paywall`: whether to show the paywall at a placement now. The models'
//! expected net benefit is value_trial·P(trial) − cost_bounce·P(bounce) (policy.yaml);
//! the model rule shows when it exceeds `min_net_benefit`, the baseline always shows.
//! Arms and logging are those of `/v1/score`: the same rollout, bucketing and flags, and
//! every answer is logged to `serving.paywall_decisions`.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiContext;
use super::body::{Identifier, Json, LimitedBody, SCHEDULER_LIMIT, UserId, json_object};
use super::decisions::PaywallDecision;
use super::error::{ApiError, ErrorBody};
use super::score::{ModelRef, now_field};
use super::served::{RequestContext, Served};
use crate::policy::Mode;
use crate::rollout::{self, Arm};

/// Where in the app a paywall would show.
pub type Placement = Identifier<64>;

/// A validated request.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct PaywallRequest {
    /// The user's id (hashed before anything stores it).
    #[schema(inline, value_type = UserId)]
    pub user_id: String,
    /// Where the paywall would show.
    #[schema(inline, value_type = Placement)]
    pub placement: String,
    /// The decision time (RFC 3339), at most an hour ahead of the server's clock; the
    /// server's clock when absent.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    pub now: DateTime<Utc>,
}

/// A paywall request as sent (unknown fields ignored, null as absent), checked by
/// [`PaywallRequest::parse`].
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct PaywallBody {
    user_id: Option<String>,
    placement: Option<String>,
    now: Option<String>,
}

impl PaywallRequest {
    /// Parses a request body; `server_now` stands in for a missing `now`.
    pub fn parse(body: &[u8], server_now: DateTime<Utc>) -> Result<Self, ApiError> {
        let body: PaywallBody = json_object(body)?;
        let user_id = UserId::parse(body.user_id, "user_id")?;
        let placement = Placement::parse(body.placement, "placement")?;
        let now = now_field(body.now.as_deref(), server_now)?;
        Ok(Self {
            user_id,
            placement,
            now,
        })
    }
}

/// The paywall models that decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaywallModels {
    /// `paywall_trial`.
    pub trial: ModelRef,
    /// `paywall_bounce`.
    pub bounce: ModelRef,
}

/// The response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaywallResponse {
    /// Request id (also in the decision log).
    pub request_id: Uuid,
    /// Whether to show the paywall.
    pub show: bool,
    /// Why: `baseline` (the arm's rule is to show), `net_benefit_above_min` or
    /// `net_benefit_below_min`.
    pub reason: &'static str,
    /// Expected net benefit, whenever the models ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_benefit: Option<f64>,
    /// P(trial), whenever the models ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_trial: Option<f64>,
    /// P(bounce), whenever the models ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_bounce: Option<f64>,
    /// The user's arm.
    pub arm: Arm,
    /// The rollout mode in force.
    pub mode: Mode,
    /// The models that scored, if they ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PaywallModels>,
    /// Policy version.
    pub policy_version: String,
    /// No stored features for the user.
    pub cold_start: bool,
}

/// `POST /v1/paywall`: whether to show the paywall now.
#[utoipa::path(post, path = "/v1/paywall", tag = "scoring", request_body = PaywallRequest,
    security(("scheduler" = [])),
    responses((status = 200, body = PaywallResponse), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn paywall(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<SCHEDULER_LIMIT>,
) -> Result<Json<PaywallResponse>, ApiError> {
    let request = PaywallRequest::parse(&body, Utc::now())?;
    let loaded = ctx.current()?;
    let policy = &loaded.policy;
    let in_force = ctx.in_force(policy);
    let models = loaded
        .model(Served::PaywallTrial)
        .zip(loaded.model(Served::PaywallBounce))
        .filter(|_| in_force.mode != Mode::Off);
    let arm = rollout::arm(
        &in_force,
        &policy.rollout.salt,
        &request.user_id,
        models.is_some(),
    );
    let user_hash = ctx.hasher.hash(&request.user_id);
    let features = ctx.user_features(&user_hash).await;
    let context = RequestContext::Paywall {
        placement: &request.placement,
    };
    let scored = models.map(|(trial, bounce)| {
        let (p_trial, p_bounce) = (
            trial.score(features.as_ref(), context),
            bounce.score(features.as_ref(), context),
        );
        let net_benefit = policy.paywall.net_benefit(p_trial, p_bounce);
        (p_trial, p_bounce, net_benefit)
    });
    let model_show = scored.map(|(_, _, net)| net > policy.paywall.min_net_benefit);
    let (show, reason) = match model_show {
        Some(show) if arm.model_decides() => (
            show,
            if show {
                "net_benefit_above_min"
            } else {
                "net_benefit_below_min"
            },
        ),
        _ => (true, "baseline"),
    };
    let request_id = Uuid::now_v7();
    ctx.decisions.record(PaywallDecision {
        request_id,
        decided_at: request.now,
        user_hash,
        placement: request.placement,
        arm: arm.as_str(),
        cold_start: features.is_none(),
        trial_version: models.map(|(t, _)| t.version.clone()),
        bounce_version: models.map(|(_, b)| b.version.clone()),
        policy_version: policy.version.clone(),
        p_trial: scored.map(|s| s.0),
        p_bounce: scored.map(|s| s.1),
        net_benefit: scored.map(|s| s.2),
        model_show,
        show,
    });
    Ok(Json(PaywallResponse {
        request_id,
        show,
        reason,
        net_benefit: scored.map(|s| s.2),
        p_trial: scored.map(|s| s.0),
        p_bounce: scored.map(|s| s.1),
        arm,
        mode: in_force.mode,
        model: models.map(|(trial, bounce)| PaywallModels {
            trial: ModelRef::of(trial),
            bounce: ModelRef::of(bounce),
        }),
        policy_version: policy.version.clone(),
        cold_start: features.is_none(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's clock in these tests: 2027-01-15.
    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn requests_parse_and_errors_name_the_field() {
        let r = PaywallRequest::parse(
            br#"{"user_id": "u1", "placement": "contact_limit", "now": "2026-11-22T18:05:00Z"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(
            (r.user_id.as_str(), r.placement.as_str(), r.now.to_rfc3339()),
            (
                "u1",
                "contact_limit",
                "2026-11-22T18:05:00+00:00".to_owned()
            )
        );
        let field = |body: &str| match PaywallRequest::parse(body.as_bytes(), now()) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => format!("{other:?}"),
        };
        assert_eq!(field(r#"{"placement": "p"}"#), "user_id");
        assert_eq!(field(r#"{"user_id": "u"}"#), "placement");
        assert_eq!(
            field(r#"{"user_id": "u", "placement": "p", "now": "soon"}"#),
            "now"
        );
    }
}
