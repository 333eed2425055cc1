//! The OpenAPI document: the routes' annotations, the responses every route shares, and the
//! per-plugin execute operations with each plugin's parameter schema.
#![forbid(unsafe_code)]

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::service::PluginParameters;

/// The document with one execute operation per plugin instead of the generic one, whose
/// `parameters` are that plugin's JSON Schema: what a client may send is then all in the
/// document. (A name no plugin has gets 404, as on any path the document does not list.)
pub fn with_plugins(document: &Value, plugins: Vec<PluginParameters>) -> Value {
    let mut document = document.clone();
    let generic = document["paths"]
        .as_object_mut()
        .and_then(|paths| paths.remove("/api/v1/plugins/{name}/execute"))
        .map(|path| path["post"].clone())
        .unwrap_or_default();
    for PluginParameters { plugin: name, title, description, schema: parameters, output, may_be_omitted } in plugins {
        let mut operation = generic.clone();
        operation["operationId"] = json!(format!("execute_{name}"));
        operation["summary"] = json!(format!("Runs {}", title.as_deref().unwrap_or(&name)));
        operation["description"] = json!(description);
        if let Some(output) = output {
            // What `data` holds: the declared shape on success, null on every other status.
            let result = &mut operation["responses"]["200"]["content"]["application/json"]["schema"];
            *result =
                json!({"allOf": [result.clone(), {"properties": {"data": {"anyOf": [output, {"type": "null"}]}}}]});
        }
        operation.as_object_mut().map(|o| o.remove("parameters"));
        operation["requestBody"]["content"]["application/json"]["schema"] = json!({
            "type": "object",
            "additionalProperties": false,
            "required": if may_be_omitted { json!([]) } else { json!(["parameters"]) },
            "properties": {
                "parameters": parameters,
                "plugin_name": {"enum": [name, null]},
                "wait": {"type": "boolean", "default": true},
            },
        });
        document["paths"][format!("/api/v1/plugins/{name}/execute")] = json!({"post": operation});
    }
    document
}

/// The document as JSON. utoipa 5 writes a link's target as `operation_id`; the OpenAPI spec
/// (and every client) reads `operationId`, so links are respelled here.
pub fn document_json(document: &utoipa::openapi::OpenApi) -> Value {
    let mut json = serde_json::to_value(document).expect("an OpenAPI document serializes");
    let responses = json["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .flat_map(|item| item.as_object_mut().into_iter().flat_map(|ops| ops.values_mut()))
        .flat_map(|op| op["responses"].as_object_mut().into_iter().flat_map(|r| r.values_mut()));
    for response in responses {
        let links = response.get_mut("links").and_then(Value::as_object_mut).into_iter().flat_map(|l| l.values_mut());
        for link in links.filter_map(Value::as_object_mut) {
            for (from, to) in [("operation_id", "operationId"), ("operation_ref", "operationRef")] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.into(), v);
                }
            }
        }
    }
    json
}

#[derive(OpenApi)]
#[openapi(info(title = "Ironclaw", description = "The Ironclaw daemon's REST API, on its unix socket or TCP."))]
pub struct ApiDoc;

/// What every route may answer besides its own responses, and how callers authenticate
/// (applied once the routes are in the document).
pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        use utoipa::openapi::{Content, HttpMethod, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "TCP only: a token from api.tokens_file; unix-socket callers are known by their uid",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
                .build()
        };
        let everywhere = [
            ("401", "TCP without a valid bearer token"),
            ("403", "The caller's role does not allow this"),
            ("429", "The execution queue is full, or the plugin is over its rate limit (Retry-After)"),
            ("503", "Too many open connections, or shutting down (Retry-After)"),
        ];
        let with_body = [
            ("400", "Malformed JSON, unknown fields, or JSON nested too deeply"),
            ("413", "The body or the parameters are too large"),
            ("415", "The body is not application/json"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Put, HttpMethod::Delete] {
                let operation = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    HttpMethod::Put => item.put.as_mut(),
                    _ => item.delete.as_mut(),
                };
                let Some(operation) = operation else { continue };
                let public =
                    operation.security.as_ref().is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
                let codes = everywhere.iter().filter(|(code, _)| !public || *code == "503");
                let body_codes = with_body.iter().filter(|_| operation.request_body.is_some());
                for (code, description) in codes.chain(body_codes) {
                    operation.responses.responses.entry(code.to_string()).or_insert_with(|| error(description).into());
                }
            }
        }
    }
}
