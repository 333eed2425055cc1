//! New pid, net, mount, ipc and uts namespaces for the runner.
//!
//! `unshare(CLONE_NEWPID)` only moves the caller's future children, so the runner forks: the
//! **outer** runner stays in the daemon's namespaces and only waits, mirroring the plugin's
//! exit; the **inner** runner is pid 1 of the new pid namespace and goes on to confine itself.
//! Once confined, it forks the plugin process (pid 2) and stays as a minimal init: pid 1
//! ignores signals it has no handler for, even its own SIGABRT, which a plugin must not.
//! When pid 1 of a namespace dies, the kernel kills everything else in it, so killing the inner
//! runner removes the plugin's whole process tree.
#![forbid(unsafe_code)]

use std::io;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

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
    #[error("failed to create the link between the outer and inner runners")]
    Link(#[source] io::Error),
    #[error("the outer runner went away before the confined runner started")]
    OuterGone,
    #[error("failed to make mount propagation private")]
    PrivateMounts(#[source] nix::Error),
    #[error("failed to bring up loopback")]
    Loopback(#[source] io::Error),
    #[error("failed to set the hostname")]
    Hostname(#[source] nix::Error),
}

pub const HOSTNAME: &str = "ironclaw-sandbox";

/// The inner runner's end of its private link to the outer runner. The outer runner says "go"
/// on it once it has announced the inner pid; the inner runner's init reports the plugin's exit
/// on it; and it hangs up when the outer runner dies. No plugin process ever holds it.
pub struct OuterLink(UnixStream);

/// How the plugin process ended, as the sandbox's init saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginExit {
    Code(i32),
    Signal(i32),
}

impl PluginExit {
    fn encode(self) -> [u8; 5] {
        let (tag, n) = match self {
            PluginExit::Code(c) => (b'e', c),
            PluginExit::Signal(s) => (b's', s),
        };
        let mut out = [tag, 0, 0, 0, 0];
        out[1..].copy_from_slice(&n.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let n = i32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?);
        match bytes.first()? {
            b'e' => Some(PluginExit::Code(n)),
            b's' => Some(PluginExit::Signal(n)),
            _ => None,
        }
    }
}

impl OuterLink {
    /// True while the outer runner is alive (its end of the link is still open).
    pub fn outer_alive(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => !fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }

    /// Tells the outer runner how the plugin ended, so it can end the same way.
    pub fn report(&self, exit: PluginExit) {
        let _ = (&self.0).write_all(&exit.encode());
    }
}

/// Enters the new namespaces and forks. Returns only in the inner runner; the outer runner calls
/// `announce(inner_pid)` and then waits for the inner runner, exiting as the plugin exited.
pub fn enter(single_threaded: &sys::SingleThreaded, announce: impl FnOnce(i32)) -> Result<OuterLink, NamespaceError> {
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    unshare(flags).map_err(NamespaceError::Unshare)?;
    let (outer_end, inner_end) = UnixStream::pair().map_err(NamespaceError::Link)?;
    match sys::fork(single_threaded).map_err(NamespaceError::Fork)? {
        ForkResult::Parent { child } => {
            drop(inner_end);
            announce(child.as_raw());
            // The inner runner may proceed only after the announcement, which must be the first
            // frame the daemon reads from this runner.
            let _ = (&outer_end).write_all(b"g");
            mirror_exit(child, outer_end)
        }
        ForkResult::Child => {
            drop(outer_end);
            let mut byte = [0u8; 1];
            match (&inner_end).read(&mut byte) {
                Ok(1) => Ok(OuterLink(inner_end)),
                _ => Err(NamespaceError::OuterGone),
            }
        }
    }
}

/// The outer runner's whole remaining life: wait for the inner runner and exit the way the plugin
/// did (as reported by the sandbox's init), so the daemon's wait4 sees the plugin's real status
/// and the resource usage of the whole sandbox.
fn mirror_exit(child: Pid, link: UnixStream) -> ! {
    // Keep only the link.
    let _ = sys::close_fds_except(link.as_raw_fd());
    let inner = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break PluginExit::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => break PluginExit::Signal(signal as i32),
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => break PluginExit::Signal(Signal::SIGKILL as i32),
        }
    };
    let mut report = [0u8; 5];
    let _ = link.set_nonblocking(true);
    let reported = match (&link).read(&mut report) {
        Ok(5) => PluginExit::decode(&report),
        _ => None,
    };
    // A report exists only if the init saw the plugin end; if the inner runner itself was
    // killed (by the daemon), its own status is the truth.
    match reported.filter(|_| inner == PluginExit::Code(0)).unwrap_or(inner) {
        PluginExit::Code(code) => std::process::exit(code),
        PluginExit::Signal(signal) => sys::die_by_signal(Signal::try_from(signal).unwrap_or(Signal::SIGKILL)),
    }
}

/// The sandbox's pid 1 once the plugin process is forked: reaps every process of the namespace,
/// forwards SIGTERM/SIGINT/SIGHUP to the plugin (pid 1 would ignore them otherwise), and reports
/// how the plugin ended. Pid 1's exit tears the namespace down.
pub fn init(plugin: Pid, link: OuterLink) -> ! {
    sys::handle_init_signals();
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == plugin => {
                link.report(PluginExit::Code(code));
                std::process::exit(0);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == plugin => {
                link.report(PluginExit::Signal(signal as i32));
                std::process::exit(0);
            }
            Err(nix::errno::Errno::EINTR) => {
                if let Some(signal) = sys::take_forwarded_signal() {
                    let _ = nix::sys::signal::kill(plugin, signal);
                }
            }
            Err(nix::errno::Errno::ECHILD) => std::process::exit(0),
            _ => continue,
        }
    }
}

/// Mount, network and host-name set-up inside the new namespaces (needs CAP_SYS_ADMIN).
pub fn populate() -> Result<(), NamespaceError> {
    // Nothing mounted here may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(NamespaceError::PrivateMounts)?;
    sys::loopback_up().map_err(NamespaceError::Loopback)?;
    nix::unistd::sethostname(HOSTNAME).map_err(NamespaceError::Hostname)?;
    Ok(())
}
