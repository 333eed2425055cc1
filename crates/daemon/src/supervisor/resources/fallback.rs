//! The Linux fallback backend, where the daemon has no cgroup v2 subtree: per-process rlimits
//! (set by the runner), and the daemon's watch over the whole sandbox: the `/proc` monitor
//! (memory), a perf task clock (CPU time), sock_diag (socket buffers) and the ptrace freezer
//! (the CPU share).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Instant;

use ironclaw_protocol::layers::ResourceBackend;

use super::backend::{Backend, Meter, ResourceError, Sandbox, Totals, Verdict};
use super::cpu_clock::CpuClock;
use super::freezer::Freezer;
use super::monitor::{self, CpuThrottle, Usage};
use super::socket_meter::SocketMeter;
use crate::catalog::policy::Limits;
use crate::execution_result::ExecutionStatus;
use crate::host::HostSupport;
use crate::supervisor::pool::has_exited;

#[derive(Debug, thiserror::Error)]
#[error("cannot count the sandbox's CPU time")]
struct CpuClockError(#[source] std::io::Error);

/// Address space allowed above the memory limit: a backstop for what the sampling monitor
/// might miss between two samples, not the limit itself.
const ADDRESS_SPACE_HEADROOM: u64 = 512 << 20;

pub struct Fallback {
    /// The host offers a perf task clock (else CPU time is summed from `/proc`).
    task_clock: bool,
    /// The host offers sock_diag in the sandbox's network namespace.
    socket_meter: bool,
}

impl Fallback {
    pub fn new(host: &HostSupport) -> Self {
        Fallback {
            task_clock: host.task_clock_unavailable.is_none(),
            socket_meter: host.socket_meter_unavailable.is_none(),
        }
    }
}

impl Backend for Fallback {
    fn kind(&self) -> ResourceBackend {
        ResourceBackend::Fallback
    }

    fn describe(&self, host: &HostSupport) -> BTreeMap<&'static str, &'static str> {
        let memory = if host.missing_capabilities.iter().any(|c| c.starts_with("CAP_SYS_PTRACE")) {
            "NOT enforced: the monitor lacks CAP_SYS_PTRACE, so executions are stopped as errors"
        } else {
            "monitor (anonymous, shared and swapped pages, and socket buffers, every 10 ms) + RLIMIT_AS backstop; \
             memfds, shared anonymous maps and /dev/zero refused"
        };
        let cpu_time = if self.task_clock {
            "perf task clock inherited by every task of the sandbox, whoever reaps it + RLIMIT_CPU"
        } else {
            "monitor (CPU of live processes and of children they waited for) + RLIMIT_CPU"
        };
        BTreeMap::from([
            ("memory", memory),
            ("cpu_time", cpu_time),
            (
                "cpu_share",
                "every task frozen from outside (ptrace) while the sandbox is over its share (100 ms period)",
            ),
            ("pids", "RLIMIT_NPROC (one uid per execution, the ids claimed by this daemon alone)"),
        ])
    }

    fn address_space(&self, limits: &Limits) -> Option<u64> {
        Some(limits.memory.0.saturating_add(ADDRESS_SPACE_HEADROOM))
    }

    fn prepare(&self) -> Result<usize, ResourceError> {
        Ok(0)
    }

    fn open(&self, _execution_id: &str, limits: &Limits) -> Result<Box<dyn Meter>, ResourceError> {
        Ok(Box::new(FallbackMeter {
            task_clock: self.task_clock,
            socket_meter: self.socket_meter,
            share: limits.cpu,
            clock: None,
            throttle: None,
            freezer: None,
            sockets: None,
            samples: 0,
        }))
    }
}

struct FallbackMeter {
    task_clock: bool,
    socket_meter: bool,
    share: f64,
    /// The whole sandbox's CPU time, where the host offers a task clock.
    clock: Option<CpuClock>,
    throttle: Option<CpuThrottle>,
    /// Holds the sandbox to its CPU share; started at the first freeze.
    freezer: Option<Freezer>,
    /// The sandbox's socket buffers; opened once the execution has run for a monitor interval
    /// (most finish sooner, and hold next to nothing).
    sockets: Option<SocketMeter>,
    /// Monitor samples taken so far.
    samples: u64,
}

impl Meter for FallbackMeter {
    fn adopt(&mut self, sandbox: Sandbox<'_>) -> Result<(), ResourceError> {
        if self.task_clock {
            self.clock = Some(CpuClock::attach(sandbox.init_pid).map_err(|e| ResourceError::new(CpuClockError(e)))?);
        }
        self.throttle = Some(CpuThrottle::new(self.share, Instant::now()));
        Ok(())
    }

    fn measure(&mut self, sandbox: Sandbox<'_>, limits: &Limits, peak: &mut Usage) -> Verdict {
        let init = sandbox.init_pid;
        let mut usage = match monitor::sample(init) {
            Ok(Some(usage)) => usage,
            Ok(None) => return Verdict::Within,
            Err(e) => {
                return Verdict::CannotEnforce(format!(
                    "the fallback monitor cannot observe the sandbox ({e}), so its memory and CPU limits cannot be \
                     enforced (the daemon needs CAP_SYS_PTRACE)"
                ));
            }
        };
        self.samples += 1;
        let sockets = match &mut self.sockets {
            Some(meter) => meter.queued_bytes(),
            None if self.socket_meter && self.samples > 1 => {
                SocketMeter::open(sandbox.init, init).and_then(|mut meter| {
                    let bytes = meter.queued_bytes();
                    self.sockets = Some(meter);
                    bytes
                })
            }
            None => Ok(0),
        };
        match sockets {
            Ok(bytes) => usage.memory_bytes += bytes,
            // The sandbox is ending (its init has left its namespaces, or exited): its exit
            // decides, not the meter. Nothing inside can make init leave early.
            Err(e) if has_exited(sandbox.init) || matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return Verdict::Within;
            }
            Err(e) => return Verdict::CannotEnforce(format!("cannot measure the sandbox's socket buffers ({e})")),
        }
        match private_tmp_bytes(init) {
            Ok(bytes) => usage.memory_bytes += bytes,
            Err(e) => return Verdict::CannotEnforce(format!("cannot measure the sandbox's /tmp ({e})")),
        }
        let cpu = match &mut self.clock {
            Some(clock) => match clock.read_ms() {
                Ok(ms) => ms,
                Err(e) => return Verdict::CannotEnforce(format!("cannot read the sandbox's CPU clock ({e})")),
            },
            None => usage.cpu_time_ms,
        };
        peak.memory_bytes = peak.memory_bytes.max(usage.memory_bytes);
        peak.cpu_time_ms = peak.cpu_time_ms.max(cpu);
        if let Some(pause) = self.throttle.as_mut().and_then(|t| t.update(cpu, Instant::now())) {
            if self.freezer.is_none() {
                match Freezer::start(init) {
                    Ok(freezer) => self.freezer = Some(freezer),
                    Err(e) => {
                        return Verdict::CannotEnforce(format!("cannot start the freezer for the CPU share ({e})"));
                    }
                }
            }
            if let Some(freezer) = &self.freezer {
                if pause { freezer.freeze() } else { freezer.thaw() }
            }
        }
        if let Some(why) = self.freezer.as_ref().and_then(Freezer::failure) {
            return Verdict::CannotEnforce(format!("the CPU share cannot be held: {why}"));
        }
        if usage.memory_bytes > limits.memory.0 {
            Verdict::Over(ExecutionStatus::MemoryLimit)
        } else if cpu > limits.cpu_time.0.as_millis() as u64 {
            Verdict::Over(ExecutionStatus::CpuLimit)
        } else {
            Verdict::Within
        }
    }

    fn release(&mut self) {
        // A frozen plugin must run to act on SIGTERM; a killed one must not stay traced (its
        // zombie is the tracer's to release).
        self.freezer = None;
    }

    fn kill(&self) {}

    fn close(mut self: Box<Self>) -> Totals {
        self.freezer = None;
        let cpu_time_ms = self.clock.as_mut().and_then(|clock| clock.read_ms().ok());
        Totals { cpu_time_ms, peak_memory_bytes: None, oom_killed: false }
    }
}

/// What the sandbox's private `/tmp` (a tmpfs: its pages are memory no process map shows)
/// holds. Nothing while the runner is still building its root (no such directory yet, or still
/// the host's own `/tmp`) or once it is gone.
fn private_tmp_bytes(init: i32) -> std::io::Result<u64> {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    use std::os::unix::fs::MetadataExt;
    let tmp = format!("/proc/{init}/root/tmp");
    let gone = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH));
    let device = match std::fs::metadata(&tmp) {
        Ok(meta) => meta.dev(),
        Err(e) if gone(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    if std::fs::metadata("/tmp").is_ok_and(|host| host.dev() == device) {
        return Ok(0);
    }
    match statfs(tmp.as_str()) {
        Ok(fs) if fs.filesystem_type() == TMPFS_MAGIC => {
            Ok(fs.blocks().saturating_sub(fs.blocks_free()) * fs.block_size() as u64)
        }
        Ok(_) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ESRCH) => Ok(0),
        Err(e) => Err(e.into()),
    }
}
