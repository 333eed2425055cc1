//! Hot reload: plugins one folder at a time, policies as a whole set, backups and rollback.
//!
//! A new plugin version is a *candidate* until it has passed everything: a snapshot of its
//! folder (never a half-written file: writes during the copy are detected, and the version runs
//! from the copy), its manifest, API compatibility, the policy, and a trial load in a real
//! sandboxed runner (the ABI handshake, then a `validate` request). Only then is it swapped in:
//! executions already running keep the version they started with (they hold it), new ones get
//! the new one. A refused candidate changes nothing but the plugin's history. A new version
//! that crashes in its first executions is rolled back to the previous one.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironclaw_plugin_sdk::Operation;
use serde::Serialize;
use serde_json::{Value, json};

use super::execution::{ExecutionResult, ExecutionStatus};
use super::{Started, Supervisor, SupervisorError, Wait, lock};
use crate::catalog::manifest::MANIFEST_FILE;
use crate::catalog::policy::PolicySet;
use crate::catalog::registry::{LifecycleEventKind, LoadedPlugin, PluginState, Probation, load_plugin};
use crate::catalog::secrets::Secrets;

/// Under the state directory: the copies executions run from, and the backups.
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const BACKUPS_DIR: &str = "backups";
/// While this file exists in the state directory, `reload_all` waits after announcing itself.
pub const HOLD_RELOAD_FILE: &str = "hold-reload";
/// Why the first `reload_all` runs: loading at start-up is no reload for systemd.
pub const STARTUP: &str = "start-up";
/// A trial load gets at most this long, whatever the plugin's timeout.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A trial the sandbox (not the plugin) failed is tried this many times, the first retry after
/// `TRIAL_RETRY`, each later one four times as long; still failing, it counts as inconclusive.
const TRIAL_ATTEMPTS: u32 = 3;
const TRIAL_RETRY: Duration = Duration::from_millis(200);

/// What one reload of one folder did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub folder: PathBuf,
    pub plugin: Option<String>,
    /// `added`, `changed`, `unchanged`, `removed` or `failed`.
    pub result: &'static str,
    pub version: Option<String>,
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ReloadOutcome {
    fn new(folder: &Path, result: &'static str) -> Self {
        ReloadOutcome {
            folder: folder.to_path_buf(),
            plugin: None,
            result,
            version: None,
            digest: None,
            previous_version: None,
            backup: None,
            reason: None,
        }
    }

    fn of(mut self, plugin: &LoadedPlugin) -> Self {
        self.plugin = Some(plugin.manifest.name.clone());
        self.version = Some(plugin.manifest.version.to_string());
        self.digest = Some(plugin.short_digest().to_string());
        self
    }

    fn failed(folder: &Path, reason: String) -> Self {
        ReloadOutcome { reason: Some(reason), ..Self::new(folder, "failed") }
    }
}

/// A backup id: `<version>-<unix ms>`, nothing that could name another directory.
fn valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
}

impl Supervisor {
    fn snapshots_dir(&self) -> PathBuf {
        self.config.state_dir.join(SNAPSHOTS_DIR)
    }

    fn backups_dir(&self, plugin: &str) -> PathBuf {
        self.config.state_dir.join(BACKUPS_DIR).join(plugin)
    }

    /// Reloads one folder of the plugins directory (added, changed or removed).
    pub async fn reload_folder(self: &Arc<Self>, folder: &Path) -> ReloadOutcome {
        let _one_at_a_time = self.reload_lock.lock().await;
        self.reload_folder_locked(folder, folder).await
    }

    /// Reloads the plugin `name` from its folder.
    pub async fn reload_plugin(self: &Arc<Self>, name: &str) -> Result<ReloadOutcome, SupervisorError> {
        let folder = self.registry().plugins.get(name).map(|e| e.dir.clone());
        let folder = folder.ok_or_else(|| SupervisorError::NotFound(name.into()))?;
        Ok(self.reload_folder(&folder).await)
    }

    /// Reloads everything: secrets, policies, then every plugin folder, present or gone.
    pub async fn reload_all(self: &Arc<Self>, why: &str) -> Value {
        tracing::info!(why, "reloading everything");
        let at_start = why == STARTUP;
        if !at_start {
            crate::systemd::reloading();
            // Test hook (like the watchdog's): while this file exists, the reload waits, so the
            // VM suite can see systemd report the unit as reloading.
            let hold = self.config.state_dir.join(HOLD_RELOAD_FILE);
            while hold.exists() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // At start-up the daemon has just read the secrets and policies: only plugins load.
        let (secrets, policy) = if at_start {
            (json!({"result": "loaded at start-up"}), json!({"result": "loaded at start-up"}))
        } else {
            (self.reload_secrets(), self.reload_policy().await)
        };
        let _one_at_a_time = self.reload_lock.lock().await;
        let mut folders = crate::catalog::registry::plugin_folders(&self.config.plugins_dir).unwrap_or_else(|e| {
            tracing::error!(dir = %self.config.plugins_dir.display(), error = %e, "cannot read the plugins directory");
            Vec::new()
        });
        for known in self.registry().sources() {
            if !folders.contains(&known) {
                folders.push(known);
            }
        }
        let mut plugins = Vec::new();
        for folder in folders {
            plugins.push(self.reload_folder_locked(&folder, &folder).await);
        }
        if !at_start {
            crate::systemd::ready(&self.status_line());
        }
        json!({"secrets": secrets, "policy": policy, "plugins": plugins})
    }

    /// Builds a candidate from `read_from` (the live folder, or a backup) for the plugin whose
    /// live folder is `folder`, and swaps it in if it passes.
    async fn reload_folder_locked(self: &Arc<Self>, folder: &Path, read_from: &Path) -> ReloadOutcome {
        if !read_from.join(MANIFEST_FILE).is_file() {
            let removed = self.registry_mut().remove(folder);
            return match removed {
                Some(entry) => {
                    tracing::info!(plugin = %entry.name, dir = %folder.display(), "plugin folder removed: on_unload");
                    self.with_context(|ctx| self.registry_mut().resolve(ctx));
                    ReloadOutcome { plugin: Some(entry.name), ..ReloadOutcome::new(folder, "removed") }
                }
                None => ReloadOutcome::new(folder, "unchanged"),
            };
        }
        let (from, shown, snapshots) = (read_from.to_path_buf(), folder.to_path_buf(), self.snapshots_dir());
        let loaded = tokio::task::spawn_blocking(move || load_plugin(&from, &shown, &snapshots)).await;
        let candidate = match loaded.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(c) => Arc::new(c),
            Err(reason) => return self.refuse(folder, reason),
        };
        let current = {
            let reg = self.registry();
            reg.key_for_source(folder).and_then(|k| reg.plugins[&k].plugin.clone())
        };
        if current.as_ref().is_some_and(|c| c.digest() == candidate.digest()) && folder == read_from {
            // The folder is back to the version that serves: an earlier refusal is moot.
            let key = self.registry().key_for_source(folder);
            let mut reg = self.registry_mut();
            if let Some(entry) = key.and_then(|k| reg.plugins.get_mut(&k)) {
                entry.reload_error = None;
                let detail = format!("version {} ({})", candidate.manifest.version, candidate.short_digest());
                entry.record(LifecycleEventKind::ReloadUnchanged, detail);
            }
            return ReloadOutcome::new(folder, "unchanged").of(&candidate);
        }
        // API compatibility, dependencies and policy, then the trial load. A new version that
        // could not run is refused (the current one keeps serving); a new plugin that could not
        // is installed with its state and reason, and nothing of it runs.
        let blocked = self.blocker(&candidate);
        match (blocked, &current) {
            (Err(reason), Some(_)) => return self.refuse(folder, format!("the new version cannot run: {reason}")),
            (Ok(effective), _) => {
                if let Err(reason) = self.trial(candidate.clone(), effective).await {
                    return self.refuse(folder, format!("trial load failed: {reason}"));
                }
            }
            (Err(_), None) => {}
        }
        self.swap(folder, candidate, read_from != folder)
    }

    /// What would keep a candidate from running: its API requirement, a dependency, its grants.
    fn blocker(&self, candidate: &LoadedPlugin) -> Result<Arc<crate::catalog::policy::Effective>, String> {
        let m = &candidate.manifest;
        if !m.api.matches(&self.api_version) {
            return Err(format!("requires plugin API {}, this daemon provides {}", m.api, self.api_version));
        }
        {
            let reg = self.registry();
            for (dep, req) in &m.dependencies {
                match reg.plugins.get(dep).and_then(|e| e.plugin.as_ref()) {
                    None => return Err(format!("dependency '{dep}' is not installed")),
                    Some(p) if !req.matches(&p.manifest.version) => {
                        return Err(format!("dependency '{dep}' requires {req}, found {}", p.manifest.version));
                    }
                    Some(_) => {}
                }
            }
        }
        self.policy().effective(m).map(Arc::new).map_err(|missing| missing.join("; "))
    }

    /// Installs a candidate that passed; backs the previous version up and puts the new one on
    /// probation.
    fn swap(&self, folder: &Path, candidate: Arc<LoadedPlugin>, from_backup: bool) -> ReloadOutcome {
        let name = candidate.manifest.name.clone();
        // The new version, its resolved state and its lifecycle event appear together: a reader
        // never sees the version without the event.
        let previous = self.with_context(|ctx| {
            let mut reg = self.registry_mut();
            let previous = reg.install(candidate.clone());
            reg.resolve(ctx);
            if let Some(entry) = reg.plugins.get_mut(&name) {
                let detail = format!(
                    "version {} ({}){}",
                    candidate.manifest.version,
                    candidate.short_digest(),
                    match (&previous, from_backup) {
                        (_, true) => " restored from a backup".to_string(),
                        (Some(p), false) => format!(" replaces {} ({})", p.manifest.version, p.short_digest()),
                        (None, false) => String::new(),
                    }
                );
                tracing::info!(plugin = %name, state = ?entry.state, %detail, "plugin loaded");
                let kind = match (&previous, from_backup) {
                    (_, true) => LifecycleEventKind::RolledBack,
                    (Some(_), false) => LifecycleEventKind::Reloaded,
                    (None, false) => LifecycleEventKind::OnLoad,
                };
                entry.record(kind, detail);
                entry.probation = match &previous {
                    Some(previous) if !from_backup && self.config.reload.probation > 0 => {
                        Some(Probation { previous: previous.clone(), remaining: self.config.reload.probation })
                    }
                    _ => None,
                };
            }
            previous
        });
        let backup = previous.as_ref().and_then(|p| self.backup(p));
        let mut outcome =
            ReloadOutcome::new(folder, if previous.is_some() { "changed" } else { "added" }).of(&candidate);
        outcome.previous_version = previous.as_ref().map(|p| p.manifest.version.to_string());
        outcome.backup = backup;
        outcome
    }

    fn refuse(&self, folder: &Path, reason: String) -> ReloadOutcome {
        tracing::warn!(dir = %folder.display(), %reason, "plugin (re)load refused");
        self.registry_mut().refuse(folder, reason.clone());
        self.with_context(|ctx| self.registry_mut().resolve(ctx));
        ReloadOutcome::failed(folder, reason)
    }

    /// Runs a `validate` request through a real runner: the library loads (ABI handshake
    /// first), or the program starts, and answers in protocol. A trial the sandbox failed before
    /// the plugin could run (no fault of the plugin's: the host, its limits, another daemon) is
    /// retried; still failing, it is inconclusive and passes with an error in the log, as when
    /// the host refuses every execution anyway. Such a plugin is never left `invalid`.
    async fn trial(
        self: &Arc<Self>,
        plugin: Arc<LoadedPlugin>,
        effective: Arc<crate::catalog::policy::Effective>,
    ) -> Result<(), String> {
        if !self.host.missing_capabilities.is_empty() {
            return Ok(());
        }
        let mut retry_in = TRIAL_RETRY;
        for attempt in 1..=TRIAL_ATTEMPTS {
            let mut plan = self.plan(plugin.clone(), effective.clone(), json!({}), Operation::Validate);
            plan.limits.timeout.0 = plan.limits.timeout.0.min(TRIAL_TIMEOUT);
            let result = match self.launch(plan, None, false, Wait::Result).await {
                Ok(Started::Finished(result)) => result,
                Ok(Started::Detached(_)) => return Err("the trial was detached".into()),
                Err(e) => return Err(e.to_string()),
            };
            let error = result.error.as_deref().unwrap_or("no detail");
            match result.status {
                ExecutionStatus::Success | ExecutionStatus::InvalidInput | ExecutionStatus::Denied => return Ok(()),
                _ if result.sandbox_failed && attempt < TRIAL_ATTEMPTS => {
                    tracing::warn!(plugin = %result.plugin, %error, attempt, "trial load: the sandbox failed, not the plugin; retrying");
                    tokio::time::sleep(retry_in).await;
                    retry_in *= 4;
                }
                _ if result.sandbox_failed => {
                    tracing::error!(plugin = %result.plugin, %error, "trial load inconclusive: the sandbox could not run it");
                    return Ok(());
                }
                status => return Err(format!("{}: {error}", status.as_str())),
            }
        }
        Ok(())
    }

    /// Copies a version that is being replaced to `backups/<plugin>/<version>-<ms>/`, and prunes.
    fn backup(&self, previous: &LoadedPlugin) -> Option<String> {
        let root = self.backups_dir(&previous.manifest.name);
        let id = format!("{}-{}", previous.manifest.version, crate::audit::unix_ms());
        let dir = root.join(&id);
        let meta = json!({
            "plugin": previous.manifest.name,
            "version": previous.manifest.version.to_string(),
            "digest": previous.digest(),
            "source": previous.source,
            "created_ms": crate::audit::unix_ms(),
        });
        let copied = crate::catalog::snapshot::copy_dir(previous.dir(), &dir)
            .and_then(|()| std::fs::write(root.join(format!("{id}.json")), meta.to_string()));
        if let Err(e) = copied {
            tracing::error!(plugin = %previous.manifest.name, error = %e, "failed to back up the previous version");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let mut all = self.backup_ids(&previous.manifest.name);
        while all.len() > self.config.reload.backups_kept {
            let old = all.remove(0);
            let _ = std::fs::remove_dir_all(root.join(&old));
            let _ = std::fs::remove_file(root.join(format!("{old}.json")));
            tracing::info!(plugin = %previous.manifest.name, backup = %old, "pruned an old backup");
        }
        Some(id)
    }

    /// Backup ids of a plugin, oldest first.
    fn backup_ids(&self, plugin: &str) -> Vec<String> {
        let mut ids: Vec<(u64, String)> = std::fs::read_dir(self.backups_dir(plugin))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                let ms = id.rsplit('-').next()?.parse().ok()?;
                Some((ms, id))
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// `GET /api/v1/plugins/{name}/backups`.
    pub fn backups(&self, name: &str) -> Result<Value, SupervisorError> {
        if !self.registry().plugins.contains_key(name) {
            return Err(SupervisorError::NotFound(name.into()));
        }
        let root = self.backups_dir(name);
        let backups: Vec<Value> = self
            .backup_ids(name)
            .into_iter()
            .rev()
            .map(|id| {
                let meta = std::fs::read(root.join(format!("{id}.json")))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .unwrap_or_default();
                json!({"id": id, "version": meta["version"], "digest": meta["digest"], "created_ms": meta["created_ms"]})
            })
            .collect();
        Ok(json!({"plugin": name, "kept": self.config.reload.backups_kept, "backups": backups}))
    }

    /// Restores a kept backup: the same checks and trial load as any reload, then the swap
    /// (which backs up the version it replaces). It serves until the folder changes again.
    pub async fn rollback(self: &Arc<Self>, name: &str, id: &str) -> Result<ReloadOutcome, SupervisorError> {
        let folder = self.registry().plugins.get(name).map(|e| e.dir.clone());
        let folder = folder.ok_or_else(|| SupervisorError::NotFound(name.into()))?;
        if !valid_backup_id(id) || !self.backup_ids(name).iter().any(|b| b == id) {
            return Err(SupervisorError::BackupNotFound { plugin: name.into(), backup: id.into() });
        }
        let _one_at_a_time = self.reload_lock.lock().await;
        let outcome = self.reload_folder_locked(&folder, &self.backups_dir(name).join(id)).await;
        tracing::info!(plugin = %name, backup = %id, result = outcome.result, "manual rollback");
        Ok(outcome)
    }

    /// After each execution: a version on probation that crashes is replaced by the one before.
    pub(super) fn check_probation(&self, result: &ExecutionResult) {
        let rolled_back = self.with_context(|ctx| {
            let mut reg = self.registry_mut();
            let entry = reg.plugins.get_mut(&result.plugin)?;
            let current = entry.plugin.clone()?;
            let probation = entry.probation.as_mut()?;
            if current.short_digest() != result.plugin_digest {
                return None;
            }
            if result.status != ExecutionStatus::Crashed {
                probation.remaining -= 1;
                if probation.remaining == 0 {
                    entry.probation = None;
                }
                return None;
            }
            let previous = entry.probation.take()?.previous;
            let detail = format!(
                "automatic rollback: version {} ({}) crashed in execution {} ({}); restored {} ({})",
                current.manifest.version,
                current.short_digest(),
                result.id,
                result.error.as_deref().unwrap_or("crashed"),
                previous.manifest.version,
                previous.short_digest()
            );
            reg.install(previous);
            reg.resolve(ctx);
            let entry = reg.plugins.get_mut(&result.plugin)?;
            entry.record(LifecycleEventKind::RolledBack, detail.clone());
            entry.reload_error = Some(detail.clone());
            Some(detail)
        });
        if let Some(detail) = rolled_back {
            tracing::error!(plugin = %result.plugin, %detail, "rolled back");
        }
    }

    /// Re-reads the policies; an invalid set leaves the last good one active.
    pub async fn reload_policy(&self) -> Value {
        let dir = self.config.policies_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || PolicySet::load(&dir)).await;
        let policy = match loaded {
            Ok(Ok(policy)) => policy,
            Ok(Err(e)) => {
                let error = ironclaw_protocol::error_chain(&e);
                tracing::error!(%error, "policy reload refused; the previous policies stay active");
                *lock(&self.policy_error) = Some(error.clone());
                return json!({"result": "failed", "reason": error});
            }
            Err(e) => return json!({"result": "failed", "reason": e.to_string()}),
        };
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        *lock(&self.policy_error) = None;
        let changes = self.resolve_and_report("policy reload");
        json!({"result": "applied", "changes": changes})
    }

    /// Re-reads the secrets; an unreadable set leaves the previous one active.
    fn reload_secrets(&self) -> Value {
        let credentials = crate::catalog::secrets::credentials_dir();
        match Secrets::load(self.config.secrets_file.as_deref(), credentials.as_deref()) {
            Ok(secrets) => {
                *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(secrets);
                json!({"result": "applied"})
            }
            Err(e) => {
                let error = ironclaw_protocol::error_chain(&e);
                tracing::error!(%error, "secrets reload refused; the previous secrets stay in use");
                json!({"result": "failed", "reason": error})
            }
        }
    }

    /// Recomputes every plugin's state and logs (and returns) those that changed.
    fn resolve_and_report(&self, why: &str) -> Vec<Value> {
        let before: Vec<(String, PluginState)> =
            self.registry().plugins.iter().map(|(k, e)| (k.clone(), e.state)).collect();
        self.with_context(|ctx| self.registry_mut().resolve(ctx));
        let reg = self.registry();
        let mut changes = Vec::new();
        for (name, old) in before {
            let Some(entry) = reg.plugins.get(&name) else { continue };
            if entry.state != old {
                tracing::info!(plugin = %name, from = ?old, to = ?entry.state, reason = entry.reason.as_deref(), why, "plugin state changed");
                changes.push(json!({"plugin": name, "from": old, "to": entry.state, "reason": entry.reason}));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::valid_backup_id;

    #[test]
    fn backup_ids_cannot_name_other_directories() {
        assert!(valid_backup_id("1.2.0-1795639004678"));
        assert!(valid_backup_id("1.0.0+build.5-1795639004678"));
        for bad in ["", "..", "../x", "a/b", ".hidden", "x\0y", "/etc"] {
            assert!(!valid_backup_id(bad), "{bad:?}");
        }
    }
}
