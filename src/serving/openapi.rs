//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP interface, generated
//! from the handlers' annotations and the request and response types they use.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::body::Json;

/// The service's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "nudge-serve", description = "Scores notifications, churn risk and paywalls for EverReach; ingests product events."),
    paths(
        super::score::score,
        super::churn::churn,
        super::paywall::paywall,
        super::features::get_features,
        super::ingest::webhook,
        super::ingest::capture,
        super::admin::reload,
        super::admin::get_rollout,
        super::admin::put_rollout,
        super::admin::delete_rollout,
        super::admin::kill_switch,
        super::controller::get_controller,
        super::controller::post_tick,
        super::dashboard::dashboard,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        openapi,
    ),
    modifiers(&BearerScopes, &CapturePaths),
    tags(
        (name = "scoring", description = "Decisions for the notification scheduler and the app (scheduler token)"),
        (name = "features", description = "Online features"),
        (name = "events", description = "Product event ingest (PostHog capture API and webhook)"),
        (name = "admin", description = "Reloads, rollout flags and the kill switch (admin token)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the two bearer-token scopes the paths refer to.
struct BearerScopes;

impl Modify for BearerScopes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for scope in ["scheduler", "admin"] {
            components.add_security_scheme(
                scope,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Describes every capture path as the first one, [`super::ingest::capture`]'s own.
struct CapturePaths;

impl Modify for CapturePaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let [described, others @ ..] = super::ingest::CAPTURE_PATHS;
        let Some(item) = openapi.paths.paths.get(described).cloned() else {
            return;
        };
        for path in others {
            let mut copy = item.clone();
            if let Some(post) = copy.post.as_mut() {
                // Operation ids are unique within a document.
                post.operation_id = Some(format!(
                    "capture{}",
                    path.trim_end_matches('/').replace('/', "_")
                ));
            }
            openapi.paths.paths.insert(path.to_owned(), copy);
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::body::UserId;
    use crate::serving::ingest::CAPTURE_PATHS;
    use crate::serving::paywall::Placement;
    use crate::serving::score::{CandidateId, NotifType};
    use serde_json::json;
    use utoipa::PartialSchema;

    #[test]
    fn every_route_and_its_types_are_described() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/score",
            "/v1/churn",
            "/v1/paywall",
            "/v1/features/{user_id}",
            "/v1/events",
            "/batch/",
            "/admin/reload",
            "/admin/rollout",
            "/admin/kill-switch",
            "/admin/controller",
            "/admin/controller/tick",
            "/dashboard",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        let schemas = &doc["components"]["schemas"];
        let candidate = &schemas["Candidate"]["properties"];
        assert!(candidate.get("type").is_some() && candidate.get("id").is_some());
        let reasons = serde_json::to_string(&schemas["Reason"]).unwrap();
        for reason in [
            "daily_cap",
            "quiet_hours",
            "quota_unavailable",
            "send_budget",
        ] {
            assert!(reasons.contains(reason), "{reason} missing from {reasons}");
        }
        // Two types named Check: the readiness one and the guardrail's, apart by name.
        assert!(schemas["Check"]["properties"].get("detail").is_some());
        for schema in [
            "ControllerView",
            "TickReport",
            "StepRecord",
            "GuardrailCheck",
            "GuardrailSpan",
            "LatestChecks",
        ] {
            assert!(schemas.get(schema).is_some(), "{schema} missing");
        }
        let required = &schemas["ScoreRequest"]["required"];
        assert!(required.as_array().unwrap().contains(&"user_id".into()));
        assert!(!required.as_array().unwrap().contains(&"now".into()));
        // Request fields carry the rules their parsers apply (utoipa wraps a described
        // field's schema in a one-item `oneOf`).
        let rule = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(schema).unwrap()
        };
        let stated = |field: &serde_json::Value| match field["oneOf"].as_array() {
            Some(one) if one.len() == 1 => one[0].clone(),
            _ => field.clone(),
        };
        assert_eq!(
            stated(&schemas["ScoreRequest"]["properties"]["user_id"]),
            rule(UserId::schema())
        );
        assert_eq!(stated(&candidate["id"]), rule(CandidateId::schema()));
        assert_eq!(stated(&candidate["type"]), rule(NotifType::schema()));
        let placement = &schemas["PaywallRequest"]["properties"]["placement"];
        assert_eq!(stated(placement), rule(Placement::schema()));
        let user_ids = &schemas["ChurnRequest"]["properties"]["user_ids"];
        assert_eq!(
            (&user_ids["items"], &user_ids["uniqueItems"]),
            (&rule(UserId::schema()), &true.into())
        );
        // A canary change needs its percent; a kill switch its `on`; a tick no body.
        let shapes = schemas["RolloutChange"]["oneOf"].as_array().unwrap();
        assert_eq!(shapes[0]["properties"]["mode"]["enum"], json!(["canary"]));
        assert_eq!(shapes[0]["required"], json!(["mode", "canary_percent"]));
        assert_eq!(shapes[1]["required"], json!(["mode"]));
        assert_eq!(schemas["KillSwitchChange"]["required"], json!(["on"]));
        let tick = &doc["paths"]["/admin/controller/tick"]["post"]["requestBody"];
        assert!(tick.get("required").is_none_or(|r| r == false), "{tick}");
        // Every capture path is described, each with an operation id of its own.
        let mut operation_ids = std::collections::HashSet::new();
        for path in CAPTURE_PATHS {
            let post = &doc["paths"][path]["post"];
            assert!(post["responses"].get("422").is_some(), "{path}");
            assert!(operation_ids.insert(post["operationId"].clone()), "{path}");
        }
        for (path, method) in [("/v1/score", "post"), ("/v1/features/{user_id}", "get")] {
            assert_eq!(
                doc["paths"][path][method]["security"][0]
                    .as_object()
                    .unwrap()
                    .keys()
                    .collect::<Vec<_>>(),
                ["scheduler"],
                "{path}"
            );
        }
    }
}
