//! Hot reload, owned by the [`Reloader`]: plugins one folder at a time, policies as a whole
//! set, secrets, backups and rollback.
//!
//! A new plugin version is a *candidate* until it has passed everything: a snapshot of its
//! folder (never a half-written file: writes during the copy are detected, and the version runs
//! from the copy), its manifest, API compatibility, the policy, and a trial load in a real
//! sandboxed runner (the ABI handshake, then a `validate` request). Only then is it swapped in:
//! executions already running keep the version they started with (they hold it), new ones get
//! the new one. A refused candidate changes nothing but the plugin's history. A new version
//! that crashes in its first executions is rolled back to the previous one (see
//! [`Catalog::after_execution`]).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironclaw_plugin_sdk::Operation;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::SupervisorError;
use super::launch::Launcher;
use crate::catalog::manifest::MANIFEST_FILE;
use crate::catalog::policy::{Effective, PolicySet};
use crate::catalog::registry::{LifecycleEventKind, LoadedPlugin, Probation, load_plugin, plugin_folders};
use crate::catalog::secrets::Secrets;
use crate::catalog::{Catalog, StateChange};
use crate::config::Config;
use crate::execution_result::ExecutionStatus;

/// Under the state directory: the copies executions run from, and the backups.
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const BACKUPS_DIR: &str = "backups";
/// While this file exists in the state directory, a reload waits after announcing itself, so
/// the VM suite can see systemd report the unit as reloading (a test hook).
#[cfg(feature = "test-hooks")]
pub const HOLD_RELOAD_FILE: &str = "hold-reload";
/// A trial load gets at most this long, whatever the plugin's timeout.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A trial the sandbox (not the plugin) failed is tried this many times, the first retry after
/// `TRIAL_RETRY`, each later one four times as long; still failing, it counts as inconclusive.
const TRIAL_ATTEMPTS: u32 = 3;
const TRIAL_RETRY: Duration = Duration::from_millis(200);

/// Why everything is reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// Loading at start-up: the daemon has just read the secrets and policies, and it is no
    /// reload for systemd.
    Startup,
    ApiRequest,
    /// `systemctl reload`.
    Sighup,
    /// The watcher lost events and cannot tell what changed.
    WatchOverflow,
}

impl ReloadCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Startup => "start-up",
            ReloadCause::ApiRequest => "API request",
            ReloadCause::Sighup => "SIGHUP",
            ReloadCause::WatchOverflow => "inotify queue overflow",
        }
    }
}

/// What a reload did to one folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FolderResult {
    Added,
    Changed,
    Unchanged,
    Removed,
    Failed,
}

impl FolderResult {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderResult::Added => "added",
            FolderResult::Changed => "changed",
            FolderResult::Unchanged => "unchanged",
            FolderResult::Removed => "removed",
            FolderResult::Failed => "failed",
        }
    }
}

/// What reloading the secrets or the policies did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum PartResult {
    #[serde(rename = "loaded at start-up")]
    LoadedAtStartUp,
    #[serde(rename = "applied")]
    Applied,
    #[serde(rename = "failed")]
    Failed,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartReload {
    pub result: PartResult,
    /// Why it failed (the previous set stays in use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Policies only: the plugins whose state changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<StateChange>>,
}

impl PartReload {
    fn of(result: PartResult) -> Self {
        PartReload { result, reason: None, changes: None }
    }

    fn failed(reason: String) -> Self {
        PartReload { reason: Some(reason), ..Self::of(PartResult::Failed) }
    }
}

/// What reloading everything did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadReport {
    pub secrets: PartReload,
    pub policy: PartReload,
    pub plugins: Vec<ReloadOutcome>,
}

/// A plugin's kept backups.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackupList {
    pub plugin: String,
    /// How many backups are kept per plugin.
    pub kept: usize,
    /// Newest first.
    pub backups: Vec<Backup>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    #[serde(default)]
    pub id: String,
    pub version: Option<String>,
    pub digest: Option<String>,
    pub created_ms: Option<u64>,
}

/// What one reload of one folder did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadOutcome {
    #[schema(value_type = String)]
    pub folder: PathBuf,
    pub plugin: Option<String>,
    pub result: FolderResult,
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
    fn new(folder: &Path, result: FolderResult) -> Self {
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
        ReloadOutcome { reason: Some(reason), ..Self::new(folder, FolderResult::Failed) }
    }
}

/// A backup id: `<version>-<unix ms>`, nothing that could name another directory.
fn valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
}

/// The one owner of reloads: they run one at a time.
pub struct Reloader {
    catalog: Arc<Catalog>,
    launcher: Arc<Launcher>,
    plugins_dir: PathBuf,
    policies_dir: PathBuf,
    secrets_file: Option<PathBuf>,
    state_dir: PathBuf,
    probation: u32,
    backups_kept: usize,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(config: &Config, catalog: Arc<Catalog>, launcher: Arc<Launcher>) -> Self {
        Reloader {
            catalog,
            launcher,
            plugins_dir: config.plugins_dir.clone(),
            policies_dir: config.policies_dir.clone(),
            secrets_file: config.secrets_file.clone(),
            state_dir: config.state_dir.clone(),
            probation: config.reload.probation,
            backups_kept: config.reload.backups_kept,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.state_dir.join(SNAPSHOTS_DIR)
    }

    fn backups_dir(&self, plugin: &str) -> PathBuf {
        self.state_dir.join(BACKUPS_DIR).join(plugin)
    }

    /// One line for systemd's STATUS: "5 plugins enabled, 1 not running".
    pub fn status_line(&self) -> String {
        let (plugins, enabled) = self.catalog.plugin_counts();
        format!("{enabled} plugins enabled, {} not running", plugins - enabled)
    }

    /// Reloads one folder of the plugins directory (added, changed or removed).
    pub async fn reload_folder(&self, folder: &Path) -> ReloadOutcome {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        self.reload_folder_locked(folder, folder).await
    }

    /// Reloads the plugin `name` from its folder.
    pub async fn reload_plugin(&self, name: &str) -> Result<ReloadOutcome, SupervisorError> {
        let folder = self.plugin_dir(name)?;
        Ok(self.reload_folder(&folder).await)
    }

    fn plugin_dir(&self, name: &str) -> Result<PathBuf, SupervisorError> {
        let folder = self.catalog.registry(|reg| reg.plugins.get(name).map(|e| e.dir.clone()));
        folder.ok_or_else(|| SupervisorError::NotFound(name.into()))
    }

    /// Reloads everything: secrets, policies, then every plugin folder, present or gone.
    pub async fn reload_all(&self, cause: ReloadCause) -> ReloadReport {
        tracing::info!(why = cause.as_str(), "reloading everything");
        let (secrets, policy) = if cause == ReloadCause::Startup {
            (PartReload::of(PartResult::LoadedAtStartUp), PartReload::of(PartResult::LoadedAtStartUp))
        } else {
            crate::systemd::reloading();
            #[cfg(feature = "test-hooks")]
            {
                let hold = self.state_dir.join(HOLD_RELOAD_FILE);
                while hold.exists() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (self.reload_secrets(), self.reload_policy().await)
        };
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let mut folders = plugin_folders(&self.plugins_dir).unwrap_or_else(|e| {
            tracing::error!(dir = %self.plugins_dir.display(), error = %e, "cannot read the plugins directory");
            Vec::new()
        });
        for known in self.catalog.registry(|reg| reg.sources()) {
            if !folders.contains(&known) {
                folders.push(known);
            }
        }
        let mut plugins = Vec::new();
        for folder in folders {
            plugins.push(self.reload_folder_locked(&folder, &folder).await);
        }
        if cause != ReloadCause::Startup {
            crate::systemd::ready(&self.status_line());
        }
        ReloadReport { secrets, policy, plugins }
    }

    /// Builds a candidate from `read_from` (the live folder, or a backup) for the plugin whose
    /// live folder is `folder`, and swaps it in if it passes.
    async fn reload_folder_locked(&self, folder: &Path, read_from: &Path) -> ReloadOutcome {
        if !read_from.join(MANIFEST_FILE).is_file() {
            return match self.catalog.update(|reg| reg.remove(folder)) {
                Some(entry) => {
                    tracing::info!(plugin = %entry.name, dir = %folder.display(), "plugin folder removed: on_unload");
                    ReloadOutcome { plugin: Some(entry.name), ..ReloadOutcome::new(folder, FolderResult::Removed) }
                }
                None => ReloadOutcome::new(folder, FolderResult::Unchanged),
            };
        }
        let (from, shown, snapshots) = (read_from.to_path_buf(), folder.to_path_buf(), self.snapshots_dir());
        let loaded = tokio::task::spawn_blocking(move || load_plugin(&from, &shown, &snapshots)).await;
        let candidate = match loaded.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(c) => Arc::new(c),
            Err(reason) => return self.refuse(folder, reason),
        };
        let current =
            self.catalog.registry(|reg| reg.key_for_source(folder).and_then(|k| reg.plugins[&k].plugin.clone()));
        if current.as_ref().is_some_and(|c| c.digest() == candidate.digest()) && folder == read_from {
            // The folder is back to the version that serves: an earlier refusal is moot.
            self.catalog.annotate(|reg| {
                if let Some(entry) = reg.key_for_source(folder).and_then(|k| reg.plugins.get_mut(&k)) {
                    entry.reload_error = None;
                    let detail = format!("version {} ({})", candidate.manifest.version, candidate.short_digest());
                    entry.record(LifecycleEventKind::ReloadUnchanged, detail);
                }
            });
            return ReloadOutcome::new(folder, FolderResult::Unchanged).of(&candidate);
        }
        // API compatibility, dependencies and policy, then the trial load. A new version that
        // could not run is refused (the current one keeps serving); a new plugin that could not
        // is installed with its state and reason, and nothing of it runs.
        match (self.blocker(&candidate), &current) {
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
    fn blocker(&self, candidate: &LoadedPlugin) -> Result<Arc<Effective>, String> {
        let m = &candidate.manifest;
        let api_version = self.catalog.api_version();
        if !m.api.matches(api_version) {
            return Err(format!("requires plugin API {}, this daemon provides {api_version}", m.api));
        }
        self.catalog.registry(|reg| {
            for (dep, req) in &m.dependencies {
                match reg.plugins.get(dep).and_then(|e| e.plugin.as_ref()) {
                    None => return Err(format!("dependency '{dep}' is not installed")),
                    Some(p) if !req.matches(&p.manifest.version) => {
                        return Err(format!("dependency '{dep}' requires {req}, found {}", p.manifest.version));
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        })?;
        self.catalog.policy().effective(m).map(Arc::new).map_err(|missing| missing.join("; "))
    }

    /// Installs a candidate that passed; backs the previous version up and puts the new one on
    /// probation.
    fn swap(&self, folder: &Path, candidate: Arc<LoadedPlugin>, from_backup: bool) -> ReloadOutcome {
        let name = candidate.manifest.name.clone();
        // The new version, its resolved state and its lifecycle event appear together: a reader
        // never sees the version without the event.
        let mut edit = self.catalog.edit();
        let previous = edit.registry().install(candidate.clone());
        edit.resolve();
        if let Some(entry) = edit.registry().plugins.get_mut(&name) {
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
                Some(previous) if !from_backup && self.probation > 0 => {
                    Some(Probation { previous: previous.clone(), remaining: self.probation })
                }
                _ => None,
            };
        }
        drop(edit);
        let backup = previous.as_ref().and_then(|p| self.backup(p));
        let result = if previous.is_some() { FolderResult::Changed } else { FolderResult::Added };
        let mut outcome = ReloadOutcome::new(folder, result).of(&candidate);
        outcome.previous_version = previous.as_ref().map(|p| p.manifest.version.to_string());
        outcome.backup = backup;
        outcome
    }

    fn refuse(&self, folder: &Path, reason: String) -> ReloadOutcome {
        tracing::warn!(dir = %folder.display(), %reason, "plugin (re)load refused");
        self.catalog.update(|reg| reg.refuse(folder, reason.clone()));
        ReloadOutcome::failed(folder, reason)
    }

    /// Runs a `validate` request through a real runner: the library loads (ABI handshake
    /// first), or the program starts, and answers in protocol. A trial the sandbox failed before
    /// the plugin could run (no fault of the plugin's: the host, its limits, another daemon) is
    /// retried; still failing, it is inconclusive and passes with an error in the log, as when
    /// the host refuses every execution anyway. Such a plugin is never left `invalid`.
    async fn trial(&self, plugin: Arc<LoadedPlugin>, effective: Arc<Effective>) -> Result<(), String> {
        if !self.launcher.host().missing_capabilities.is_empty() {
            return Ok(());
        }
        let mut retry_in = TRIAL_RETRY;
        for attempt in 1..=TRIAL_ATTEMPTS {
            let mut plan =
                self.launcher.plan(plugin.clone(), effective.clone(), serde_json::json!({}), Operation::Validate);
            plan.limits.timeout.0 = plan.limits.timeout.0.min(TRIAL_TIMEOUT);
            let result = self.launcher.trial(plan).await.map_err(|e| e.to_string())?;
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
        let created_ms = crate::audit::unix_ms();
        let id = format!("{}-{created_ms}", previous.manifest.version);
        let dir = root.join(&id);
        let meta = serde_json::json!({
            "plugin": previous.manifest.name,
            "version": previous.manifest.version.to_string(),
            "digest": previous.digest(),
            "source": previous.source,
            "created_ms": created_ms,
        });
        let copied = crate::catalog::snapshot::copy_dir(previous.dir(), &dir)
            .and_then(|()| std::fs::write(root.join(format!("{id}.json")), meta.to_string()));
        if let Err(e) = copied {
            tracing::error!(plugin = %previous.manifest.name, error = %e, "failed to back up the previous version");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let mut all = self.backup_ids(&previous.manifest.name);
        while all.len() > self.backups_kept {
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

    /// A plugin's kept backups, newest first.
    pub fn backups(&self, name: &str) -> Result<BackupList, SupervisorError> {
        if !self.catalog.contains(name) {
            return Err(SupervisorError::NotFound(name.into()));
        }
        let root = self.backups_dir(name);
        let backups = self
            .backup_ids(name)
            .into_iter()
            .rev()
            .map(|id| {
                let meta = std::fs::read(root.join(format!("{id}.json")))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Backup>(&b).ok())
                    .unwrap_or_default();
                Backup { id, ..meta }
            })
            .collect();
        Ok(BackupList { plugin: name.into(), kept: self.backups_kept, backups })
    }

    /// Restores a kept backup: the same checks and trial load as any reload, then the swap
    /// (which backs up the version it replaces). It serves until the folder changes again.
    pub async fn rollback(&self, name: &str, id: &str) -> Result<ReloadOutcome, SupervisorError> {
        let folder = self.plugin_dir(name)?;
        if !valid_backup_id(id) || !self.backup_ids(name).iter().any(|b| b == id) {
            return Err(SupervisorError::BackupNotFound { plugin: name.into(), backup: id.into() });
        }
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let outcome = self.reload_folder_locked(&folder, &self.backups_dir(name).join(id)).await;
        tracing::info!(plugin = %name, backup = %id, result = outcome.result.as_str(), "manual rollback");
        Ok(outcome)
    }

    /// Re-reads the policies; an invalid set leaves the last good one active.
    pub async fn reload_policy(&self) -> PartReload {
        let dir = self.policies_dir.clone();
        let loaded = match tokio::task::spawn_blocking(move || PolicySet::load(&dir)).await {
            Ok(loaded) => loaded.map_err(|e| ironclaw_protocol::error_chain(&e)),
            Err(e) => return PartReload::failed(e.to_string()),
        };
        match self.catalog.set_policy(loaded) {
            Ok(changes) => {
                for c in &changes {
                    tracing::info!(plugin = %c.plugin, from = ?c.from, to = ?c.to, reason = c.reason.as_deref(), why = "policy reload", "plugin state changed");
                }
                PartReload { changes: Some(changes), ..PartReload::of(PartResult::Applied) }
            }
            Err(error) => {
                tracing::error!(%error, "policy reload refused; the previous policies stay active");
                PartReload::failed(error)
            }
        }
    }

    /// Re-reads the secrets; an unreadable set leaves the previous one active.
    fn reload_secrets(&self) -> PartReload {
        let credentials = crate::catalog::secrets::credentials_dir();
        match Secrets::load(self.secrets_file.as_deref(), credentials.as_deref()) {
            Ok(secrets) => {
                self.catalog.set_secrets(secrets);
                PartReload::of(PartResult::Applied)
            }
            Err(e) => {
                let error = ironclaw_protocol::error_chain(&e);
                tracing::error!(%error, "secrets reload refused; the previous secrets stay in use");
                PartReload::failed(error)
            }
        }
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
