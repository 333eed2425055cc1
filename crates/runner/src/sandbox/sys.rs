//! Thin wrappers over the system calls that `nix` does not offer safely, for the runner. With
//! `plugin_host`, the only place of the runner where `unsafe` is allowed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Closes every descriptor from `first` upwards.
pub fn close_fds_from(first: RawFd) -> io::Result<()> {
    close_range(first, RawFd::MAX)
}

/// Closes every descriptor from 3 upwards except `keep`.
pub fn close_fds_except(keep: RawFd) -> io::Result<()> {
    if keep > 3 {
        close_range(3, keep - 1)?;
    }
    close_range(keep.max(2) + 1, RawFd::MAX)
}

fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors. Callers own no Rust object wrapping a
    // descriptor in the range (the runner calls this before it opens anything of its own, and
    // the outer runner keeps exactly the one descriptor it still uses).
    check(unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0) })?;
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a live ifreq with a NUL-terminated name; SIOCGIFFLAGS fills ifru_flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } as libc::c_long)?;
    // SAFETY: ifru_flags is the union member SIOCGIFFLAGS just initialised.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags from `req`.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } as libc::c_long)?;
    Ok(())
}

/// Proof that the process had exactly one thread: Landlock, seccomp, setuid and fork act on the
/// calling thread only, so a second thread would escape them. The runner never starts a
/// thread, so the proof holds for as long as it is kept (it cannot leave the thread).
#[derive(Debug)]
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// Counts the threads now, from `/proc/self/stat`; a count that cannot be read fails.
    pub fn check() -> io::Result<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat");
        let (_, rest) = stat.rsplit_once(')').ok_or_else(malformed)?;
        let threads: u32 = rest.split_whitespace().nth(17).and_then(|n| n.parse().ok()).ok_or_else(malformed)?;
        Self::from_count(threads).ok_or_else(|| io::Error::other(format!("{threads} threads")))
    }

    /// From a thread count the kernel reported in `/proc/self/status`.
    pub fn from_count(threads: u32) -> Option<Self> {
        (threads == 1).then_some(SingleThreaded(std::marker::PhantomData))
    }
}

/// `fork(2)`, for the single-threaded runner only.
pub fn fork(_: &SingleThreaded) -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: the process is single-threaded (the proof), so the child inherits no lock held
    // by another thread and may allocate freely.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// The calling thread's seccomp mode (`PR_GET_SECCOMP`): 0 none, 1 strict, 2 filter.
pub fn seccomp_mode() -> io::Result<i32> {
    // SAFETY: PR_GET_SECCOMP takes no pointer argument and only reads the task's own state.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if mode < 0 { Err(io::Error::last_os_error()) } else { Ok(mode) }
}

/// Restores the default action of every catchable signal and unblocks them all, so a plugin
/// starts as from a clean exec (Rust's runtime ignores SIGPIPE and handles SIGSEGV).
pub fn reset_signals() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Ends the calling process by `signal` with its default action, as the process being mirrored did.
pub fn die_by_signal(signal: nix::sys::signal::Signal) -> ! {
    reset_signals();
    let _ = nix::sys::signal::raise(signal);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

/// The termination signal pid 1 last received, for forwarding to the plugin.
static FORWARDED_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn remember_signal(signal: libc::c_int) {
    FORWARDED_SIGNAL.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// Installs pid 1's handlers for the termination signals it passes on to the plugin (without
/// SA_RESTART, so waitpid returns EINTR).
pub fn handle_init_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(remember_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// The termination signal recorded since the last call, if any.
pub fn take_forwarded_signal() -> Option<nix::sys::signal::Signal> {
    let n = FORWARDED_SIGNAL.swap(0, std::sync::atomic::Ordering::SeqCst);
    nix::sys::signal::Signal::try_from(n).ok()
}

/// Installs a seccomp filter on the calling thread (`SECCOMP_SET_MODE_FILTER`, no flags).
pub fn install_seccomp_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `fprog` points to `len` initialised instructions that outlive the call; the
    // kernel copies the program before it returns.
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog as *const libc::sock_fprog)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Makes descriptor number `target` a copy of `source` (dup2), replacing what was there. For
/// stdio numbers, which no Rust object of the runner owns.
pub fn redirect_fd(source: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only changes the descriptor table; `target` is a stdio number that no Rust
    // object owns, so no owner sees its descriptor replaced.
    let rc = unsafe { libc::dup2(source, target) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Moves the socketpair the daemon passed as stdin to descriptor `ipc_fd` (close-on-exec, so
/// exec'd plugins never hold it), puts `/dev/null` on stdin, and returns the socket.
pub fn take_ipc_socket(ipc_fd: RawFd) -> io::Result<std::os::unix::net::UnixStream> {
    // SAFETY: dup3 only changes the descriptor table; the daemon passes only stdio, so nothing
    // in this process owns `ipc_fd`.
    if unsafe { libc::dup3(0, ipc_fd, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ipc_fd` was just made a copy of the socket, and no other object owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(ipc_fd) };
    let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty())?;
    redirect_fd(null.as_raw_fd(), 0)?;
    Ok(std::os::unix::net::UnixStream::from(socket))
}

/// Replaces the runner's environment (empty, as the daemon starts it) with `vars`, for native
/// plugins, which read it with `std::env::var` like exec plugins do.
pub fn set_environment(_: &SingleThreaded, vars: &[(String, String)]) {
    for (key, value) in vars {
        // SAFETY: the process is single-threaded (the proof), so no other thread can read
        // the environment while it changes.
        unsafe { std::env::set_var(key, value) };
    }
}

/// Calls syscall `nr`, for the kernel test of the seccomp filter, and returns the errno it
/// failed with (0 if it ran).
#[cfg(test)]
pub fn refused_syscall(nr: u32, args: [u64; 6]) -> i32 {
    let [a, b, c, d, e, f] = args;
    // SAFETY: the test passes only calls its filter refuses, so the kernel never runs them; it
    // makes them unprivileged, in namespaces of its own, so even a call the filter wrongly let
    // through has zero or harmless arguments and no privilege. No memory is passed.
    let ret = unsafe { libc::syscall(libc::c_long::from(nr), a, b, c, d, e, f) };
    if ret < 0 { io::Error::last_os_error().raw_os_error().unwrap_or(-1) } else { 0 }
}

/// getpid through the i386 entry point (`int 0x80`), for the kernel test of the filter.
#[cfg(all(test, target_arch = "x86_64"))]
pub fn i386_getpid() {
    let mut nr: i64 = 20;
    // SAFETY: i386 getpid takes no arguments and touches no memory.
    unsafe { std::arch::asm!("int 0x80", inout("rax") nr, options(nostack)) };
    let _ = nr;
}
