//! New pid, net, mount, ipc and uts namespaces for the runner.
//!
//! `unshare(CLONE_NEWPID)` only moves the caller's future children, so the runner forks: the
//! **outer** runner stays in the daemon's namespaces and only waits, mirroring the confined
//! child's exit; the **inner** runner is pid 1 of the new pid namespace and goes on to confine
//! itself. When pid 1 of a namespace dies, the kernel kills everything else in it, so killing
//! the inner runner removes the plugin's whole process tree.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::sys;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("failed to unshare namespaces")]
    Unshare(#[source] nix::Error),
    #[error("failed to fork the confined runner")]
    Fork(#[source] io::Error),
    #[error("failed to create the start-up pipe")]
    Pipe(#[source] nix::Error),
    #[error("the outer runner went away before the confined runner started")]
    OuterGone,
    #[error("failed to make mount propagation private")]
    PrivateMounts(#[source] nix::Error),
    #[error("failed to mount a fresh /proc")]
    Proc(#[source] nix::Error),
    #[error("failed to bring up loopback")]
    Loopback(#[source] io::Error),
    #[error("failed to set the hostname")]
    Hostname(#[source] nix::Error),
    #[error("failed to expose the plugin folder at {PLUGIN_MOUNT}")]
    PluginMount(#[source] nix::Error),
}

/// Where the plugin folder appears inside the sandbox, read-only. Its parents are world
/// traversable, so interpreters that make paths absolute (python3 main.py) still reach it
/// after the uid drop, wherever the folder lies on the host (even under a 0700 home).
pub const PLUGIN_MOUNT: &str = "/run/ironclaw/plugin";

pub const HOSTNAME: &str = "ironclaw-sandbox";

/// The inner runner's end of the start-up pipe: readable once the outer runner says go, and
/// hung up once the outer runner exits.
pub struct OuterLink(OwnedFd);

impl OuterLink {
    /// True while the outer runner is alive (its end of the pipe is still open).
    pub fn outer_alive(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => !fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }
}

/// Enters the new namespaces and forks. Returns only in the inner runner; the outer runner calls
/// `announce(inner_pid)` and then waits for the inner runner, exiting as it exits.
pub fn enter(announce: impl FnOnce(i32)) -> Result<OuterLink, NamespaceError> {
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    unshare(flags).map_err(NamespaceError::Unshare)?;
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(NamespaceError::Pipe)?;
    match sys::fork().map_err(NamespaceError::Fork)? {
        ForkResult::Parent { child } => {
            drop(go_read);
            announce(child.as_raw());
            // The inner runner may proceed only after the announcement, which must be the first
            // frame the daemon reads from this runner.
            let _ = nix::unistd::write(&go_write, b"g");
            mirror_exit(child, go_write)
        }
        ForkResult::Child => {
            drop(go_write);
            let mut byte = [0u8; 1];
            match nix::unistd::read(&go_read, &mut byte) {
                Ok(1) => Ok(OuterLink(go_read)),
                _ => Err(NamespaceError::OuterGone),
            }
        }
    }
}

/// The outer runner's whole remaining life: wait for the inner runner and exit the same way, so
/// the daemon's wait4 sees the plugin's real status and resource usage.
fn mirror_exit(child: Pid, keep_pipe_open: OwnedFd) -> ! {
    // Keep only the pipe: while it is open, the inner runner knows we are alive.
    let _ = sys::close_fds_except(keep_pipe_open.as_raw_fd());
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => sys::die_by_signal(signal),
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => sys::die_by_signal(Signal::SIGKILL),
        }
    }
}

/// Mount, network and host-name set-up inside the new namespaces (needs CAP_SYS_ADMIN).
pub fn populate() -> Result<(), NamespaceError> {
    // Nothing mounted here may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(NamespaceError::PrivateMounts)?;
    // A procfs of the new pid namespace: the plugin sees only its own processes.
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        proc_flags,
        None::<&str>,
    )
    .map_err(NamespaceError::Proc)?;
    sys::loopback_up().map_err(NamespaceError::Loopback)?;
    nix::unistd::sethostname(HOSTNAME).map_err(NamespaceError::Hostname)?;
    Ok(())
}

/// Mounts a fresh tmpfs over `/run` (hiding the host's runtime sockets: D-Bus, systemd, the
/// daemon's own API) and binds the plugin folder read-only at [`PLUGIN_MOUNT`].
pub fn mount_plugin_dir(plugin_dir: &std::path::Path) -> Result<(), NamespaceError> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        hardened | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k,nr_inodes=64"),
    )
    .map_err(NamespaceError::PluginMount)?;
    nix::unistd::mkdir(
        "/run/ironclaw",
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .and_then(|()| {
        nix::unistd::mkdir(
            PLUGIN_MOUNT,
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
    })
    .map_err(NamespaceError::PluginMount)?;
    mount(
        Some(plugin_dir),
        PLUGIN_MOUNT,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(NamespaceError::PluginMount)?;
    let read_only = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | hardened;
    mount(
        None::<&str>,
        PLUGIN_MOUNT,
        None::<&str>,
        read_only,
        None::<&str>,
    )
    .map_err(NamespaceError::PluginMount)?;
    Ok(())
}
