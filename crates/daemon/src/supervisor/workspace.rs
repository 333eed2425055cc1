//! Per-plugin workspaces: `<state_dir>/workspaces/<plugin>`, the one place a plugin granted a
//! workspace may write, mounted at `/run/ironclaw/workspace` in its sandbox.
//!
//! Executions run under per-slot uids (so RLIMIT_NPROC is per execution), so a workspace
//! belongs to a per-plugin **group**: root-owned, mode 2770 with the plugin's gid, which every
//! execution of that plugin runs as. New files inherit the group (setgid directory) and the
//! runner's umask (007) keeps them group-writable, so the next execution, whatever its uid, can
//! use them. Other plugins' runners share neither the gid nor, under Landlock, the path.
//!
//! Size: the host's filesystems have no quotas we can rely on, so each file is bounded by
//! RLIMIT_FSIZE and the total is measured before every execution; an execution that starts
//! with the workspace at or over its size gets it read-only.
#![forbid(unsafe_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::id_range::{RANGE_SIZE, WORKSPACE_GIDS};
/// Entries counted at most when measuring; a workspace with more counts as full.
const MAX_ENTRIES: u64 = 100_000;

/// Serialises gid allocation between concurrent first executions of different plugins.
static ALLOCATION: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone)]
pub struct Workspace {
    pub path: PathBuf,
    pub gid: u32,
    pub used_bytes: u64,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("failed to prepare the workspace")]
    Prepare(#[source] std::io::Error),
    #[error("the task preparing the workspace failed")]
    TaskFailed,
}

/// Creates the plugin's workspace if needed and measures it.
pub fn prepare(root: &Path, plugin: &str, uid_base: u32, size: u64) -> std::io::Result<Workspace> {
    let path = root.join(plugin);
    let gids = uid_base + WORKSPACE_GIDS..uid_base + RANGE_SIZE;
    let gid = {
        let _guard = ALLOCATION.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::metadata(&path) {
            Ok(meta) if gids.contains(&meta.gid()) => meta.gid(),
            // Made under another id range (an earlier daemon's): its group may be someone else's now.
            Ok(_) => rehome(root, &path, gids)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let gid = free_gid(root, gids)?;
                create(root, &path, gid)?;
                gid
            }
            Err(e) => return Err(e),
        }
    };
    let used_bytes = usage(&path);
    Ok(Workspace { path, gid, used_bytes, read_only: used_bytes >= size })
}

/// The lowest gid of `gids` no workspace under `root` has.
fn free_gid(root: &Path, gids: std::ops::Range<u32>) -> std::io::Result<u32> {
    let taken: Vec<u32> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.gid())
        .collect();
    gids.into_iter().find(|g| !taken.contains(g)).ok_or_else(|| std::io::Error::other("no free workspace gid"))
}

fn create(root: &Path, path: &Path, gid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))?;
    std::fs::create_dir(path)?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o2770))
}

/// Gives a workspace, and everything in it, a gid of `gids`.
fn rehome(root: &Path, path: &Path, gids: std::ops::Range<u32>) -> std::io::Result<u32> {
    let gid = free_gid(root, gids)?;
    let mut pending = vec![path.to_path_buf()];
    while let Some(entry) = pending.pop() {
        let meta = entry.symlink_metadata()?;
        // The group of the entry itself, never of what a symlink points to.
        std::os::unix::fs::lchown(&entry, None, Some(gid))?;
        if meta.is_dir() {
            // chown clears the set-group-id bit of directories.
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(meta.mode() & 0o7777 | 0o2000))?;
            pending.extend(std::fs::read_dir(&entry)?.filter_map(Result::ok).map(|e| e.path()));
        }
    }
    tracing::warn!(workspace = %path.display(), gid, "workspace moved to a group of this daemon's id range");
    Ok(gid)
}

/// Bytes allocated under `path` (not following symlinks).
pub fn usage(path: &Path) -> u64 {
    let mut total = 0u64;
    let mut entries = 0u64;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        for entry in read.filter_map(Result::ok) {
            entries += 1;
            if entries > MAX_ENTRIES {
                return u64::MAX;
            }
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            total = total.saturating_add(meta.blocks() * 512);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspaces_get_distinct_stable_groups() {
        let root = tempfile::tempdir().unwrap();
        let ws = root.path().join("workspaces");
        let a = prepare(&ws, "alpha", 2_000_000_000, 1 << 20).unwrap();
        let b = prepare(&ws, "beta", 2_000_000_000, 1 << 20).unwrap();
        assert_ne!(a.gid, b.gid);
        assert!((2_000_032_768..2_000_065_536).contains(&a.gid), "{}", a.gid);
        assert_eq!(prepare(&ws, "alpha", 2_000_000_000, 1 << 20).unwrap().gid, a.gid, "stable across executions");
        let meta = std::fs::metadata(&a.path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2770);
        assert_eq!((meta.uid(), meta.gid()), (0, a.gid));

        std::fs::write(a.path.join("big"), vec![1u8; 64 * 1024]).unwrap();
        let full = prepare(&ws, "alpha", 2_000_000_000, 32 * 1024).unwrap();
        assert!(full.used_bytes >= 64 * 1024 && full.read_only);

        // A daemon with another range moves the workspace, and its files, into its own groups.
        let moved = prepare(&ws, "alpha", 2_000_065_536, 1 << 20).unwrap();
        assert!((2_000_098_304..2_000_131_072).contains(&moved.gid), "{}", moved.gid);
        let meta = std::fs::metadata(&moved.path).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (moved.gid, 0o2770));
        assert_eq!(std::fs::metadata(moved.path.join("big")).unwrap().gid(), moved.gid);
    }
}
