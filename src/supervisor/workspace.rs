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

/// Workspace gids are `uid_base - GID_OFFSET + n`, below the per-slot uids.
const GID_OFFSET: u32 = 1_000_000;
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

/// Creates the plugin's workspace if needed and measures it.
pub fn prepare(root: &Path, plugin: &str, uid_base: u32, size: u64) -> std::io::Result<Workspace> {
    let path = root.join(plugin);
    let gid = {
        let _guard = ALLOCATION.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::metadata(&path) {
            Ok(meta) => meta.gid(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(root, &path, uid_base - GID_OFFSET)?,
            Err(e) => return Err(e),
        }
    };
    let used_bytes = usage(&path);
    Ok(Workspace { path, gid, used_bytes, read_only: used_bytes >= size })
}

fn create(root: &Path, path: &Path, gid_base: u32) -> std::io::Result<u32> {
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))?;
    let taken: Vec<u32> =
        std::fs::read_dir(root)?.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.gid()).collect();
    let gid = (gid_base..gid_base + GID_OFFSET)
        .find(|g| !taken.contains(g))
        .ok_or_else(|| std::io::Error::other("no free workspace gid"))?;
    std::fs::create_dir(path)?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o2770))?;
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
        assert_eq!(prepare(&ws, "alpha", 2_000_000_000, 1 << 20).unwrap().gid, a.gid, "stable across executions");
        let meta = std::fs::metadata(&a.path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2770);
        assert_eq!((meta.uid(), meta.gid()), (0, a.gid));

        std::fs::write(a.path.join("big"), vec![1u8; 64 * 1024]).unwrap();
        let full = prepare(&ws, "alpha", 2_000_000_000, 32 * 1024).unwrap();
        assert!(full.used_bytes >= 64 * 1024 && full.read_only);
    }
}
