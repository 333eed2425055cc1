//! Resource backends: where an execution's memory, CPU and process limits come from. One is
//! chosen at start-up ([`probe_host`]) and every execution goes through its interface
//! ([`backend`]): [`Backend`] for the daemon's side, [`Meter`] for one execution. cgroup v2
//! ([`cgroup`]) where the daemon has a delegated subtree; otherwise the Linux fallback
//! ([`fallback`]: rlimits, the daemon's monitor, a perf task clock, the socket meter and the
//! ptrace freezer). Another backend is one more implementation of the interface.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cgroup;
pub mod cpu_clock;
pub mod fallback;
pub mod freezer;
pub mod monitor;
pub mod probe;
pub mod socket_meter;

pub use backend::{Backend, Meter, ResourceError, Sandbox, Totals, Verdict};
pub use probe::probe_host;
