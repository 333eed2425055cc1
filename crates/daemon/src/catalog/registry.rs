//! Plugins by name: each loaded version, its state and reason, API compatibility, permission
//! grants, dependency resolution and the enabled/disabled choice.
//!
//! A broken plugin never stops the others: each folder becomes an entry with a state and a
//! reason, and only `enabled` entries run. Versions are installed one folder at a time (at
//! start-up and on every reload, see `supervisor::reload`); the registry only keeps the books.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::catalog::manifest::{MANIFEST_FILE, Manifest, Runtime};
use crate::catalog::policy::{Effective, PolicySet};
use crate::catalog::schema::Schemas;
use crate::catalog::secrets::Secrets;
use crate::catalog::snapshot::{self, Snapshot};

const ENABLED_STATE_FILE: &str = "enabled.json";
const EVENTS_KEPT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("failed to read the enabled-state file {0}")]
    ReadState(PathBuf, #[source] std::io::Error),
    #[error("the enabled-state file {0} is malformed")]
    ParseState(PathBuf, #[source] serde_json::Error),
    #[error("failed to persist the enabled state to {0}")]
    WriteState(PathBuf, #[source] std::io::Error),
    #[error("no plugin named '{0}'")]
    NotFound(String),
}

/// One loaded, validated plugin version. Immutable: executions hold an `Arc` of it, and its
/// snapshot (the files it runs from) lives as long as they do.
#[derive(Debug)]
pub struct LoadedPlugin {
    pub manifest: Manifest,
    /// The live folder it was loaded from.
    pub source: PathBuf,
    pub snapshot: Snapshot,
    pub schemas: Schemas,
}

impl LoadedPlugin {
    /// The immutable copy executions run from.
    pub fn dir(&self) -> &Path {
        &self.snapshot.dir
    }

    /// The version's identity: the SHA-256 of its files.
    pub fn digest(&self) -> &str {
        &self.snapshot.digest
    }

    /// The first 12 hex digits of the digest, as results show it.
    pub fn short_digest(&self) -> &str {
        &self.snapshot.digest[..12.min(self.snapshot.digest.len())]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    Enabled,
    Disabled,
    /// The manifest or its artifact is broken.
    Invalid,
    /// The plugin needs another plugin API version.
    Incompatible,
    /// A dependency is missing, incompatible, cyclic or itself not runnable.
    Unresolved,
    /// It declares a permission no policy grants, or a granted secret has no value.
    NotGranted,
}

/// What resolving plugin states depends on besides the plugins themselves.
#[derive(Clone, Copy)]
pub struct ResolveContext<'a> {
    pub api_version: &'a Version,
    pub policy: &'a PolicySet,
    pub secrets: &'a Secrets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEventKind {
    OnLoad,
    OnUnload,
    OnError,
    /// A new version was installed.
    Reloaded,
    /// A reload was refused; the previous version (if any) keeps serving.
    ReloadFailed,
    /// A reload found the version that already serves.
    ReloadUnchanged,
    /// A previous version was restored, automatically or by an admin.
    RolledBack,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LifecycleEvent {
    pub event: LifecycleEventKind,
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub detail: String,
}

/// The first executions of a new version, watched for crashes; the previous version is kept
/// to roll back to.
#[derive(Debug)]
pub struct Probation {
    pub previous: Arc<LoadedPlugin>,
    pub remaining: u32,
}

#[derive(Debug)]
pub struct PluginEntry {
    pub name: String,
    /// The live folder.
    pub dir: PathBuf,
    pub plugin: Option<Arc<LoadedPlugin>>,
    pub state: PluginState,
    pub reason: Option<String>,
    /// What policy allows it; `None` unless every declared permission is granted.
    pub effective: Option<Arc<Effective>>,
    /// Why the last reload of this folder was refused, until one succeeds.
    pub reload_error: Option<String>,
    pub probation: Option<Probation>,
    pub events: VecDeque<LifecycleEvent>,
}

impl PluginEntry {
    fn new(name: String, dir: PathBuf) -> Self {
        PluginEntry {
            name,
            dir,
            plugin: None,
            state: PluginState::Invalid,
            reason: None,
            effective: None,
            reload_error: None,
            probation: None,
            events: VecDeque::new(),
        }
    }

    pub fn record(&mut self, event: LifecycleEventKind, detail: impl Into<String>) {
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(LifecycleEvent { event, at, detail: detail.into() });
    }
}

#[derive(Debug)]
pub struct Registry {
    pub plugins: BTreeMap<String, PluginEntry>,
    disabled: BTreeMap<String, bool>,
    state_file: PathBuf,
}

/// The plugin folders under `plugins_dir`: sub-folders holding a `plugin.toml`, not hidden.
pub fn plugin_folders(plugins_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(plugins_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join(MANIFEST_FILE).is_file())
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Loads one plugin version: a snapshot of the files of `read_from` (the live folder `source`,
/// or a backup of it), then the manifest, the artifact's presence and the parameters' schema,
/// all read from the snapshot. Errors name the live folder.
pub fn load_plugin(read_from: &Path, source: &Path, snapshots: &Path) -> Result<LoadedPlugin, String> {
    let snapshot = snapshot::take(read_from, snapshots).map_err(|e| ironclaw_protocol::error_chain(&e))?;
    let dir = snapshot.dir.as_path();
    let manifest = Manifest::load_as(dir, source).map_err(|e| e.to_string())?;
    let shown = source.join(MANIFEST_FILE);
    match &manifest.runtime {
        Runtime::Native { library } if !dir.join(library).is_file() => {
            return Err(format!(
                "{}: native library {} not found (build the plugins first: `make plugins`)",
                shown.display(),
                source.join(library).display()
            ));
        }
        Runtime::Exec { command } if command[0].contains('/') && !dir.join(&command[0]).is_file() => {
            return Err(format!("{}: command {} not found in the plugin folder", shown.display(), command[0]));
        }
        _ => {}
    }
    let artifact = match &manifest.runtime {
        Runtime::Native { library } => Some(dir.join(library)),
        Runtime::Exec { command } if command[0].contains('/') => Some(dir.join(&command[0])),
        Runtime::Exec { .. } => None,
    };
    if let Some(artifact) = artifact {
        snapshot::check_elf_complete(&artifact)
            .map_err(|e| e.replace(&dir.display().to_string(), &source.display().to_string()))?;
    }
    let schemas = Schemas::compile(&manifest).map_err(|e| format!("{}: {e}", shown.display()))?;
    Ok(LoadedPlugin { manifest, source: source.to_path_buf(), snapshot, schemas })
}

impl Registry {
    /// An empty registry with the persisted enabled/disabled choices of `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, RegistryError> {
        let state_file = state_dir.join(ENABLED_STATE_FILE);
        let disabled = match std::fs::read(&state_file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::ParseState(state_file.clone(), e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(RegistryError::ReadState(state_file, e)),
        };
        Ok(Registry { plugins: BTreeMap::new(), disabled, state_file })
    }

    /// The key of the entry for the live folder `source`.
    pub fn key_for_source(&self, source: &Path) -> Option<String> {
        self.plugins.iter().find(|(_, e)| e.dir == source).map(|(k, _)| k.clone())
    }

    pub fn sources(&self) -> Vec<PathBuf> {
        self.plugins.values().map(|e| e.dir.clone()).collect()
    }

    /// Installs a version loaded from its folder, in place of the folder's current one (also
    /// under a new name); returns the version it replaces. A name another folder already
    /// provides makes this folder's entry invalid instead.
    pub fn install(&mut self, plugin: Arc<LoadedPlugin>) -> Option<Arc<LoadedPlugin>> {
        let name = plugin.manifest.name.clone();
        let source = plugin.source.clone();
        let mut carried = match self.key_for_source(&source) {
            Some(key) if key != name => self.plugins.remove(&key),
            _ => None,
        };
        if let Some(other) = self.plugins.get(&name).filter(|e| e.dir != source) {
            let reason = format!("duplicate plugin name '{name}', already provided by {}", other.dir.display());
            tracing::error!(plugin = %name, dir = %source.display(), "duplicate plugin name");
            let mut entry = carried.take().unwrap_or_else(|| PluginEntry::new(name.clone(), source.clone()));
            entry.plugin = None;
            entry.state = PluginState::Invalid;
            entry.reason = Some(reason);
            self.plugins.insert(format!("{name}@{}", source.display()), entry);
            return None;
        }
        let entry = self.plugins.entry(name.clone()).or_insert_with(|| match carried.take() {
            Some(mut e) => {
                e.name = name.clone();
                e
            }
            None => PluginEntry::new(name.clone(), source),
        });
        entry.reload_error = None;
        entry.plugin.replace(plugin)
    }

    /// Records that a folder holds no loadable plugin. A folder already serving a version keeps
    /// it (a refused reload); any other becomes an `invalid` entry with the reason.
    pub fn refuse(&mut self, source: &Path, reason: String) {
        match self.key_for_source(source) {
            Some(key) if self.plugins[&key].plugin.is_some() => {
                let entry = self.plugins.get_mut(&key).expect("the key was just found");
                entry.record(LifecycleEventKind::ReloadFailed, reason.clone());
                entry.reload_error = Some(reason);
            }
            key => {
                let folder = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let key = key.unwrap_or(folder);
                let entry = self.plugins.entry(key.clone()).or_insert_with(|| PluginEntry::new(key, source.into()));
                entry.state = PluginState::Invalid;
                entry.reason = Some(reason);
            }
        }
    }

    /// Forgets the folder `source` (deleted); running executions keep their version.
    pub fn remove(&mut self, source: &Path) -> Option<PluginEntry> {
        let key = self.key_for_source(source)?;
        self.plugins.remove(&key)
    }

    /// Recomputes every state: API compatibility, permissions, then dependencies, then
    /// enabled/disabled.
    pub fn resolve(&mut self, ctx: ResolveContext) {
        let api_version = ctx.api_version;
        let mut problems: HashMap<String, (PluginState, String)> = HashMap::new();
        for (name, entry) in self.plugins.iter_mut() {
            entry.effective = None;
            let Some(p) = &entry.plugin else { continue };
            if !p.manifest.api.matches(api_version) {
                let reason = format!("requires plugin API {}, this daemon provides {api_version}", p.manifest.api);
                problems.insert(name.clone(), (PluginState::Incompatible, reason));
                continue;
            }
            match ctx.policy.effective(&p.manifest) {
                Err(missing) => {
                    problems.insert(name.clone(), (PluginState::NotGranted, missing.join("; ")));
                }
                Ok(effective) => {
                    let unset: Vec<&str> = effective
                        .secrets
                        .iter()
                        .map(|s| s.value.0.as_str())
                        .filter(|s| ctx.secrets.get(s).is_none())
                        .collect();
                    if unset.is_empty() {
                        entry.effective = Some(Arc::new(effective));
                    } else {
                        let reason = format!(
                            "granted secret {} has no value (set it in the secrets file or as a systemd credential)",
                            unset.join(", ")
                        );
                        problems.insert(name.clone(), (PluginState::NotGranted, reason));
                    }
                }
            }
        }
        let names: Vec<String> = self.plugins.keys().cloned().collect();
        for name in &names {
            let mut path = Vec::new();
            if let Err(reason) = self.check_dependencies(name, &mut path, &mut problems)
                && !problems.contains_key(name)
            {
                problems.insert(name.clone(), (PluginState::Unresolved, reason));
            }
        }
        for (name, entry) in self.plugins.iter_mut() {
            if entry.plugin.is_none() {
                continue;
            }
            (entry.state, entry.reason) = match problems.remove(name) {
                Some((state, reason)) => (state, Some(reason)),
                None if self.disabled.get(name) == Some(&true) => {
                    (PluginState::Disabled, Some("disabled by an admin".into()))
                }
                None => (PluginState::Enabled, None),
            };
        }
    }

    /// Depth-first check of `name`'s dependencies; `path` detects cycles.
    fn check_dependencies(
        &self,
        name: &str,
        path: &mut Vec<String>,
        problems: &mut HashMap<String, (PluginState, String)>,
    ) -> Result<(), String> {
        if let Some(start) = path.iter().position(|p| p == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name.to_string());
            return Err(format!("dependency cycle: {}", cycle.join(" -> ")));
        }
        let Some(entry) = self.plugins.get(name) else {
            return Err(format!("dependency '{name}' is not installed"));
        };
        let Some(plugin) = &entry.plugin else {
            return Err(format!(
                "dependency '{name}' failed to load: {}",
                entry.reason.as_deref().unwrap_or("unknown")
            ));
        };
        if let Some((_, reason)) = problems.get(name).filter(|_| !path.is_empty()) {
            return Err(format!("dependency '{name}' is not runnable: {reason}"));
        }
        path.push(name.to_string());
        for (dep, req) in &plugin.manifest.dependencies {
            let found = self.plugins.get(dep).and_then(|e| e.plugin.as_ref()).map(|p| &p.manifest.version);
            let result = match found {
                Some(v) if !req.matches(v) => Err(format!("dependency '{dep}' requires {req}, found {v}")),
                _ => self.check_dependencies(dep, path, problems),
            };
            if let Err(reason) = result {
                path.pop();
                return Err(if path.is_empty() || reason.starts_with("dependency cycle") {
                    reason
                } else {
                    format!("dependency '{name}' is not runnable: {reason}")
                });
            }
        }
        path.pop();
        Ok(())
    }

    /// Enables or disables a plugin without unloading it, and persists the choice.
    pub fn set_enabled(
        &mut self,
        name: &str,
        enabled: bool,
        ctx: ResolveContext,
    ) -> Result<PluginState, RegistryError> {
        if !self.plugins.contains_key(name) {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        if enabled {
            self.disabled.remove(name);
        } else {
            self.disabled.insert(name.to_string(), true);
        }
        self.persist()?;
        self.resolve(ctx);
        Ok(self.plugins[name].state)
    }

    fn persist(&self) -> Result<(), RegistryError> {
        let write = || -> std::io::Result<()> {
            if let Some(parent) = self.state_file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            crate::files::write_atomically(&self.state_file, &serde_json::to_vec_pretty(&self.disabled)?, 0o600)
        };
        write().map_err(|e| RegistryError::WriteState(self.state_file.clone(), e))
    }
}

impl PluginEntry {
    pub fn state_label(&self) -> &'static str {
        match self.state {
            PluginState::Enabled => "enabled",
            PluginState::Disabled => "disabled",
            PluginState::Invalid => "invalid",
            PluginState::Incompatible => "incompatible",
            PluginState::Unresolved => "unresolved",
            PluginState::NotGranted => "not_granted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_plugin(root: &Path, name: &str, version: &str, api: &str, deps: &[(&str, &str)]) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let deps: String = deps.iter().map(|(n, r)| format!("{n} = \"{r}\"\n")).collect();
        std::fs::write(
            dir.join(MANIFEST_FILE),
            format!(
                "name = \"{name}\"\nversion = \"{version}\"\ndescription = \"d\"\napi = \"{api}\"\n\
                 [runtime]\ntype = \"exec\"\ncommand = [\"true\"]\n[dependencies]\n{deps}[parameters]\ntype = \"object\"\n"
            ),
        )
        .unwrap();
    }

    static API: Version = Version::new(1, 0, 0);

    fn ctx<'a>(policy: &'a PolicySet, secrets: &'a Secrets) -> ResolveContext<'a> {
        ResolveContext { api_version: &API, policy, secrets }
    }

    fn discover(root: &Path, state: &Path) -> Registry {
        let mut registry = Registry::open(state).unwrap();
        for dir in plugin_folders(root).unwrap() {
            match load_plugin(&dir, &dir, &state.join("snapshots")) {
                Ok(p) => {
                    registry.install(Arc::new(p));
                }
                Err(reason) => registry.refuse(&dir, reason),
            }
        }
        registry.resolve(ctx(&PolicySet::default(), &Secrets::default()));
        registry
    }

    fn state(r: &Registry, name: &str) -> (PluginState, String) {
        let e = &r.plugins[name];
        (e.state, e.reason.clone().unwrap_or_default())
    }

    #[test]
    fn api_compatibility_and_dependencies() {
        let root = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let p = root.path();
        write_plugin(p, "base", "1.4.0", "^1", &[]);
        write_plugin(p, "good", "1.0.0", "^1", &[("base", "^1.2")]);
        write_plugin(p, "future", "1.0.0", "^2", &[]);
        write_plugin(p, "needs-future", "1.0.0", "^1", &[("future", "*")]);
        write_plugin(p, "too-new", "1.0.0", "^1", &[("base", "^2")]);
        write_plugin(p, "orphan", "1.0.0", "^1", &[("ghost", "*")]);
        write_plugin(p, "cycle-a", "1.0.0", "^1", &[("cycle-b", "*")]);
        write_plugin(p, "cycle-b", "1.0.0", "^1", &[("cycle-a", "*")]);
        write_plugin(p, "on-cycle", "1.0.0", "^1", &[("cycle-a", "*")]);
        std::fs::create_dir_all(p.join("broken")).unwrap();
        std::fs::write(p.join("broken").join(MANIFEST_FILE), "name = 3").unwrap();

        let r = discover(p, state_dir.path());
        assert_eq!(state(&r, "good").0, PluginState::Enabled);
        assert_eq!(state(&r, "base").0, PluginState::Enabled);
        let (s, why) = state(&r, "future");
        assert_eq!(s, PluginState::Incompatible);
        assert!(why.contains("requires plugin API ^2"), "{why}");
        let (s, why) = state(&r, "needs-future");
        assert_eq!(s, PluginState::Unresolved);
        assert!(why.contains("dependency 'future' is not runnable"), "{why}");
        assert_eq!(
            state(&r, "too-new"),
            (PluginState::Unresolved, "dependency 'base' requires ^2, found 1.4.0".into())
        );
        assert_eq!(state(&r, "orphan"), (PluginState::Unresolved, "dependency 'ghost' is not installed".into()));
        let (s, why) = state(&r, "cycle-a");
        assert_eq!(s, PluginState::Unresolved);
        assert_eq!(why, "dependency cycle: cycle-a -> cycle-b -> cycle-a");
        assert!(state(&r, "on-cycle").1.contains("dependency cycle"));
        let (s, why) = state(&r, "broken");
        assert_eq!(s, PluginState::Invalid);
        assert!(why.contains("plugin.toml:1:"), "{why}");
    }

    #[test]
    fn enabled_state_persists_across_restarts() {
        let root = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        write_plugin(root.path(), "one", "1.0.0", "^1", &[]);
        let mut r = discover(root.path(), state_dir.path());
        let (policy, secrets) = (PolicySet::default(), Secrets::default());
        assert_eq!(r.set_enabled("one", false, ctx(&policy, &secrets)).unwrap(), PluginState::Disabled);
        assert!(matches!(r.set_enabled("nope", false, ctx(&policy, &secrets)), Err(RegistryError::NotFound(_))));
        let r = discover(root.path(), state_dir.path());
        assert_eq!(state(&r, "one").0, PluginState::Disabled);
        assert!(r.plugins["one"].plugin.is_some(), "a disabled plugin stays loaded");
    }

    #[test]
    fn installing_a_new_version_replaces_the_folder_s_entry() {
        let root = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        write_plugin(root.path(), "one", "1.0.0", "^1", &[]);
        write_plugin(root.path(), "user", "1.0.0", "^1", &[("one", "^1")]);
        let mut r = discover(root.path(), state_dir.path());
        let snapshots = state_dir.path().join("snapshots");
        let (policy, secrets) = (PolicySet::default(), Secrets::default());

        write_plugin(root.path(), "one", "2.0.0", "^1", &[]);
        let one = root.path().join("one");
        let v2 = Arc::new(load_plugin(&one, &one, &snapshots).unwrap());
        let v1 = r.install(v2.clone()).expect("the previous version is returned");
        assert_eq!(v1.manifest.version, Version::new(1, 0, 0));
        assert_ne!(v1.digest(), v2.digest());
        r.resolve(ctx(&policy, &secrets));
        assert_eq!(state(&r, "user"), (PluginState::Unresolved, "dependency 'one' requires ^1, found 2.0.0".into()));

        // A refused reload keeps the version that serves.
        r.refuse(&root.path().join("one"), "broken".into());
        assert_eq!(r.plugins["one"].plugin.as_ref().unwrap().manifest.version, Version::new(2, 0, 0));
        assert_eq!(r.plugins["one"].reload_error.as_deref(), Some("broken"));
        let dir = v1.dir().to_path_buf();
        drop(v1);
        assert!(!dir.exists(), "the old version's snapshot goes with its last holder");

        assert!(r.remove(&root.path().join("one")).is_some());
        r.resolve(ctx(&policy, &secrets));
        assert_eq!(state(&r, "user"), (PluginState::Unresolved, "dependency 'one' is not installed".into()));
    }
}
