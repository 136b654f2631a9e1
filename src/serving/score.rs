//! `POST /v1/score`: which notification, if any, to send now.
//!
//! The request is parsed once into a [`ScoreRequest`] (field-level errors). Then: the
//! user's arm, online features (a cold start when there are none, or when the store
//! fails), a ranker row per candidate built as the trainer builds it, the baseline and
//! model rules, the gates, an atomic quota reservation for the one candidate acted on,
//! and a decision-log entry. Dependency failures give a 200 with a safe, explained
//! answer, never an error.

use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiContext;
use super::body::{
    Identifier, Json, LimitedBody, SCHEDULER_LIMIT, TimezoneName, UserId, json_object, rfc3339,
};
use super::decisions::{Decision, LoggedCandidate};
use super::error::{ApiError, ErrorBody};
use super::served::{RequestContext, SendContext, Served, ServedModel};
use crate::features::row::FeatureRow;
use crate::policy::Mode;
use crate::policy::gates::{QuotaRule, Reason, blocking_gate};
use crate::rollout::{self, Arm};
use crate::store::StoreError;
use crate::store::quota::{self, Recent, Reservation};
use crate::telemetry;

/// Most candidates per request.
pub const MAX_CANDIDATES: usize = 50;

/// A candidate's id as the scheduler knows it.
pub type CandidateId = Identifier<128>;

/// A notification type.
pub type NotifType = Identifier<64>;

/// A candidate notification.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct Candidate {
    /// The scheduler's id, unique in the request.
    #[schema(inline, value_type = CandidateId)]
    pub id: String,
    /// Notification type.
    #[schema(rename = "type", inline, value_type = NotifType)]
    pub notif_type: String,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct ScoreRequest {
    /// The user's id as the scheduler knows it (hashed before anything stores it).
    #[schema(inline, value_type = UserId)]
    pub user_id: String,
    /// The decision time (RFC 3339), at most an hour ahead of the server's clock; the
    /// server's clock when absent.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    pub now: DateTime<Utc>,
    /// The user's IANA timezone; when absent, the one stored for the user (the `timezone`
    /// feature), else UTC, and the answer says which.
    #[schema(inline, value_type = Option<TimezoneName>)]
    pub timezone: Option<Tz>,
    /// 1 to 50 candidates in the scheduler's order.
    #[schema(min_items = 1, max_items = 50)]
    pub candidates: Vec<Candidate>,
}

/// How far a request's `now` may run ahead of the server's clock (clock skew). A later one
/// is refused: a send reserved in the future would hold the user's quota (the minimum
/// gap) until then, and a decision logged there would move the KPI windows with it.
/// Earlier times are accepted: a simulation replays the past.
pub const MAX_AHEAD: TimeDelta = TimeDelta::hours(1);

/// The optional RFC 3339 `now` of a request, else `server_now`.
pub(super) fn now_field(
    now: Option<&str>,
    server_now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    let Some(text) = now else {
        return Ok(server_now);
    };
    let now = rfc3339(text, "now")?;
    if now > server_now + MAX_AHEAD {
        return Err(ApiError::invalid(
            "now",
            format!(
                "{} is more than {} h ahead of the server's clock ({})",
                now.to_rfc3339(),
                MAX_AHEAD.num_hours(),
                server_now.to_rfc3339()
            ),
        ));
    }
    Ok(now)
}

/// A score request as sent (unknown fields ignored, null as absent), checked by
/// [`ScoreRequest::parse`].
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct ScoreBody {
    user_id: Option<String>,
    now: Option<String>,
    timezone: Option<String>,
    candidates: Option<Vec<CandidateBody>>,
}

/// A candidate as sent.
#[derive(Deserialize)]
#[serde(expecting = "a candidate object")]
struct CandidateBody {
    id: Option<String>,
    #[serde(rename = "type")]
    notif_type: Option<String>,
}

impl Candidate {
    /// Checks one candidate, given the ones before it in the request (at most 50: a scan
    /// finds a repeated id sooner than hashing would); an error names the field within
    /// the candidate.
    fn parse(body: CandidateBody, before: &[Candidate]) -> Result<Self, ApiError> {
        let id = CandidateId::parse(body.id, "id")?;
        if before.iter().any(|c| c.id == id) {
            return Err(ApiError::invalid(
                "id",
                format!("duplicate candidate id {id:?}"),
            ));
        }
        let notif_type = NotifType::parse(body.notif_type, "type")?;
        Ok(Candidate { id, notif_type })
    }
}

impl ScoreRequest {
    /// Parses a request body; `server_now` stands in for a missing `now`.
    pub fn parse(body: &[u8], server_now: DateTime<Utc>) -> Result<Self, ApiError> {
        let body: ScoreBody = json_object(body)?;
        let user_id = UserId::parse(body.user_id, "user_id")?;
        let now = now_field(body.now.as_deref(), server_now)?;
        let timezone = match body.timezone {
            None => None,
            Some(name) => Some(name.parse::<Tz>().map_err(|_| {
                ApiError::invalid("timezone", format!("unknown IANA timezone {name:?}"))
            })?),
        };
        let Some(items) = body.candidates else {
            return Err(ApiError::invalid(
                "candidates",
                "required: an array of 1 to 50 candidates",
            ));
        };
        if items.is_empty() || items.len() > MAX_CANDIDATES {
            return Err(ApiError::invalid(
                "candidates",
                format!(
                    "holds {} candidates; 1 to {MAX_CANDIDATES} allowed",
                    items.len()
                ),
            ));
        }
        let mut candidates = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let candidate = Candidate::parse(item, &candidates)
                // The item's path is spelled out only for an error.
                .map_err(|e| e.under(&format!("candidates[{i}]")))?;
            candidates.push(candidate);
        }
        Ok(Self {
            user_id,
            now,
            timezone,
            candidates,
        })
    }
}

/// A model's name and version in a response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelRef {
    /// Registry name.
    pub name: &'static str,
    /// Version.
    pub version: String,
}

impl ModelRef {
    /// The reference of a loaded model.
    pub fn of(model: &ServedModel) -> Self {
        Self {
            name: model.served.name(),
            version: model.version.clone(),
        }
    }
}

/// One candidate's decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandidateDecision {
    /// Candidate id.
    pub id: String,
    /// Calibrated model score, whenever the model ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Whether to send it now.
    pub send: bool,
    /// Why.
    pub reason: Reason,
}

/// The response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScoreResponse {
    /// Request id (also in the decision log).
    pub request_id: Uuid,
    /// The user's arm.
    pub arm: Arm,
    /// The rollout mode in force.
    pub mode: Mode,
    /// The model that scored, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Policy version.
    pub policy_version: String,
    /// Threshold of the model rule.
    pub threshold: f64,
    /// No stored features for the user: scored with every user feature missing.
    pub cold_start: bool,
    /// The timezone of the user's local time (quiet hours, the ranker's local hour): the
    /// request's, else the user's stored one, else `UTC`.
    #[schema(example = "Europe/Berlin")]
    pub timezone: &'static str,
    /// Neither the request nor the store named a timezone: local time is UTC.
    pub timezone_assumed_utc: bool,
    /// One per candidate, in request order.
    pub decisions: Vec<CandidateDecision>,
}

/// The baseline's and the model's choices among the candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choices {
    /// The scheduler's first candidate.
    pub baseline: Option<usize>,
    /// The best-scored candidate, if its score reaches the threshold.
    pub model: Option<usize>,
}

/// The two rules: baseline = the scheduler's order, first candidate; model = the highest
/// score (the earliest on ties), only at or above `threshold`.
pub fn choose(candidates: usize, scores: Option<&[f64]>, threshold: f64) -> Choices {
    let best = scores.and_then(|s| {
        s.iter()
            .enumerate()
            .fold(None, |best: Option<(usize, f64)>, (i, &v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((i, v)),
            })
    });
    Choices {
        baseline: (candidates > 0).then_some(0),
        model: best.filter(|&(_, v)| v >= threshold).map(|(i, _)| i),
    }
}

/// The user's stored timezone: the `timezone` feature (catalog index `index`) of their
/// online row, when it names a zone this build knows.
fn stored_timezone(row: Option<&FeatureRow>, index: Option<usize>) -> Option<Tz> {
    row?.values.get(index?)?.as_category()?.parse().ok()
}

/// How a request ends, before each candidate's reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Settled {
    /// Nothing can be sent to the user now: a gate, the quota or the quota store says why.
    Refused(Reason),
    /// The arm's rule chose no candidate.
    NoneChosen,
    /// This candidate (its index in the request) is sent, its quota reserved.
    Sent(usize),
}

impl Settled {
    /// The candidate sent, if any.
    pub fn sent(self) -> Option<usize> {
        match self {
            Settled::Sent(i) => Some(i),
            _ => None,
        }
    }

    /// The one reason the request is counted under in the metrics, given each candidate's:
    /// `ok` when a candidate was sent, else the first candidate's.
    pub fn headline(self, reasons: &[Reason]) -> Reason {
        match self {
            Settled::Sent(_) => Reason::Ok,
            _ => reasons.first().copied().unwrap_or(Reason::NotSelected),
        }
    }
}

/// Each of `candidates` candidates' reason: the refusal all of them share; `ok` for the
/// one sent; `below_threshold` for one the model arm scored under `threshold`; else
/// `not_selected`.
pub fn candidate_reasons(
    settled: Settled,
    scores: Option<&[f64]>,
    model_decides: bool,
    threshold: f64,
    candidates: usize,
) -> Vec<Reason> {
    (0..candidates)
        .map(|i| match settled {
            Settled::Refused(reason) => reason,
            Settled::Sent(sent) if sent == i => Reason::Ok,
            _ if model_decides
                && scores
                    .and_then(|s| s.get(i))
                    .is_some_and(|&s| s < threshold) =>
            {
                Reason::BelowThreshold
            }
            _ => Reason::NotSelected,
        })
        .collect()
}

/// Reserves the user's quota for `candidate` at `now`. The user's `sends` of the last day,
/// read beside the features, settle a retry or a refusal without the store's atomic step;
/// only a send that would be granted takes it. `Err` is why nothing may be sent: the
/// quota's rule, or the quota store being unavailable (then nothing is sent rather than
/// risk the cap).
async fn reserve(
    ctx: &ApiContext,
    rule: QuotaRule<'_>,
    user_hash: &str,
    candidate: &str,
    now: DateTime<Utc>,
    recent: Result<Option<Recent>, StoreError>,
) -> Result<(), Reason> {
    let certain = match &recent {
        Ok(Some(recent)) => quota::settled(rule, recent, candidate, now),
        _ => None,
    };
    let reservation = match (certain, recent) {
        (Some(certain), _) => Ok(certain),
        (None, Err(e)) => Err(e),
        (None, Ok(_)) => ctx.quota.reserve(rule, user_hash, candidate, now).await,
    };
    match reservation {
        Ok(Reservation::Granted | Reservation::Repeated) => Ok(()),
        Ok(Reservation::Refused(reason)) => Err(reason),
        Err(e) => {
            metrics::counter!(telemetry::QUOTA_ERRORS).increment(1);
            super::log_fallback(&e, "quota store unavailable; not sending");
            Err(Reason::QuotaUnavailable)
        }
    }
}

/// `POST /v1/score`: which notification, if any, to send now.
#[utoipa::path(post, path = "/v1/score", tag = "scoring", request_body = ScoreRequest,
    security(("scheduler" = [])),
    responses((status = 200, body = ScoreResponse), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn score(
    State(ctx): State<ApiContext>,
    LimitedBody(body): LimitedBody<SCHEDULER_LIMIT>,
) -> Result<Json<ScoreResponse>, ApiError> {
    let request = ScoreRequest::parse(&body, Utc::now())?;
    let loaded = ctx.current()?;
    let policy = &loaded.policy;
    let in_force = ctx.in_force(policy);
    let mode = in_force.mode;
    let ranker = loaded.model(Served::Ranker).filter(|_| mode != Mode::Off);
    let arm = rollout::arm(
        &in_force,
        &policy.rollout.salt,
        &request.user_id,
        ranker.is_some(),
    );
    let user_hash = ctx.hasher.hash(&request.user_id);
    let quota_rule = QuotaRule {
        gates: &policy.gates,
        budget: policy.send_budget.as_ref(),
        enforce_budget: arm.model_decides(),
    };
    // Both reads in one round trip to Redis; what the quota store holds settles most
    // refusals and retries without the reservation's atomic step.
    let (features, recent) = tokio::join!(
        ctx.user_features(&user_hash),
        ctx.quota
            .peek(&user_hash, request.now, quota_rule.enforced_budget())
    );
    let timezone = request
        .timezone
        .or_else(|| stored_timezone(features.as_ref(), ctx.timezone_index));
    let context = SendContext::new(request.now, timezone);
    let scores: Option<Vec<f64>> = ranker.map(|r| {
        // A candidate's row is the user's features and the send's context, shared by the
        // request, and its type: candidates of one type share a row, scored once.
        let mut types: Vec<&str> = Vec::with_capacity(request.candidates.len());
        let row_of: Vec<usize> = request
            .candidates
            .iter()
            .map(|c| {
                types
                    .iter()
                    .position(|&t| t == c.notif_type)
                    .unwrap_or_else(|| {
                        types.push(&c.notif_type);
                        types.len() - 1
                    })
            })
            .collect();
        let by_type = r.score_all(
            features.as_ref(),
            types.iter().map(|notif_type| RequestContext::Notification {
                send: &context,
                notif_type,
            }),
        );
        row_of.into_iter().map(|row| by_type[row]).collect()
    });
    let threshold = ctx.threshold(policy);
    let choices = choose(request.candidates.len(), scores.as_deref(), threshold);
    let acting = if arm.model_decides() {
        choices.model
    } else {
        choices.baseline
    };

    let opted_out = features
        .as_ref()
        .and_then(|row| ctx.opted_out_index.and_then(|i| row.values.get(i)))
        .and_then(|v| v.as_number())
        .is_some_and(|v| v > 0.0);
    let blocked = blocking_gate(
        &policy.gates,
        in_force.kill_switch,
        opted_out,
        context.local_minute,
    );
    let settled = match (blocked, acting) {
        (Some(reason), _) => Settled::Refused(reason),
        (None, None) => Settled::NoneChosen,
        (None, Some(i)) => {
            let candidate = &request.candidates[i].id;
            match reserve(&ctx, quota_rule, &user_hash, candidate, request.now, recent).await {
                Ok(()) => Settled::Sent(i),
                Err(reason) => Settled::Refused(reason),
            }
        }
    };
    let reasons = candidate_reasons(
        settled,
        scores.as_deref(),
        arm.model_decides(),
        threshold,
        request.candidates.len(),
    );
    let headline = settled.headline(&reasons);
    let sent = settled.sent();
    let decisions: Vec<CandidateDecision> = request
        .candidates
        .iter()
        .zip(reasons)
        .enumerate()
        .map(|(i, (c, reason))| CandidateDecision {
            id: c.id.clone(),
            score: scores.as_ref().map(|s| s[i]),
            send: sent == Some(i),
            reason,
        })
        .collect();
    metrics::counter!(telemetry::DECISIONS, "arm" => arm.as_str(), "reason" => headline.as_str())
        .increment(1);
    let request_id = Uuid::now_v7();
    let id_of = |i: Option<usize>| i.map(|i| request.candidates[i].id.clone());
    ctx.decisions.record(Decision {
        request_id,
        decided_at: request.now,
        user_hash,
        arm: arm.as_str(),
        cold_start: features.is_none(),
        model_version: ranker.map(|r| r.version.clone()),
        policy_version: policy.version.clone(),
        threshold,
        sent: id_of(sent),
        model_choice: id_of(choices.model).filter(|_| ranker.is_some()),
        baseline_choice: id_of(choices.baseline),
        // The request's candidates are not needed after this: moved into the log.
        candidates: request
            .candidates
            .into_iter()
            .zip(&decisions)
            .map(|(c, d)| LoggedCandidate {
                id: c.id,
                notif_type: c.notif_type,
                score: d.score,
                send: d.send,
                reason: d.reason.as_str(),
            })
            .collect(),
    });
    Ok(Json(ScoreResponse {
        request_id,
        arm,
        mode,
        model: ranker.map(ModelRef::of),
        policy_version: policy.version.clone(),
        threshold,
        cold_start: features.is_none(),
        timezone: timezone.unwrap_or(Tz::UTC).name(),
        timezone_assumed_utc: timezone.is_none(),
        decisions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The server's clock in these tests: 2027-01-15.
    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn parse(body: Value) -> Result<ScoreRequest, String> {
        ScoreRequest::parse(body.to_string().as_bytes(), now()).map_err(|e| match e {
            ApiError::InvalidField { field, .. } => field,
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn a_valid_request_parses_with_defaults() {
        let r =
            parse(json!({"user_id": "u1", "candidates": [{"id": "a", "type": "weekly_digest"}]}))
                .unwrap();
        assert_eq!((r.now, r.timezone, r.candidates.len()), (now(), None, 1));
        let r = parse(
            json!({"user_id": "u1", "now": "2026-11-22T18:05:00+01:00", "timezone": "Europe/Berlin",
                              "candidates": [{"id": "a", "type": "t", "context": {"x": 1}}]}),
        )
        .unwrap();
        assert_eq!(r.now.to_rfc3339(), "2026-11-22T17:05:00+00:00");
        assert_eq!(r.timezone, Some(chrono_tz::Europe::Berlin));
    }

    #[test]
    fn a_now_ahead_of_the_server_clock_beyond_the_skew_is_refused_and_any_past_one_accepted() {
        let at = |t: DateTime<Utc>| {
            parse(json!({"user_id": "u", "now": t.to_rfc3339(), "candidates": [{"id": "a", "type": "t"}]}))
                .map(|r| r.now)
        };
        let skew = now() + MAX_AHEAD;
        assert_eq!(at(skew), Ok(skew));
        assert_eq!(at(skew + TimeDelta::seconds(1)), Err("now".to_owned()));
        let past = now() - TimeDelta::days(400);
        assert_eq!(at(past), Ok(past));
    }

    #[test]
    fn errors_name_the_field() {
        let one = json!([{"id": "a", "type": "t"}]);
        let cases = [
            (json!({"candidates": one}), "user_id"),
            (json!({"user_id": 7, "candidates": one}), "user_id"),
            (
                json!({"user_id": "u", "now": "yesterday", "candidates": one}),
                "now",
            ),
            (
                json!({"user_id": "u", "timezone": "Mars/Olympus", "candidates": one}),
                "timezone",
            ),
            (json!({"user_id": "u", "candidates": []}), "candidates"),
            (json!({"user_id": "u"}), "candidates"),
            (
                json!({"user_id": "u", "candidates": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}]}),
                "candidates[1].id",
            ),
            (
                json!({"user_id": "u", "candidates": [{"id": "a"}]}),
                "candidates[0].type",
            ),
            (json!({"user_id": "u", "candidates": [3]}), "candidates[0]"),
            (
                json!({"user_id": "u", "candidates": [{"id": 5, "type": "t"}]}),
                "candidates[0].id",
            ),
            (json!({"user_id": "u", "candidates": "a"}), "candidates"),
            (
                json!({"user_id": "u", "timezone": ["UTC"], "candidates": one}),
                "timezone",
            ),
            (json!([{"user_id": "u", "candidates": one}]), "body"),
        ];
        for (body, field) in cases {
            assert_eq!(parse(body.clone()), Err(field.to_owned()), "{body}");
        }
        let many: Vec<Value> = (0..51)
            .map(|i| json!({"id": i.to_string(), "type": "t"}))
            .collect();
        assert_eq!(
            parse(json!({"user_id": "u", "candidates": many})),
            Err("candidates".to_owned())
        );
        for body in [
            &b"{not json"[..],
            b"{\"user_id\": \"u\", \"candidates\": [{\"id\": \"a\", \"type\": \"t\"}]} trailing",
        ] {
            assert!(matches!(
                ScoreRequest::parse(body, now()),
                Err(ApiError::InvalidField { field, message }) if field == "body" && message.starts_with("not JSON")
            ));
        }
        // A field given twice is ambiguous: refused, not resolved in favour of either.
        let twice =
            br#"{"user_id": "u", "user_id": "v", "candidates": [{"id": "a", "type": "t"}]}"#;
        assert!(matches!(
            ScoreRequest::parse(twice, now()),
            Err(ApiError::InvalidField { message, .. }) if message.contains("duplicate field `user_id`")
        ));
    }

    /// JSON of any shape, with the request's own keys among the object keys.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(Value::from("2026-11-22T12:00:00Z")),
            Just(Value::from("Europe/Berlin")),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            let key = prop_oneof![
                Just("user_id".to_owned()),
                Just("now".to_owned()),
                Just("timezone".to_owned()),
                Just("candidates".to_owned()),
                Just("id".to_owned()),
                Just("type".to_owned()),
                "[a-z]{1,5}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_valid_request_reads_back_candidate_for_candidate(
            user in "\\PC{1,40}",
            // Distinct ids in any order: printable text, escapes and all.
            ids in proptest::collection::btree_set("\\PC{1,20}", 1..=MAX_CANDIDATES)
                .prop_map(|ids| ids.into_iter().collect::<Vec<_>>())
                .prop_shuffle(),
            notif_type in "[a-z_]{1,30}",
        ) {
            let candidates: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id, "type": notif_type, "context": {"n": 1}}))
                .collect();
            let parsed = parse(json!({"user_id": user, "timezone": null, "candidates": candidates}))
                .unwrap();
            prop_assert_eq!(parsed.user_id, user);
            let read: Vec<&str> = parsed.candidates.iter().map(|c| c.id.as_str()).collect();
            prop_assert_eq!(read, ids.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn any_json_is_a_valid_request_or_refused_naming_a_field(body in any_json()) {
            match ScoreRequest::parse(body.to_string().as_bytes(), now()) {
                Ok(request) => {
                    prop_assert!((1..=MAX_CANDIDATES).contains(&request.candidates.len()));
                    prop_assert!(!request.user_id.is_empty());
                    let ids: std::collections::HashSet<&str> =
                        request.candidates.iter().map(|c| c.id.as_str()).collect();
                    prop_assert_eq!(ids.len(), request.candidates.len());
                }
                Err(ApiError::InvalidField { field, .. }) => prop_assert!(!field.is_empty()),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn baseline_takes_the_first_and_the_model_the_best_above_threshold() {
        let scores = [0.2, 0.5, 0.5, 0.1];
        assert_eq!(
            choose(4, Some(&scores), 0.3),
            Choices {
                baseline: Some(0),
                model: Some(1)
            }
        );
        assert_eq!(
            choose(4, Some(&scores), 0.6),
            Choices {
                baseline: Some(0),
                model: None
            }
        );
        assert_eq!(
            choose(4, None, 0.3),
            Choices {
                baseline: Some(0),
                model: None
            }
        );
        assert_eq!(choose(1, Some(&[0.3]), 0.3).model, Some(0));
    }

    #[test]
    fn each_candidate_is_told_why() {
        use Reason::*;
        let scores = [0.1, 0.5, 0.3];
        let model = |settled| candidate_reasons(settled, Some(&scores), true, 0.2, 3);
        assert_eq!(model(Settled::Sent(1)), [BelowThreshold, Ok, NotSelected]);
        assert_eq!(
            model(Settled::NoneChosen),
            [BelowThreshold, NotSelected, NotSelected]
        );
        assert_eq!(model(Settled::Refused(MinGap)), [MinGap; 3]);
        // The baseline arm does not apply the threshold, even to scores it logs.
        assert_eq!(
            candidate_reasons(Settled::Sent(0), Some(&[0.3, 0.1, 0.5]), false, 0.2, 3),
            [Ok, NotSelected, NotSelected]
        );
        assert_eq!(
            Settled::Sent(2).headline(&[NotSelected, NotSelected, Ok]),
            Ok
        );
        assert_eq!(
            Settled::Refused(QuietHours).headline(&[QuietHours; 3]),
            QuietHours
        );
    }

    fn any_settled(candidates: usize) -> impl Strategy<Value = Settled> {
        let refusals = [
            Reason::DailyCap,
            Reason::MinGap,
            Reason::QuietHours,
            Reason::OptedOut,
            Reason::KillSwitch,
            Reason::QuotaUnavailable,
        ];
        prop_oneof![
            proptest::sample::select(refusals.to_vec()).prop_map(Settled::Refused),
            Just(Settled::NoneChosen),
            (0..candidates).prop_map(Settled::Sent),
        ]
    }

    proptest! {
        #[test]
        fn only_the_candidate_sent_is_ok_and_a_refusal_is_everyones(
            (scores, settled) in (1..=MAX_CANDIDATES).prop_flat_map(|n| {
                (proptest::collection::vec(0.0..1.0f64, n), any_settled(n))
            }),
            model_decides in any::<bool>(),
            threshold in 0.0..1.0f64,
        ) {
            let reasons =
                candidate_reasons(settled, Some(&scores), model_decides, threshold, scores.len());
            prop_assert_eq!(reasons.len(), scores.len());
            for (i, (&reason, &score)) in reasons.iter().zip(&scores).enumerate() {
                match settled {
                    Settled::Refused(refusal) => prop_assert_eq!(reason, refusal),
                    _ => {
                        prop_assert_eq!(reason == Reason::Ok, settled.sent() == Some(i));
                        if reason == Reason::BelowThreshold {
                            prop_assert!(model_decides && score < threshold);
                        }
                        if reason == Reason::NotSelected {
                            prop_assert!(!model_decides || score >= threshold);
                        }
                    }
                }
            }
            let headline = settled.headline(&reasons);
            prop_assert_eq!(headline == Reason::Ok, settled.sent().is_some());
            if settled.sent().is_none() {
                prop_assert_eq!(headline, reasons[0]);
            }
        }
    }
}
