//! Launching executions: the plan from a plugin's effective permissions, admission, a task of
//! its own, and what is recorded when it ends.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironclaw_plugin_sdk::Operation;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::Admission;
use super::error::SupervisorError;
use super::execution::{self, ExecutionPlan};
use super::executions::ExecutionTable;
use super::pool::RunnerPool;
use super::resources::Backend;
use super::workspace::Workspaces;
use crate::audit::AuditLog;
use crate::catalog::Catalog;
use crate::catalog::policy::Effective;
use crate::catalog::registry::LoadedPlugin;
use crate::catalog::secrets::SecretEnv;
use crate::config::Config;
use crate::execution_result::{ExecutionResult, ExecutionStatus};
use crate::host::HostSupport;
use crate::proxy::EgressProxy;
use crate::trust::Trust;

/// Under the state directory: one workspace per plugin that is granted one.
pub const WORKSPACES_DIR: &str = "workspaces";

/// How a caller wants an execution.
pub enum Wait {
    /// Wait for the result.
    Result,
    /// Wait for the result, and cancel the execution when `stop` is cancelled first (a client
    /// that gave up on the call, or went away). The execution then ends `cancelled`.
    ResultUnless(CancellationToken),
    /// Return the id at once; the result is fetched later.
    Detach,
}

pub enum Started {
    Finished(Box<ExecutionResult>),
    Detached(String),
}

/// Whose execution it is: a caller's (seen in the table, the statistics, the cache and the
/// plugin's history), or the reloader's trial load (seen by the reloader alone).
enum Purpose {
    Call { cache_key: Option<String>, wait: Wait },
    Trial,
}

/// What every plan takes from the daemon's configuration.
struct Settings {
    workspaces: Arc<Workspaces>,
    uid_base: u32,
    kill_grace: Duration,
    monitor_interval: Duration,
    extra_read_paths: Vec<PathBuf>,
    trust: Arc<Trust>,
}

/// The owner of the runners and of everything an execution passes through: admission, the
/// execution table, the egress proxy, the resource backend.
pub struct Launcher {
    settings: Settings,
    host: HostSupport,
    catalog: Arc<Catalog>,
    admission: Admission,
    table: ExecutionTable,
    proxy: Arc<EgressProxy>,
    /// Policy denials are audited here, where the plugin and the reason are known (the API's
    /// gate audits the caller's side: auth, rate limits, overload).
    audit: Arc<AuditLog>,
    resources: Arc<dyn Backend>,
    runners: Arc<RunnerPool>,
}

impl Launcher {
    pub fn new(
        config: &Config,
        host: HostSupport,
        resources: Arc<dyn Backend>,
        catalog: Arc<Catalog>,
        proxy: Arc<EgressProxy>,
        audit: Arc<AuditLog>,
        trust: Trust,
    ) -> Self {
        let n = config.executions.max_concurrent;
        Launcher {
            settings: Settings {
                workspaces: Arc::new(Workspaces::new(config.state_dir.join(WORKSPACES_DIR), config.uid_base())),
                uid_base: config.uid_base(),
                kill_grace: config.executions.kill_grace.0,
                monitor_interval: config.executions.monitor_interval.0,
                extra_read_paths: config.runner.extra_read_paths.clone(),
                trust: Arc::new(trust),
            },
            host,
            catalog,
            admission: Admission::new(n, config.executions.max_queued, config.uid_base()..),
            table: ExecutionTable::new(config.executions.retain),
            proxy,
            audit,
            resources,
            // More waiting runners than can ever run at once would only cost memory.
            runners: RunnerPool::start(config.runner.prestarted.min(n)),
        }
    }

    pub fn host(&self) -> &HostSupport {
        &self.host
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn table(&self) -> &ExecutionTable {
        &self.table
    }

    pub fn resources(&self) -> &dyn Backend {
        self.resources.as_ref()
    }

    pub fn runners(&self) -> &RunnerPool {
        &self.runners
    }

    /// One audit record of an execution refused before it ran.
    pub fn audit_denial(&self, reason: &str, plugin: &str, execution: Option<&str>, why: &str) {
        self.audit.record(serde_json::json!({
            "event": "denied", "reason": reason, "plugin": plugin, "execution": execution, "why": why,
        }));
    }

    /// Everything one execution of `plugin` needs, from its effective permissions.
    pub fn plan(
        &self,
        plugin: Arc<LoadedPlugin>,
        effective: Arc<Effective>,
        parameters: Value,
        operation: Operation,
    ) -> ExecutionPlan {
        let secrets = self.catalog.secrets();
        let secrets = SecretEnv(
            effective
                .secrets
                .iter()
                .filter_map(|s| Some((s.value.0.clone(), secrets.get(&s.value.0)?.value.clone())))
                .collect(),
        );
        let s = &self.settings;
        ExecutionPlan {
            id: uuid::Uuid::new_v4().simple().to_string(),
            operation,
            limits: effective.limits,
            plugin,
            parameters,
            config: effective.config.clone(),
            effective,
            secrets,
            workspaces: s.workspaces.clone(),
            proxy: self.proxy.clone(),
            uid: 0,
            uid_base: s.uid_base,
            requirements: self.catalog.policy().requirements.clone(),
            resources: self.resources.clone(),
            kill_grace: s.kill_grace,
            monitor_interval: s.monitor_interval,
            extra_read_paths: s.extra_read_paths.clone(),
            trust: s.trust.clone(),
            resource_gaps: self.host.resource_gaps.clone(),
        }
    }

    /// Runs a caller's execution; successes are cached under `cache_key`.
    pub async fn call(
        self: &Arc<Self>,
        plan: ExecutionPlan,
        cache_key: Option<String>,
        wait: Wait,
    ) -> Result<Started, SupervisorError> {
        self.launch(plan, Purpose::Call { cache_key, wait }).await
    }

    /// Runs a trial load to its end.
    pub async fn trial(self: &Arc<Self>, plan: ExecutionPlan) -> Result<ExecutionResult, SupervisorError> {
        match self.launch(plan, Purpose::Trial).await? {
            Started::Finished(result) => Ok(*result),
            Started::Detached(_) => unreachable!("a trial always waits for its result"),
        }
    }

    /// Runs a plan: fails closed when the host cannot give what policy demands, waits for a
    /// slot, and runs it in a task of its own (a client that goes away never leaves a runner
    /// un-reaped).
    async fn launch(self: &Arc<Self>, mut plan: ExecutionPlan, purpose: Purpose) -> Result<Started, SupervisorError> {
        let id = plan.id.clone();
        let name = plan.plugin.manifest.name.clone();
        let recorded = matches!(purpose, Purpose::Call { .. });
        if let Err(unmet) = self.host.check(&plan.requirements) {
            let result = plan.refused(ExecutionStatus::Denied, unmet.to_string());
            if recorded {
                let why = result.error.as_deref().unwrap_or_default();
                self.audit_denial("policy", &name, Some(&id), why);
                self.record(result.clone());
            }
            return Ok(Started::Finished(Box::new(result)));
        }

        let slot = self.admission.slot(&name, plan.limits.concurrency).await?;
        plan.uid = slot.uid();
        let (cancel, wait, cache_key, uncancellable) = match purpose {
            Purpose::Call { cache_key, wait } => (self.table.start(&id, &name), wait, cache_key, None),
            // Nobody cancels a trial (its timeout bounds it); the sender lives as long as the
            // execution, whose loop would otherwise see a closed channel at every turn.
            Purpose::Trial => {
                let (sender, cancel) = watch::channel(false);
                (cancel, Wait::Result, None, Some(sender))
            }
        };

        let (done_tx, done_rx) = oneshot::channel();
        // A caller's cancellation reaches the execution as `POST .../cancel` would, whether
        // or not the caller still waits: the caller's future may be dropped with it.
        let canceller = match &wait {
            Wait::ResultUnless(stop) => {
                let (this, id, stop) = (self.clone(), id.clone(), stop.clone());
                Some(tokio::spawn(async move {
                    stop.cancelled().await;
                    let _ = this.table.cancel(&id);
                }))
            }
            Wait::Result | Wait::Detach => None,
        };
        let this = self.clone();
        let span = tracing::info_span!("execution", id = %id, plugin = %name, uid = plan.uid, trial = !recorded);
        tokio::spawn(
            async move {
                tracing::debug!("starting");
                let ttl = plan.limits.cache_ttl;
                let result = execution::execute(plan, &this.runners, cancel).await;
                canceller.inspect(tokio::task::JoinHandle::abort);
                drop((slot, uncancellable));
                // Only successes are cached: a failure may be transient, and is never replayed.
                if let (Some(key), Some(ttl), ExecutionStatus::Success) = (cache_key, ttl, result.status) {
                    this.admission.remember(key, ttl.0, result.clone());
                }
                if recorded {
                    this.record(result.clone());
                }
                let _ = done_tx.send(result);
            }
            .instrument(span),
        );
        match wait {
            Wait::Detach => Ok(Started::Detached(id)),
            Wait::Result | Wait::ResultUnless(_) => {
                done_rx.await.map(|r| Started::Finished(Box::new(r))).map_err(|_| SupervisorError::TaskFailed)
            }
        }
    }

    /// Records a caller's finished execution: log line, the plugin's history, the table.
    fn record(&self, result: ExecutionResult) {
        tracing::info!(
            id = %result.id,
            plugin = %result.plugin,
            status = result.status.as_str(),
            duration_ms = result.duration_ms,
            cpu_time_ms = result.cpu_time_ms,
            peak_memory_bytes = result.peak_memory_bytes,
            error = result.error.as_deref(),
            "execution finished"
        );
        if !result.log.is_empty() {
            let log: String = result.log.chars().take(4096).collect();
            tracing::debug!(id = %result.id, plugin = %result.plugin, log = %log, "plugin stderr");
        }
        self.catalog.after_execution(&result);
        self.table.finish(result);
    }

    /// Stops pre-starting runners, and admits nothing more.
    pub fn stop(&self) {
        self.admission.stop_accepting();
        self.runners.close();
    }
}
