//! Watches the plugins and policies directories with inotify and reloads what changed, once
//! the changes have been quiet for the debounce period (a `cp` or a cargo build writes in many
//! pieces; the snapshot and the trial load catch what the debounce does not).
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use crate::supervisor::Supervisor;
use crate::supervisor::reload::ReloadCause;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("failed to start inotify")]
    Init(#[source] std::io::Error),
    #[error("failed to watch {0}")]
    Watch(PathBuf, #[source] std::io::Error),
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// What changed since the last reload round.
#[derive(Default)]
struct Dirty {
    policies: bool,
    folders: BTreeSet<PathBuf>,
    everything: bool,
}

struct Watcher {
    watches: Watches,
    paths: HashMap<WatchDescriptor, PathBuf>,
    plugins_dir: PathBuf,
    policies_dir: PathBuf,
}

impl Watcher {
    /// Watches `dir` and every directory below it.
    fn add_tree(&mut self, dir: &Path) -> Result<(), WatchError> {
        let wd = self.watches.add(dir, mask()).map_err(|e| WatchError::Watch(dir.to_path_buf(), e))?;
        self.paths.insert(wd, dir.to_path_buf());
        for entry in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !crate::catalog::snapshot::is_scratch(&entry.file_name().to_string_lossy()) {
                // A directory that vanished in between is not an error.
                let _ = self.add_tree(&entry.path());
            }
        }
        Ok(())
    }

    fn note(&mut self, event: inotify::EventOwned, dirty: &mut Dirty) {
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            dirty.everything = true;
            return;
        }
        if event.mask.contains(EventMask::IGNORED) {
            self.paths.remove(&event.wd);
            return;
        }
        let Some(dir) = self.paths.get(&event.wd).cloned() else { return };
        let name = event.name.as_ref().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().is_some_and(crate::catalog::snapshot::is_scratch) {
            return;
        }
        let path = name.as_ref().map_or(dir.clone(), |n| dir.join(n));
        if event.mask.contains(EventMask::ISDIR) && event.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            let _ = self.add_tree(&path);
        }
        if path.starts_with(&self.policies_dir) {
            dirty.policies = true;
        } else if let Ok(rest) = path.strip_prefix(&self.plugins_dir)
            && let Some(first) = rest.components().next()
        {
            dirty.folders.insert(self.plugins_dir.join(first));
        }
    }
}

/// Runs until the daemon stops. Errors only at start (no inotify, unreadable directories).
pub async fn run(supervisor: Arc<Supervisor>, debounce: Duration) -> Result<(), WatchError> {
    let config = supervisor.config();
    let inotify = Inotify::init().map_err(WatchError::Init)?;
    let mut stream = inotify.into_event_stream([0u8; 16 * 1024]).map_err(WatchError::Init)?;
    let mut watcher = Watcher {
        watches: stream.watches(),
        paths: HashMap::new(),
        plugins_dir: config.plugins_dir.clone(),
        policies_dir: config.policies_dir.clone(),
    };
    watcher.add_tree(&config.plugins_dir.clone())?;
    let policies = config.policies_dir.clone();
    let wd = watcher.watches.add(&policies, mask()).map_err(|e| WatchError::Watch(policies.clone(), e))?;
    watcher.paths.insert(wd, policies);
    tracing::info!(plugins = %watcher.plugins_dir.display(), policies = %watcher.policies_dir.display(), ?debounce, "watching for changes");

    let mut dirty = Dirty::default();
    loop {
        // Wait for a change, then for `debounce` without one.
        let Some(Ok(event)) = stream.next().await else { return Ok(()) };
        watcher.note(event, &mut dirty);
        while let Ok(Some(Ok(event))) = tokio::time::timeout(debounce, stream.next()).await {
            watcher.note(event, &mut dirty);
        }
        let round = std::mem::take(&mut dirty);
        if round.everything {
            supervisor.reloader().reload_all(ReloadCause::WatchOverflow).await;
            continue;
        }
        if round.policies {
            supervisor.reloader().reload_policy().await;
        }
        for folder in round.folders {
            let outcome = supervisor.reloader().reload_folder(&folder).await;
            tracing::debug!(folder = %folder.display(), result = outcome.result.as_str(), "reload after a change");
        }
    }
}
