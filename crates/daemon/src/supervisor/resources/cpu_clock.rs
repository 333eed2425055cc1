//! The CPU time of a whole execution under the fallback backend.
//!
//! A perf `task-clock` counter is attached to the sandbox's init before the plugin exists, with
//! `inherit`, so every task the sandbox ever creates (processes, threads, orphans, vfork and
//! `CLONE_PARENT` children alike) counts into it. The kernel folds a task's count into the
//! counter when the task exits, whoever reaps it, or nobody (SIGCHLD ignored, SA_NOCLDWAIT):
//! a read is the whole tree's CPU time, live and exited, to the nanosecond. That is what
//! cgroup v2's `cpu.stat` gives where the daemon has a cgroup. The plugin cannot touch the
//! counter: `perf_event_open` is refused by its seccomp filter, and the counter is the daemon's.
#![forbid(unsafe_code)]

use perf_event::Builder;
use perf_event::events::Software;

pub struct CpuClock(perf_event::Counter);

impl CpuClock {
    /// Starts counting the CPU time of `pid` and of every task it creates from now on.
    pub fn attach(pid: i32) -> std::io::Result<Self> {
        let mut builder = Builder::new(Software::TASK_CLOCK);
        builder.observe_pid(pid).any_cpu().inherit(true).exclude_kernel(false).exclude_hv(false).enabled(true);
        builder.build().map(CpuClock)
    }

    /// CPU time so far, in milliseconds.
    pub fn read_ms(&mut self) -> std::io::Result<u64> {
        Ok(self.0.read()? / 1_000_000)
    }
}

/// Whether this host lets the daemon count an execution's CPU time this way: `Err` says why not.
pub fn probe() -> Result<(), String> {
    CpuClock::attach(std::process::id() as i32)
        .and_then(|mut clock| clock.read_ms())
        .map(|_| ())
        .map_err(|e| format!("perf_event_open(task-clock) failed: {e}"))
}
