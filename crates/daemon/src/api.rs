//! The REST API. `router(supervisor)` builds the routes (tests drive it directly);
//! [`serve`] runs it on a listener until a shutdown future resolves. Handlers only parse the
//! request and hand it to the supervisor.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::manifest::valid_name;
use crate::supervisor::execution::ExecutionResult;
use crate::supervisor::{PluginParameters, Started, Supervisor, SupervisorError, Wait};

/// An API error: a status, a stable machine-readable code and a human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` on 429 and 503 (1 unless known).
    retry_after: u64,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: 1 }
    }
}

/// The body of every refused request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
    /// `rate_limited` on 429 for a plugin over its rate: shaped like an execution result too,
    /// for clients that only read `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// With `status`: seconds until the plugin may run again (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `plugin_not_found`, `overloaded`.
    code: String,
    /// For people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rate_limited = self.code == "rate_limited";
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.into(), message: self.message },
            status: rate_limited.then(|| "rate_limited".into()),
            retry_after_s: rate_limited.then_some(self.retry_after),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
        response
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        use SupervisorError::*;
        let message = e.to_string();
        match e {
            NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", message),
            NotRunnable { state: "disabled", .. } => ApiError::new(StatusCode::CONFLICT, "plugin_disabled", message),
            NotRunnable { .. } => ApiError::new(StatusCode::CONFLICT, "plugin_not_runnable", message),
            InvalidParameters { .. } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameters", message),
            Overloaded => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message),
            RateLimited { retry_after, .. } => ApiError {
                retry_after: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message),
            ExecutionNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "execution_not_found", message),
            AlreadyFinished(_) => ApiError::new(StatusCode::CONFLICT, "execution_finished", message),
            BackupNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "backup_not_found", message),
            Registry(_) | TaskFailed => {
                // Internal details go to the log, never to the client.
                tracing::error!(error = %ironclaw_protocol::error_chain(&e), "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon log")
            }
        }
    }
}

/// Nesting deeper than this is refused before parsing: no request needs it, and deep input
/// costs stack in every consumer (the schema validator, the plugin's own parser).
pub const MAX_JSON_DEPTH: usize = 64;

/// `Json` whose rejections use our error format, and which refuses over-deep documents.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a request with `content-type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_request" };
            ApiError::new(status, code, r.body_text())
        })?;
        if json_depth(&bytes) > MAX_JSON_DEPTH {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "json_too_deep",
                format!("the request nests JSON deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// The deepest nesting of arrays and objects in `bytes`, strings skipped. Malformed input gets
/// some answer; the parser rejects it afterwards.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// An axum extractor of the request's parts whose rejections use our error format.
macro_rules! answered_in_our_format {
    ($(#[$doc:meta])* $name:ident wraps $inner:ident) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for $name<T> {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                match $inner::<T>::from_request_parts(parts, state).await {
                    Ok($inner(v)) => Ok($name(v)),
                    Err(r) => Err(ApiError::new(r.status(), "invalid_request", r.body_text())),
                }
            }
        }
    };
}

answered_in_our_format!(
    /// `Query`, answered in our error format.
    ApiQuery wraps Query
);
answered_in_our_format!(
    /// `Path` (e.g. a segment that is not UTF-8), answered in our error format.
    ApiPath wraps Path
);

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_request",
    };
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    ApiError::new(status, code, r.body_text())
}

type Sup = State<Arc<Supervisor>>;
type ApiResult = Result<Json<Value>, ApiError>;

/// A plugin's name in a path: what `manifest::valid_name` accepts. Anything else is answered
/// 404 as extracted, so no handler sees a name that could reach a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct PluginName {
    /// Lower-case letters, digits and `_`, starting with a letter.
    #[param(pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for PluginName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(Self { name }) = ApiPath::<Self>::from_request_parts(parts, state).await?;
        if !valid_name(&name) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", format!("no plugin named {name:?}")));
        }
        Ok(Self { name })
    }
}

/// An execution's id in a path, checked as it is extracted like [`PluginName`].
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ExecutionId {
    /// 32 lower-case hex digits.
    #[param(pattern = r"^[0-9a-f]{32}$")]
    id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ExecutionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(Self { id }) = ApiPath::<Self>::from_request_parts(parts, state).await?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "execution_not_found",
                format!("no execution with id {id:?}"),
            ));
        }
        Ok(Self { id })
    }
}

#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, description = "The daemon is up", body = Object)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/api/v1/system", tag = "system",
    responses((status = 200, description = "Host support, enforced layers, policy, executions and reload state", body = Object)))]
async fn system(State(s): Sup) -> Json<Value> {
    Json(s.system())
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin with its state", body = Object, links(
        ("info" = (operation_id = "plugin_info", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("stats" = (operation_id = "plugin_stats", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("backups" = (operation_id = "backups", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("reload" = (operation_id = "reload_plugin", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("rollback" = (operation_id = "rollback", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("enable" = (operation_id = "enable", parameters(("name" = "$response.body#/plugins/0/name")))),
    ))))]
async fn list_plugins(State(s): Sup) -> Json<Value> {
    Json(s.list_plugins())
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "plugins", params(PluginName),
    responses(
        (status = 200, description = "Manifest, state, effective permissions and limits with their sources, events", body = Object),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
async fn plugin_info(State(s): Sup, PluginName { name }: PluginName) -> ApiResult {
    Ok(Json(s.plugin_info(&name)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    /// Checked against the plugin's JSON Schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    parameters: Value,
    /// The seed's field: must name the plugin of the path when given.
    plugin_name: Option<String>,
    /// `false` returns 202 with the execution id at once.
    #[serde(default = "yes")]
    #[schema(default = true)]
    wait: bool,
}

/// The answer to an execution started with `"wait": false`.
#[derive(Serialize, ToSchema)]
struct Detached {
    id: String,
    /// Always `running`.
    status: String,
}

fn empty_object() -> Value {
    json!({})
}

fn yes() -> bool {
    true
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/execute", tag = "executions", params(PluginName),
    request_body = ExecuteBody,
    responses(
        (status = 200, description = "The execution's result, whatever its status", body = ExecutionResult, links(
            ("result" = (operation_id = "get_execution", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 202, description = "Started without waiting", body = Detached, links(
            ("result" = (operation_id = "get_execution", parameters(("id" = "$response.body#/id")))),
            ("cancel" = (operation_id = "cancel_execution", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "Invalid parameters or request", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "The plugin is disabled or not runnable", body = ErrorBody),
    ))]
async fn execute(
    State(s): Sup,
    PluginName { name }: PluginName,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    if !s.has_plugin(&name) {
        return Err(SupervisorError::NotFound(name).into());
    }
    if let Some(given) = &body.plugin_name
        && given != &name
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "plugin_name_mismatch",
            format!("plugin_name {given:?} does not match the plugin in the path {name:?}"),
        ));
    }
    let size = serde_json::to_vec(&body.parameters).map_or(usize::MAX, |v| v.len());
    let max = s.config().api.max_parameters;
    if size as u64 > max.0 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "parameters_too_large",
            format!("parameters take {size} bytes; the limit is {max}"),
        ));
    }
    let wait = if body.wait { Wait::Result } else { Wait::Detach };
    match s.execute(&name, body.parameters, wait).await? {
        Started::Finished(result) => Ok(Json(*result).into_response()),
        Started::Detached(id) => {
            Ok((StatusCode::ACCEPTED, Json(Detached { id, status: "running".into() })).into_response())
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnableBody {
    enabled: bool,
}

#[utoipa::path(put, path = "/api/v1/plugins/{name}/enable", tag = "plugins", params(PluginName),
    request_body = EnableBody,
    responses(
        (status = 200, description = "The plugin's new state (kept across restarts)", body = Object),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
async fn enable(State(s): Sup, PluginName { name }: PluginName, ApiJson(body): ApiJson<EnableBody>) -> ApiResult {
    Ok(Json(s.set_enabled(&name, body.enabled)?))
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/reload", tag = "reload", params(PluginName),
    responses(
        (status = 200, description = "What the reload did: changed, unchanged or failed, and why", body = Object),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
async fn reload_plugin(State(s): Sup, PluginName { name }: PluginName) -> ApiResult {
    Ok(Json(json!(s.reload_plugin(&name).await?)))
}

#[utoipa::path(post, path = "/api/v1/plugins/reload-all", tag = "reload",
    responses((status = 200, description = "Every plugin's reload outcome, and the policies'", body = Object)))]
async fn reload_all(State(s): Sup) -> Json<Value> {
    Json(s.reload_all("API request").await)
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/backups", tag = "reload", params(PluginName),
    responses(
        (status = 200, description = "The plugin's backups, newest first", body = Object),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
async fn backups(State(s): Sup, PluginName { name }: PluginName) -> ApiResult {
    Ok(Json(s.backups(&name)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// A backup id from `GET /api/v1/plugins/{name}/backups`.
    backup: String,
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/rollback", tag = "reload", params(PluginName),
    request_body = RollbackBody,
    responses(
        (status = 200, description = "The restored version's reload outcome", body = Object),
        (status = 404, description = "No such plugin or backup", body = ErrorBody),
    ))]
async fn rollback(State(s): Sup, PluginName { name }: PluginName, ApiJson(body): ApiJson<RollbackBody>) -> ApiResult {
    Ok(Json(json!(s.rollback(&name, &body.backup).await?)))
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/stats", tag = "plugins", params(PluginName),
    responses(
        (status = 200, description = "The plugin's execution statistics", body = Object),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
async fn plugin_stats(State(s): Sup, PluginName { name }: PluginName) -> ApiResult {
    Ok(Json(s.plugin_stats(&name)?))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "system",
    responses((status = 200, description = "Statistics of every plugin", body = Object)))]
async fn stats(State(s): Sup) -> Json<Value> {
    Json(s.stats())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ExecutionQuery {
    /// Only this plugin's executions.
    plugin: Option<String>,
    /// `running`, or `all` (the default).
    #[param(pattern = "^(running|all)$")]
    state: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(ExecutionQuery),
    responses(
        (status = 200, description = "Running and recently finished executions", body = Object, links(
            ("result" = (operation_id = "get_execution", parameters(("id" = "$response.body#/executions/0/id")))),
            ("cancel" = (operation_id = "cancel_execution", parameters(("id" = "$response.body#/executions/0/id")))),
        )),
        (status = 400, description = "An invalid filter", body = ErrorBody),
    ))]
async fn list_executions(State(s): Sup, ApiQuery(q): ApiQuery<ExecutionQuery>) -> ApiResult {
    let running_only = match q.state.as_deref() {
        None | Some("all") => false,
        Some("running") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("state must be 'running' or 'all', not {other:?}"),
            ));
        }
    };
    Ok(Json(s.executions(q.plugin.as_deref(), running_only)))
}

#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", params(ExecutionId),
    responses(
        (status = 200, description = "The execution's result, or `running`", body = Object),
        (status = 404, description = "No such execution", body = ErrorBody),
    ))]
async fn get_execution(State(s): Sup, ExecutionId { id }: ExecutionId) -> ApiResult {
    Ok(Json(s.execution(&id)?))
}

#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions", params(ExecutionId),
    responses(
        (status = 200, description = "The cancelled execution's result (it stays readable)", body = Object),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "The execution has already finished", body = ErrorBody),
    ))]
async fn cancel_execution(State(s): Sup, ExecutionId { id }: ExecutionId) -> ApiResult {
    Ok(Json(s.cancel(&id)?))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}

/// Every route, described as it is routed: the handlers' annotations make both the router and
/// the OpenAPI document, so the two cannot drift.
fn routes() -> (Router<Arc<Supervisor>>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(system))
        .routes(routes!(list_plugins))
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

/// The document with one execute operation per plugin instead of the generic one, whose
/// `parameters` are that plugin's JSON Schema: what a client may send is then all in the
/// document. (A name no plugin has gets 404, as on any path the document does not list.)
fn with_plugins(document: &Value, plugins: Vec<PluginParameters>) -> Value {
    let mut document = document.clone();
    let generic = document["paths"]
        .as_object_mut()
        .and_then(|paths| paths.remove("/api/v1/plugins/{name}/execute"))
        .map(|path| path["post"].clone())
        .unwrap_or_default();
    for PluginParameters { plugin: name, schema: parameters, may_be_omitted } in plugins {
        let mut operation = generic.clone();
        operation["operationId"] = json!(format!("execute_{name}"));
        operation["summary"] = json!(format!("Runs {name}"));
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
fn document_json(document: &utoipa::openapi::OpenApi) -> Value {
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
struct ApiDoc;

/// What every route may answer besides its own responses, and how callers authenticate
/// (applied once the routes are in the document).
struct CommonResponses;

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

/// All routes, in one table, behind the role check of `gate`.
pub fn router(supervisor: Arc<Supervisor>, gate: Arc<crate::auth::Gate>) -> Router {
    let max_body = supervisor.config().api.max_body.0 as usize;
    let body_timeout = supervisor.config().api.body_timeout.0;
    let (routes, document) = routes();
    let document = Arc::new(document_json(&document));
    let served = move |State(s): Sup| async move { Json(with_plugins(&document, s.parameter_schemas())) };
    routes
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
        .with_state(supervisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{"}"#), 1);
        assert_eq!(json_depth(br#"{"a": "\"[[[", "b": [[]]}"#), 3, "an escaped quote does not end the string");
        assert_eq!(json_depth(b"]]]]"), 0);
        assert_eq!(json_depth(&[b'['; 1000]), 1000);
    }

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
        let calculator =
            PluginParameters { plugin: "calculator".into(), schema: schema.clone(), may_be_omitted: false };
        let served = with_plugins(&doc, vec![calculator]);
        let calculator = &served["paths"]["/api/v1/plugins/calculator/execute"]["post"];
        let body = &calculator["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["properties"]["parameters"], schema);
        assert_eq!(body["properties"]["plugin_name"]["enum"], json!(["calculator", null]));
        assert_eq!(body["required"], json!(["parameters"]));
        assert!(calculator["parameters"].is_null(), "no path parameter left");
        assert!(served["paths"].get("/api/v1/plugins/{name}/execute").is_none(), "the generic operation is replaced");
        assert_eq!(calculator["responses"], paths["/api/v1/plugins/{name}/execute"]["post"]["responses"]);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    }
}
