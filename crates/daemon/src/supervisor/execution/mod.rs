//! One execution, from taking a waiting runner (see [`super::pool`]) to classifying how it
//! ended: [`plan`] (what it may do), [`pipes`] (what comes back), [`outcome`] (how it ended).
#![forbid(unsafe_code)]

pub mod outcome;
pub mod pipes;
pub mod plan;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use ironclaw_protocol::frame::{self, IpcError};
use ironclaw_protocol::message::SetupStage;
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::pool::{PoolError, Runner, RunnerPool};
use super::resources::monitor::Usage;
use super::resources::{Meter, ResourceError, Sandbox, Totals, Verdict};
use super::workspace::WorkspaceError;
use crate::catalog::schema::SchemaRefusal;
use crate::execution_result::{ExecutionResult, ExecutionStatus};
use crate::proxy::{EgressProxy, ProxyError};
use crate::sys;
use ironclaw_plugin_sdk::Operation;
use outcome::{Ending, Outcome, classify, read_response, redact_secrets};
use pipes::{IpcReport, join_or_default, read_ipc, read_pipe};
pub use plan::ExecutionPlan;

/// How much of a plugin's stderr is kept as its log.
pub const LOG_KEPT: usize = 64 * 1024;
/// How long the readers get to finish once the sandbox is gone.
const READERS_GRACE: Duration = Duration::from_secs(2);

/// Why an execution could not be started or handed its spec: the sandbox's failure, never the
/// plugin's.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error(transparent)]
    Resources(#[from] ResourceError),
    #[error(transparent)]
    Runner(#[from] PoolError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("failed to encode the spec")]
    Encode(#[source] IpcError),
    #[error("failed to send the spec")]
    Send(#[source] std::io::Error),
}

/// Runs one execution to its end. Never panics on plugin behaviour.
pub async fn execute(plan: ExecutionPlan, pool: &RunnerPool, cancel: watch::Receiver<bool>) -> ExecutionResult {
    let started = Instant::now();
    let started_at = crate::audit::unix_ms();
    let mut result = match Execution::start(&plan, pool).await {
        Ok(execution) => execution.finish(&plan, cancel, started).await,
        Err(e) => {
            let error = format!("failed to start the sandbox: {}", ironclaw_protocol::error_chain(&e));
            ExecutionResult { sandbox_failed: true, ..plan.refused(ExecutionStatus::Error, error) }
        }
    };
    result.started_at = started_at;
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

/// Where an execution is in its life, as [`Execution::finish`] drives it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The plugin runs; its limits are watched.
    Running,
    /// Asked to stop (SIGTERM) for `reason`; killed at `hard_kill_at` if still alive.
    Stopping { reason: ExecutionStatus, hard_kill_at: tokio::time::Instant },
    /// Killed for `reason`; waiting for the runner to be reaped.
    Killed { reason: ExecutionStatus },
}

impl Phase {
    fn stop_reason(self) -> Option<ExecutionStatus> {
        match self {
            Phase::Running => None,
            Phase::Stopping { reason, .. } | Phase::Killed { reason } => Some(reason),
        }
    }
}

/// What happened while the execution ran.
enum Event {
    Exited(Option<sys::Reaped>),
    Stop { reason: ExecutionStatus, graceful: bool },
    HardKill,
    Nothing,
}

struct Execution {
    outer: std::process::Child,
    outer_exit: AsyncFd<OwnedFd>,
    /// The confined runner: the sandbox's init, by host pid and pidfd.
    inner: Option<(i32, OwnedFd)>,
    /// The execution's resources, from the host's backend.
    meter: Box<dyn Meter>,
    ipc: Option<tokio::task::JoinHandle<IpcReport>>,
    early_failure: Option<(SetupStage, String)>,
    stdout: tokio::task::JoinHandle<(Vec<u8>, bool)>,
    stderr: tokio::task::JoinHandle<(Vec<u8>, bool)>,
    overflow: mpsc::Receiver<()>,
    /// Serves the sandbox's proxy listener; aborted when the sandbox is gone.
    proxy: Option<tokio::task::JoinHandle<()>>,
    /// Why the daemon stopped the execution as an error (a limit it could not enforce).
    unenforceable: Option<String>,
}

impl Execution {
    /// Opens the execution's resources, takes a waiting runner and sends it the spec. Once a
    /// runner is taken, every failure becomes an early failure, which `finish` cleans up.
    async fn start(plan: &ExecutionPlan, pool: &RunnerPool) -> Result<Self, ExecutionError> {
        let meter = plan.resources.open(&plan.id, &plan.limits)?;
        let runner = match pool.take().await {
            Ok(runner) => runner,
            Err(e) => {
                meter.close();
                return Err(e.into());
            }
        };
        let Runner { outer, outer_exit, inner, ipc, stdout, stderr } = runner;
        let output_limit = plan.limits.output.0 as usize;
        let (overflow_tx, overflow) = mpsc::channel(4);
        let stdout = tokio::spawn(read_pipe(stdout, output_limit + 1, output_limit, overflow_tx.clone()));
        let stderr = tokio::spawn(read_pipe(stderr, LOG_KEPT, output_limit.max(LOG_KEPT), overflow_tx));
        let mut execution = Execution {
            outer,
            outer_exit,
            inner: None,
            meter,
            ipc: None,
            early_failure: None,
            stdout,
            stderr,
            overflow,
            proxy: None,
            unenforceable: None,
        };
        match inner {
            Ok((pid, pidfd)) => {
                execution.inner = Some((pid, pidfd));
                match execution.hand_over(plan, ipc).await {
                    Ok(ipc) => execution.ipc = Some(tokio::spawn(read_ipc(ipc))),
                    Err(e) => {
                        execution.early_failure = Some((SetupStage::Spawn, ironclaw_protocol::error_chain(&e)));
                    }
                }
            }
            Err(failure) => execution.early_failure = Some(failure),
        }
        Ok(execution)
    }

    fn sandbox(&self) -> Option<Sandbox<'_>> {
        let (init_pid, init) = self.inner.as_ref()?;
        Some(Sandbox { outer_pid: self.outer.id() as i32, init_pid: *init_pid, init: init.as_fd() })
    }

    /// Gives the runner to the resource backend, opens the egress proxy in its network
    /// namespace, prepares the workspace, then sends it the spec.
    async fn hand_over(
        &mut self,
        plan: &ExecutionPlan,
        mut ipc: tokio::net::UnixStream,
    ) -> Result<tokio::net::UnixStream, ExecutionError> {
        if let Some((init_pid, init)) = &self.inner {
            let sandbox = Sandbox { outer_pid: self.outer.id() as i32, init_pid: *init_pid, init: init.as_fd() };
            self.meter.adopt(sandbox)?;
            if !plan.effective.network.is_empty() {
                let listener = EgressProxy::listen_in(init.as_fd())?;
                self.proxy = Some(plan.proxy.serve(listener, plan.proxy_scope()));
            }
        }
        let workspace = plan.workspace().await?;
        let mut spec = Vec::new();
        frame::write_frame(&mut spec, &plan.runner_spec(workspace.as_ref())).map_err(ExecutionError::Encode)?;
        ipc.write_all(&spec).await.map_err(ExecutionError::Send)?;
        Ok(ipc)
    }

    /// Sends `signal` to the confined runner (which, as pid 1 of its namespace, only receives
    /// SIGTERM if the plugin handles it; SIGKILL always lands and takes the whole namespace).
    fn signal_inner(&self, signal: Signal) {
        if let Some((_, pidfd)) = &self.inner {
            let _ = sys::pidfd_kill(pidfd.as_fd(), signal as i32);
        }
    }

    /// Kills the sandbox. Only the confined runner is killed when it exists: the outer runner
    /// then exits after the kernel has torn the whole pid namespace down, so the uid slot is
    /// never handed to the next execution while processes of this one still count against it.
    fn kill_now(&self) {
        match &self.inner {
            Some(_) => self.signal_inner(Signal::SIGKILL),
            None => {
                let _ = sys::pidfd_kill(self.outer_exit.get_ref().as_fd(), Signal::SIGKILL as i32);
            }
        }
        self.meter.kill();
    }

    /// One look at the execution's usage: the reason to stop it, when there is one.
    fn measure(&mut self, plan: &ExecutionPlan, peak: &mut Usage) -> Option<ExecutionStatus> {
        let (init_pid, init) = self.inner.as_ref()?;
        let sandbox = Sandbox { outer_pid: self.outer.id() as i32, init_pid: *init_pid, init: init.as_fd() };
        match self.meter.measure(sandbox, &plan.limits, peak) {
            Verdict::Within => None,
            Verdict::Over(status) => Some(status),
            Verdict::CannotEnforce(why) => {
                tracing::error!(%why, "stopping the execution: a limit cannot be enforced");
                self.unenforceable = Some(why);
                Some(ExecutionStatus::Error)
            }
        }
    }

    /// Waits for the runner to end, stopping it at its timeout, a limit, an overflow or a
    /// cancellation; then reads what it left and decides the result.
    async fn finish(
        mut self,
        plan: &ExecutionPlan,
        mut cancel: watch::Receiver<bool>,
        started: Instant,
    ) -> ExecutionResult {
        let deadline = tokio::time::Instant::from_std(started + plan.limits.timeout.0);
        let mut phase = Phase::Running;
        let mut peak = Usage::default();
        let monitored = self.sandbox().is_some();
        let mut tick = tokio::time::interval(plan.monitor_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if self.early_failure.is_some() {
            self.kill_now();
        }

        let reaped = loop {
            let running = matches!(phase, Phase::Running);
            let hard_kill_at = match phase {
                Phase::Stopping { hard_kill_at, .. } => Some(hard_kill_at),
                _ => None,
            };
            let event = tokio::select! {
                ready = self.outer_exit.readable() => match ready {
                    Ok(mut guard) => match sys::try_reap(self.outer.id() as i32) {
                        Ok(Some(r)) => Event::Exited(Some(r)),
                        Ok(None) => {
                            guard.clear_ready();
                            Event::Nothing
                        }
                        Err(_) => Event::Exited(None),
                    },
                    Err(_) => Event::Exited(None),
                },
                _ = tokio::time::sleep_until(deadline), if running => {
                    Event::Stop { reason: ExecutionStatus::Timeout, graceful: true }
                }
                _ = tokio::time::sleep_until(hard_kill_at.unwrap_or(deadline)), if hard_kill_at.is_some() => Event::HardKill,
                changed = cancel.changed(), if running => match changed {
                    Ok(()) if *cancel.borrow() => Event::Stop { reason: ExecutionStatus::Cancelled, graceful: true },
                    _ => Event::Nothing,
                },
                Some(()) = self.overflow.recv(), if running => {
                    Event::Stop { reason: ExecutionStatus::OutputLimit, graceful: false }
                }
                _ = tick.tick(), if monitored && running => match self.measure(plan, &mut peak) {
                    Some(reason) => Event::Stop { reason, graceful: false },
                    None => Event::Nothing,
                },
            };
            match (event, phase) {
                (Event::Exited(reaped), _) => break reaped,
                (Event::Stop { reason, graceful }, Phase::Running) => {
                    self.meter.release();
                    phase = if graceful {
                        self.signal_inner(Signal::SIGTERM);
                        Phase::Stopping { reason, hard_kill_at: tokio::time::Instant::now() + plan.kill_grace }
                    } else {
                        self.kill_now();
                        Phase::Killed { reason }
                    };
                }
                (Event::HardKill, Phase::Stopping { reason, .. }) => {
                    self.kill_now();
                    phase = Phase::Killed { reason };
                }
                _ => {}
            }
        };

        // Every process of the sandbox is gone with its pid 1; the pipes are at their end.
        let Totals { cpu_time_ms: counted_cpu, peak_memory_bytes: counted_peak, oom_killed } = self.meter.close();
        if let Some(proxy) = self.proxy.take() {
            proxy.abort();
        }
        let (stdout, stdout_overflow) = join_or_default(self.stdout, READERS_GRACE).await;
        let (stderr, stderr_overflow) = join_or_default(self.stderr, READERS_GRACE).await;
        let report = match self.ipc.take() {
            Some(task) => join_or_default(task, READERS_GRACE).await,
            None => IpcReport::default(),
        };

        let setup_failed = self.early_failure.or(report.setup_failed.clone());
        // Only loading or starting the plugin (and a requirement the policy set) is the plugin's
        // part of the set-up; any other stage failing is the sandbox's or the host's.
        let sandbox_failed =
            report.layers.is_none() || setup_failed.as_ref().is_some_and(|(stage, _)| !stage.is_plugins_part());
        let reaped = reaped.unwrap_or(sys::Reaped {
            exit_code: None,
            signal: Some(Signal::SIGKILL as i32),
            cpu_time_ms: 0,
            max_rss_bytes: 0,
        });
        let ending = classify(&Outcome {
            kill_reason: phase.stop_reason(),
            oom_killed,
            setup_failed,
            reaped,
            memory_limit: plan.limits.memory.0,
            peak_memory: counted_peak.unwrap_or(peak.memory_bytes),
            cpu_limit_ms: plan.limits.cpu_time.0.as_millis() as u64,
            // Either pipe past its limit: the reader stops there, so a plugin still writing may
            // die of SIGPIPE before the overflow is handled as a stop.
            output_too_large: stdout_overflow || stderr_overflow,
            ipc_garbage: report.garbage,
            confined: report.layers.is_some(),
            unenforceable: self.unenforceable.take(),
        });
        let mut result = match ending {
            Ending::Decided(status, why) => {
                let mut result = plan.result(status, Some(why));
                result.sandbox_failed = sandbox_failed && status == ExecutionStatus::Error;
                if status == ExecutionStatus::Crashed {
                    result.signal = reaped.signal;
                }
                result
            }
            Ending::Responded => {
                let (status, data, error) = read_response(&stdout, reaped.exit_code);
                // A trial load's `validate` answers nothing; an execution's answer is checked.
                let checked = match (plan.operation, status) {
                    (Operation::Execute, ExecutionStatus::Success) => {
                        plan.plugin.schemas.check_output(data.as_ref().unwrap_or(&serde_json::Value::Null))
                    }
                    _ => Ok(()),
                };
                match checked {
                    Ok(()) => ExecutionResult { data, ..plan.result(status, error) },
                    // A result of another shape than declared is the plugin's failure; its data
                    // never reaches a caller that relies on the declared shape.
                    Err(SchemaRefusal { path, message }) => plan.result(
                        ExecutionStatus::Error,
                        Some(format!("the plugin's result does not match its [output] schema at '{path}': {message}")),
                    ),
                }
            }
        };
        result.layers.sandbox = report.layers;
        result.log = String::from_utf8_lossy(&stderr).into_owned();
        // The backend's count of the whole sandbox; the monitor's samples and the kernel's
        // rusage of the runner where it has none (or where they say more).
        result.cpu_time_ms = counted_cpu.unwrap_or(0).max(reaped.cpu_time_ms).max(peak.cpu_time_ms);
        // The backend's peak, or the monitor's (what the limit applies to); for an execution
        // shorter than one sample, the kernel's maximum RSS.
        let sampled = Some(peak.memory_bytes).filter(|m| *m > 0);
        result.peak_memory_bytes = counted_peak.or(sampled).unwrap_or(reaped.max_rss_bytes);
        redact_secrets(&mut result, &plan.secrets.0);
        result
    }
}
