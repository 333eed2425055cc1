//! The runner's seccomp filter: one table, every rule with its reason, written in seccompiler's
//! terms (its actions and comparison operators), and compiled twice.
//!
//! - Listed syscalls run, unless a rule of the table refuses them (an argument decides, or the
//!   syscall is refused outright). Everything not listed fails with `ENOSYS`, as on a kernel
//!   without that syscall, so libc falls back (e.g. from clone3 to clone).
//! - The dangerous calls fail with `EPERM`, so a denial is told apart from a missing syscall.
//!   This includes `seccomp` itself: no further filters, no user-notification listeners.
//! - Syscall numbers with the x32 bit set fail with `ENOSYS`; a foreign architecture (i386
//!   `int 0x80`) kills the process.
//!
//! Production runs the table through [`bpf`](super::bpf), an optimizing compiler whose binary
//! search keeps installing and running the filter cheap. The tests compile the same table with
//! seccompiler, the reference, as a stack of filters (the allowlist, then one filter per
//! action), and require both programs to agree on every syscall number of every architecture,
//! for argument values that exercise every condition; a kernel test has the kernel itself
//! judge the production filter.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use seccompiler::{SeccompAction, SeccompCmpOp};

use super::bpf::{self, Action, Policy};
use ironclaw_protocol::layers::ResourceBackend;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to compile the seccomp filter")]
    Compile(#[from] bpf::BpfError),
    #[error("failed to install the seccomp filter")]
    Install(#[source] std::io::Error),
    #[error("seccomp filters are only built for x86_64 and aarch64")]
    UnsupportedArch,
    #[error("the seccomp table has no production form for {0:?}")]
    Unsupported(SeccompAction),
}

/// The namespace flags of clone; CLONE_NEWTIME exists only for clone3 and unshare, both denied.
const NAMESPACE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];
const TERMINAL_INJECTION_IOCTLS: [libc::c_ulong; 2] = [libc::TIOCSTI, libc::TIOCLINUX];
/// The protocols an IPv4 or IPv6 socket may have: the default, TCP, UDP and ICMP (ping
/// sockets). Not MPTCP, which Landlock's TCP rules do not govern, nor SCTP or UDP-Lite.
const INET_PROTOCOLS: [i32; 5] = [0, libc::IPPROTO_TCP, libc::IPPROTO_UDP, libc::IPPROTO_ICMP, libc::IPPROTO_ICMPV6];
/// The prctl options a runtime uses: thread names, its own flags read back, the parent-death
/// signal, timer slack, THP and speculation controls on itself, naming anonymous mappings.
/// Nothing that changes what the process may do to others, or its capabilities.
const PRCTL_OPTIONS: [i32; 17] = [
    libc::PR_SET_PDEATHSIG,
    libc::PR_GET_PDEATHSIG,
    libc::PR_GET_DUMPABLE,
    libc::PR_SET_NAME,
    libc::PR_GET_NAME,
    libc::PR_GET_SECCOMP,
    libc::PR_CAPBSET_READ,
    libc::PR_GET_TIMERSLACK,
    libc::PR_SET_TIMERSLACK,
    libc::PR_SET_NO_NEW_PRIVS,
    libc::PR_GET_NO_NEW_PRIVS,
    libc::PR_GET_TID_ADDRESS,
    libc::PR_GET_THP_DISABLE,
    libc::PR_SET_THP_DISABLE,
    libc::PR_GET_SPECULATION_CTRL,
    libc::PR_SET_SPECULATION_CTRL,
    PR_SET_VMA,
];
/// `PR_SET_VMA` (linux/prctl.h), which glibc uses to name anonymous mappings.
const PR_SET_VMA: i32 = 0x5356_4d41;

const EPERM: SeccompAction = SeccompAction::Errno(libc::EPERM as u32);
const ENOSYS: SeccompAction = SeccompAction::Errno(libc::ENOSYS as u32);

/// `AUDIT_ARCH_*` of the native architecture (linux/audit.h).
fn native_arch() -> Result<u32, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(0xc000_003e)
    } else if cfg!(target_arch = "aarch64") {
        Ok(0xc000_00b7)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

/// A condition on a syscall argument, as seccompiler states one (`SeccompCondition`). Every
/// comparison reads the argument's low 32 bits (seccompiler's `Dword`), as the kernel does for
/// `int` arguments (ioctl commands, socket families), so high bits cannot disguise a value.
#[derive(Debug, Clone)]
pub struct Condition {
    pub arg: u8,
    pub op: SeccompCmpOp,
    pub value: u64,
}

fn arg(arg: u8, op: SeccompCmpOp, value: impl TryInto<u32>) -> Condition {
    let value = value.try_into().unwrap_or_else(|_| panic!("argument {arg}: a value must fit in 32 bits"));
    Condition { arg, op, value: value.into() }
}

/// One rule of the table: `syscall`, when every condition holds (always, with none), gets
/// `action` instead of running.
#[derive(Debug, Clone)]
pub struct Rule {
    pub reason: &'static str,
    pub syscall: libc::c_long,
    pub conditions: Vec<Condition>,
    pub action: SeccompAction,
}

/// The whole table for an execution.
pub struct Table {
    /// Syscalls that run unless a rule refuses them, grouped by why a plugin needs them.
    pub allowed: Vec<(&'static str, Vec<libc::c_long>)>,
    pub rules: Vec<Rule>,
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
                // The kernel resumes a sleep that a stop interrupted (a freeze, a SIGSTOP) by
                // making the task call this one.
                SYS_restart_syscall,
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

/// Rules whose arguments decide.
fn argument_rules() -> Vec<Rule> {
    use SeccompCmpOp::{Eq, MaskedEq, Ne};
    let mut rules = Vec::new();
    for cmd in TERMINAL_INJECTION_IOCTLS {
        rules.push(Rule {
            reason: "terminal ioctls are fine except the two that inject input into another session; the \
                     command is compared on 32 bits, as the kernel does, so high bits cannot hide it \
                     (CVE-2019-10063)",
            syscall: libc::SYS_ioctl,
            conditions: vec![arg(1, Eq, cmd)],
            action: EPERM,
        });
    }
    for flag in NAMESPACE_FLAGS {
        rules.push(Rule {
            reason: "threads and processes, never new namespaces; clone3 passes its flags in memory, \
                     where seccomp cannot look, so it stays unlisted (ENOSYS) and libc falls back to clone",
            syscall: libc::SYS_clone,
            conditions: vec![arg(0, MaskedEq(flag as u64), flag)],
            action: EPERM,
        });
    }
    rules.push(Rule {
        reason: "IPv4 and IPv6 (the egress proxy on the namespace's loopback), and netlink for routing \
                 only. Not AF_UNIX: a unix socket reaches any socket file its permissions allow \
                 (Landlock does not govern connect), so a plugin only gets connected pairs, from \
                 socketpair. No packet sockets",
        syscall: libc::SYS_socket,
        conditions: [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK].map(|family| arg(0, Ne, family)).into(),
        action: SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
    });
    rules.push(Rule {
        reason: "netlink for routing only (getifaddrs; only `lo` exists): no other family (host \
                 uevents reach a namespace the host's root owns; audit)",
        syscall: libc::SYS_socket,
        conditions: vec![arg(0, Eq, libc::AF_NETLINK), arg(2, Ne, libc::NETLINK_ROUTE)],
        action: SeccompAction::Errno(libc::EPROTONOSUPPORT as u32),
    });
    for family in [libc::AF_INET, libc::AF_INET6] {
        let mut conditions = vec![arg(0, Eq, family)];
        conditions.extend(INET_PROTOCOLS.map(|protocol| arg(2, Ne, protocol)));
        rules.push(Rule {
            reason: "TCP, UDP and ping sockets only: an MPTCP socket gets around Landlock's TCP rules, \
                     and the kernel answers EPROTONOSUPPORT where it has no MPTCP, so runtimes fall \
                     back to TCP",
            syscall: libc::SYS_socket,
            conditions,
            action: SeccompAction::Errno(libc::EPROTONOSUPPORT as u32),
        });
    }
    rules.push(Rule {
        reason: "only the options a runtime uses (thread names, reading its own flags back); the rest \
                 fail as on a kernel that lacks them",
        syscall: libc::SYS_prctl,
        conditions: PRCTL_OPTIONS.map(|option| arg(0, Ne, option)).into(),
        action: SeccompAction::Errno(libc::EINVAL as u32),
    });
    rules
}

/// Under the fallback backend only: memory the kernel would hold for the plugin where the
/// monitor cannot count it. cgroup v2 charges all of it to the execution's cgroup, so there
/// these calls stay as the tables above have them.
fn fallback_rules() -> Vec<Rule> {
    use SeccompCmpOp::{Eq, MaskedEq};
    // The map type and MAP_ANONYMOUS bits of mmap's flags.
    const MAP_KIND: u64 = (0x0f | libc::MAP_ANONYMOUS) as u64;
    let mut rules = vec![Rule {
        reason: "a memfd is memory no process needs to map: its pages are invisible to RSS, and a \
                 descriptor can even be parked in flight in a unix socket",
        syscall: libc::SYS_memfd_create,
        conditions: vec![],
        action: EPERM,
    }];
    for kind in [libc::MAP_SHARED, libc::MAP_SHARED_VALIDATE] {
        rules.push(Rule {
            reason: "a shared anonymous mapping lives in a shmem object whose pages stay allocated when \
                     MADV_DONTNEED drops them from the page tables (and from RSS)",
            syscall: libc::SYS_mmap,
            conditions: vec![arg(3, MaskedEq(MAP_KIND), kind | libc::MAP_ANONYMOUS)],
            action: EPERM,
        });
    }
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF, libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
        rules.push(Rule {
            reason: "socket buffers keep their default sizes (net.core.wmem_default and rmem_default): \
                     the monitor cannot count them, so their bound is stated rather than left to the plugin",
            syscall: libc::SYS_setsockopt,
            conditions: vec![arg(1, Eq, libc::SOL_SOCKET), arg(2, Eq, option)],
            action: EPERM,
        });
    }
    rules.push(Rule {
        reason: "pipes keep their default 64 KiB: their contents are counted through the descriptors \
                 that hold them, and a larger pipe parked in flight would hold more unseen",
        syscall: libc::SYS_fcntl,
        conditions: vec![arg(1, Eq, libc::F_SETPIPE_SZ)],
        action: EPERM,
    });
    rules
}

/// The whole table for an execution under `resources`.
pub fn table(resources: ResourceBackend) -> Table {
    let mut rules: Vec<Rule> = denied_syscalls()
        .into_iter()
        .flat_map(|(reason, group)| {
            group.into_iter().map(move |syscall| Rule { reason, syscall, conditions: vec![], action: EPERM })
        })
        .collect();
    rules.extend(argument_rules());
    if resources == ResourceBackend::Fallback {
        rules.extend(fallback_rules());
    }
    Table { allowed: unconditional_allowlist(), rules }
}

/// Where the kernel puts an action when stacked filters disagree: the lowest `SECCOMP_RET_ACTION`
/// (as a signed number, so kill comes first) wins, and between equals the filter installed last.
/// The reference installs one filter per action in ascending order of its return value, so
/// among equals the larger value wins. Production orders each syscall's rules the same way.
fn precedence(action: &SeccompAction) -> (i32, std::cmp::Reverse<u32>) {
    let ret = u32::from(action.clone());
    ((ret & 0xffff_0000) as i32, std::cmp::Reverse(ret))
}

fn production_action(action: &SeccompAction) -> Result<Action, SeccompError> {
    match action {
        SeccompAction::Allow => Ok(Action::Allow),
        SeccompAction::Errno(errno) => {
            u16::try_from(*errno).map(Action::Errno).map_err(|_| SeccompError::Unsupported(action.clone()))
        }
        SeccompAction::KillProcess => Ok(Action::KillProcess),
        other => Err(SeccompError::Unsupported(other.clone())),
    }
}

fn production_condition(c: &Condition) -> bpf::Condition {
    let op = match c.op {
        SeccompCmpOp::Eq => bpf::Op::Eq,
        SeccompCmpOp::Ne => bpf::Op::Ne,
        SeccompCmpOp::Ge => bpf::Op::Ge,
        SeccompCmpOp::Gt => bpf::Op::Gt,
        SeccompCmpOp::Le => bpf::Op::Le,
        SeccompCmpOp::Lt => bpf::Op::Lt,
        SeccompCmpOp::MaskedEq(mask) => bpf::Op::MaskedEq(mask as u32),
    };
    bpf::Condition { arg: c.arg, op, value: c.value as u32 }
}

/// The table in the optimizing compiler's terms.
fn policy(table: &Table) -> Result<Policy, SeccompError> {
    let mut syscalls: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for (_reason, group) in &table.allowed {
        for &nr in group {
            let previous = syscalls.insert(nr as u32, vec![]);
            assert!(previous.is_none(), "syscall {nr} is allowed twice");
        }
    }
    for rule in &table.rules {
        syscalls.entry(rule.syscall as u32).or_default().push(rule.clone());
    }
    let mut compiled = BTreeMap::new();
    for (nr, mut rules) in syscalls {
        rules.sort_by_key(|r| precedence(&r.action));
        let restrictions = rules
            .iter()
            .map(|r| {
                let conditions = r.conditions.iter().map(production_condition).collect();
                Ok(bpf::Restriction { conditions, action: production_action(&r.action)? })
            })
            .collect::<Result<_, SeccompError>>()?;
        compiled.insert(nr, restrictions);
    }
    Ok(Policy {
        arch: native_arch()?,
        foreign_arch: Action::KillProcess,
        // x32 syscalls are the native numbers with bit 30 set.
        above: cfg!(target_arch = "x86_64").then_some((0x4000_0000, production_action(&ENOSYS)?)),
        syscalls: compiled,
        default: production_action(&ENOSYS)?,
    })
}

/// The filter for an execution under `resources`, compiled. Done before the identity drop: it
/// allocates.
pub fn compile(resources: ResourceBackend) -> Result<Vec<libc::sock_filter>, SeccompError> {
    Ok(bpf::compile(&policy(&table(resources))?)?)
}

/// Installs the filter on the calling (only) thread. no_new_privs must already be set.
pub fn install(program: &[libc::sock_filter]) -> Result<(), SeccompError> {
    super::sys::install_seccomp_filter(program).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const X32_BIT: u32 = 0x4000_0000;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;

    fn ret(action: &SeccompAction) -> u32 {
        u32::from(action.clone())
    }

    fn errno_ret(errno: i32) -> u32 {
        0x0005_0000 | errno as u32
    }

    fn verdict(program: &[libc::sock_filter], nr: libc::c_long, args: [u64; 6]) -> u32 {
        bpf::run(program, native_arch().unwrap(), nr as u32, args).0
    }

    fn holds(c: &Condition, args: [u64; 6]) -> bool {
        let (a, v) = (args[c.arg as usize] as u32, c.value as u32);
        match c.op {
            SeccompCmpOp::Eq => a == v,
            SeccompCmpOp::Ne => a != v,
            SeccompCmpOp::Ge => a >= v,
            SeccompCmpOp::Gt => a > v,
            SeccompCmpOp::Le => a <= v,
            SeccompCmpOp::Lt => a < v,
            SeccompCmpOp::MaskedEq(mask) => a & mask as u32 == v & mask as u32,
        }
    }

    /// The table read directly, with neither compiler: the first rule (in kernel precedence)
    /// whose conditions all hold decides; listed syscalls run otherwise; the rest are ENOSYS.
    fn table_verdict(table: &Table, nr: u32, args: [u64; 6]) -> u32 {
        let mut rules: Vec<&Rule> = table.rules.iter().filter(|r| r.syscall as u32 == nr).collect();
        rules.sort_by_key(|r| precedence(&r.action));
        if let Some(rule) = rules.iter().find(|r| r.conditions.iter().all(|c| holds(c, args))) {
            return ret(&rule.action);
        }
        let listed = !rules.is_empty() || table.allowed.iter().any(|(_, g)| g.iter().any(|&n| n as u32 == nr));
        if listed && nr < X32_BIT { ALLOW } else { ret(&ENOSYS) }
    }

    /// The reference: the table compiled by seccompiler, as a stack of filters (installed in
    /// this order): the allowlist of every listed syscall, then one filter per action.
    fn reference(table: &Table) -> Vec<Vec<libc::sock_filter>> {
        use seccompiler::{BpfProgram, SeccompCmpArgLen, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};
        let arch = if cfg!(target_arch = "x86_64") { TargetArch::x86_64 } else { TargetArch::aarch64 };
        let mut listed: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for nr in table.allowed.iter().flat_map(|(_, g)| g).chain(table.rules.iter().map(|r| &r.syscall)) {
            listed.insert(*nr, vec![]);
        }
        let mut filters = vec![SeccompFilter::new(listed, ENOSYS, SeccompAction::Allow, arch).unwrap()];
        let mut actions: Vec<SeccompAction> = table.rules.iter().map(|r| r.action.clone()).collect();
        actions.sort_by_key(ret);
        actions.dedup();
        for action in actions {
            let mut rules: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
            for rule in table.rules.iter().filter(|r| r.action == action) {
                let entry = rules.entry(rule.syscall).or_insert_with(|| Some(vec![]));
                if rule.conditions.is_empty() {
                    // No conditions: the syscall matches whatever its arguments.
                    *entry = None;
                } else if let Some(chain) = entry {
                    let conditions = rule
                        .conditions
                        .iter()
                        .map(|c| SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, c.op.clone(), c.value).unwrap())
                        .collect();
                    chain.push(SeccompRule::new(conditions).unwrap());
                }
            }
            let rules = rules.into_iter().map(|(nr, chain)| (nr, chain.unwrap_or_default())).collect();
            filters.push(SeccompFilter::new(rules, SeccompAction::Allow, action, arch).unwrap());
        }
        filters
            .into_iter()
            .map(|f| {
                let program: BpfProgram = f.try_into().unwrap();
                program.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
            })
            .collect()
    }

    /// What the kernel answers for a stack of filters: each runs, most recent first, and the
    /// lowest action (as a signed number) wins, the first seen among equals.
    fn run_stack(filters: &[Vec<libc::sock_filter>], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let action_only = |ret: u32| (ret & 0xffff_0000) as i32;
        let mut result = ALLOW;
        for filter in filters.iter().rev() {
            let ret = bpf::run(filter, arch, nr, args).0;
            if action_only(ret) < action_only(result) {
                result = ret;
            }
        }
        result
    }

    /// Argument vectors that exercise every condition on `nr`: for each argument a condition
    /// reads, its values and their neighbours (masked variants for masked comparisons), in
    /// every combination; each vector also with high bits set, which must change nothing.
    fn argument_vectors(table: &Table, nr: u32) -> Vec<[u64; 6]> {
        let mut values: BTreeMap<u8, std::collections::BTreeSet<u32>> = BTreeMap::new();
        for c in table.rules.iter().filter(|r| r.syscall as u32 == nr).flat_map(|r| &r.conditions) {
            let v = c.value as u32;
            let set = values.entry(c.arg).or_default();
            set.extend([0, u32::MAX, v, v.wrapping_add(1), v.wrapping_sub(1)]);
            if let SeccompCmpOp::MaskedEq(mask) = c.op {
                let mask = mask as u32;
                set.extend([v & mask, (v & mask) | !mask, v ^ mask, !v & mask]);
            }
        }
        let mut vectors = vec![[0u64; 6]];
        for (arg, set) in values {
            vectors = vectors
                .iter()
                .flat_map(|base| {
                    set.iter().map(move |&value| {
                        let mut next = *base;
                        next[arg as usize] = u64::from(value);
                        next
                    })
                })
                .collect();
        }
        let high = vectors.iter().map(|v| v.map(|a| a | 0xdead_beef_0000_0000)).collect::<Vec<_>>();
        vectors.extend(high);
        vectors
    }

    /// The optimizing compiler against seccompiler, and both against the table itself: the same
    /// answer for every syscall number 0 to 1023, natively, as x32 and as i386, under both
    /// resource backends, for arguments that exercise every condition.
    #[test]
    fn the_production_filter_agrees_with_seccompiler_everywhere() {
        let arch = native_arch().unwrap();
        for resources in [ResourceBackend::CgroupV2, ResourceBackend::Fallback] {
            let table = table(resources);
            let production = bpf::compile(&policy(&table).unwrap()).unwrap();
            let reference = reference(&table);
            // Per rule with conditions: whether some vector met them all, and some did not.
            let mut exercised = vec![(false, false); table.rules.len()];
            for nr in 0..1024u32 {
                for args in argument_vectors(&table, nr) {
                    for (rule, seen) in table.rules.iter().zip(exercised.iter_mut()) {
                        if rule.syscall as u32 == nr {
                            let met = rule.conditions.iter().all(|c| holds(c, args));
                            *seen = (seen.0 || met, seen.1 || !met);
                        }
                    }
                    let mut cases = vec![(arch, nr, table_verdict(&table, nr, args))];
                    if cfg!(target_arch = "x86_64") {
                        cases.push((arch, nr | X32_BIT, ret(&ENOSYS)));
                        cases.push((AUDIT_ARCH_I386, nr, KILL_PROCESS));
                    }
                    for (arch, nr, want) in cases {
                        let (ours, theirs) =
                            (bpf::run(&production, arch, nr, args).0, run_stack(&reference, arch, nr, args));
                        assert_eq!(
                            (ours, theirs),
                            (want, want),
                            "{resources:?}: syscall {nr:#x} (arch {arch:#x}), arguments {args:x?}: production, seccompiler"
                        );
                    }
                }
            }
            for (rule, (met, missed)) in table.rules.iter().zip(exercised) {
                assert!(met && (missed || rule.conditions.is_empty()), "vectors do not exercise {rule:?}");
            }
        }
    }

    #[test]
    fn the_program_follows_the_tables() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        let table = table(ResourceBackend::CgroupV2);
        let refused: Vec<libc::c_long> = table.rules.iter().map(|r| r.syscall).collect();
        for (reason, group) in &table.allowed {
            for &nr in group.iter().filter(|nr| !refused.contains(nr)) {
                assert_eq!(verdict(&program, nr, [0; 6]), ALLOW, "{nr} ({reason})");
            }
        }
        for (reason, group) in denied_syscalls() {
            for nr in group {
                assert_eq!(verdict(&program, nr, [0; 6]), errno_ret(libc::EPERM), "{nr} ({reason})");
            }
        }
        for nr in [libc::SYS_clone3, libc::SYS_vhangup, libc::SYS_mq_open, 462, 1000] {
            assert_eq!(verdict(&program, nr, [0; 6]), errno_ret(libc::ENOSYS), "unlisted syscall {nr}");
        }
        assert_eq!(verdict(&program, libc::SYS_seccomp, [0; 6]), errno_ret(libc::EPERM), "no further filters");
    }

    #[test]
    fn argument_rules_hold() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        let tiocsti = libc::TIOCSTI;
        let eperm = errno_ret(libc::EPERM);
        assert_eq!(verdict(&program, libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(&program, libc::SYS_ioctl, [0, tiocsti | 0xFFFF_FFFF_0000_0000, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(&program, libc::SYS_ioctl, [0, libc::FIONREAD, 0, 0, 0, 0]), ALLOW);
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(verdict(&program, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        for flag in NAMESPACE_FLAGS {
            assert_eq!(verdict(&program, libc::SYS_clone, [flag as u64 | 17, 0, 0, 0, 0, 0]), eperm, "{flag:#x}");
        }
        let socket = |family: i32, protocol: i32| {
            verdict(&program, libc::SYS_socket, [family as u64, libc::SOCK_STREAM as u64, protocol as u64, 0, 0, 0])
        };
        assert_eq!(socket(libc::AF_INET, 0), ALLOW);
        assert_eq!(socket(libc::AF_INET6, libc::IPPROTO_TCP), ALLOW);
        assert_eq!(socket(libc::AF_INET, libc::IPPROTO_MPTCP), errno_ret(libc::EPROTONOSUPPORT), "MPTCP");
        assert_eq!(socket(libc::AF_INET6, libc::IPPROTO_MPTCP), errno_ret(libc::EPROTONOSUPPORT), "MPTCP");
        assert_eq!(socket(libc::AF_INET, libc::IPPROTO_SCTP), errno_ret(libc::EPROTONOSUPPORT), "SCTP");
        assert_eq!(socket(libc::AF_PACKET, 0), errno_ret(libc::EAFNOSUPPORT));
        assert_eq!(socket(libc::AF_UNIX, 0), errno_ret(libc::EAFNOSUPPORT));
        assert_eq!(socket(libc::AF_NETLINK, libc::NETLINK_ROUTE), ALLOW);
        assert_eq!(socket(libc::AF_NETLINK, libc::NETLINK_KOBJECT_UEVENT), errno_ret(libc::EPROTONOSUPPORT));
        assert_eq!(verdict(&program, libc::SYS_socketpair, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), ALLOW);
        let prctl = |option: i32| verdict(&program, libc::SYS_prctl, [option as u64, 0, 0, 0, 0, 0]);
        assert_eq!(prctl(libc::PR_SET_NAME), ALLOW);
        assert_eq!(prctl(libc::PR_GET_SECCOMP), ALLOW);
        for option in [libc::PR_SET_DUMPABLE, libc::PR_SET_PTRACER, libc::PR_SET_SECCOMP, libc::PR_SET_MM, 0] {
            assert_eq!(prctl(option), errno_ret(libc::EINVAL), "prctl option {option}");
        }
    }

    #[test]
    fn the_fallback_refuses_memory_it_cannot_count() {
        let (fallback, cgroup) =
            (compile(ResourceBackend::Fallback).unwrap(), compile(ResourceBackend::CgroupV2).unwrap());
        let eperm = errno_ret(libc::EPERM);
        let shared_anon = [0, 4096, 3, (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        let private_anon = [0, 4096, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        let shared_file = [0, 4096, 1, libc::MAP_SHARED as u64, 3, 0];
        let setpipe = [3, libc::F_SETPIPE_SZ as u64, 1 << 20, 0, 0, 0];
        let getfl = [3, libc::F_GETFL as u64, 0, 0, 0, 0];
        let sndbuf = [3, libc::SOL_SOCKET as u64, libc::SO_SNDBUF as u64, 0, 4, 0];
        let reuseaddr = [3, libc::SOL_SOCKET as u64, libc::SO_REUSEADDR as u64, 0, 4, 0];
        assert_eq!(verdict(&fallback, libc::SYS_setsockopt, sndbuf), eperm);
        assert_eq!(verdict(&fallback, libc::SYS_setsockopt, reuseaddr), ALLOW);
        assert_eq!(verdict(&fallback, libc::SYS_memfd_create, [0; 6]), eperm);
        assert_eq!(verdict(&fallback, libc::SYS_mmap, shared_anon), eperm);
        assert_eq!(verdict(&fallback, libc::SYS_mmap, private_anon), ALLOW);
        assert_eq!(verdict(&fallback, libc::SYS_mmap, shared_file), ALLOW);
        assert_eq!(verdict(&fallback, libc::SYS_fcntl, setpipe), eperm);
        assert_eq!(verdict(&fallback, libc::SYS_fcntl, getfl), ALLOW);
        for (nr, args) in [
            (libc::SYS_memfd_create, [0; 6]),
            (libc::SYS_mmap, shared_anon),
            (libc::SYS_fcntl, setpipe),
            (libc::SYS_setsockopt, sndbuf),
        ] {
            assert_eq!(verdict(&cgroup, nr, args), ALLOW, "cgroup v2 counts it: {nr}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x32_and_foreign_architectures_are_refused() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        assert_eq!(verdict(&program, 0x4000_0000 | libc::SYS_getpid, [0; 6]), errno_ret(libc::ENOSYS));
        assert_eq!(bpf::run(&program, AUDIT_ARCH_I386, 20, [0; 6]).0, KILL_PROCESS, "kill the process");
    }

    #[test]
    fn every_syscall_takes_a_short_path() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        let arch = native_arch().unwrap();
        let longest = (0..1024).map(|nr| bpf::run(&program, arch, nr, [0; 6]).1).max().unwrap();
        // Four instructions of preamble, a binary search of a few hundred ranges, a short leaf
        // (prctl's list of options is the longest); seccompiler's chain runs hundreds.
        assert!(longest <= 40, "{longest} instructions for one syscall");
    }

    /// The kernel judges the production filter: a child process (this test binary, run again)
    /// installs it and calls every syscall number the table refuses with zero arguments, plus
    /// the argument rules' refusals; each must fail with exactly the table's errno.
    #[test]
    fn the_kernel_refuses_what_the_table_refuses() {
        const CHILD: &str = "IRONCLAW_SECCOMP_KERNEL_CHILD";
        let table = table(ResourceBackend::CgroupV2);
        // The kernel runs uretprobe and uprobe without consulting seccomp (they exist for probe
        // trampolines, and raise SIGILL anywhere else), so no filter can refuse them.
        let unfiltered: &[u32] = if cfg!(target_arch = "x86_64") { &[335, 336] } else { &[] };
        let mut calls: Vec<(u32, [u64; 6])> = (0..1024u32)
            .filter(|&nr| table_verdict(&table, nr, [0; 6]) != ALLOW && !unfiltered.contains(&nr))
            .map(|nr| (nr, [0; 6]))
            .collect();
        calls.extend((0..1024u32).step_by(7).map(|nr| (nr | X32_BIT, [0; 6])));
        let stream = libc::SOCK_STREAM as u64;
        calls.extend([
            (libc::SYS_socket as u32, [libc::AF_INET as u64, stream, libc::IPPROTO_MPTCP as u64, 0, 0, 0]),
            (libc::SYS_socket as u32, [libc::AF_UNIX as u64, stream, 0, 0, 0, 0]),
            (libc::SYS_prctl as u32, [libc::PR_SET_DUMPABLE as u64, 1, 0, 0, 0, 0]),
            (libc::SYS_ioctl as u32, [0, libc::TIOCSTI, 0, 0, 0, 0]),
            (libc::SYS_clone as u32, [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0]),
        ]);
        if std::env::var_os(CHILD).is_some() {
            // Unprivileged and in namespaces of its own, so that a syscall the filter failed
            // to refuse could do no harm.
            let nobody = (nix::unistd::Uid::from_raw(65534), nix::unistd::Gid::from_raw(65534));
            if nobody.0 != nix::unistd::geteuid() {
                use nix::sched::CloneFlags;
                nix::sched::unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNET)
                    .unwrap();
                nix::unistd::setresgid(nobody.1, nobody.1, nobody.1).unwrap();
                nix::unistd::setresuid(nobody.0, nobody.0, nobody.0).unwrap();
            }
            nix::sys::prctl::set_no_new_privs().unwrap();
            install(&compile(ResourceBackend::CgroupV2).unwrap()).unwrap();
            let mut out = String::new();
            for (i, (nr, args)) in calls.iter().enumerate() {
                out.push_str(&format!("{i} {}\n", super::super::sys::refused_syscall(*nr, *args)));
            }
            print!("{out}");
            #[cfg(target_arch = "x86_64")]
            if std::env::var_os("IRONCLAW_SECCOMP_I386").is_some() {
                super::super::sys::i386_getpid();
                println!("survived int 0x80");
            }
            return;
        }
        let child = |i386: bool| {
            let mut command = std::process::Command::new(std::env::current_exe().unwrap());
            command
                .args(["--exact", "sandbox::seccomp::tests::the_kernel_refuses_what_the_table_refuses", "--nocapture"])
                .env(CHILD, "1");
            if i386 {
                command.env("IRONCLAW_SECCOMP_I386", "1");
            }
            command.output().unwrap()
        };
        let output = child(false);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let answers: BTreeMap<usize, i32> = stdout
            .lines()
            .filter_map(|l| l.split_once(' ').and_then(|(i, e)| Some((i.parse().ok()?, e.parse().ok()?))))
            .collect();
        let mut checked = 0;
        for (i, (nr, args)) in calls.iter().enumerate() {
            let want = table_verdict(&table, *nr, *args) & 0xffff;
            let got = answers.get(&i).copied();
            assert_eq!(got, Some(want as i32), "syscall {nr:#x} {args:x?}: the kernel's errno\n{stdout}");
            checked += 1;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::os::unix::process::ExitStatusExt;
            let output = child(true);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(output.status.signal(), Some(libc::SIGSYS), "a foreign entry point kills: {stdout}");
            assert!(!stdout.contains("survived"), "{stdout}");
        }
        assert!(checked > 500, "only {checked} calls checked");
    }
}
