//! The runner's seccomp filter: one program, built from the tables below, every rule with its
//! reason.
//!
//! - Allowed syscalls run. Everything not listed fails with `ENOSYS`, as on a kernel without
//!   that syscall, so libc falls back (e.g. from clone3 to clone).
//! - The dangerous calls fail with `EPERM`, so a denial is told apart from a missing syscall.
//!   This includes `seccomp` itself: no further filters, no user-notification listeners.
//! - Syscall numbers with the x32 bit set fail with `ENOSYS`; a foreign architecture (i386
//!   `int 0x80`) kills the process.
//!
//! [`bpf`](super::bpf) compiles it into a binary search, so installing it and running through it
//! stay cheap.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use super::bpf::{self, Action, Policy, Verdict};
use ironclaw_protocol::layers::ResourceBackend;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to compile the seccomp filter")]
    Compile(#[from] bpf::BpfError),
    #[error("failed to install the seccomp filter")]
    Install(#[source] std::io::Error),
    #[error("seccomp filters are only built for x86_64 and aarch64")]
    UnsupportedArch,
}

/// The namespace flags of clone; CLONE_NEWTIME exists only for clone3 and unshare, both denied.
const ALL_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;
const TERMINAL_INJECTION_IOCTLS: [u32; 2] = [libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

const EPERM: Action = Action::Errno(libc::EPERM as u16);
const ENOSYS: Action = Action::Errno(libc::ENOSYS as u16);
const EAFNOSUPPORT: Action = Action::Errno(libc::EAFNOSUPPORT as u16);
const EPROTONOSUPPORT: Action = Action::Errno(libc::EPROTONOSUPPORT as u16);

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

/// Syscalls whose arguments decide.
fn argument_rules() -> Vec<(&'static str, libc::c_long, Verdict)> {
    vec![
        (
            "terminal ioctls are fine except the two that inject input into another session; the \
             command is compared on 32 bits, as the kernel does, so high bits cannot hide it \
             (CVE-2019-10063)",
            libc::SYS_ioctl,
            Verdict::ArgSwitch {
                arg: 1,
                cases: TERMINAL_INJECTION_IOCTLS.iter().map(|&cmd| (cmd, Verdict::Always(EPERM))).collect(),
                otherwise: Action::Allow,
            },
        ),
        (
            "threads and processes, never new namespaces; clone3 passes its flags in memory, \
             where seccomp cannot look, so it stays unlisted (ENOSYS) and libc falls back to clone",
            libc::SYS_clone,
            Verdict::ArgAnyBit { arg: 0, mask: ALL_NAMESPACE_FLAGS, matched: EPERM, otherwise: Action::Allow },
        ),
        (
            "IPv4 and IPv6 (the egress proxy on the namespace's loopback), and netlink for \
             routing only (getifaddrs; only `lo` exists). Not AF_UNIX: a unix socket reaches any \
             socket file on the host its permissions allow (Landlock does not govern connect), \
             so a plugin only gets connected pairs, from socketpair. No packet sockets, and no \
             other netlink family (host uevents reach a namespace the host's root owns; audit)",
            libc::SYS_socket,
            Verdict::ArgSwitch {
                arg: 0,
                cases: vec![
                    (libc::AF_INET as u32, Verdict::Always(Action::Allow)),
                    (libc::AF_INET6 as u32, Verdict::Always(Action::Allow)),
                    (
                        libc::AF_NETLINK as u32,
                        Verdict::ArgSwitch {
                            arg: 2,
                            cases: vec![(libc::NETLINK_ROUTE as u32, Verdict::Always(Action::Allow))],
                            otherwise: EPROTONOSUPPORT,
                        },
                    ),
                ],
                otherwise: EAFNOSUPPORT,
            },
        ),
    ]
}

/// Under the fallback backend only: memory the kernel would hold for the plugin where the
/// monitor cannot count it. cgroup v2 charges all of it to the execution's cgroup, so there
/// these calls stay as the tables above have them.
fn fallback_rules() -> Vec<(&'static str, libc::c_long, Verdict)> {
    // The map type and MAP_ANONYMOUS bits of mmap's flags.
    const MAP_KIND: u32 = (0x0f | libc::MAP_ANONYMOUS) as u32;
    vec![
        (
            "a memfd is memory no process needs to map: its pages are invisible to RSS, and a \
             descriptor can even be parked in flight in a unix socket",
            libc::SYS_memfd_create,
            Verdict::Always(EPERM),
        ),
        (
            "a shared anonymous mapping lives in a shmem object whose pages stay allocated when \
             MADV_DONTNEED drops them from the page tables (and from RSS)",
            libc::SYS_mmap,
            Verdict::ArgFieldSwitch {
                arg: 3,
                mask: MAP_KIND,
                cases: [libc::MAP_SHARED, libc::MAP_SHARED_VALIDATE]
                    .map(|kind| ((kind | libc::MAP_ANONYMOUS) as u32, Verdict::Always(EPERM)))
                    .into(),
                otherwise: Action::Allow,
            },
        ),
        (
            "socket buffers keep their default sizes (net.core.wmem_default and rmem_default): \
             the monitor cannot count them, so their bound is stated rather than left to the plugin",
            libc::SYS_setsockopt,
            Verdict::ArgSwitch {
                arg: 1,
                cases: vec![(
                    libc::SOL_SOCKET as u32,
                    Verdict::ArgSwitch {
                        arg: 2,
                        cases: [libc::SO_SNDBUF, libc::SO_RCVBUF, libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE]
                            .map(|option| (option as u32, Verdict::Always(EPERM)))
                            .into(),
                        otherwise: Action::Allow,
                    },
                )],
                otherwise: Action::Allow,
            },
        ),
        (
            "pipes keep their default 64 KiB: their contents are counted through the descriptors \
             that hold them, and a larger pipe parked in flight would hold more unseen",
            libc::SYS_fcntl,
            Verdict::ArgSwitch {
                arg: 1,
                cases: vec![(libc::F_SETPIPE_SZ as u32, Verdict::Always(EPERM))],
                otherwise: Action::Allow,
            },
        ),
    ]
}

/// The whole policy for an execution under `resources`: every table above, `ENOSYS` for the
/// rest.
fn policy(resources: ResourceBackend) -> Result<Policy, SeccompError> {
    let mut syscalls = BTreeMap::new();
    let mut add = |nr: libc::c_long, verdict: Verdict| {
        let previous = syscalls.insert(nr as u32, verdict);
        assert!(previous.is_none(), "syscall {nr} is listed twice");
    };
    for (_reason, group) in unconditional_allowlist() {
        group.into_iter().for_each(|nr| add(nr, Verdict::Always(Action::Allow)));
    }
    for (_reason, group) in denied_syscalls() {
        group.into_iter().for_each(|nr| add(nr, Verdict::Always(EPERM)));
    }
    for (_reason, nr, verdict) in argument_rules() {
        add(nr, verdict);
    }
    if resources == ResourceBackend::Fallback {
        for (_reason, nr, verdict) in fallback_rules() {
            syscalls.insert(nr as u32, verdict);
        }
    }
    Ok(Policy {
        arch: native_arch()?,
        foreign_arch: Action::KillProcess,
        // x32 syscalls are the native numbers with bit 30 set.
        above: cfg!(target_arch = "x86_64").then_some((0x4000_0000, ENOSYS)),
        syscalls,
        default: ENOSYS,
    })
}

/// The filter for an execution under `resources`, compiled. Done before the identity drop: it
/// allocates.
pub fn compile(resources: ResourceBackend) -> Result<Vec<libc::sock_filter>, SeccompError> {
    Ok(bpf::compile(&policy(resources)?)?)
}

/// Installs the filter on the calling (only) thread. no_new_privs must already be set.
pub fn install(program: &[libc::sock_filter]) -> Result<(), SeccompError> {
    super::sys::install_seccomp_filter(program).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(program: &[libc::sock_filter], nr: libc::c_long, args: [u64; 6]) -> u32 {
        bpf::run(program, native_arch().unwrap(), nr as u32, args).0
    }

    const ALLOW: u32 = 0x7fff_0000;
    const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const RET_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;

    #[test]
    fn the_program_follows_the_tables() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        for (reason, group) in unconditional_allowlist() {
            for nr in group {
                assert_eq!(verdict(&program, nr, [0; 6]), ALLOW, "{nr} ({reason})");
            }
        }
        for (reason, group) in denied_syscalls() {
            for nr in group {
                assert_eq!(verdict(&program, nr, [0; 6]), RET_EPERM, "{nr} ({reason})");
            }
        }
        for nr in [libc::SYS_clone3, libc::SYS_vhangup, libc::SYS_mq_open, 462, 1000] {
            assert_eq!(verdict(&program, nr, [0; 6]), RET_ENOSYS, "unlisted syscall {nr}");
        }
        assert_eq!(verdict(&program, libc::SYS_seccomp, [0; 6]), RET_EPERM, "no further filters");
    }

    #[test]
    fn argument_rules_hold() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        let tiocsti = libc::TIOCSTI;
        assert_eq!(verdict(&program, libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(verdict(&program, libc::SYS_ioctl, [0, tiocsti | 0xFFFF_FFFF_0000_0000, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(verdict(&program, libc::SYS_ioctl, [0, libc::FIONREAD, 0, 0, 0, 0]), ALLOW);
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(verdict(&program, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        for flag in
            [libc::CLONE_NEWNS, libc::CLONE_NEWUSER, libc::CLONE_NEWPID, libc::CLONE_NEWNET, libc::CLONE_NEWCGROUP]
        {
            assert_eq!(verdict(&program, libc::SYS_clone, [flag as u64 | 17, 0, 0, 0, 0, 0]), RET_EPERM, "{flag:#x}");
        }
        assert_eq!(verdict(&program, libc::SYS_socket, [libc::AF_INET as u64, 0, 0, 0, 0, 0]), ALLOW);
        let packet = verdict(&program, libc::SYS_socket, [libc::AF_PACKET as u64, 0, 0, 0, 0, 0]);
        assert_eq!(packet, 0x0005_0000 | libc::EAFNOSUPPORT as u32);
        let unix = verdict(&program, libc::SYS_socket, [libc::AF_UNIX as u64, 0, 0, 0, 0, 0]);
        assert_eq!(unix, 0x0005_0000 | libc::EAFNOSUPPORT as u32);
        let netlink = |protocol: i32| [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, protocol as u64, 0, 0, 0];
        assert_eq!(verdict(&program, libc::SYS_socket, netlink(libc::NETLINK_ROUTE)), ALLOW);
        let uevents = verdict(&program, libc::SYS_socket, netlink(libc::NETLINK_KOBJECT_UEVENT));
        assert_eq!(uevents, 0x0005_0000 | libc::EPROTONOSUPPORT as u32);
        assert_eq!(verdict(&program, libc::SYS_socketpair, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn the_fallback_refuses_memory_it_cannot_count() {
        let (fallback, cgroup) =
            (compile(ResourceBackend::Fallback).unwrap(), compile(ResourceBackend::CgroupV2).unwrap());
        let shared_anon = [0, 4096, 3, (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        let private_anon = [0, 4096, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        let shared_file = [0, 4096, 1, libc::MAP_SHARED as u64, 3, 0];
        let setpipe = [3, libc::F_SETPIPE_SZ as u64, 1 << 20, 0, 0, 0];
        let getfl = [3, libc::F_GETFL as u64, 0, 0, 0, 0];
        let sndbuf = [3, libc::SOL_SOCKET as u64, libc::SO_SNDBUF as u64, 0, 4, 0];
        let reuseaddr = [3, libc::SOL_SOCKET as u64, libc::SO_REUSEADDR as u64, 0, 4, 0];
        assert_eq!(verdict(&fallback, libc::SYS_setsockopt, sndbuf), RET_EPERM);
        assert_eq!(verdict(&fallback, libc::SYS_setsockopt, reuseaddr), ALLOW);
        assert_eq!(verdict(&fallback, libc::SYS_memfd_create, [0; 6]), RET_EPERM);
        assert_eq!(verdict(&fallback, libc::SYS_mmap, shared_anon), RET_EPERM);
        assert_eq!(verdict(&fallback, libc::SYS_mmap, private_anon), ALLOW);
        assert_eq!(verdict(&fallback, libc::SYS_mmap, shared_file), ALLOW);
        assert_eq!(verdict(&fallback, libc::SYS_fcntl, setpipe), RET_EPERM);
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
        assert_eq!(verdict(&program, 0x4000_0000 | libc::SYS_getpid, [0; 6]), RET_ENOSYS);
        let i386 = 0x4000_0003;
        assert_eq!(bpf::run(&program, i386, 20, [0; 6]).0, 0x8000_0000, "kill the process");
    }

    #[test]
    fn every_syscall_takes_a_short_path() {
        let program = compile(ResourceBackend::CgroupV2).unwrap();
        let arch = native_arch().unwrap();
        let longest = (0..1024).map(|nr| bpf::run(&program, arch, nr, [0; 6]).1).max().unwrap();
        // Four instructions of preamble, a binary search of a few hundred ranges, a short leaf.
        assert!(longest <= 24, "{longest} instructions for one syscall");
    }
}
