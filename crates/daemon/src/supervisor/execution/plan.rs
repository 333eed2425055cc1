//! The plan of one execution: everything the supervisor decided for it, and the runner spec
//! and plugin environment derived from it.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironclaw_plugin_sdk::{Operation, PROTOCOL_VERSION, Request};
use ironclaw_protocol::WORKSPACE_MOUNT;
use ironclaw_protocol::layers::Requirements;
use ironclaw_protocol::spec::{RlimitSpec, RunnerSpec, RuntimeSpec, WorkspaceSpec};
use serde_json::Value;

use crate::catalog::manifest::Runtime;
use crate::catalog::policy::{Effective, Limits};
use crate::catalog::registry::LoadedPlugin;
use crate::catalog::secrets::SecretEnv;
use crate::execution_result::{ExecutionResult, ExecutionStatus, LayerReport};
use crate::proxy::{EgressProxy, PROXY_PORT, PROXY_URL, Scope};
use crate::supervisor::resources::Backend;
use crate::supervisor::workspace::{Workspace, WorkspaceError, Workspaces};
use crate::trust::{BUNDLE_VARIABLES, CA_BUNDLE, Trust};

/// The environment of exec plugins (nothing is inherited from the daemon).
const PLUGIN_ENV: [(&str, &str); 4] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("HOME", "/nonexistent"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];

/// Everything one execution needs, decided by the supervisor.
#[derive(Clone)]
pub struct ExecutionPlan {
    pub id: String,
    /// `Execute`, or `Validate` for a trial load.
    pub operation: Operation,
    pub plugin: Arc<LoadedPlugin>,
    pub parameters: Value,
    pub config: Value,
    pub limits: Limits,
    pub effective: Arc<Effective>,
    /// Names and values of the secrets this plugin is granted.
    pub secrets: SecretEnv,
    /// Every plugin's workspace.
    pub workspaces: Arc<Workspaces>,
    pub proxy: Arc<EgressProxy>,
    pub uid: u32,
    pub uid_base: u32,
    pub requirements: Requirements,
    /// Where the execution's resource limits come from.
    pub resources: Arc<dyn Backend>,
    pub kill_grace: Duration,
    pub monitor_interval: Duration,
    pub extra_read_paths: Vec<PathBuf>,
    /// The TLS trust the sandbox sees.
    pub trust: Arc<Trust>,
    /// What the resource backend cannot enforce on this host (reported with the result).
    pub resource_gaps: Vec<String>,
}

impl ExecutionPlan {
    /// A result for an execution that never reached a runner.
    pub fn refused(&self, status: ExecutionStatus, error: String) -> ExecutionResult {
        self.result(status, Some(error))
    }

    /// The result of this execution with `status`: what the plugin said and used is filled in
    /// by whoever ran it.
    pub fn result(&self, status: ExecutionStatus, error: Option<String>) -> ExecutionResult {
        ExecutionResult {
            id: self.id.clone(),
            plugin: self.plugin.manifest.name.clone(),
            plugin_version: self.plugin.manifest.version.to_string(),
            plugin_digest: self.plugin.short_digest().to_string(),
            status,
            data: None,
            error,
            duration_ms: 0,
            cpu_time_ms: 0,
            peak_memory_bytes: 0,
            signal: None,
            layers: LayerReport {
                resources: self.resources.kind(),
                sandbox: None,
                resource_gaps: self.resource_gaps.clone(),
            },
            log: String::new(),
            started_at: crate::audit::unix_ms(),
            cached: false,
            sandbox_failed: false,
        }
    }

    /// What the egress proxy lets this execution reach.
    pub fn proxy_scope(&self) -> Scope {
        let eff = &self.effective;
        Scope {
            plugin: self.plugin.manifest.name.clone(),
            execution_id: self.id.clone(),
            allow: eff.network.iter().map(|g| g.value.clone()).collect(),
            deny: eff.network_deny.iter().map(|g| g.value.clone()).collect(),
            private_addresses: eff.private_addresses.iter().map(|g| g.value).collect(),
        }
    }

    /// Creates and measures the workspace, when the plugin is granted one.
    pub async fn workspace(&self) -> Result<Option<Workspace>, WorkspaceError> {
        let Some(size) = self.effective.workspace.as_ref().map(|g| g.value.0) else { return Ok(None) };
        let (workspaces, name) = (self.workspaces.clone(), self.plugin.manifest.name.clone());
        match tokio::task::spawn_blocking(move || workspaces.prepare(&name, size)).await {
            Ok(prepared) => prepared.map(Some),
            Err(_) => Err(WorkspaceError::TaskFailed),
        }
    }

    pub fn runner_spec(&self, workspace: Option<&Workspace>) -> RunnerSpec {
        let request = Request {
            protocol: PROTOCOL_VERSION,
            operation: self.operation,
            execution_id: self.id.clone(),
            parameters: self.parameters.clone(),
            config: self.config.clone(),
        };
        RunnerSpec {
            execution_id: self.id.clone(),
            plugin_dir: self.plugin.dir().to_path_buf(),
            runtime: match &self.plugin.manifest.runtime {
                Runtime::Native { library } => RuntimeSpec::Native { library: library.clone() },
                Runtime::Exec { command } => RuntimeSpec::Exec { argv: command.clone() },
            },
            request: serde_json::to_string(&request).unwrap_or_default(),
            uid: self.uid,
            gid: workspace.map_or(self.uid, |w| w.gid),
            rlimits: RlimitSpec {
                address_space: self.resources.address_space(&self.limits),
                // A backstop a second above the limit: the daemon stops the execution at the
                // limit itself, counting the whole sandbox (RLIMIT_CPU counts one process, in
                // scheduler ticks, so it would fire early for some and never for others).
                cpu_seconds: Some(self.limits.cpu_time.0.as_secs_f64().ceil() as u64 + 1),
                // The sandbox's init (pid 1) is ours: it does not count against the plugin.
                processes: Some(self.limits.pids + 1),
                open_files: 256,
                // No file may outgrow the workspace (the only writable place for most plugins).
                file_size: workspace
                    .and(self.effective.workspace.as_ref())
                    .map_or(self.limits.output.0, |g| g.value.0.max(self.limits.output.0)),
            },
            read_paths: self
                .extra_read_paths
                .iter()
                .cloned()
                .chain(self.effective.fs_read.iter().map(|g| g.value.0.clone()))
                .collect(),
            write_paths: self.effective.fs_write.iter().map(|g| g.value.0.clone()).collect(),
            workspace: workspace.map(|w| WorkspaceSpec { device: w.device.clone(), read_only: w.read_only }),
            tmp_size: self.limits.memory.0,
            ca_bundle: self.trust.bundle.clone(),
            proxy_port: (!self.effective.network.is_empty()).then_some(PROXY_PORT),
            env: self.plugin_env(workspace.is_some()),
            requirements: self.requirements.clone(),
            resources: self.resources.kind(),
        }
    }

    /// The plugin's whole environment: fixed basics, the proxy, the workspace, its secrets.
    fn plugin_env(&self, workspace: bool) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = PLUGIN_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !self.effective.network.is_empty() {
            for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
                env.push((var.into(), PROXY_URL.into()));
            }
            if self.trust.present {
                env.extend(BUNDLE_VARIABLES.iter().map(|var| (var.to_string(), CA_BUNDLE.to_string())));
            }
        }
        if workspace {
            env.push(("IRONCLAW_WORKSPACE".into(), WORKSPACE_MOUNT.into()));
        }
        env.extend(self.secrets.0.iter().cloned());
        env
    }
}
