//! Per-plugin workspaces: `<state_dir>/workspaces/<plugin>`, the one place a plugin granted a
//! workspace may write, mounted at `/run/ironclaw/workspace` in its sandbox.
//!
//! Executions run under per-slot uids (so RLIMIT_NPROC is per execution), so a workspace
//! belongs to a per-plugin **group**: root-owned, mode 2770 with the plugin's gid, which every
//! execution of that plugin runs as. New files inherit the group (setgid directory) and the
//! runner's umask (007) keeps them group-writable, so the next execution, whatever its uid, can
//! use them. Other plugins' runners share neither the gid nor, under Landlock, the path.
//!
//! Size: each workspace is an ext4 filesystem of its own, in a sparse image
//! `<plugin>.img` beside the directory, so the kernel holds the size while the plugin writes
//! (`ENOSPC`, for blocks and inodes alike), however many files it makes. The daemon mounts each
//! image once, on the directory, in its own mount namespace (see `daemon::private_mounts`): the
//! mount and its loop device go away with the daemon, crash or not. Each runner mounts the same
//! loop device in its namespace, sharing that filesystem. A directory left by an earlier
//! version is copied into a new image on first use, then removed.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::files::unless_missing;
use crate::id_range::{RANGE_SIZE, WORKSPACE_GIDS};

/// The smallest image mkfs.ext4 makes with room for files: a smaller workspace still gets this
/// much, and is made read-only once its contents reach its own size.
const MIN_IMAGE: u64 = 256 * 1024;
/// Where the tools the images need are looked up (the daemon's own PATH may be anything).
const TOOLS_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct Workspace {
    pub path: PathBuf,
    /// The loop device holding the workspace's filesystem, which the runner mounts.
    pub device: PathBuf,
    pub gid: u32,
    pub used_bytes: u64,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("failed to prepare the workspace {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("failed to {action} the workspace image {image}: {detail}")]
    Image { action: &'static str, image: PathBuf, detail: String },
    #[error("the task preparing the workspace failed")]
    TaskFailed,
}

/// Every plugin's workspace under one directory, and which images this daemon has mounted.
pub struct Workspaces {
    root: PathBuf,
    uid_base: u32,
    /// Plugin name to the size of its mounted image. Also serialises gid allocation and image
    /// set-up between concurrent first executions.
    mounted: Mutex<HashMap<String, Mounted>>,
}

struct Mounted {
    image_size: u64,
    /// The largest size growth was tried to: a failed online growth is not retried until the
    /// size grows again.
    grow_tried_at: u64,
    device: PathBuf,
}

impl Workspaces {
    pub fn new(root: PathBuf, uid_base: u32) -> Self {
        Workspaces { root, uid_base, mounted: Mutex::new(HashMap::new()) }
    }

    /// The plugin's workspace, `size` bytes, created, migrated, mounted or grown as needed,
    /// and measured.
    pub fn prepare(&self, plugin: &str, size: u64) -> Result<Workspace, WorkspaceError> {
        let path = self.root.join(plugin);
        let io = |e| WorkspaceError::Io(path.clone(), e);
        let mut mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = size.max(MIN_IMAGE);
        let device = match mounted.get(plugin) {
            Some(m) if m.image_size >= wanted => m.device.clone(),
            Some(m) if m.grow_tried_at >= wanted => m.device.clone(),
            Some(m) => {
                let device = m.device.clone();
                let image_size = grow_online(&self.image(plugin), &device, wanted)?;
                mounted
                    .insert(plugin.to_string(), Mounted { image_size, grow_tried_at: wanted, device: device.clone() });
                device
            }
            None => {
                let (image_size, device) = self.mount(plugin, wanted)?;
                mounted
                    .insert(plugin.to_string(), Mounted { image_size, grow_tried_at: wanted, device: device.clone() });
                device
            }
        };
        let gids = self.uid_base + WORKSPACE_GIDS..self.uid_base + RANGE_SIZE;
        let meta = std::fs::metadata(&path).map_err(io)?;
        let gid = if gids.contains(&meta.gid()) {
            meta.gid()
        } else {
            // A new image (root's), or one made under another id range: its group may be
            // someone else's now.
            rehome(&self.root, &path, gids).map_err(io)?
        };
        let stats = nix::sys::statvfs::statvfs(&path).map_err(|e| io(e.into()))?;
        let used_bytes = (stats.blocks() - stats.blocks_free()) * stats.fragment_size();
        Ok(Workspace { path, device, gid, used_bytes, read_only: used_bytes >= size })
    }

    fn image(&self, plugin: &str) -> PathBuf {
        self.root.join(format!("{plugin}.img"))
    }

    /// Mounts the plugin's image on its directory, making it first (from the directory's
    /// contents, if an earlier version left them there), or resizing it to `wanted` while no
    /// execution has it. Returns the image's size and its loop device.
    fn mount(&self, plugin: &str, wanted: u64) -> Result<(u64, PathBuf), WorkspaceError> {
        let (path, image) = (self.root.join(plugin), self.image(plugin));
        let io = |e| WorkspaceError::Io(path.clone(), e);
        std::fs::create_dir_all(&self.root).map_err(io)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o711)).map_err(io)?;
        let migrating = self.root.join(format!("{plugin}.migrating"));
        if migrating.exists() {
            // A migration the daemon did not finish: the directory is still whole there.
            unless_missing(std::fs::remove_file(&image)).map_err(io)?;
            unless_missing(std::fs::remove_dir(&path)).map_err(io)?;
            std::fs::rename(&migrating, &path).map_err(io)?;
        }
        let image_size = if image.exists() {
            resize_offline(&image, wanted)?
        } else {
            make_image(&image, wanted)?;
            if path.exists() {
                return self.migrate(&path, &image, &migrating).map(|device| (wanted, device));
            }
            wanted
        };
        if !path.exists() {
            std::fs::create_dir(&path).map_err(io)?;
            std::os::unix::fs::chown(&path, Some(0), Some(0)).map_err(io)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok((image_size, mount_image(&image, &path)?))
    }

    /// Copies an earlier version's workspace directory into its new image: the directory
    /// moves aside, the image is mounted in its place and filled, then the old copy goes. If
    /// the copy fails (more than fits), the directory comes back as it was.
    fn migrate(&self, path: &Path, image: &Path, migrating: &Path) -> Result<PathBuf, WorkspaceError> {
        let io = |e| WorkspaceError::Io(path.to_path_buf(), e);
        std::fs::rename(path, migrating).map_err(io)?;
        let copied = std::fs::create_dir(path).map_err(io).and_then(|()| mount_image(image, path)).and_then(|device| {
            let source = migrating.join(".");
            run(Command::new("cp").arg("-a").arg("--sparse=always").arg(&source).arg(path), "fill", image)
                .map(|_| device)
        });
        match copied {
            Ok(device) => {
                std::fs::remove_dir_all(migrating).map_err(io)?;
                tracing::info!(workspace = %path.display(), "workspace moved into its size-capped image");
                Ok(device)
            }
            Err(e) => {
                let _ = run(Command::new("umount").arg(path), "unmount", image);
                let _ = std::fs::remove_dir(path);
                let _ = std::fs::remove_file(image);
                std::fs::rename(migrating, path).map_err(io)?;
                Err(e)
            }
        }
    }
}

/// Whether this host can hold workspaces as images: loop devices and the tools.
pub fn probe() -> Result<(), String> {
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices (/dev/loop-control is absent: modprobe loop)".into());
    }
    let missing: Vec<&str> = ["mkfs.ext4", "e2fsck", "resize2fs", "losetup", "mount", "umount", "findmnt", "cp"]
        .into_iter()
        .filter(|tool| !TOOLS_PATH.split(':').any(|dir| Path::new(dir).join(tool).exists()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {} (e2fsprogs, util-linux, coreutils) in {TOOLS_PATH}", missing.join(", ")))
    }
}

/// Runs one of the image tools; its error output becomes the error.
fn run(command: &mut Command, action: &'static str, image: &Path) -> Result<String, WorkspaceError> {
    let failed = |detail: String| WorkspaceError::Image { action, image: image.to_path_buf(), detail };
    let output = command.env_clear().env("PATH", TOOLS_PATH).output().map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{} ({})", stderr.trim(), output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A sparse image of `size` bytes holding an empty ext4 filesystem, with no blocks reserved for
/// root (plugins never are).
fn make_image(image: &Path, size: u64) -> Result<(), WorkspaceError> {
    let io = |e| WorkspaceError::Io(image.to_path_buf(), e);
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(image).map_err(io)?;
    file.set_len(size).map_err(io)?;
    drop(file);
    let made = run(
        Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0", "-E", "nodiscard,root_owner=0:0"]).arg(image),
        "make",
        image,
    );
    if made.is_err() {
        let _ = std::fs::remove_file(image);
    }
    made.map(drop)
}

/// Mounts `image` on `path` (through a loop device that goes away with the mount) and
/// returns the device.
fn mount_image(image: &Path, path: &Path) -> Result<PathBuf, WorkspaceError> {
    run(
        Command::new("mount").args(["-t", "ext4", "-o", "loop,nosuid,nodev,noexec"]).arg(image).arg(path),
        "mount",
        image,
    )?;
    let device = run(Command::new("findmnt").args(["-n", "-o", "SOURCE", "--mountpoint"]).arg(path), "find", image)?;
    // mkfs's (or e2fsck's) lost+found would be root's alone in the plugin's directory: gone,
    // unless it holds what a check recovered.
    let _ = std::fs::remove_dir(path.join("lost+found"));
    Ok(PathBuf::from(device))
}

/// Brings an unmounted image's filesystem to `wanted` bytes, checking it first (resize2fs
/// works on a checked filesystem only). A shrink that its contents do not allow leaves it as it
/// is: the workspace is then read-only while over its size. Returns the image's size.
fn resize_offline(image: &Path, wanted: u64) -> Result<u64, WorkspaceError> {
    let current = std::fs::metadata(image).map_err(|e| WorkspaceError::Io(image.to_path_buf(), e))?.len();
    if current == wanted {
        return Ok(current);
    }
    if wanted > current {
        set_len(image, wanted)?;
    }
    // `-y`, not `-p`: a full filesystem without lost+found must not stop the check. Exit status
    // 1: errors were found and corrected.
    let checked = Command::new("e2fsck").args(["-f", "-y"]).arg(image).env_clear().env("PATH", TOOLS_PATH).output();
    let failed = |detail: String| WorkspaceError::Image { action: "check", image: image.to_path_buf(), detail };
    match checked {
        Ok(out) if matches!(out.status.code(), Some(0 | 1)) => {}
        Ok(out) => return Err(failed(format!("{} ({})", String::from_utf8_lossy(&out.stdout).trim(), out.status))),
        Err(e) => return Err(failed(e.to_string())),
    }
    match run(Command::new("resize2fs").arg(image).arg(format!("{}K", wanted / 1024)), "resize", image) {
        Ok(_) => {
            set_len(image, wanted)?;
            Ok(wanted)
        }
        Err(e) if wanted < current => {
            let error = ironclaw_protocol::error_chain(&e);
            tracing::warn!(image = %image.display(), %error, "the workspace holds more than its new size: it keeps its old size, read-only while over");
            Ok(current)
        }
        Err(e) => Err(e),
    }
}

/// Grows a mounted image to `wanted` bytes: the file, then the loop device, then ext4, online.
/// That needs CAP_SYS_RESOURCE; without it, or if it fails, the image is left as it was and
/// grows at its next mount (the daemon's next start). Returns the image's size.
fn grow_online(image: &Path, device: &Path, wanted: u64) -> Result<u64, WorkspaceError> {
    let before = std::fs::metadata(image).map_err(|e| WorkspaceError::Io(image.to_path_buf(), e))?.len();
    let grown = if caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap_or(false) {
        set_len(image, wanted)
            .and_then(|()| run(Command::new("losetup").arg("--set-capacity").arg(device), "grow", image))
            .and_then(|_| run(Command::new("resize2fs").arg(device), "grow", image))
    } else {
        Err(WorkspaceError::Image {
            action: "grow",
            image: image.to_path_buf(),
            detail: "online growth needs CAP_SYS_RESOURCE".into(),
        })
    };
    match grown {
        Ok(_) => Ok(wanted),
        Err(e) => {
            // The filesystem kept its size; so does the file, for the next mount to see a change.
            set_len(image, before)?;
            let error = ironclaw_protocol::error_chain(&e);
            tracing::warn!(image = %image.display(), %error, "cannot grow the mounted workspace: it keeps its size until the daemon restarts");
            Ok(before)
        }
    }
}

fn set_len(image: &Path, size: u64) -> Result<(), WorkspaceError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(size))
        .map_err(|e| WorkspaceError::Io(image.to_path_buf(), e))
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

/// Gives a workspace, and everything in it, a gid of `gids` (and its root its mode).
fn rehome(root: &Path, path: &Path, gids: std::ops::Range<u32>) -> std::io::Result<u32> {
    let gid = free_gid(root, gids)?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o2770))?;
    let mut pending: Vec<PathBuf> = std::fs::read_dir(path)?.filter_map(Result::ok).map(|e| e.path()).collect();
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
    tracing::info!(workspace = %path.display(), gid, "workspace given a group of this daemon's id range");
    Ok(gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own mount namespace, as the daemon runs (mounts made there
    /// go away with the thread, loop devices with them).
    fn in_private_mounts<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
        if !nix::unistd::geteuid().is_root() {
            assert_eq!(
                std::env::var("IRONCLAW_TEST_SKIP_PRIVILEGED").as_deref(),
                Ok("1"),
                "workspace images need root"
            );
            eprintln!("SKIPPED: workspace images need root");
            return None;
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                let slave = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE;
                nix::mount::mount(None::<&str>, "/", None::<&str>, slave, None::<&str>).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
        .into()
    }

    #[test]
    fn workspaces_are_size_capped_filesystems_with_distinct_stable_groups() {
        in_private_mounts(|| {
            let root = tempfile::tempdir().unwrap();
            let ws = Workspaces::new(root.path().join("workspaces"), 2_000_000_000);
            let a = ws.prepare("alpha", 1 << 20).unwrap();
            let b = ws.prepare("beta", 1 << 20).unwrap();
            assert_ne!(a.gid, b.gid);
            assert!((2_000_032_768..2_000_065_536).contains(&a.gid), "{}", a.gid);
            assert_eq!(ws.prepare("alpha", 1 << 20).unwrap().gid, a.gid, "stable across executions");
            let meta = std::fs::metadata(&a.path).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o2770);
            assert_eq!((meta.uid(), meta.gid()), (0, a.gid));
            assert!(a.device.to_string_lossy().starts_with("/dev/loop"), "{}", a.device.display());
            assert!(std::fs::read_dir(&a.path).unwrap().next().is_none(), "empty, no lost+found");

            // The filesystem holds the size, whatever the writer.
            let written = (0..2048).try_for_each(|i| std::fs::write(a.path.join(format!("f{i}")), vec![1u8; 4096]));
            assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
            let full = ws.prepare("alpha", 1 << 20).unwrap();
            assert!(full.used_bytes <= 1 << 20, "{}", full.used_bytes);

            // A larger size grows the image, contents kept: online where the daemon may
            // (CAP_SYS_RESOURCE), else at its next mount.
            let grown = ws.prepare("alpha", 4 << 20).unwrap();
            assert!(!grown.read_only && std::fs::metadata(a.path.join("f0")).unwrap().len() == 4096);
            let online = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap();
            let capacity = || {
                let stats = nix::sys::statvfs::statvfs(&a.path).unwrap();
                stats.blocks() * stats.fragment_size()
            };
            assert_eq!(capacity() > 3 << 20, online, "{}", capacity());
            nix::mount::umount(&a.path).unwrap();
            let remounted = Workspaces::new(root.path().join("workspaces"), 2_000_000_000);
            let again = remounted.prepare("alpha", 4 << 20).unwrap();
            assert_eq!(again.gid, a.gid);
            assert!(capacity() > 3 << 20, "{}", capacity());
            assert_eq!(std::fs::read(a.path.join("f0")).unwrap(), vec![1u8; 4096]);

            // A smaller size that the contents do not allow keeps the image whole, read-only.
            nix::mount::umount(&a.path).unwrap();
            let shrunk = Workspaces::new(root.path().join("workspaces"), 2_000_000_000).prepare("alpha", 256 << 10);
            let shrunk = shrunk.unwrap();
            assert!(shrunk.read_only && shrunk.used_bytes > 256 << 10, "{}", shrunk.used_bytes);
            assert_eq!(std::fs::read(a.path.join("f0")).unwrap(), vec![1u8; 4096]);
        });
    }

    #[test]
    fn a_directory_from_an_earlier_version_moves_into_its_image_or_stays_whole() {
        in_private_mounts(|| {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("workspaces");
            std::fs::create_dir_all(dir.join("old/sub")).unwrap();
            std::fs::write(dir.join("old/sub/note.txt"), "kept").unwrap();
            std::os::unix::fs::symlink("sub/note.txt", dir.join("old/link")).unwrap();
            std::fs::create_dir_all(dir.join("huge")).unwrap();
            std::fs::write(dir.join("huge/big"), vec![7u8; 2 << 20]).unwrap();

            let ws = Workspaces::new(dir.clone(), 2_000_000_000);
            let old = ws.prepare("old", 1 << 20).unwrap();
            assert_eq!(std::fs::read_to_string(old.path.join("sub/note.txt")).unwrap(), "kept");
            assert_eq!(std::fs::read_link(old.path.join("link")).unwrap(), Path::new("sub/note.txt"));
            assert!(!dir.join("old.migrating").exists());

            // More than fits: refused, and the directory is left exactly as it was.
            let err = ws.prepare("huge", 1 << 20).unwrap_err().to_string();
            assert!(err.contains("failed to fill the workspace image"), "{err}");
            assert_eq!(std::fs::metadata(dir.join("huge/big")).unwrap().len(), 2 << 20);
            assert!(!dir.join("huge.img").exists() && !dir.join("huge.migrating").exists());
        });
    }
}
