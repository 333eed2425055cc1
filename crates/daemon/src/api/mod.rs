//! The REST API. [`router`] builds the routes (tests drive it directly); `crate::server` serves
//! it. Handlers only parse the request and hand it to the service layer.
#![forbid(unsafe_code)]

mod error;
mod extract;
mod handlers;
mod openapi;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Service;
pub use error::{ApiError, ErrorBody};
pub use extract::MAX_JSON_DEPTH;
use handlers::*;
use openapi::{ApiDoc, CommonResponses, document_json, with_plugins};

/// Every route, described as it is routed: the handlers' annotations make both the router and
/// the OpenAPI document, so the two cannot drift.
fn routes() -> (Router<Service>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(system))
        .routes(routes!(list_plugins))
        .routes(routes!(list_tools))
        .routes(routes!(plugin_info))
        .routes(routes!(execute))
        .routes(routes!(enable))
        .routes(routes!(plugin_stats))
        .routes(routes!(reload_all))
        .routes(routes!(reload_plugin))
        .routes(routes!(backups))
        .routes(routes!(rollback))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(stats))
        .split_for_parts();
    utoipa::Modify::modify(&CommonResponses, &mut document);
    (router, document)
}

/// The OpenAPI document of the whole API, as routed; `/api/v1/openapi.json` serves it with
/// the generic execute operation replaced by one per loaded plugin ([`with_plugins`]).
pub fn openapi() -> Value {
    document_json(&routes().1)
}

/// All routes, REST and MCP, in one table, behind the role check of `gate`. MCP sessions end
/// when `stopping` is cancelled.
pub fn router(service: Service, gate: Arc<crate::auth::Gate>, stopping: CancellationToken) -> Router {
    let api = &service.supervisor().config().api;
    let (max_body, body_timeout) = (api.max_body.0 as usize, api.body_timeout.0);
    let mcp = crate::mcp::routes(service.clone(), mcp_settings(api), stopping);
    let (routes, document) = routes();
    let document = Arc::new(document_json(&document));
    let served = move |State(s): State<Service>| async move { Json(with_plugins(&document, s.parameter_schemas())) };
    routes
        .merge(mcp)
        .route("/api/v1/openapi.json", get(served))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon log")
                .into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(gate, crate::auth::authorize))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

fn mcp_settings(api: &crate::config::ApiConfig) -> crate::mcp::McpSettings {
    let mut allowed_hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    if let Some(tcp) = api.tcp {
        allowed_hosts.push(tcp.ip().to_string());
    }
    allowed_hosts.extend(api.mcp_allowed_hosts.iter().cloned());
    crate::mcp::McpSettings {
        allowed_origins: api.mcp_allowed_origins.clone(),
        allowed_hosts,
        max_message: api.max_body.0 as usize,
        max_sessions: api.mcp_max_sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::PluginParameters;
    use serde_json::json;

    #[test]
    fn the_document_describes_every_route_and_its_refusals() {
        let doc = openapi();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/healthz",
            "/api/v1/system",
            "/api/v1/plugins",
            "/api/v1/plugins/{name}",
            "/api/v1/plugins/{name}/execute",
            "/api/v1/plugins/{name}/enable",
            "/api/v1/plugins/{name}/stats",
            "/api/v1/plugins/reload-all",
            "/api/v1/plugins/{name}/reload",
            "/api/v1/plugins/{name}/backups",
            "/api/v1/plugins/{name}/rollback",
            "/api/v1/executions",
            "/api/v1/executions/{id}",
            "/api/v1/executions/{id}/cancel",
            "/api/v1/stats",
        ] {
            assert!(paths.contains_key(path), "{path} is not in the document");
        }
        let execute = &paths["/api/v1/plugins/{name}/execute"]["post"]["responses"];
        for code in ["200", "202", "400", "401", "403", "404", "409", "413", "415", "429", "503"] {
            assert!(execute.get(code).is_some(), "execute does not document {code}: {execute}");
        }
        assert!(paths["/healthz"]["get"]["responses"].get("401").is_none(), "the health check is public");
        assert!(doc["components"]["schemas"]["ExecutionResult"].is_object());
        let link = &paths["/api/v1/plugins"]["get"]["responses"]["200"]["links"]["info"];
        assert_eq!(link["operationId"], "plugin_info", "links as the spec spells them: {link}");

        let schema = json!({"type": "object", "required": ["expression"]});
        let output = json!({"type": "object", "required": ["result"]});
        let calculator = PluginParameters {
            plugin: "calculator".into(),
            title: Some("Calculator".into()),
            description: "Evaluates arithmetic".into(),
            schema: schema.clone(),
            output: Some(output.clone()),
            may_be_omitted: false,
        };
        let served = with_plugins(&doc, vec![calculator]);
        let calculator = &served["paths"]["/api/v1/plugins/calculator/execute"]["post"];
        let body = &calculator["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["properties"]["parameters"], schema);
        assert_eq!(body["properties"]["plugin_name"]["enum"], json!(["calculator", null]));
        assert_eq!(body["required"], json!(["parameters"]));
        assert!(calculator["parameters"].is_null(), "no path parameter left");
        assert!(served["paths"].get("/api/v1/plugins/{name}/execute").is_none(), "the generic operation is replaced");
        assert_eq!(
            (&calculator["summary"], &calculator["description"]),
            (&json!("Runs Calculator"), &json!("Evaluates arithmetic"))
        );
        let generic = &paths["/api/v1/plugins/{name}/execute"]["post"]["responses"];
        let ok = &calculator["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(ok["allOf"][0], generic["200"]["content"]["application/json"]["schema"], "{ok}");
        assert_eq!(ok["allOf"][1]["properties"]["data"]["anyOf"], json!([output, {"type": "null"}]), "{ok}");
        assert_eq!(calculator["responses"]["400"], generic["400"]);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    }

    #[test]
    fn every_answer_has_a_schema_of_its_own() {
        let doc = openapi();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (code, response) in op["responses"].as_object().unwrap() {
                    let schema = &response["content"]["application/json"]["schema"];
                    let named = schema["$ref"].as_str().is_some_and(|r| r.starts_with("#/components/schemas/"));
                    assert!(named, "{method} {path} answers {code} without a named schema: {response}");
                    let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                    let component = &doc["components"]["schemas"][name];
                    let described = component.get("properties").is_some()
                        || component.get("oneOf").is_some()
                        || component.get("allOf").is_some();
                    assert!(described, "{method} {path} {code}: {name} is a bare object: {component}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 40, "only {checked} responses were checked");
    }
}
