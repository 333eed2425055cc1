//! Thin wrappers over the system calls the daemon needs and `nix` does not offer safely:
//! pidfds, reaping with resource usage, the Landlock probe and systemd's sockets. The only place
//! of the daemon where `unsafe` is allowed; the runner has a `sys` of its own, and the two share
//! no code.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `pidfd_open(2)`: a descriptor that names `pid` for as long as it is held, immune to pid reuse.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Registers a pidfd with tokio's reactor: it becomes readable when the process exits.
pub fn async_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns its descriptor and moves into the AsyncFd, so the descriptor stays
    // open and the same for the AsyncFd's whole life, and `as_raw_fd` always returns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// `pidfd_send_signal(2)`. ESRCH (already gone) is not an error.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed and valid for the call; the info pointer may be null.
    let ret = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    match check(ret) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// How a reaped process ended, with its resource usage (its own and its reaped descendants').
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_time_ms: u64,
    pub max_rss_bytes: u64,
}

/// `wait4(2)` with WNOHANG: `Ok(None)` while the process is still running.
pub fn try_reap(pid: libc::pid_t) -> io::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both out pointers point to live locals of the right types.
    let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG | libc::__WALL, &mut usage) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        return Ok(None);
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    Ok(Some(Reaped {
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        cpu_time_ms: ms(usage.ru_utime) + ms(usage.ru_stime),
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    }))
}

/// The Landlock ABI the kernel offers, or `None` when Landlock is absent or disabled.
pub fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr, zero size and the VERSION flag, the call only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// Takes ownership of a listening unix socket systemd passed (socket activation).
pub fn take_listener(fd: RawFd) -> std::os::unix::net::UnixListener {
    // SAFETY: `fd` comes from `LISTEN_FDS`, checked against `LISTEN_PID`: systemd opened it for
    // this process, nothing else in the daemon owns it, and it is taken exactly once.
    unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) }
}

/// The supplementary groups of a unix socket's peer, as the kernel recorded them when it
/// connected (`SO_PEERGROUPS`): no pid to look up, so none that could have been reused.
pub fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` holds `len` writable bytes; the kernel writes at most that many and
        // sets `len` to what it wrote (or, with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        match rc {
            0 => {
                groups.truncate(count);
                return Ok(groups);
            }
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && count > groups.len() => {
                groups.resize(count, 0);
            }
            _ => return Err(io::Error::last_os_error()),
        }
    }
}
