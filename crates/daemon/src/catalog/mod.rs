//! What admins write and plugin authors ship, parsed and checked: plugin manifests, policies
//! and the permissions and units they use, secrets, the snapshots plugins run from, and the
//! registry of plugins built from all of them.
#![forbid(unsafe_code)]

pub mod manifest;
pub mod permissions;
pub mod policy;
pub mod registry;
pub mod schema;
pub mod secrets;
pub mod snapshot;
pub mod units;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use semver::Version;
use tokio::sync::watch;

use crate::execution_result::{ExecutionResult, ExecutionStatus};
use policy::{Effective, PolicySet};
use registry::{LifecycleEventKind, LoadedPlugin, PluginState, Registry, RegistryError, ResolveContext};
use secrets::Secrets;

/// What the daemon read at start-up, before the catalog owns it.
pub struct Loaded {
    pub policy: PolicySet,
    pub secrets: Secrets,
    pub registry: Registry,
}

/// Why a plugin cannot run now.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no plugin named '{0}'")]
    NotFound(String),
    #[error("plugin '{name}' is {state}: {reason}")]
    NotRunnable { name: String, state: &'static str, reason: String },
    #[error(transparent)]
    Registry(RegistryError),
}

/// The one owner of the registry, the policies and the secrets. They live under one lock, so a
/// reader sees a plugin's state with the policy and secrets it was resolved against; a reload
/// replaces the policies or the secrets and re-resolves every plugin in the same write.
pub struct Catalog {
    api_version: Version,
    state: RwLock<State>,
    /// Counts the writes, each announced once the lock is free again: a front end that shows
    /// what the catalog holds (MCP's tool list) looks again when it moves.
    writes: watch::Sender<u64>,
}

struct State {
    registry: Registry,
    policy: Arc<PolicySet>,
    /// Why the last policy reload was refused (the previous set stays active).
    policy_error: Option<String>,
    secrets: Arc<Secrets>,
}

impl State {
    fn resolve(&mut self, api_version: &Version) {
        let ctx = ResolveContext { api_version, policy: &self.policy, secrets: &self.secrets };
        self.registry.resolve(ctx);
    }
}

/// The write lock, which announces the write when it is released (unless `announce` was
/// cleared: an execution's history is no change anybody watches).
struct Written<'a> {
    guard: Option<RwLockWriteGuard<'a, State>>,
    writes: &'a watch::Sender<u64>,
    announce: bool,
}

impl Deref for Written<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl DerefMut for Written<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        // Released first, so whoever is woken reads the state as written.
        drop(self.guard.take());
        if self.announce {
            self.writes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// A change of the registry in progress (see [`Catalog::edit`]).
pub struct Edit<'a> {
    state: Written<'a>,
    api_version: &'a Version,
}

impl Edit<'_> {
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.state.registry
    }

    /// Resolves every plugin's state against the current policies and secrets.
    pub fn resolve(&mut self) {
        self.state.resolve(self.api_version);
    }
}

/// A plugin's state change, from a reload of the policies.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StateChange {
    pub plugin: String,
    pub from: PluginState,
    pub to: PluginState,
    pub reason: Option<String>,
}

impl Catalog {
    pub fn new(Loaded { policy, secrets, registry }: Loaded) -> Self {
        Catalog {
            api_version: Version::parse(ironclaw_plugin_sdk::API_VERSION).expect("the SDK's API version is semver"),
            state: RwLock::new(State {
                registry,
                policy: Arc::new(policy),
                policy_error: None,
                secrets: Arc::new(secrets),
            }),
            writes: watch::Sender::new(0),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> Written<'_> {
        Written {
            guard: Some(self.state.write().unwrap_or_else(|p| p.into_inner())),
            writes: &self.writes,
            announce: true,
        }
    }

    /// Moves after every write to the catalog (a reload, an enable or disable, a policy or
    /// secrets change, a rollback), once the write is visible; not after an execution's history.
    pub fn writes(&self) -> watch::Receiver<u64> {
        self.writes.subscribe()
    }

    /// The plugin API version this daemon provides.
    pub fn api_version(&self) -> &Version {
        &self.api_version
    }

    /// Reads the registry as it is now.
    pub fn registry<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        f(&self.read().registry)
    }

    /// The registry to change, with the plugins' states resolved again on request; nobody
    /// sees the change until the edit is dropped.
    pub fn edit(&self) -> Edit<'_> {
        Edit { state: self.write(), api_version: &self.api_version }
    }

    /// Changes the registry, then resolves every plugin's state again, in one write.
    pub fn update<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut edit = self.edit();
        let out = f(edit.registry());
        edit.resolve();
        out
    }

    /// Changes the registry without resolving (events, notes).
    pub fn annotate<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(self.edit().registry())
    }

    pub fn policy(&self) -> Arc<PolicySet> {
        self.read().policy.clone()
    }

    pub fn policy_error(&self) -> Option<String> {
        self.read().policy_error.clone()
    }

    pub fn secrets(&self) -> Arc<Secrets> {
        self.read().secrets.clone()
    }

    /// Replaces the policies (or keeps them and notes why not), and reports the plugins whose
    /// state changed.
    pub fn set_policy(&self, loaded: Result<PolicySet, String>) -> Result<Vec<StateChange>, String> {
        let mut state = self.write();
        let policy = match loaded {
            Ok(policy) => policy,
            Err(error) => {
                state.policy_error = Some(error.clone());
                return Err(error);
            }
        };
        let before: Vec<(String, PluginState)> =
            state.registry.plugins.iter().map(|(k, e)| (k.clone(), e.state)).collect();
        state.policy = Arc::new(policy);
        state.policy_error = None;
        state.resolve(&self.api_version);
        let changes = before
            .into_iter()
            .filter_map(|(name, from)| {
                let entry = state.registry.plugins.get(&name)?;
                (entry.state != from).then(|| StateChange {
                    plugin: name.clone(),
                    from,
                    to: entry.state,
                    reason: entry.reason.clone(),
                })
            })
            .collect();
        Ok(changes)
    }

    pub fn set_secrets(&self, secrets: Secrets) {
        let mut state = self.write();
        state.secrets = Arc::new(secrets);
        state.resolve(&self.api_version);
    }

    /// The plugin and its effective permissions, when it may run now.
    pub fn runnable(&self, name: &str) -> Result<(Arc<LoadedPlugin>, Arc<Effective>), CatalogError> {
        let state = self.read();
        let e = state.registry.plugins.get(name).ok_or_else(|| CatalogError::NotFound(name.into()))?;
        match (&e.plugin, &e.effective, e.state) {
            (Some(p), Some(eff), PluginState::Enabled) => Ok((p.clone(), eff.clone())),
            _ => Err(CatalogError::NotRunnable {
                name: name.into(),
                state: e.state_label(),
                reason: e.reason.clone().unwrap_or_default(),
            }),
        }
    }

    /// Enables or disables a plugin (kept across restarts); its new state and why.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(PluginState, Option<String>), CatalogError> {
        let mut state = self.write();
        let State { registry, policy, secrets, .. } = &mut *state;
        let ctx = ResolveContext { api_version: &self.api_version, policy, secrets };
        let new_state = registry.set_enabled(name, enabled, ctx).map_err(|e| match e {
            RegistryError::NotFound(name) => CatalogError::NotFound(name),
            e => CatalogError::Registry(e),
        })?;
        Ok((new_state, registry.plugins.get(name).and_then(|e| e.reason.clone())))
    }

    /// How many plugins are known, and how many are enabled.
    pub fn plugin_counts(&self) -> (usize, usize) {
        self.registry(|reg| {
            (reg.plugins.len(), reg.plugins.values().filter(|e| e.state == PluginState::Enabled).count())
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.registry(|reg| reg.plugins.contains_key(name))
    }

    /// After each execution a caller saw: a failure goes in the plugin's history, and a version
    /// on probation that crashes is replaced by the one before.
    pub fn after_execution(&self, result: &ExecutionResult) {
        let failed = matches!(
            result.status,
            ExecutionStatus::Error
                | ExecutionStatus::Crashed
                | ExecutionStatus::Timeout
                | ExecutionStatus::MemoryLimit
                | ExecutionStatus::CpuLimit
                | ExecutionStatus::OutputLimit
        );
        let mut state = self.write();
        // After every execution: only a rollback below is a change to announce.
        state.announce = false;
        if failed && let Some(entry) = state.registry.plugins.get_mut(&result.plugin) {
            let detail =
                format!("{} ({}): {}", result.status.as_str(), result.id, result.error.as_deref().unwrap_or(""));
            tracing::warn!(plugin = %result.plugin, id = %result.id, "on_error");
            entry.record(LifecycleEventKind::OnError, detail);
        }
        let Some(entry) = state.registry.plugins.get_mut(&result.plugin) else { return };
        let (Some(current), Some(probation)) = (entry.plugin.clone(), entry.probation.as_mut()) else { return };
        if current.short_digest() != result.plugin_digest {
            return;
        }
        if result.status != ExecutionStatus::Crashed {
            probation.remaining -= 1;
            if probation.remaining == 0 {
                entry.probation = None;
            }
            return;
        }
        let Some(previous) = entry.probation.take().map(|p| p.previous) else { return };
        let detail = format!(
            "automatic rollback: version {} ({}) crashed in execution {} ({}); restored {} ({})",
            current.manifest.version,
            current.short_digest(),
            result.id,
            result.error.as_deref().unwrap_or("crashed"),
            previous.manifest.version,
            previous.short_digest()
        );
        state.announce = true;
        state.registry.install(previous);
        state.resolve(&self.api_version);
        if let Some(entry) = state.registry.plugins.get_mut(&result.plugin) {
            entry.record(LifecycleEventKind::RolledBack, detail.clone());
            entry.reload_error = Some(detail.clone());
        }
        tracing::error!(plugin = %result.plugin, %detail, "rolled back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_announced_but_an_executions_history_is_not() {
        let state_dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(state_dir.path()).unwrap();
        let catalog = Catalog::new(Loaded { policy: PolicySet::default(), secrets: Secrets::default(), registry });
        let mut writes = catalog.writes();
        catalog.set_secrets(Secrets::default());
        assert!(writes.has_changed().unwrap(), "a secrets reload is announced");
        writes.mark_unchanged();

        let failed: ExecutionResult = serde_json::from_value(serde_json::json!({
            "id": "e1", "plugin": "calculator", "plugin_version": "1.0.0", "status": "error", "data": null,
            "error": "boom", "duration_ms": 1, "cpu_time_ms": 1, "peak_memory_bytes": 1, "signal": null,
            "layers": {"resources": "fallback", "sandbox": null}, "log": "", "started_at": 0
        }))
        .unwrap();
        catalog.after_execution(&failed);
        assert!(!writes.has_changed().unwrap(), "an execution's history wakes nobody");
    }
}
