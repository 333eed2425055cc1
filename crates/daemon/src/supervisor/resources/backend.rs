//! The interface every resource backend implements: [`Backend`] for the daemon's side, [`Meter`]
//! for one execution.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;

use ironclaw_protocol::layers::ResourceBackend;

use super::monitor::Usage;
use crate::catalog::policy::Limits;
use crate::execution_result::ExecutionStatus;
use crate::host::HostSupport;

/// A backend's failure to set up or account an execution, in the backend's own error type.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ResourceError(Box<dyn std::error::Error + Send + Sync>);

impl ResourceError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ResourceError(Box::new(e))
    }
}

/// The sandbox an execution's meter watches: its init (pid 1 of its namespaces), by host pid
/// and by pidfd.
#[derive(Clone, Copy)]
pub struct Sandbox<'a> {
    pub outer_pid: i32,
    pub init_pid: i32,
    pub init: BorrowedFd<'a>,
}

/// What one look at an execution's usage decided.
pub enum Verdict {
    /// Within every limit.
    Within,
    /// Over a limit: stop it with this status.
    Over(ExecutionStatus),
    /// A limit can no longer be enforced, for this reason: stop it as an error, never run on
    /// as if it were.
    CannotEnforce(String),
}

/// What the backend counted of an execution, once its sandbox is gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// The whole sandbox's CPU time, when the backend counts it.
    pub cpu_time_ms: Option<u64>,
    /// The peak of the backend's own memory account, when it keeps one.
    pub peak_memory_bytes: Option<u64>,
    pub oom_killed: bool,
}

/// A resource backend, chosen once at start-up.
pub trait Backend: Send + Sync {
    fn kind(&self) -> ResourceBackend;

    /// How each limit is enforced, by limit (for `/api/v1/system`).
    fn describe(&self, host: &HostSupport) -> BTreeMap<&'static str, &'static str>;

    /// The runner's `RLIMIT_AS`, when the backend needs one as a backstop.
    fn address_space(&self, limits: &Limits) -> Option<u64>;

    /// Removes what a previous daemon left behind; how many it removed.
    fn prepare(&self) -> Result<usize, ResourceError>;

    /// The resources of one execution, before its runner is taken.
    fn open(&self, execution_id: &str, limits: &Limits) -> Result<Box<dyn Meter>, ResourceError>;
}

/// One execution's resources, from before its runner is taken to after its sandbox is gone.
pub trait Meter: Send {
    /// The runner joins, before it gets its spec: the plugin does not exist yet, so every task
    /// it will ever be is covered.
    fn adopt(&mut self, sandbox: Sandbox<'_>) -> Result<(), ResourceError>;

    /// One look, every monitor interval; `peak` is the execution's running maximum.
    fn measure(&mut self, sandbox: Sandbox<'_>, limits: &Limits, peak: &mut Usage) -> Verdict;

    /// The execution is being stopped: let its tasks run to act on a signal or die.
    fn release(&mut self);

    /// Kills every task of the sandbox the backend can reach at once.
    fn kill(&self);

    /// After the sandbox is gone: what was counted, and every resource given back.
    fn close(self: Box<Self>) -> Totals;
}
