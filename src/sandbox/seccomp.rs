//! The runner's seccomp filters: an allowlist, and on top of it a list of explicit denials.
//!
//! Two filters are stacked. The kernel runs both and keeps the most restrictive action; for two
//! errno actions the filter installed last wins. So:
//! 1. the **allowlist** (installed first) allows what plugins need and answers everything else
//!    with `ENOSYS`, as a kernel without that syscall would (glibc then falls back, e.g. from
//!    clone3 to clone). Syscall numbers with the x32 bit set match nothing and get `ENOSYS`;
//!    a foreign architecture (i386 `int 0x80`) kills the process.
//! 2. the **denylist** (installed last) answers the dangerous calls with `EPERM`, so a denial
//!    is told apart from a missing syscall. It also denies `seccomp` itself, after its own install.
//!
//! Every rule carries its reason.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to build the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("failed to compile the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    #[error("failed to install the seccomp filter")]
    Install(#[source] seccompiler::Error),
    #[error("seccomp filters are only built for x86_64 and aarch64")]
    UnsupportedArch,
}

const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];
/// The OR of the flags above (CLONE_NEWTIME exists only for clone3 and unshare, both denied).
const ALL_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const TERMINAL_INJECTION_IOCTLS: [u64; 2] = [libc::TIOCSTI, libc::TIOCLINUX];
/// Socket families a plugin may create: unix (socketpair, local IPC), IP (later: the egress
/// proxy on the namespace's loopback) and netlink (interface listing; only `lo` exists).
const ALLOWED_SOCKET_FAMILIES: [i32; 4] = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, SeccompError> {
    Cond::new(arg, len, op, value).map_err(SeccompError::Build)
}

fn rule(conditions: Vec<Cond>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(SeccompError::Build)
}

/// Syscalls allowed without conditions, grouped by why a plugin needs them.
fn unconditional_allowlist() -> Vec<(&'static str, Vec<libc::c_long>)> {
    use libc::*;
    let mut groups = vec![
        (
            "file I/O on descriptors the plugin holds",
            vec![
                SYS_read,
                SYS_write,
                SYS_readv,
                SYS_writev,
                SYS_pread64,
                SYS_pwrite64,
                SYS_preadv,
                SYS_pwritev,
                SYS_preadv2,
                SYS_pwritev2,
                SYS_lseek,
                SYS_close,
                SYS_close_range,
                SYS_dup,
                SYS_dup3,
                SYS_fcntl,
                SYS_flock,
                SYS_fsync,
                SYS_fdatasync,
                SYS_ftruncate,
                SYS_fallocate,
                SYS_fadvise64,
                SYS_sendfile,
                SYS_copy_file_range,
                SYS_splice,
                SYS_tee,
                SYS_pipe2,
                SYS_memfd_create,
                SYS_fstatfs,
                SYS_fchmod,
                SYS_fgetxattr,
                SYS_flistxattr,
            ],
        ),
        (
            "path operations (Landlock decides which paths)",
            vec![
                SYS_openat,
                SYS_openat2,
                SYS_newfstatat,
                SYS_statx,
                SYS_fstat,
                SYS_faccessat,
                SYS_faccessat2,
                SYS_readlinkat,
                SYS_getdents64,
                SYS_getcwd,
                SYS_chdir,
                SYS_fchdir,
                SYS_mkdirat,
                SYS_unlinkat,
                SYS_renameat,
                SYS_renameat2,
                SYS_linkat,
                SYS_symlinkat,
                SYS_fchmodat,
                SYS_utimensat,
                SYS_statfs,
                SYS_getxattr,
                SYS_lgetxattr,
                SYS_listxattr,
                SYS_llistxattr,
                SYS_umask,
            ],
        ),
        (
            "memory management (loading libraries, allocators)",
            vec![
                SYS_brk,
                SYS_mmap,
                SYS_munmap,
                SYS_mprotect,
                SYS_mremap,
                SYS_madvise,
                SYS_msync,
                SYS_mincore,
                SYS_membarrier,
            ],
        ),
        (
            "threads, signals and synchronisation",
            vec![
                SYS_futex,
                SYS_set_robust_list,
                SYS_get_robust_list,
                SYS_set_tid_address,
                SYS_rseq,
                SYS_rt_sigaction,
                SYS_rt_sigprocmask,
                SYS_rt_sigreturn,
                SYS_rt_sigsuspend,
                SYS_rt_sigtimedwait,
                SYS_rt_sigpending,
                SYS_sigaltstack,
                SYS_sched_yield,
                SYS_sched_getaffinity,
                SYS_sched_getparam,
                SYS_sched_getscheduler,
                SYS_sched_get_priority_max,
                SYS_sched_get_priority_min,
            ],
        ),
        (
            "processes inside the plugin's own pid namespace (pids and rlimits bound them)",
            vec![
                SYS_execve,
                SYS_execveat,
                SYS_wait4,
                SYS_waitid,
                SYS_exit,
                SYS_exit_group,
                SYS_kill,
                SYS_tgkill,
                SYS_tkill,
                SYS_getpid,
                SYS_getppid,
                SYS_gettid,
                SYS_getpgid,
                SYS_getsid,
                SYS_setpgid,
                SYS_setsid,
                SYS_prctl,
                SYS_getrlimit,
                SYS_prlimit64,
                SYS_getrusage,
                SYS_getpriority,
                SYS_setpriority,
            ],
        ),
        (
            "identity queries (the answers are the unprivileged sandbox ids)",
            vec![
                SYS_getuid,
                SYS_geteuid,
                SYS_getgid,
                SYS_getegid,
                SYS_getgroups,
                SYS_getresuid,
                SYS_getresgid,
                SYS_capget,
            ],
        ),
        (
            "time, randomness and system information",
            vec![
                SYS_clock_gettime,
                SYS_clock_getres,
                SYS_clock_nanosleep,
                SYS_nanosleep,
                SYS_gettimeofday,
                SYS_getrandom,
                SYS_uname,
                SYS_sysinfo,
                SYS_times,
                SYS_getitimer,
                SYS_setitimer,
                SYS_timer_create,
                SYS_timer_settime,
                SYS_timer_gettime,
                SYS_timer_getoverrun,
                SYS_timer_delete,
                SYS_timerfd_create,
                SYS_timerfd_settime,
                SYS_timerfd_gettime,
            ],
        ),
        (
            "event loops",
            vec![
                SYS_ppoll,
                SYS_pselect6,
                SYS_epoll_create1,
                SYS_epoll_ctl,
                SYS_epoll_pwait,
                SYS_epoll_pwait2,
                SYS_eventfd2,
                SYS_signalfd4,
            ],
        ),
        (
            "sockets: only loopback exists in the namespace, Landlock denies TCP bind/connect",
            vec![
                SYS_socketpair,
                SYS_connect,
                SYS_bind,
                SYS_listen,
                SYS_accept4,
                SYS_sendto,
                SYS_recvfrom,
                SYS_sendmsg,
                SYS_recvmsg,
                SYS_sendmmsg,
                SYS_recvmmsg,
                SYS_shutdown,
                SYS_getsockname,
                SYS_getpeername,
                SYS_setsockopt,
                SYS_getsockopt,
            ],
        ),
        ("installing the final filter; the denylist then forbids further filters", vec![SYS_seccomp]),
    ];
    #[cfg(target_arch = "x86_64")]
    groups.push((
        "legacy x86_64 entry points still used by libc and interpreters",
        vec![
            SYS_open,
            SYS_stat,
            SYS_lstat,
            SYS_access,
            SYS_readlink,
            SYS_mkdir,
            SYS_rmdir,
            SYS_unlink,
            SYS_rename,
            SYS_link,
            SYS_symlink,
            SYS_chmod,
            SYS_pipe,
            SYS_dup2,
            SYS_poll,
            SYS_select,
            SYS_epoll_create,
            SYS_epoll_wait,
            SYS_eventfd,
            SYS_getdents,
            SYS_getpgrp,
            SYS_arch_prctl,
            SYS_fork,
            SYS_vfork,
            SYS_alarm,
            SYS_pause,
            SYS_accept,
            SYS_time,
        ],
    ));
    groups
}

/// The allowlist filter: allowed syscalls (some with argument conditions), `ENOSYS` otherwise.
fn allowlist() -> Result<SeccompFilter, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_reason, syscalls) in unconditional_allowlist() {
        for nr in syscalls {
            rules.insert(nr, vec![]);
        }
    }
    // ioctl: terminal ioctls are fine except the two that inject input into another session.
    // The command is compared on 32 bits, as the kernel does, so high bits cannot hide it
    // (CVE-2019-10063).
    let not_injection =
        TERMINAL_INJECTION_IOCTLS.iter().map(|&cmd| cond(1, Len::Dword, Op::Ne, cmd)).collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, vec![rule(not_injection)?]);
    // clone: threads and processes, but never new namespaces. clone3 passes its flags in memory,
    // where seccomp cannot look, so it stays unlisted (ENOSYS) and libc falls back to clone.
    rules.insert(libc::SYS_clone, vec![rule(vec![cond(0, Len::Qword, Op::MaskedEq(ALL_NAMESPACE_FLAGS), 0)?])?]);
    // socket: only the families listed in ALLOWED_SOCKET_FAMILIES.
    rules.insert(
        libc::SYS_socket,
        ALLOWED_SOCKET_FAMILIES
            .iter()
            .map(|&family| rule(vec![cond(0, Len::Dword, Op::Eq, family as u64)?]))
            .collect::<Result<_, _>>()?,
    );
    SeccompFilter::new(rules, SeccompAction::Errno(libc::ENOSYS as u32), SeccompAction::Allow, target_arch()?)
        .map_err(SeccompError::Build)
}

/// Syscalls denied with `EPERM`, each with the reason.
fn denied_syscalls() -> Vec<(&'static str, Vec<libc::c_long>)> {
    use libc::*;
    vec![
        (
            "inspecting or writing other processes' memory",
            vec![
                SYS_ptrace,
                SYS_process_vm_readv,
                SYS_process_vm_writev,
                SYS_process_madvise,
                SYS_pidfd_getfd,
                SYS_kcmp,
            ],
        ),
        (
            "io_uring bypasses the per-syscall filter (IORING_OP_SOCKET, OPENAT)",
            vec![SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register],
        ),
        (
            "kernel attack surface a plugin never needs",
            vec![
                SYS_bpf,
                SYS_perf_event_open,
                SYS_userfaultfd,
                SYS_kexec_load,
                SYS_kexec_file_load,
                SYS_init_module,
                SYS_finit_module,
                SYS_delete_module,
                SYS_acct,
                SYS_swapon,
                SYS_swapoff,
                SYS_reboot,
                SYS_syslog,
                SYS_quotactl,
                SYS_lookup_dcookie,
                SYS_fanotify_init,
                SYS_name_to_handle_at,
                SYS_open_by_handle_at,
            ],
        ),
        ("the kernel keyring is shared with the host", vec![SYS_keyctl, SYS_add_key, SYS_request_key]),
        (
            "the mount family, old and new API (CVE-2021-41133)",
            vec![
                SYS_mount,
                SYS_umount2,
                SYS_pivot_root,
                SYS_chroot,
                SYS_open_tree,
                SYS_move_mount,
                SYS_fsopen,
                SYS_fsconfig,
                SYS_fsmount,
                SYS_fspick,
                SYS_mount_setattr,
            ],
        ),
        ("entering or creating namespaces", vec![SYS_unshare, SYS_setns]),
        (
            "changing identity or capabilities",
            vec![
                SYS_setuid,
                SYS_setgid,
                SYS_setreuid,
                SYS_setregid,
                SYS_setresuid,
                SYS_setresgid,
                SYS_setfsuid,
                SYS_setfsgid,
                SYS_setgroups,
                SYS_capset,
            ],
        ),
        ("changing the execution domain (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE)", vec![SYS_personality]),
        (
            "changing clocks and host identity",
            vec![
                SYS_settimeofday,
                SYS_clock_settime,
                SYS_clock_adjtime,
                SYS_adjtimex,
                SYS_sethostname,
                SYS_setdomainname,
            ],
        ),
        ("stacking further filters (user notification listeners)", vec![SYS_seccomp]),
    ]
}

/// The denylist filter: `EPERM` for the calls above and for namespace clones and tty injection.
fn denylist() -> Result<SeccompFilter, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_reason, syscalls) in denied_syscalls() {
        for nr in syscalls {
            rules.insert(nr, vec![]);
        }
    }
    rules.insert(
        libc::SYS_clone,
        CLONE_NAMESPACE_FLAGS
            .iter()
            .map(|&flag| rule(vec![cond(0, Len::Qword, Op::MaskedEq(flag), flag)?]))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_ioctl,
        TERMINAL_INJECTION_IOCTLS
            .iter()
            .map(|&cmd| rule(vec![cond(1, Len::Dword, Op::Eq, cmd)?]))
            .collect::<Result<_, _>>()?,
    );
    SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), target_arch()?)
        .map_err(SeccompError::Build)
}

/// Both filters, compiled, in installation order.
pub fn compile() -> Result<[BpfProgram; 2], SeccompError> {
    let allow: BpfProgram = allowlist()?.try_into().map_err(SeccompError::Compile)?;
    let deny: BpfProgram = denylist()?.try_into().map_err(SeccompError::Compile)?;
    Ok([allow, deny])
}

/// Installs both filters on the calling (only) thread. no_new_privs must already be set.
pub fn install(filters: &[BpfProgram; 2]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_and_never_both_allow_and_deny() {
        compile().unwrap();
        let allowed: Vec<_> = unconditional_allowlist().into_iter().flat_map(|(_, s)| s).collect();
        for (reason, denied) in denied_syscalls() {
            for nr in denied {
                // seccomp is the one deliberate overlap: allowed to install, denied afterwards.
                if nr != libc::SYS_seccomp {
                    assert!(!allowed.contains(&nr), "syscall {nr} ({reason}) is both allowed and denied");
                }
            }
        }
        assert!(!allowed.contains(&libc::SYS_clone3), "clone3 must stay unlisted so libc falls back");
    }

    #[test]
    fn namespace_mask_covers_every_flag() {
        let or = CLONE_NAMESPACE_FLAGS.iter().fold(0, |a, f| a | f);
        assert_eq!(or & !ALL_NAMESPACE_FLAGS, 0);
    }
}
