//! A fresh root filesystem for every runner, built the way bubblewrap builds one: a tmpfs that
//! holds only what plugins need, read-only, then `pivot_root` into it and the host's root
//! detached. The host's `/home`, `/root`, `/tmp`, `/var`, `/sys`, the daemon's state and the
//! rest are not hidden by a rule: they are absent. Landlock stays as the second wall.
//!
//! Two steps, so a pre-started runner does the plugin-independent part ahead:
//! - [`prepare`] (before the spec): a staging tmpfs becomes the root with the host's root
//!   reachable under [`OLD_ROOT`]; the new root is laid out beneath it: system directories
//!   bound read-only, a few `/etc` files, a minimal `/dev`, a fresh `/proc`.
//! - [`enter`] (with the spec): the plugin folder, the workspace, the granted paths, the
//!   execution's `passwd`/`group` and a private, size-capped `/tmp`; then the new root is made
//!   read-only, becomes `/`, and the host's root and the staging tmpfs are detached.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;

use ironclaw_protocol::{CA_BUNDLE, SYSTEM_DIRS, WORKSPACE_MOUNT};

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("failed to {action} {path}")]
    Step {
        action: &'static str,
        path: String,
        #[source]
        err: nix::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: String,
        #[source]
        err: std::io::Error,
    },
    #[error("the granted path {0} is not absolute or not normal")]
    GrantPath(PathBuf),
}

/// Where the plugin folder appears inside the sandbox, read-only. Its parents are world
/// traversable, so interpreters that make paths absolute (python3 main.py) still reach it
/// after the uid drop, wherever the folder lies on the host (even under a 0700 home).
pub const PLUGIN_MOUNT: &str = "/run/ironclaw/plugin";
/// Where the host's root stays reachable while the new root is put together.
pub const OLD_ROOT: &str = "/oldroot";
/// The new root, under the staging root, until it becomes `/`.
const NEW_ROOT: &str = "/newroot";
/// Where the staging tmpfs is mounted before it becomes the root: any directory of the host
/// does, since the host's copy of it stays reachable under [`OLD_ROOT`].
const STAGING: &str = "/tmp";

/// Host files of `/etc` a runtime reads, copied into the new root: the loader's cache, OpenSSL's
/// configuration. (A copy costs less than a bind mount, and is the host's as of the runner's
/// start.)
const ETC_COPIED: &[&str] = &["/etc/ld.so.cache", "/etc/ssl/openssl.cnf"];
/// What `/etc` holds from the host beyond the copies: the time zone (a symlink into `/usr`) and
/// TLS trust (the certificate directory only: never `/etc/ssl/private`).
const ETC_FROM_HOST: &[&str] = &["/etc/localtime", "/etc/ssl/certs"];
/// The device nodes a plugin gets, bound from the host's.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

fn step(action: &'static str, path: impl AsRef<Path>) -> impl FnOnce(nix::Error) -> RootError {
    let path = path.as_ref().display().to_string();
    move |err| RootError::Step { action, path, err }
}

/// `path` under `root` (`/newroot` + `/usr` = `/newroot/usr`).
fn under(root: &str, path: &Path) -> PathBuf {
    Path::new(root).join(path.strip_prefix("/").unwrap_or(path))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootError> {
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(err) => Err(step("create", path)(err)),
    }
}

/// Creates every missing directory of `path` (0755, root's).
fn mkdir_all(path: &Path) -> Result<(), RootError> {
    let mut at = PathBuf::new();
    for component in path.components() {
        at.push(component);
        if !at.exists() {
            mkdir(&at, 0o755)?;
        }
    }
    Ok(())
}

/// Bind-mounts `source` on `target` (which must exist), then remounts it with `flags`: the
/// bind flags of the second call are what actually apply.
fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), RootError> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(step("bind", target))?;
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags;
    mount(None::<&str>, target, None::<&str>, remount, None::<&str>).map_err(step("remount", target))
}

/// An empty file or directory at `target` to bind `source_is_dir`'s kind onto.
fn mount_point(target: &Path, directory: bool) -> Result<(), RootError> {
    if let Some(parent) = target.parent() {
        mkdir_all(parent)?;
    }
    if directory {
        mkdir(target, 0o755)
    } else if target.exists() {
        Ok(())
    } else {
        File::create(target).map(drop).map_err(|err| RootError::Write { path: target.display().to_string(), err })
    }
}

const READ_ONLY: MsFlags = MsFlags::MS_RDONLY.union(MsFlags::MS_NOSUID).union(MsFlags::MS_NODEV);

/// Recreates host `path` in the new root: the same symlink, or the same file or directory
/// bound read-only. Paths the host lacks are skipped.
fn from_host(path: &str) -> Result<(), RootError> {
    let host = under(OLD_ROOT, Path::new(path));
    let target = under(NEW_ROOT, Path::new(path));
    let Ok(meta) = std::fs::symlink_metadata(&host) else { return Ok(()) };
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(&host).map_err(|err| RootError::Write { path: path.into(), err })?;
        if let Some(parent) = target.parent() {
            mkdir_all(parent)?;
        }
        return nix::unistd::symlinkat(&link, nix::fcntl::AT_FDCWD, &target).map_err(step("link", &target));
    }
    mount_point(&target, meta.is_dir())?;
    bind(&host, &target, READ_ONLY)
}

/// The plugin-independent part: run once the runner is in its own mount and pid namespaces.
pub fn prepare() -> Result<(), RootError> {
    // The staging tmpfs becomes the root; the host's root stays under OLD_ROOT.
    let tmpfs = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tmpfs"), STAGING, Some("tmpfs"), tmpfs, Some("mode=0755,size=64k,nr_inodes=16"))
        .map_err(step("mount the staging tmpfs on", STAGING))?;
    mkdir(&under(STAGING, Path::new(OLD_ROOT)), 0o700)?;
    mkdir(&under(STAGING, Path::new(NEW_ROOT)), 0o755)?;
    nix::unistd::pivot_root(STAGING, &under(STAGING, Path::new(OLD_ROOT))).map_err(step("pivot into", STAGING))?;
    nix::unistd::chdir("/").map_err(step("enter", "/"))?;

    // The new root's own filesystem: directories and mount points only, read-only at the end.
    mount(Some("tmpfs"), NEW_ROOT, Some("tmpfs"), tmpfs, Some("mode=0755,size=4m,nr_inodes=256"))
        .map_err(step("mount the new root on", NEW_ROOT))?;
    for dir in SYSTEM_DIRS.iter().chain(ETC_FROM_HOST) {
        from_host(dir)?;
    }
    for file in ETC_COPIED {
        let target = under(NEW_ROOT, Path::new(file));
        if let Some(parent) = target.parent() {
            mkdir_all(parent)?;
        }
        match std::fs::copy(under(OLD_ROOT, Path::new(file)), &target) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(RootError::Write { path: file.to_string(), err }),
        }
    }

    let dev = under(NEW_ROOT, Path::new("/dev"));
    mkdir(&dev, 0o755)?;
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &dev, Some("tmpfs"), dev_flags, Some("mode=0755,size=16k,nr_inodes=32"))
        .map_err(step("mount", &dev))?;
    // Each node bound from the host's (no remount: a device node has nothing to run or set).
    for device in DEVICES {
        let target = dev.join(device);
        mount_point(&target, false)?;
        let source = under(OLD_ROOT, &Path::new("/dev").join(device));
        mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(step("bind", &target))?;
    }
    for (name, link) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")]
        .into_iter()
        .chain([("stderr", "/proc/self/fd/2")])
    {
        nix::unistd::symlinkat(link, nix::fcntl::AT_FDCWD, &dev.join(name)).map_err(step("link", dev.join(name)))?;
    }

    // A procfs of the runner's own pid namespace: the plugin sees only its own processes.
    let proc = under(NEW_ROOT, Path::new("/proc"));
    mkdir(&proc, 0o555)?;
    // Only the process directories (`subset=pid`): no /proc/sys, /proc/kcore or the like.
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc, Some("proc"), proc_flags, Some("subset=pid")).map_err(step("mount", &proc))?;

    for dir in ["/tmp", "/etc", PLUGIN_MOUNT, WORKSPACE_MOUNT] {
        mkdir_all(&under(NEW_ROOT, Path::new(dir)))?;
    }
    Ok(())
}

/// What one execution's root holds beyond the prepared part.
pub struct Execution<'a> {
    pub plugin_dir: &'a Path,
    /// The workspace's block device (its size-capped filesystem) and whether it is read-only
    /// (full).
    pub workspace: Option<(&'a Path, bool)>,
    pub read: &'a [PathBuf],
    pub write: &'a [PathBuf],
    pub uid: u32,
    pub gid: u32,
    /// The size of the private `/tmp`, in bytes (its pages count as the execution's memory).
    pub tmp_size: u64,
    /// A trust bundle to bind over the system one (the host's with the admin's authorities).
    pub ca_bundle: Option<&'a Path>,
}

/// Opens host `path` under the old root as the host would resolve it (its symlinks stay inside
/// the host's root), for binding through its descriptor.
fn open_host(old_root: &OwnedFd, path: &Path) -> Result<Option<OwnedFd>, RootError> {
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    match openat2(old_root, path, how) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(err) => Err(step("open", path)(err)),
    }
}

/// Binds the host object behind `fd` at `path` of the new root.
fn bind_host(fd: &OwnedFd, path: &Path, flags: MsFlags) -> Result<(), RootError> {
    let directory = nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    let target = under(NEW_ROOT, path);
    mount_point(&target, directory)?;
    // The fresh procfs of the new root is the one this (staging) root can reach.
    let source = under(NEW_ROOT, Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())));
    bind(&source, &target, flags)
}

/// Mounts the workspace's filesystem from its block device (the one the daemon has mounted,
/// so the kernel shares it: the same files, the same size cap). Read-only when full, per mount.
fn mount_workspace(device: &OwnedFd, read_only: bool) -> Result<(), RootError> {
    let target = under(NEW_ROOT, Path::new(WORKSPACE_MOUNT));
    let source = under(NEW_ROOT, Path::new(&format!("/proc/self/fd/{}", device.as_raw_fd())));
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some(&source), &target, Some("ext4"), flags, None::<&str>)
        .map_err(step("mount the workspace on", &target))?;
    if read_only {
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags;
        mount(None::<&str>, &target, None::<&str>, remount, None::<&str>).map_err(step("make read-only", &target))?;
    }
    Ok(())
}

/// A granted path must name something below `/`, without `.` or `..`: a grant of `/` itself
/// would put the host's root over the sandbox's.
fn normal_absolute(path: &Path) -> Result<&Path, RootError> {
    let normal = path.is_absolute()
        && path.components().count() > 1
        && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if normal { Ok(path) } else { Err(RootError::GrantPath(path.to_path_buf())) }
}

/// Completes the root for one execution and makes it `/`.
pub fn enter(execution: Execution) -> Result<(), RootError> {
    let old_root = open(OLD_ROOT, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(step("open", OLD_ROOT))?;
    let open_required = |path: &Path| {
        open_host(&old_root, path)?.ok_or(RootError::Step {
            action: "find",
            path: path.display().to_string(),
            err: nix::errno::Errno::ENOENT,
        })
    };

    // The plugin folder read-only; the workspace writable unless full, never executable.
    bind_host(&open_required(execution.plugin_dir)?, Path::new(PLUGIN_MOUNT), READ_ONLY)?;
    if let Some((device, read_only)) = execution.workspace {
        mount_workspace(&open_required(device)?, read_only)?;
    }
    // A private /tmp whose pages are memory: capped at the memory limit, counted against it.
    // Before the grants, which may lie under /tmp.
    let tmp = under(NEW_ROOT, Path::new("/tmp"));
    let tmp_options = format!("mode=1777,size={},nr_inodes=4096", execution.tmp_size.max(4096));
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(tmp_options.as_str()),
    )
    .map_err(step("mount", &tmp))?;

    // Granted paths at their own names; those the host lacks are skipped, as Landlock does.
    let writable = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let grants = execution.read.iter().map(|p| (p, READ_ONLY)).chain(execution.write.iter().map(|p| (p, writable)));
    for (path, flags) in grants {
        if let Some(fd) = open_host(&old_root, normal_absolute(path)?)? {
            bind_host(&fd, path, flags)?;
        }
    }
    if let Some(bundle) = execution.ca_bundle {
        bind_host(&open_required(bundle)?, Path::new(CA_BUNDLE), READ_ONLY)?;
    }
    drop(old_root);

    // Who the execution is, for runtimes that look their user up; nothing of the host's.
    let (uid, gid) = (execution.uid, execution.gid);
    write_file(
        "/etc/passwd",
        &format!(
            "root:x:0:0::/:/usr/sbin/nologin\nplugin:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    write_file("/etc/group", &format!("root:x:0:\nplugin:x:{gid}:\nnogroup:x:65534:\n"))?;
    write_file("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n")?;

    // The new root read-only, then `/`; the host's root and the staging tmpfs go away.
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, NEW_ROOT, None::<&str>, remount, None::<&str>).map_err(step("make read-only", NEW_ROOT))?;
    nix::unistd::chdir(NEW_ROOT).map_err(step("enter", NEW_ROOT))?;
    // The staging root ends up stacked on the new one; detaching it detaches the host's root
    // beneath it too, in one lazy unmount (each unmount waits for an RCU grace period).
    nix::unistd::pivot_root(".", ".").map_err(step("pivot into", NEW_ROOT))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detach", "the staging root and the host's"))?;
    nix::unistd::chdir("/").map_err(step("enter", "/"))
}

/// Writes one generated file of the new root's `/etc` (before the root is made read-only).
fn write_file(path: &str, content: &str) -> Result<(), RootError> {
    let target = under(NEW_ROOT, Path::new(path));
    File::create(&target)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|err| RootError::Write { path: path.into(), err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_paths_must_name_something_below_the_root() {
        for good in ["/data", "/srv/app/files"] {
            assert!(normal_absolute(Path::new(good)).is_ok(), "{good}");
        }
        for bad in ["/", "data", "/a/../b", ""] {
            assert!(matches!(normal_absolute(Path::new(bad)), Err(RootError::GrantPath(_))), "{bad}");
        }
    }
}
