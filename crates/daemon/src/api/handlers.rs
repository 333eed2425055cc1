//! The handlers: each parses its request and hands it to the service, whose typed answer is
//! the response. Their annotations make both the routes and the OpenAPI document.
#![forbid(unsafe_code)]

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, ExecutionId, PluginName};
use crate::execution_result::ExecutionResult;
use crate::service::tools::ToolList;
use crate::service::{EnabledState, ExecuteRequest, ExecutionFilter, PluginInfo, PluginList, Service, SystemReport};
use crate::supervisor::executions::{AllStats, Cancelling, ExecutionList, ExecutionView, PluginStats};
use crate::supervisor::launch::{Started, Wait};
use crate::supervisor::reload::{BackupList, ReloadOutcome, ReloadReport};

type Svc = State<Service>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// The health check's answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/api/v1/system", tag = "system",
    responses((status = 200, description = "Host support, enforced layers, policy, executions and reload state", body = SystemReport)))]
pub async fn system(State(s): Svc) -> Json<SystemReport> {
    Json(s.system())
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin with its state", body = PluginList, links(
        ("info" = (operation_id = "plugin_info", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("stats" = (operation_id = "plugin_stats", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("backups" = (operation_id = "backups", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("reload" = (operation_id = "reload_plugin", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("rollback" = (operation_id = "rollback", parameters(("name" = "$response.body#/plugins/0/name")))),
        ("enable" = (operation_id = "enable", parameters(("name" = "$response.body#/plugins/0/name")))),
    ))))]
pub async fn list_plugins(State(s): Svc) -> Json<PluginList> {
    Json(s.plugins())
}

#[utoipa::path(get, path = "/api/v1/tools", tag = "plugins",
    responses((status = 200, description = "The plugins the caller may execute, as MCP tools (name, title, description, a strict input schema, annotations from what policy grants)", body = ToolList)))]
pub async fn list_tools(State(s): Svc) -> Json<ToolList> {
    Json(s.tools())
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "plugins", params(PluginName),
    responses(
        (status = 200, description = "Manifest, state, effective permissions and limits with their sources, events", body = PluginInfo),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn plugin_info(State(s): Svc, PluginName { name }: PluginName) -> ApiResult<PluginInfo> {
    Ok(Json(s.plugin(&name)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
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
pub struct Detached {
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
pub async fn execute(
    State(s): Svc,
    PluginName { name }: PluginName,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let wait = if body.wait { Wait::Result } else { Wait::Detach };
    let request = ExecuteRequest { parameters: body.parameters, plugin_name: body.plugin_name, wait };
    match s.execute(&name, request).await? {
        Started::Finished(result) => Ok(Json(*result).into_response()),
        Started::Detached(id) => {
            Ok((StatusCode::ACCEPTED, Json(Detached { id, status: "running".into() })).into_response())
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableBody {
    enabled: bool,
}

#[utoipa::path(put, path = "/api/v1/plugins/{name}/enable", tag = "plugins", params(PluginName),
    request_body = EnableBody,
    responses(
        (status = 200, description = "The plugin's new state (kept across restarts)", body = EnabledState),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn enable(
    State(s): Svc,
    PluginName { name }: PluginName,
    ApiJson(body): ApiJson<EnableBody>,
) -> ApiResult<EnabledState> {
    Ok(Json(s.set_enabled(&name, body.enabled)?))
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/reload", tag = "reload", params(PluginName),
    responses(
        (status = 200, description = "What the reload did: changed, unchanged or failed, and why", body = ReloadOutcome),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn reload_plugin(State(s): Svc, PluginName { name }: PluginName) -> ApiResult<ReloadOutcome> {
    Ok(Json(s.reload_plugin(&name).await?))
}

#[utoipa::path(post, path = "/api/v1/plugins/reload-all", tag = "reload",
    responses((status = 200, description = "Every plugin's reload outcome, and the policies'", body = ReloadReport)))]
pub async fn reload_all(State(s): Svc) -> Json<ReloadReport> {
    Json(s.reload_all().await)
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/backups", tag = "reload", params(PluginName),
    responses(
        (status = 200, description = "The plugin's backups, newest first", body = BackupList),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn backups(State(s): Svc, PluginName { name }: PluginName) -> ApiResult<BackupList> {
    Ok(Json(s.backups(&name)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// A backup id from `GET /api/v1/plugins/{name}/backups`.
    backup: String,
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/rollback", tag = "reload", params(PluginName),
    request_body = RollbackBody,
    responses(
        (status = 200, description = "The restored version's reload outcome", body = ReloadOutcome),
        (status = 404, description = "No such plugin or backup", body = ErrorBody),
    ))]
pub async fn rollback(
    State(s): Svc,
    PluginName { name }: PluginName,
    ApiJson(body): ApiJson<RollbackBody>,
) -> ApiResult<ReloadOutcome> {
    Ok(Json(s.rollback(&name, &body.backup).await?))
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/stats", tag = "plugins", params(PluginName),
    responses(
        (status = 200, description = "The plugin's execution statistics", body = PluginStats),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn plugin_stats(State(s): Svc, PluginName { name }: PluginName) -> ApiResult<PluginStats> {
    Ok(Json(s.plugin_stats(&name)?))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "system",
    responses((status = 200, description = "Statistics of every plugin", body = AllStats)))]
pub async fn stats(State(s): Svc) -> Json<AllStats> {
    Json(s.stats())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExecutionQuery {
    /// Only this plugin's executions.
    plugin: Option<String>,
    /// `running`, or `all` (the default).
    #[param(pattern = "^(running|all)$")]
    state: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(ExecutionQuery),
    responses(
        (status = 200, description = "Running and recently finished executions", body = ExecutionList, links(
            ("result" = (operation_id = "get_execution", parameters(("id" = "$response.body#/executions/0/id")))),
            ("cancel" = (operation_id = "cancel_execution", parameters(("id" = "$response.body#/executions/0/id")))),
        )),
        (status = 400, description = "An invalid filter", body = ErrorBody),
    ))]
pub async fn list_executions(State(s): Svc, ApiQuery(q): ApiQuery<ExecutionQuery>) -> ApiResult<ExecutionList> {
    let filter = match q.state.as_deref() {
        None | Some("all") => ExecutionFilter::All,
        Some("running") => ExecutionFilter::Running,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("state must be 'running' or 'all', not {other:?}"),
            ));
        }
    };
    Ok(Json(s.executions(q.plugin.as_deref(), filter)))
}

#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", params(ExecutionId),
    responses(
        (status = 200, description = "The execution's result, or `running`", body = ExecutionView),
        (status = 404, description = "No such execution", body = ErrorBody),
    ))]
pub async fn get_execution(State(s): Svc, ExecutionId { id }: ExecutionId) -> ApiResult<ExecutionView> {
    Ok(Json(s.execution(&id)?))
}

#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions", params(ExecutionId),
    responses(
        (status = 200, description = "Cancellation requested: the result follows at GET /api/v1/executions/{id}", body = Cancelling),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "The execution has already finished", body = ErrorBody),
    ))]
pub async fn cancel_execution(State(s): Svc, ExecutionId { id }: ExecutionId) -> ApiResult<Cancelling> {
    Ok(Json(s.cancel(&id)?))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}
