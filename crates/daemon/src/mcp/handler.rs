//! The one MCP handler, on the service layer: `tools/list` is [`Service::tools`], `tools/call`
//! is [`Service::execute`], and the list's changes are announced as they happen. Every rule
//! about what a caller may do stays in the service; this only translates.

use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ServerCapabilities, ServerConfig,
    SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::execution_result::{ExecutionResult, ExecutionStatus};
use crate::service::{ExecuteRequest, Service, ServiceError};
use crate::supervisor::SupervisorError;
use crate::supervisor::launch::{Started, Wait};

/// How often a call whose client asked for progress reports it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One MCP session's handler (a stream's, or a Streamable HTTP session's or request's).
pub struct ToolServer {
    service: Service,
    /// Cancelled when the session ends (the handler is dropped) or the daemon stops: ends the
    /// task that announces list changes to a session-based client.
    ended: CancellationToken,
    _end_with_session: DropGuard,
}

impl ToolServer {
    pub fn new(service: Service, stopping: &CancellationToken) -> Self {
        let ended = stopping.child_token();
        ToolServer { service, _end_with_session: ended.clone().drop_guard(), ended }
    }
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build();
        let mut server = Implementation::new("ironclaw", env!("CARGO_PKG_VERSION"));
        server.title = Some("Ironclaw".into());
        ServerConfig::new(capabilities).with_server_info(server).with_instructions(
            "Each tool is a plugin run in Ironclaw's sandbox with only what the admin's policy grants it. \
             A result with isError says why: invalid_input means the arguments need fixing; any other \
             status (timeout, memory_limit, denied, error, ...) means the tool itself failed.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let listed = serde_json::to_value(self.service.tools().tools)
            .and_then(serde_json::from_value::<Vec<Tool>>)
            .map_err(|e| McpError::internal_error(format!("cannot describe the tools: {e}"), None))?;
        // The list changes with every reload, enable and disable: never fresh for long.
        Ok(ListToolsResult::with_all_items(listed).with_ttl_ms(0))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let parameters = Value::Object(request.arguments.unwrap_or_default());
        // The client's cancellation (or its going away, which drops this future) cancels the
        // execution; the guard covers the drop.
        let stop = context.ct.clone();
        let cancel_on_drop = stop.clone().drop_guard();
        let progress = context.meta.get_progress_token().map(|token| self.report_progress(&name, token, &context));
        let request = ExecuteRequest { parameters, plugin_name: None, wait: Wait::ResultUnless(stop) };
        let outcome = self.service.execute(&name, request).await;
        cancel_on_drop.disarm();
        progress.inspect(tokio::task::JoinHandle::abort);
        match outcome {
            Ok(Started::Finished(result)) => Ok(call_result(&result).into()),
            Ok(Started::Detached(id)) => Err(McpError::internal_error(format!("execution {id} was detached"), None)),
            Err(e) => refused(e).map(Into::into),
        }
    }

    fn accepted_subscription_filter(&self, _requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    /// A `subscriptions/listen` stream (protocol 2026-07-28): one announcement per change.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.service.tool_list_changes();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = self.ended.cancelled() => return Ok(()),
                () = changes.changed() => {}
            }
            if context.sink().notify_tool_list_changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// A session-based client (protocol 2025-11-25 and before) hears of changes on its session.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let (mut changes, ended, peer) = (self.service.tool_list_changes(), self.ended.clone(), context.peer);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = ended.cancelled() => return,
                    () = changes.changed() => {}
                }
                if peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

impl ToolServer {
    /// Reports the call's progress until aborted: seconds running, out of the plugin's time
    /// limit (the plugins themselves report none).
    fn report_progress(
        &self,
        name: &str,
        token: ProgressToken,
        context: &RequestContext<RoleServer>,
    ) -> tokio::task::JoinHandle<()> {
        let limit = self.service.time_limit(name);
        let peer = context.peer.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let running = started.elapsed().as_secs_f64().floor();
                let mut param = ProgressNotificationParam::new(token.clone(), running)
                    .with_message(format!("running for {running} s"));
                if let Some(limit) = limit {
                    param = param.with_total(limit.as_secs_f64());
                }
                if peer.notify_progress(param).await.is_err() {
                    return;
                }
            }
        })
    }
}

/// A finished execution as a tool result: the data, structured and as text, on success; the
/// status and the error otherwise, so a model can tell its own mistake (`invalid_input`)
/// from the tool's failure.
fn call_result(result: &ExecutionResult) -> CallToolResult {
    if result.status == ExecutionStatus::Success {
        let data = result.data.clone().unwrap_or(Value::Null);
        return CallToolResult::structured(data);
    }
    let error = result.error.as_deref().unwrap_or("no detail");
    let text = format!("{}: {error} (execution {})", result.status.as_str(), result.id);
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// A call the service refused before anything ran. A tool that is not on the list (unknown,
/// disabled, not granted) is a protocol error, as MCP has it; the rest are results the model
/// can act on.
fn refused(e: ServiceError) -> Result<CallToolResult, McpError> {
    let status = match &e {
        ServiceError::Supervisor(SupervisorError::NotFound(_) | SupervisorError::NotRunnable { .. }) => {
            return Err(McpError::invalid_params(e.to_string(), None));
        }
        ServiceError::Supervisor(SupervisorError::InvalidParameters { .. })
        | ServiceError::ParametersTooLarge { .. }
        | ServiceError::PluginNameMismatch { .. } => ExecutionStatus::InvalidInput.as_str(),
        ServiceError::Supervisor(SupervisorError::RateLimited { .. }) => "rate_limited",
        ServiceError::Supervisor(SupervisorError::Overloaded) => "overloaded",
        ServiceError::Supervisor(SupervisorError::ShuttingDown) => "shutting_down",
        ServiceError::Supervisor(_) => {
            tracing::error!(error = %ironclaw_protocol::error_chain(&e), "internal error");
            return Ok(CallToolResult::error(vec![ContentBlock::text("internal: see the daemon log")]));
        }
    };
    Ok(CallToolResult::error(vec![ContentBlock::text(format!("{status}: {e}"))]))
}
