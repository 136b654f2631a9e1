//! `POST /v1/churn`: the churn risk of a batch of users, each with its band from
//! policy.yaml. Users are scored concurrently; one with no stored features is scored as
//! a cold start and says so. Every score goes to the decision log with the day of the
//! features it was computed from, so that `kpi.churn_calibration` can set it beside what
//! the user then did.

use std::collections::HashSet;

use axum::extract::State;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiContext;
use super::body::{Json, LimitedBody, SCHEDULER_LIMIT, UserId, json_object};
use super::decisions::{ChurnScores, LoggedChurnScore};
use super::error::{ApiError, ErrorBody};
use super::score::ModelRef;
use super::served::{RequestContext, Served};

/// Most users per request.
pub const MAX_USERS: usize = 1_000;

/// A validated request: distinct user ids in the caller's order.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct ChurnRequest {
    /// 1 to 1,000 distinct user ids as the caller knows them (hashed before anything stores them).
    #[schema(schema_with = user_ids_schema)]
    pub user_ids: Vec<String>,
}

/// The schema of `user_ids`: what [`ChurnRequest::parse`] accepts.
fn user_ids_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(<UserId as utoipa::PartialSchema>::schema())
        .min_items(Some(1))
        .max_items(Some(MAX_USERS))
        .unique_items(true)
        .build()
}

/// A churn request as sent (unknown fields ignored, null as absent), checked by
/// [`ChurnRequest::parse`].
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct ChurnBody {
    user_ids: Option<Vec<Option<String>>>,
}

impl ChurnRequest {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let body: ChurnBody = json_object(body)?;
        let Some(items) = body.user_ids else {
            return Err(ApiError::invalid(
                "user_ids",
                format!("required: an array of 1 to {MAX_USERS} user ids"),
            ));
        };
        if items.is_empty() || items.len() > MAX_USERS {
            return Err(ApiError::invalid(
                "user_ids",
                format!("holds {} ids; 1 to {MAX_USERS} allowed", items.len()),
            ));
        }
        let mut seen = HashSet::new();
        let user_ids = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("user_ids[{i}]");
                let id = UserId::parse(item, &path)?;
                if seen.insert(id.clone()) {
                    Ok(id)
                } else {
                    Err(ApiError::invalid(path, format!("duplicate user id {id:?}")))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { user_ids })
    }
}

/// One user's risk.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChurnScore {
    /// The user id as given.
    pub user_id: String,
    /// Calibrated P(no app open in the next 14 days).
    pub score: f64,
    /// The policy's band of the score.
    pub band: String,
    /// No stored features for the user: scored with every feature missing.
    pub cold_start: bool,
}

/// The response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChurnResponse {
    /// Request id (also in the decision log).
    pub request_id: Uuid,
    /// The model that scored.
    pub model: ModelRef,
    /// Policy version (the bands').
    pub policy_version: String,
    /// One per user, in request order.
    pub scores: Vec<ChurnScore>,
}

/// `POST /v1/churn`: churn risk and band of each user.
#[utoipa::path(post, path = "/v1/churn", tag = "scoring", request_body = ChurnRequest,
    security(("scheduler" = [])),
    responses((status = 200, body = ChurnResponse), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn churn(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<SCHEDULER_LIMIT>,
) -> Result<Json<ChurnResponse>, ApiError> {
    let request = ChurnRequest::parse(&body)?;
    let loaded = ctx.current()?;
    let model = loaded.model(Served::Churn).ok_or_else(|| {
        ApiError::NotReady(format!("no {} champion is loaded", Served::Churn.name()))
    })?;
    let hashes: Vec<String> = request
        .user_ids
        .iter()
        .map(|id| ctx.hasher.hash(id))
        .collect();
    let features = join_all(hashes.iter().map(|hash| ctx.user_features(hash))).await;
    let (scores, logged): (Vec<ChurnScore>, Vec<LoggedChurnScore>) = request
        .user_ids
        .into_iter()
        .zip(hashes)
        .zip(features)
        .map(|((user_id, user_hash), features)| {
            let score = model.score(features.as_ref(), RequestContext::User);
            let band = loaded.policy.churn_bands.band(score);
            let answer = ChurnScore {
                user_id,
                score,
                band: band.to_owned(),
                cold_start: features.is_none(),
            };
            let log = LoggedChurnScore {
                user_hash,
                features_as_of: features.map(|row| row.as_of),
                score,
                band: band.to_owned(),
            };
            (answer, log)
        })
        .unzip();
    let request_id = Uuid::now_v7();
    ctx.decisions.record(ChurnScores {
        request_id,
        scored_at: chrono::Utc::now(),
        model_version: model.version.clone(),
        policy_version: loaded.policy.version.clone(),
        scores: logged,
    });
    Ok(Json(ChurnResponse {
        request_id,
        model: ModelRef::of(model),
        policy_version: loaded.policy.version.clone(),
        scores,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(body: &str) -> String {
        match ChurnRequest::parse(body.as_bytes()) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn requests_parse_and_errors_name_the_field() {
        assert_eq!(
            ChurnRequest::parse(br#"{"user_ids": ["a", "b"]}"#)
                .unwrap()
                .user_ids,
            ["a", "b"]
        );
        assert_eq!(field(r#"{"user_ids": []}"#), "user_ids");
        assert_eq!(field(r#"{}"#), "user_ids");
        assert_eq!(field(r#"{"user_ids": ["a", 3]}"#), "user_ids[1]");
        assert_eq!(field(r#"{"user_ids": ["a", "a"]}"#), "user_ids[1]");
        assert_eq!(field("nope"), "body");
    }
}
