//! The service layer: every operation a front end offers, with typed answers. The REST API
//! (`crate::api`) only parses requests and calls these; a second front end calls them the same
//! way, so no rule about what a request may do lives in a front end.
#![forbid(unsafe_code)]

pub mod tools;
pub mod views;

use std::sync::Arc;

use serde_json::Value;

use crate::catalog::registry::PluginState;
use crate::catalog::units::ByteSize;
use crate::supervisor::executions::{AllStats, Cancelling, ExecutionList, ExecutionView, PluginStats};
use crate::supervisor::launch::{Started, Wait};
use crate::supervisor::reload::{BackupList, ReloadCause, ReloadOutcome, ReloadReport};
use crate::supervisor::{Supervisor, SupervisorError};
pub use views::{EnabledState, PluginInfo, PluginList, PluginParameters, SystemReport};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error("plugin_name {given:?} does not match the plugin in the path {name:?}")]
    PluginNameMismatch { given: String, name: String },
    #[error("parameters take {size} bytes; the limit is {max}")]
    ParametersTooLarge { size: usize, max: ByteSize },
}

/// One execution request, as a front end received it.
pub struct ExecuteRequest {
    pub parameters: Value,
    /// The seed's field: must name the plugin when given.
    pub plugin_name: Option<String>,
    pub wait: Wait,
}

/// Which executions to list.
pub enum ExecutionFilter {
    All,
    Running,
}

#[derive(Clone)]
pub struct Service {
    supervisor: Arc<Supervisor>,
}

impl Service {
    pub fn new(supervisor: Arc<Supervisor>) -> Self {
        Service { supervisor }
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn system(&self) -> SystemReport {
        views::system(&self.supervisor)
    }

    pub fn plugins(&self) -> PluginList {
        views::plugins(self.supervisor.catalog())
    }

    pub fn plugin(&self, name: &str) -> Result<PluginInfo, ServiceError> {
        views::plugin(self.supervisor.catalog(), name).ok_or_else(|| SupervisorError::NotFound(name.into()).into())
    }

    /// The plugins the caller may execute, as tools for an AI assistant.
    pub fn tools(&self) -> tools::ToolList {
        tools::tools(self.supervisor.catalog())
    }

    /// A watch on [`Service::tools`], for a front end that announces its changes.
    pub fn tool_list_changes(&self) -> tools::ToolListChanges {
        tools::ToolListChanges::new(self.supervisor.clone())
    }

    /// How long the plugin may run, when it may run now.
    pub fn time_limit(&self, name: &str) -> Option<std::time::Duration> {
        self.supervisor.catalog().runnable(name).ok().map(|(_, effective)| effective.limits.timeout.0)
    }

    /// Each loaded plugin's parameter schema.
    pub fn parameter_schemas(&self) -> Vec<PluginParameters> {
        views::parameter_schemas(self.supervisor.catalog())
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<EnabledState, ServiceError> {
        let (state, reason) = self.supervisor.catalog().set_enabled(name, enabled).map_err(SupervisorError::from)?;
        tracing::info!(plugin = %name, enabled, ?state, "admin changed the enabled state");
        Ok(EnabledState { name: name.into(), enabled: state == PluginState::Enabled, state, reason })
    }

    /// Checks the request against the plugin and the API's limits, then runs it.
    pub async fn execute(&self, name: &str, request: ExecuteRequest) -> Result<Started, ServiceError> {
        if !self.supervisor.catalog().contains(name) {
            return Err(SupervisorError::NotFound(name.into()).into());
        }
        if let Some(given) = request.plugin_name
            && given != name
        {
            return Err(ServiceError::PluginNameMismatch { given, name: name.into() });
        }
        let size = serde_json::to_vec(&request.parameters).map_or(usize::MAX, |v| v.len());
        let max = self.supervisor.config().api.max_parameters;
        if size as u64 > max.0 {
            return Err(ServiceError::ParametersTooLarge { size, max });
        }
        Ok(self.supervisor.execute(name, request.parameters, request.wait).await?)
    }

    pub fn executions(&self, plugin: Option<&str>, filter: ExecutionFilter) -> ExecutionList {
        self.supervisor.launcher().table().list(plugin, matches!(filter, ExecutionFilter::Running))
    }

    pub fn execution(&self, id: &str) -> Result<ExecutionView, ServiceError> {
        Ok(self.supervisor.launcher().table().get(id).map_err(SupervisorError::from)?)
    }

    pub fn cancel(&self, id: &str) -> Result<Cancelling, ServiceError> {
        Ok(self.supervisor.launcher().table().cancel(id).map_err(SupervisorError::from)?)
    }

    pub fn stats(&self) -> AllStats {
        self.supervisor.launcher().table().stats()
    }

    pub fn plugin_stats(&self, name: &str) -> Result<PluginStats, ServiceError> {
        if !self.supervisor.catalog().contains(name) {
            return Err(SupervisorError::NotFound(name.into()).into());
        }
        Ok(self.supervisor.launcher().table().plugin_stats(name))
    }

    pub async fn reload_all(&self) -> ReloadReport {
        self.supervisor.reloader().reload_all(ReloadCause::ApiRequest).await
    }

    pub async fn reload_plugin(&self, name: &str) -> Result<ReloadOutcome, ServiceError> {
        Ok(self.supervisor.reloader().reload_plugin(name).await?)
    }

    pub fn backups(&self, name: &str) -> Result<BackupList, ServiceError> {
        Ok(self.supervisor.reloader().backups(name)?)
    }

    pub async fn rollback(&self, name: &str, backup: &str) -> Result<ReloadOutcome, ServiceError> {
        Ok(self.supervisor.reloader().rollback(name, backup).await?)
    }
}
