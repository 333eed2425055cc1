//! The supervisor: the one owner of the daemon's state, split into owners that each hold one
//! concern behind their own lock: the [`Catalog`] (registry, policies, secrets), [`Admission`]
//! (cache, rate limits, slots, uids), the [`ExecutionTable`] (running and recent executions,
//! statistics), the [`Launcher`] (plans, runners, the egress proxy, resources) and the
//! [`Reloader`]. Front ends reach them through `crate::service`.
//!
//! [`Admission`]: admission::Admission
//! [`ExecutionTable`]: executions::ExecutionTable
#![forbid(unsafe_code)]

pub mod admission;
pub mod error;
pub mod execution;
pub mod executions;
pub mod launch;
pub mod pool;
pub mod reload;
pub mod resources;
pub mod workspace;

use std::sync::Arc;
use std::time::Duration;

use ironclaw_plugin_sdk::Operation;
use serde_json::Value;

use crate::audit::AuditLog;
use crate::catalog::registry::LifecycleEventKind;
use crate::catalog::schema::SchemaRefusal;
use crate::catalog::{Catalog, CatalogError, Loaded};
use crate::config::Config;
use crate::host::HostSupport;
use crate::proxy::EgressProxy;
use crate::trust::Trust;
pub use error::SupervisorError;
use launch::{Launcher, Started, Wait};
use reload::Reloader;

pub struct Supervisor {
    config: Config,
    catalog: Arc<Catalog>,
    launcher: Arc<Launcher>,
    reloader: Reloader,
}

impl Supervisor {
    pub fn new(
        config: Config,
        host: HostSupport,
        resources: Arc<dyn resources::Backend>,
        loaded: Loaded,
        proxy: Arc<EgressProxy>,
        audit: Arc<AuditLog>,
        trust: Trust,
    ) -> Arc<Self> {
        let catalog = Arc::new(Catalog::new(loaded));
        let launcher = Arc::new(Launcher::new(&config, host, resources, catalog.clone(), proxy, audit, trust));
        let reloader = Reloader::new(&config, catalog.clone(), launcher.clone());
        Arc::new(Supervisor { config, catalog, launcher, reloader })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// Validates and runs one execution: admission first (a cached result costs no runner and
    /// no rate-limit token), then a slot.
    pub async fn execute(&self, name: &str, parameters: Value, wait: Wait) -> Result<Started, SupervisorError> {
        let launcher = &self.launcher;
        launcher.admission().accepting()?;
        let (plugin, effective) = self.catalog.runnable(name).inspect_err(|e| {
            if let CatalogError::NotRunnable { state: "not_granted", reason, .. } = e {
                launcher.audit_denial("policy", name, None, reason);
            }
        })?;
        if let Err(SchemaRefusal { path, message }) = plugin.schemas.check_parameters(&parameters) {
            return Err(SupervisorError::InvalidParameters { path, message });
        }
        let cache_key = effective.limits.cache_ttl.map(|_| {
            let m = &plugin.manifest;
            admission::cache_key(&m.name, plugin.digest(), &parameters, &effective.config)
        });
        if let Some(mut hit) = cache_key.as_deref().and_then(|key| launcher.admission().cached(key)) {
            hit.cached = true;
            launcher.table().count_cache_hit(name);
            tracing::debug!(plugin = %name, id = %hit.id, "served from the result cache");
            return Ok(Started::Finished(Box::new(hit)));
        }
        if let Some(rate) = effective.limits.rate
            && let Err(retry_after) = launcher.admission().take_token(name, rate)
        {
            launcher.table().count_rate_limited(name);
            return Err(SupervisorError::RateLimited { name: name.into(), rate, retry_after });
        }
        let plan = launcher.plan(plugin, effective, parameters, Operation::Execute);
        launcher.call(plan, cache_key, wait).await
    }

    /// Stops accepting executions, lets in-flight ones finish within `grace`, then cancels the
    /// rest and waits for their runners to be reaped.
    pub async fn shutdown(&self, grace: Duration) {
        self.launcher.stop();
        let table = self.launcher.table();
        if tokio::time::timeout(grace, table.idle()).await.is_err() {
            table.cancel_all();
        }
        let settle = self.config.executions.kill_grace.0 + Duration::from_secs(3);
        let _ = tokio::time::timeout(settle, table.idle()).await;
        self.catalog.annotate(|reg| {
            for entry in reg.plugins.values_mut().filter(|e| e.plugin.is_some()) {
                entry.record(LifecycleEventKind::OnUnload, "daemon shutdown");
                tracing::info!(plugin = %entry.name, "on_unload");
            }
        });
        self.launcher.admission().close();
    }
}
