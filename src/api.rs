//! The REST API. `router(supervisor)` builds the routes (tests drive it directly);
//! [`serve`] runs it on a listener until a shutdown future resolves. Handlers only parse the
//! request and hand it to the supervisor.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::manifest::valid_name;
use crate::supervisor::{Started, Supervisor, SupervisorError, Wait};

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if self.code == "rate_limited" {
            // Shaped like an execution result too, for clients that only read `status`.
            body["status"] = json!("rate_limited");
            body["retry_after_s"] = json!(self.retry_after);
        }
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
                tracing::error!(error = %crate::runner::error_chain(&e), "internal error");
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

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", format!("no plugin named {name:?}")))
    }
}

fn check_execution_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "execution_not_found", format!("no execution with id {id:?}")))
    }
}

type Sup = State<Arc<Supervisor>>;
type ApiResult = Result<Json<Value>, ApiError>;

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn system(State(s): Sup) -> Json<Value> {
    Json(s.system())
}

async fn list_plugins(State(s): Sup) -> Json<Value> {
    Json(s.list_plugins())
}

async fn plugin_info(State(s): Sup, Path(name): Path<String>) -> ApiResult {
    check_name(&name)?;
    Ok(Json(s.plugin_info(&name)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    #[serde(default = "empty_object")]
    parameters: Value,
    /// The seed's field: must name the plugin of the path when given.
    plugin_name: Option<String>,
    /// `false` returns 202 with the execution id at once.
    #[serde(default = "yes")]
    wait: bool,
}

fn empty_object() -> Value {
    json!({})
}

fn yes() -> bool {
    true
}

async fn execute(
    State(s): Sup,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
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
            Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "status": "running"}))).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableBody {
    enabled: bool,
}

async fn enable(State(s): Sup, Path(name): Path<String>, ApiJson(body): ApiJson<EnableBody>) -> ApiResult {
    check_name(&name)?;
    Ok(Json(s.set_enabled(&name, body.enabled)?))
}

async fn reload_plugin(State(s): Sup, Path(name): Path<String>) -> ApiResult {
    check_name(&name)?;
    Ok(Json(json!(s.reload_plugin(&name).await?)))
}

async fn reload_all(State(s): Sup) -> Json<Value> {
    Json(s.reload_all("API request").await)
}

async fn backups(State(s): Sup, Path(name): Path<String>) -> ApiResult {
    check_name(&name)?;
    Ok(Json(s.backups(&name)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    backup: String,
}

async fn rollback(State(s): Sup, Path(name): Path<String>, ApiJson(body): ApiJson<RollbackBody>) -> ApiResult {
    check_name(&name)?;
    Ok(Json(json!(s.rollback(&name, &body.backup).await?)))
}

async fn plugin_stats(State(s): Sup, Path(name): Path<String>) -> ApiResult {
    check_name(&name)?;
    Ok(Json(s.plugin_stats(&name)?))
}

async fn stats(State(s): Sup) -> Json<Value> {
    Json(s.stats())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionQuery {
    plugin: Option<String>,
    state: Option<String>,
}

async fn list_executions(State(s): Sup, Query(q): Query<ExecutionQuery>) -> ApiResult {
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

async fn get_execution(State(s): Sup, Path(id): Path<String>) -> ApiResult {
    check_execution_id(&id)?;
    Ok(Json(s.execution(&id)?))
}

async fn cancel_execution(State(s): Sup, Path(id): Path<String>) -> ApiResult {
    check_execution_id(&id)?;
    Ok(Json(s.cancel(&id)?))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}

/// All routes, in one table, behind the role check of `gate`.
pub fn router(supervisor: Arc<Supervisor>, gate: Arc<crate::auth::Gate>) -> Router {
    let max_body = supervisor.config().api.max_body.0 as usize;
    let body_timeout = supervisor.config().api.body_timeout.0;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/system", get(system))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/plugins/{name}", get(plugin_info))
        .route("/api/v1/plugins/{name}/execute", post(execute))
        .route("/api/v1/plugins/{name}/enable", put(enable))
        .route("/api/v1/plugins/{name}/stats", get(plugin_stats))
        .route("/api/v1/plugins/reload-all", post(reload_all))
        .route("/api/v1/plugins/{name}/reload", post(reload_plugin))
        .route("/api/v1/plugins/{name}/backups", get(backups))
        .route("/api/v1/plugins/{name}/rollback", post(rollback))
        .route("/api/v1/executions", get(list_executions))
        .route("/api/v1/executions/{id}", get(get_execution).delete(cancel_execution))
        .route("/api/v1/stats", get(stats))
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
