//! One execution, from taking a waiting runner (see [`super::pool`]) to classifying how it ended.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclaw_plugin_sdk::{Operation, PROTOCOL_VERSION, Request, Response, ResponseStatus};

use serde_json::Value;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::cgroup::{CgroupRoot, ExecCgroup};
use super::cpu_clock::CpuClock;
use super::freezer::Freezer;
use super::monitor;
use super::pool::{Runner, RunnerPool, has_exited};
use super::socket_meter::SocketMeter;
use super::workspace::{self, Workspace};
use crate::catalog::manifest::Runtime;
use crate::catalog::policy::{Effective, Limits};
use crate::catalog::registry::LoadedPlugin;
use crate::execution_result::{ExecutionResult, ExecutionStatus, LayerReport};
use crate::proxy::{EgressProxy, PROXY_PORT, PROXY_URL, Scope};
use crate::sys;
use ironclaw_protocol::frame::{self, IpcError};
use ironclaw_protocol::layers::{AppliedLayers, Requirements, ResourceBackend};
use ironclaw_protocol::message::{RunnerMessage, SetupStage};
use ironclaw_protocol::spec::{RlimitSpec, RunnerSpec, RuntimeSpec, WorkspaceSpec};
use ironclaw_protocol::{EXIT_SETUP_FAILED, WORKSPACE_MOUNT};

/// How much of a plugin's stderr is kept as its log.
pub const LOG_KEPT: usize = 64 * 1024;
/// The environment of exec plugins (nothing is inherited from the daemon).
const PLUGIN_ENV: [(&str, &str); 4] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("HOME", "/nonexistent"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];
/// Address space allowed above the memory limit under the fallback backend: a backstop for
/// what the sampling monitor might miss between two samples, not the limit itself.
const ADDRESS_SPACE_HEADROOM: u64 = 512 << 20;

/// Everything one execution needs, decided by the supervisor.
#[derive(Debug, Clone)]
pub struct ExecutionPlan {
    pub id: String,
    /// `Execute`, or `Validate` for a trial load.
    pub operation: Operation,
    pub plugin: Arc<LoadedPlugin>,
    pub parameters: Value,
    pub config: Value,
    pub limits: Limits,
    pub effective: Arc<Effective>,
    /// Names and values of the secrets this plugin is granted.
    pub secrets: crate::catalog::secrets::SecretEnv,
    /// The directory holding every plugin's workspace.
    pub workspaces: PathBuf,
    pub proxy: Arc<EgressProxy>,
    pub uid: u32,
    pub uid_base: u32,
    pub requirements: Requirements,
    pub cgroups: Option<CgroupRoot>,
    pub kill_grace: Duration,
    pub monitor_interval: Duration,
    pub extra_read_paths: Vec<PathBuf>,
    /// Under the fallback: count CPU time with a perf task clock (the host offers one).
    pub task_clock: bool,
    /// Under the fallback: count socket buffers with sock_diag (the host offers it).
    pub socket_meter: bool,
    /// What the resource backend cannot enforce on this host (reported with the result).
    pub resource_gaps: Vec<String>,
}

impl ExecutionPlan {
    fn resources(&self) -> ResourceBackend {
        if self.cgroups.is_some() { ResourceBackend::CgroupV2 } else { ResourceBackend::Fallback }
    }

    /// A result for an execution that never reached a runner.
    pub fn refused(&self, status: ExecutionStatus, error: String) -> ExecutionResult {
        ExecutionResult {
            id: self.id.clone(),
            plugin: self.plugin.manifest.name.clone(),
            plugin_version: self.plugin.manifest.version.to_string(),
            plugin_digest: self.plugin.short_digest().to_string(),
            status,
            data: None,
            error: Some(error),
            duration_ms: 0,
            cpu_time_ms: 0,
            peak_memory_bytes: 0,
            signal: None,
            layers: LayerReport {
                resources: self.resources(),
                sandbox: None,
                resource_gaps: self.resource_gaps.clone(),
            },
            log: String::new(),
            started_at: crate::audit::unix_ms(),
            cached: false,
            sandbox_failed: false,
        }
    }

    /// What the egress proxy lets this execution reach.
    fn proxy_scope(&self) -> Scope {
        let eff = &self.effective;
        Scope {
            plugin: self.plugin.manifest.name.clone(),
            execution_id: self.id.clone(),
            allow: eff.network.iter().map(|g| g.value.clone()).collect(),
            deny: eff.network_deny.iter().map(|g| g.value.clone()).collect(),
            private_addresses: eff.private_addresses.iter().map(|g| g.value).collect(),
        }
    }

    /// Creates and measures the workspace, when the plugin is granted one.
    async fn workspace(&self) -> Result<Option<Workspace>, String> {
        let Some(size) = self.effective.workspace.as_ref().map(|g| g.value.0) else { return Ok(None) };
        let (root, name, uid_base) = (self.workspaces.clone(), self.plugin.manifest.name.clone(), self.uid_base);
        tokio::task::spawn_blocking(move || workspace::prepare(&root, &name, uid_base, size))
            .await
            .map_err(|e| e.to_string())?
            .map(Some)
            .map_err(|e| format!("failed to prepare the workspace: {e}"))
    }

    fn runner_spec(&self, workspace: Option<&Workspace>) -> RunnerSpec {
        let request = Request {
            protocol: PROTOCOL_VERSION,
            operation: self.operation,
            execution_id: self.id.clone(),
            parameters: self.parameters.clone(),
            config: self.config.clone(),
        };
        let fallback = self.cgroups.is_none();
        RunnerSpec {
            execution_id: self.id.clone(),
            plugin_dir: self.plugin.dir().to_path_buf(),
            runtime: match &self.plugin.manifest.runtime {
                Runtime::Native { library } => RuntimeSpec::Native { library: library.clone() },
                Runtime::Exec { command } => RuntimeSpec::Exec { argv: command.clone() },
            },
            request: serde_json::to_string(&request).unwrap_or_default(),
            uid: self.uid,
            gid: workspace.map_or(self.uid, |w| w.gid),
            rlimits: RlimitSpec {
                address_space: fallback.then(|| self.limits.memory.0.saturating_add(ADDRESS_SPACE_HEADROOM)),
                // A backstop a second above the limit: the daemon stops the execution at the
                // limit itself, counting the whole sandbox (RLIMIT_CPU counts one process, in
                // scheduler ticks, so it would fire early for some and never for others).
                cpu_seconds: Some(self.limits.cpu_time.0.as_secs_f64().ceil() as u64 + 1),
                // The sandbox's init (pid 1) is ours: it does not count against the plugin.
                processes: Some(self.limits.pids + 1),
                open_files: 256,
                // No file may outgrow the workspace (the only writable place for most plugins).
                file_size: workspace
                    .and(self.effective.workspace.as_ref())
                    .map_or(self.limits.output.0, |g| g.value.0.max(self.limits.output.0)),
            },
            read_paths: self
                .extra_read_paths
                .iter()
                .cloned()
                .chain(self.effective.fs_read.iter().map(|g| g.value.0.clone()))
                .collect(),
            write_paths: self.effective.fs_write.iter().map(|g| g.value.0.clone()).collect(),
            workspace: workspace.map(|w| WorkspaceSpec { path: w.path.clone(), read_only: w.read_only }),
            proxy_port: (!self.effective.network.is_empty()).then_some(PROXY_PORT),
            env: self.plugin_env(workspace.is_some()),
            requirements: self.requirements.clone(),
            resources: self.resources(),
        }
    }
}

impl ExecutionPlan {
    /// The plugin's whole environment: fixed basics, the proxy, the workspace, its secrets.
    fn plugin_env(&self, workspace: bool) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = PLUGIN_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !self.effective.network.is_empty() {
            for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
                env.push((var.into(), PROXY_URL.into()));
            }
        }
        if workspace {
            env.push(("IRONCLAW_WORKSPACE".into(), WORKSPACE_MOUNT.into()));
        }
        env.extend(self.secrets.0.iter().cloned());
        env
    }
}

/// What the IPC reader saw after the runner's first frame.
#[derive(Debug, Default)]
struct IpcReport {
    layers: Option<AppliedLayers>,
    setup_failed: Option<(SetupStage, String)>,
    response: Option<String>,
    too_large: bool,
    garbage: Option<String>,
}

async fn read_ipc(mut stream: tokio::net::UnixStream, response_limit: usize, overflow: mpsc::Sender<()>) -> IpcReport {
    let mut report = IpcReport::default();
    // JSON escaping can at most double a body, plus the frame's envelope.
    let frame_limit = response_limit.saturating_mul(2).saturating_add(4096);
    loop {
        match frame::read_frame_async::<RunnerMessage>(&mut stream, frame_limit).await {
            Ok(RunnerMessage::Confined { layers }) if report.layers.is_none() => report.layers = Some(layers),
            Ok(RunnerMessage::SetupFailed { stage, message }) if report.setup_failed.is_none() => {
                report.setup_failed = Some((stage, message));
            }
            Ok(RunnerMessage::Response { body }) if report.response.is_none() && report.layers.is_some() => {
                if body.len() > response_limit {
                    report.too_large = true;
                    let _ = overflow.try_send(());
                }
                report.response = Some(body);
            }
            Ok(other) => {
                report.garbage = Some(format!("unexpected message on the runner channel: {other:?}"));
                break;
            }
            Err(IpcError::Read(_)) => break,
            Err(IpcError::TooLarge(..)) => {
                report.too_large = true;
                let _ = overflow.try_send(());
                break;
            }
            Err(e) => {
                report.garbage = Some(ironclaw_protocol::error_chain(&e));
                break;
            }
        }
    }
    report
}

/// Reads a pipe to its end, keeping at most `keep` bytes; signals `overflow` past `limit`.
async fn read_pipe(
    mut pipe: impl AsyncRead + Unpin,
    keep: usize,
    limit: usize,
    overflow: mpsc::Sender<()>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                if kept.len() < keep {
                    let take = n.min(keep - kept.len());
                    kept.extend_from_slice(&buf[..take]);
                }
                if total > limit {
                    let _ = overflow.try_send(());
                    return (kept, true);
                }
            }
        }
    }
    (kept, false)
}

/// Runs one execution to its end. Never panics on plugin behaviour.
pub async fn execute(plan: ExecutionPlan, pool: &RunnerPool, cancel: watch::Receiver<bool>) -> ExecutionResult {
    let started = Instant::now();
    let started_at = crate::audit::unix_ms();
    let mut result = match Execution::start(&plan, pool).await {
        Ok(execution) => execution.finish(&plan, cancel, started).await,
        Err(e) => ExecutionResult {
            sandbox_failed: true,
            ..plan.refused(ExecutionStatus::Error, format!("failed to start the sandbox: {e}"))
        },
    };
    result.started_at = started_at;
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

struct Execution {
    outer: std::process::Child,
    outer_exit: AsyncFd<OwnedFd>,
    inner: Option<(i32, OwnedFd)>,
    cgroup: Option<ExecCgroup>,
    ipc: Option<tokio::task::JoinHandle<IpcReport>>,
    early_failure: Option<(SetupStage, String)>,
    stdout: tokio::task::JoinHandle<(Vec<u8>, bool)>,
    stderr: tokio::task::JoinHandle<(Vec<u8>, bool)>,
    overflow: mpsc::Receiver<()>,
    /// Serves the sandbox's proxy listener; aborted when the sandbox is gone.
    proxy: Option<tokio::task::JoinHandle<()>>,
    /// The whole sandbox's CPU time (fallback backend, where the host offers a task clock).
    cpu_clock: Option<CpuClock>,
    /// Holds the sandbox to its CPU share (fallback backend); started at the first freeze.
    freezer: Option<Freezer>,
    /// The sandbox's socket buffers (fallback backend); opened once the execution has run for
    /// a monitor interval (most finish sooner, and hold next to nothing).
    socket_meter: Option<SocketMeter>,
    /// Monitor samples taken so far.
    samples: u64,
    /// Why the daemon stopped the execution as an error (a limit it could not enforce).
    unenforceable: Option<String>,
}

impl Execution {
    /// Takes a waiting runner, puts it in the execution's cgroup and sends it the spec. Once a
    /// runner is taken, every failure becomes an early failure, which `finish` cleans up.
    async fn start(plan: &ExecutionPlan, pool: &RunnerPool) -> Result<Self, String> {
        let cgroup = match &plan.cgroups {
            Some(root) => Some(root.create(&plan.id, &plan.limits).map_err(|e| ironclaw_protocol::error_chain(&e))?),
            None => None,
        };
        let runner = match pool.take().await {
            Ok(runner) => runner,
            Err(e) => {
                if let Some(Err(err)) = cgroup.map(ExecCgroup::destroy) {
                    tracing::error!(error = %ironclaw_protocol::error_chain(&err), "failed to remove an execution cgroup");
                }
                return Err(e);
            }
        };
        let Runner { outer, outer_exit, inner, ipc, stdout, stderr } = runner;
        let output_limit = plan.limits.output.0 as usize;
        let (overflow_tx, overflow) = mpsc::channel(4);
        let stdout = tokio::spawn(read_pipe(stdout, output_limit + 1, output_limit, overflow_tx.clone()));
        let stderr = tokio::spawn(read_pipe(stderr, LOG_KEPT, output_limit.max(LOG_KEPT), overflow_tx.clone()));
        let mut execution = Execution {
            outer,
            outer_exit,
            inner: None,
            cgroup,
            ipc: None,
            early_failure: None,
            stdout,
            stderr,
            overflow,
            proxy: None,
            cpu_clock: None,
            freezer: None,
            socket_meter: None,
            samples: 0,
            unenforceable: None,
        };
        match inner {
            Ok((pid, pidfd)) => {
                execution.inner = Some((pid, pidfd));
                match execution.hand_over(plan, pid, ipc).await {
                    Ok(ipc) => execution.ipc = Some(tokio::spawn(read_ipc(ipc, output_limit, overflow_tx))),
                    Err(message) => execution.early_failure = Some((SetupStage::Spawn, message)),
                }
            }
            Err(failure) => execution.early_failure = Some(failure),
        }
        Ok(execution)
    }

    /// Moves the runner into the execution's cgroup, opens the egress proxy in its network
    /// namespace, prepares the workspace, then sends it the spec.
    async fn hand_over(
        &mut self,
        plan: &ExecutionPlan,
        inner_pid: i32,
        mut ipc: tokio::net::UnixStream,
    ) -> Result<tokio::net::UnixStream, String> {
        if let Some(cg) = &self.cgroup {
            for pid in [self.outer.id() as i32, inner_pid] {
                cg.add(pid).map_err(|e| ironclaw_protocol::error_chain(&e))?;
            }
        } else if plan.task_clock {
            // Before the spec: the plugin does not exist yet, so every task it will ever be is
            // a descendant the clock follows.
            let clock = CpuClock::attach(inner_pid).map_err(|e| format!("cannot count the sandbox's CPU time: {e}"))?;
            self.cpu_clock = Some(clock);
        }
        if !plan.effective.network.is_empty()
            && let Some((_, pidfd)) = &self.inner
        {
            let listener = EgressProxy::listen_in(pidfd.as_fd()).map_err(|e| ironclaw_protocol::error_chain(&e))?;
            self.proxy = Some(plan.proxy.serve(listener, plan.proxy_scope()));
        }
        let workspace = plan.workspace().await?;
        let mut frame = Vec::new();
        frame::write_frame(&mut frame, &plan.runner_spec(workspace.as_ref())).map_err(|e| e.to_string())?;
        ipc.write_all(&frame).await.map_err(|e| format!("send the spec: {e}"))?;
        Ok(ipc)
    }

    /// Sends `signal` to the confined runner (which, as pid 1 of its namespace, only receives
    /// SIGTERM if the plugin handles it; SIGKILL always lands and takes the whole namespace).
    fn signal_inner(&self, signal: nix::sys::signal::Signal) {
        if let Some((_, pidfd)) = &self.inner {
            let _ = sys::pidfd_kill(pidfd.as_fd(), signal as i32);
        }
    }

    /// Kills the sandbox. Only the confined runner is killed when it exists: the outer runner
    /// then exits after the kernel has torn the whole pid namespace down, so the uid slot is
    /// never handed to the next execution while processes of this one still count against it.
    fn kill_now(&self) {
        use nix::sys::signal::Signal;
        match &self.inner {
            Some(_) => self.signal_inner(Signal::SIGKILL),
            None => {
                let _ = sys::pidfd_kill(self.outer_exit.get_ref().as_fd(), Signal::SIGKILL as i32);
            }
        }
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
    }

    /// Stops the execution as an error, because a limit can no longer be enforced: never run on
    /// as if it were.
    fn cannot_enforce(&mut self, why: String) -> Option<ExecutionStatus> {
        tracing::error!(%why, "stopping the execution: a limit cannot be enforced");
        self.unenforceable = Some(why);
        Some(ExecutionStatus::Error)
    }

    /// One look at the execution's usage, which also holds the fallback's CPU share: the
    /// reason to stop it, when there is one.
    fn measure(
        &mut self,
        plan: &ExecutionPlan,
        peak: &mut monitor::Usage,
        throttle: &mut monitor::CpuThrottle,
    ) -> Option<ExecutionStatus> {
        let cpu_limit_ms = plan.limits.cpu_time.0.as_millis() as u64;
        if let Some(cg) = &self.cgroup {
            // The kernel holds memory, pids and the share; CPU time is the whole cgroup's, every
            // task that ever ran in it included (RLIMIT_CPU only bounds each process).
            let cpu = cg.cpu_time_ms()?;
            peak.cpu_time_ms = peak.cpu_time_ms.max(cpu);
            return (cpu > cpu_limit_ms).then_some(ExecutionStatus::CpuLimit);
        }
        let (init, pidfd) = self.inner.as_ref()?;
        let init = *init;
        let mut usage = match monitor::sample(init) {
            Ok(usage) => usage?,
            Err(e) => {
                return self.cannot_enforce(format!(
                    "the fallback monitor cannot observe the sandbox ({e}), so its memory and CPU limits cannot be \
                     enforced (the daemon needs CAP_SYS_PTRACE)"
                ));
            }
        };
        self.samples += 1;
        let sockets = match &mut self.socket_meter {
            Some(meter) => meter.queued_bytes(),
            None if plan.socket_meter && self.samples > 1 => {
                SocketMeter::open(pidfd.as_fd(), init).and_then(|mut meter| {
                    let bytes = meter.queued_bytes();
                    self.socket_meter = Some(meter);
                    bytes
                })
            }
            None => Ok(0),
        };
        match sockets {
            Ok(bytes) => usage.memory_bytes += bytes,
            // The sandbox is ending (its init has left its namespaces, or exited): its exit
            // decides, not the meter. Nothing inside can make init leave early.
            Err(e) if has_exited(pidfd.as_fd()) || matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return None;
            }
            Err(e) => return self.cannot_enforce(format!("cannot measure the sandbox's socket buffers ({e})")),
        }
        let cpu = match &mut self.cpu_clock {
            Some(clock) => match clock.read_ms() {
                Ok(ms) => ms,
                Err(e) => return self.cannot_enforce(format!("cannot read the sandbox's CPU clock ({e})")),
            },
            None => usage.cpu_time_ms,
        };
        peak.memory_bytes = peak.memory_bytes.max(usage.memory_bytes);
        peak.cpu_time_ms = peak.cpu_time_ms.max(cpu);
        if let Some(pause) = throttle.update(cpu, Instant::now()) {
            if self.freezer.is_none() {
                match Freezer::start(init) {
                    Ok(freezer) => self.freezer = Some(freezer),
                    Err(e) => return self.cannot_enforce(format!("cannot start the freezer for the CPU share ({e})")),
                }
            }
            let freezer = self.freezer.as_ref()?;
            if pause { freezer.freeze() } else { freezer.thaw() }
        }
        if let Some(why) = self.freezer.as_ref().and_then(Freezer::failure) {
            return self.cannot_enforce(format!("the CPU share cannot be held: {why}"));
        }
        if usage.memory_bytes > plan.limits.memory.0 {
            Some(ExecutionStatus::MemoryLimit)
        } else if cpu > cpu_limit_ms {
            Some(ExecutionStatus::CpuLimit)
        } else {
            None
        }
    }

    async fn finish(
        mut self,
        plan: &ExecutionPlan,
        mut cancel: watch::Receiver<bool>,
        started: Instant,
    ) -> ExecutionResult {
        use nix::sys::signal::Signal;
        let deadline = tokio::time::Instant::from_std(started + plan.limits.timeout.0);
        let mut hard_kill_at: Option<tokio::time::Instant> = None;
        let mut kill_reason: Option<ExecutionStatus> = None;
        let mut peak = monitor::Usage::default();
        let monitored = self.inner.is_some();
        let mut throttle = monitor::CpuThrottle::new(plan.limits.cpu, Instant::now());
        let mut tick = tokio::time::interval(plan.monitor_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if self.early_failure.is_some() {
            self.kill_now();
        }

        enum Event {
            Exited(Option<sys::Reaped>),
            Stop(ExecutionStatus, bool),
            HardKill,
            Nothing,
        }
        let reaped = loop {
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
                _ = tokio::time::sleep_until(deadline), if kill_reason.is_none() => Event::Stop(ExecutionStatus::Timeout, true),
                _ = tokio::time::sleep_until(hard_kill_at.unwrap_or(deadline)), if hard_kill_at.is_some() => Event::HardKill,
                changed = cancel.changed(), if kill_reason.is_none() => match changed {
                    Ok(()) if *cancel.borrow() => Event::Stop(ExecutionStatus::Cancelled, true),
                    _ => Event::Nothing,
                },
                Some(()) = self.overflow.recv(), if kill_reason.is_none() => Event::Stop(ExecutionStatus::OutputLimit, false),
                _ = tick.tick(), if monitored && kill_reason.is_none() => match self.measure(plan, &mut peak, &mut throttle) {
                    Some(reason) => Event::Stop(reason, false),
                    None => Event::Nothing,
                },
            };
            match event {
                Event::Exited(reaped) => break reaped,
                Event::Stop(reason, graceful) if kill_reason.is_none() => {
                    kill_reason = Some(reason);
                    // A frozen plugin must run to act on SIGTERM; a killed one must not stay
                    // traced (its zombie is the tracer's to release).
                    self.freezer = None;
                    if graceful {
                        self.signal_inner(Signal::SIGTERM);
                        hard_kill_at = Some(tokio::time::Instant::now() + plan.kill_grace);
                    } else {
                        self.kill_now();
                    }
                }
                Event::HardKill => {
                    hard_kill_at = None;
                    self.kill_now();
                }
                _ => {}
            }
        };

        // Every process of the sandbox is gone with its pid 1; the pipes are at their end.
        self.freezer = None;
        let clock_cpu = self.cpu_clock.as_mut().and_then(|clock| clock.read_ms().ok());
        if let Some(proxy) = self.proxy.take() {
            proxy.abort();
        }
        let grace = Duration::from_secs(2);
        let (stdout, stdout_overflow) = join_or_default(self.stdout, grace).await;
        let (stderr, _) = join_or_default(self.stderr, grace).await;
        let report = match self.ipc.take() {
            Some(task) => join_or_default(task, grace).await,
            None => IpcReport::default(),
        };
        let (cg_oom, cg_peak, cg_cpu) = match self.cgroup.take() {
            Some(cg) => {
                let stats = (cg.oom_kills(), cg.peak_memory(), cg.cpu_time_ms());
                if let Err(e) = cg.destroy() {
                    tracing::error!(error = %ironclaw_protocol::error_chain(&e), "failed to remove an execution cgroup");
                }
                stats
            }
            None => (0, None, None),
        };

        let setup_failed = self.early_failure.or(report.setup_failed.clone());
        // Only loading or starting the plugin (and a requirement the policy set) is the plugin's
        // part of the set-up; any other stage failing is the sandbox's or the host's.
        let sandbox_failed =
            report.layers.is_none() || setup_failed.as_ref().is_some_and(|(stage, _)| !stage.is_plugins_part());
        let mut result = plan.refused(ExecutionStatus::Error, String::new());
        result.error = None;
        result.layers.sandbox = report.layers.clone();
        result.log = String::from_utf8_lossy(&stderr).into_owned();
        let reaped = reaped.unwrap_or(sys::Reaped {
            exit_code: None,
            signal: Some(Signal::SIGKILL as i32),
            cpu_time_ms: 0,
            max_rss_bytes: 0,
        });
        // The cgroup's or the task clock's count of the whole sandbox; the monitor's samples and
        // the kernel's rusage of the runner where neither exists (or where they say more).
        result.cpu_time_ms = cg_cpu.or(clock_cpu).unwrap_or(0).max(reaped.cpu_time_ms).max(peak.cpu_time_ms);
        // Under the fallback, the monitor's measure (anonymous + shared memory), which the limit
        // applies to; for an execution shorter than one sample, the kernel's maximum RSS.
        let sampled = Some(peak.memory_bytes).filter(|m| *m > 0);
        result.peak_memory_bytes = cg_peak.or(sampled).unwrap_or(reaped.max_rss_bytes);

        let (status, error) = classify(&Outcome {
            kill_reason,
            oom_killed: cg_oom > 0,
            setup_failed,
            reaped,
            memory_limit: plan.limits.memory.0,
            peak_memory: cg_peak.unwrap_or(peak.memory_bytes),
            cpu_limit_ms: plan.limits.cpu_time.0.as_millis() as u64,
            output_too_large: stdout_overflow || report.too_large,
            ipc_garbage: report.garbage,
            confined: report.layers.is_some(),
            unenforceable: self.unenforceable.take(),
        });
        result.status = status;
        result.error = error;
        result.sandbox_failed = sandbox_failed && status == ExecutionStatus::Error;
        if status == ExecutionStatus::Crashed {
            result.signal = reaped.signal;
        }
        if result.status == ExecutionStatus::Running {
            // The plugin ended normally: its response decides.
            let body = match &plan.plugin.manifest.runtime {
                Runtime::Native { .. } => report.response.unwrap_or_default().into_bytes(),
                Runtime::Exec { .. } => stdout,
            };
            apply_response(&mut result, &body, reaped.exit_code);
        }
        redact_secrets(&mut result, &plan.secrets.0);
        result
    }
}

/// A plugin may echo what it was given: no secret value leaves in a result.
fn redact_secrets(result: &mut ExecutionResult, secrets: &[(String, String)]) {
    use crate::catalog::secrets::redact;
    if secrets.is_empty() {
        return;
    }
    result.log = redact(&result.log, secrets);
    result.error = result.error.as_deref().map(|e| redact(e, secrets));
    if let Some(data) = &result.data {
        let text = data.to_string();
        let clean = redact(&text, secrets);
        if clean != text {
            result.data = serde_json::from_str(&clean).ok().or(Some(Value::String(clean)));
        }
    }
}

async fn join_or_default<T: Default>(task: tokio::task::JoinHandle<T>, grace: Duration) -> T {
    let abort = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(Ok(v)) => v,
        _ => {
            abort.abort();
            T::default()
        }
    }
}

/// Facts about how an execution ended, before its response is read.
struct Outcome {
    kill_reason: Option<ExecutionStatus>,
    oom_killed: bool,
    setup_failed: Option<(SetupStage, String)>,
    reaped: sys::Reaped,
    memory_limit: u64,
    /// The cgroup's peak, or the monitor's (anonymous + shared memory).
    peak_memory: u64,
    cpu_limit_ms: u64,
    output_too_large: bool,
    ipc_garbage: Option<String>,
    /// The runner reported itself confined: from then on, plugin code may have run.
    confined: bool,
    /// Why the daemon stopped it as an error, when it did.
    unenforceable: Option<String>,
}

/// "SIGSEGV" for 11; the number for a signal nix does not know.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map_or_else(|_| signal.to_string(), |n| n.as_str().to_string())
}

/// Decides the status from how the runner ended. `Running` means "ended normally: read the
/// plugin's response".
fn classify(o: &Outcome) -> (ExecutionStatus, Option<String>) {
    use ExecutionStatus::*;
    let sig = o.reaped.signal;
    if let Some(reason) = o.kill_reason {
        let message = match reason {
            Timeout => "the execution exceeded its wall-clock timeout and was killed".to_string(),
            Cancelled => "the execution was cancelled".to_string(),
            MemoryLimit => {
                format!("the execution exceeded its memory limit of {} bytes and was killed", o.memory_limit)
            }
            CpuLimit => format!("the execution exceeded its CPU time limit of {} ms and was killed", o.cpu_limit_ms),
            OutputLimit => "the execution exceeded its output limit and was killed".to_string(),
            // The only reason the daemon stops an execution as an error: a limit it cannot enforce.
            Error => format!(
                "{}; the execution was stopped",
                o.unenforceable.as_deref().unwrap_or("a limit could not be enforced")
            ),
            _ => "the execution was stopped".to_string(),
        };
        return (reason, Some(message));
    }
    if o.oom_killed {
        return (
            MemoryLimit,
            Some(format!("the kernel OOM-killed the execution at its memory limit of {} bytes", o.memory_limit)),
        );
    }
    if o.output_too_large {
        return (OutputLimit, Some("the execution exceeded its output limit".into()));
    }
    if let Some((stage, message)) = &o.setup_failed {
        return match stage {
            SetupStage::Requirements => (Denied, Some(message.clone())),
            SetupStage::Load => (Error, Some(format!("failed to load the plugin: {message}"))),
            SetupStage::Exec => (Error, Some(format!("failed to start the plugin: {message}"))),
            _ => (Error, Some(format!("sandbox set-up failed at stage '{stage}': {message}"))),
        };
    }
    if let Some(s) = sig.filter(|_| !o.confined) {
        // Killed from outside during set-up (e.g. a pre-started runner killed while idle).
        let name = signal_name(s);
        return (Error, Some(format!("the sandbox was killed by {name} before the plugin started")));
    }
    if let Some(s) = sig {
        let cpu_killed = s == libc::SIGXCPU || (s == libc::SIGKILL && o.reaped.cpu_time_ms >= o.cpu_limit_ms);
        if cpu_killed {
            return (CpuLimit, Some(format!("the execution exceeded its CPU time limit of {} ms", o.cpu_limit_ms)));
        }
        // Killed by a signal near its memory limit: an allocation that failed (RLIMIT_AS) and
        // aborted, or the monitor's kill racing the exit.
        if o.peak_memory >= o.memory_limit / 10 * 9 {
            return (MemoryLimit, Some(format!("the execution died at its memory limit of {} bytes", o.memory_limit)));
        }
        let name = signal_name(s);
        let hint = if s == libc::SIGSYS { " (a forbidden system call)" } else { "" };
        return (Crashed, Some(format!("the plugin was killed by {name}{hint}")));
    }
    if o.reaped.exit_code == Some(EXIT_SETUP_FAILED) && o.ipc_garbage.is_some() {
        return (Error, o.ipc_garbage.clone());
    }
    (Running, None)
}

/// Reads the plugin's response into the result.
fn apply_response(result: &mut ExecutionResult, body: &[u8], exit_code: Option<i32>) {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Response>(text.trim()) {
        Ok(response) => {
            result.status = match response.status {
                ResponseStatus::Success => ExecutionStatus::Success,
                ResponseStatus::Error => ExecutionStatus::Error,
                ResponseStatus::InvalidInput => ExecutionStatus::InvalidInput,
            };
            result.data = response.data;
            result.error = response.error;
            if result.status != ExecutionStatus::Success && result.error.is_none() {
                result.error = Some("the plugin reported a failure without a message".into());
            }
        }
        Err(e) => {
            result.status = ExecutionStatus::Error;
            result.error = Some(match exit_code {
                Some(0) | None if body.is_empty() => "the plugin produced no response".to_string(),
                Some(code) if code != 0 => {
                    format!("the plugin exited with status {code} without a valid response")
                }
                _ => format!("the plugin's response is not valid: {e}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            kill_reason: None,
            oom_killed: false,
            setup_failed: None,
            reaped: sys::Reaped { exit_code: Some(0), signal: None, cpu_time_ms: 5, max_rss_bytes: 1 << 20 },
            memory_limit: 64 << 20,
            peak_memory: 1 << 20,
            cpu_limit_ms: 1000,
            output_too_large: false,
            ipc_garbage: None,
            confined: true,
            unenforceable: None,
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&outcome()).0, ExecutionStatus::Running);
        let mut o = outcome();
        o.kill_reason = Some(ExecutionStatus::Timeout);
        assert_eq!(classify(&o).0, ExecutionStatus::Timeout);
        let mut o = outcome();
        o.reaped.signal = Some(libc::SIGSEGV);
        o.reaped.exit_code = None;
        assert_eq!(classify(&o), (ExecutionStatus::Crashed, Some("the plugin was killed by SIGSEGV".into())));
        o.reaped.signal = Some(libc::SIGXCPU);
        assert_eq!(classify(&o).0, ExecutionStatus::CpuLimit);
        let mut o = outcome();
        o.oom_killed = true;
        assert_eq!(classify(&o).0, ExecutionStatus::MemoryLimit);
        let mut o = outcome();
        o.setup_failed = Some((SetupStage::Requirements, "policy requires layer 'cgroup_v2'".into()));
        assert_eq!(classify(&o).0, ExecutionStatus::Denied);
        // Killed before any plugin code ran: not the plugin's crash.
        let mut o = outcome();
        (o.confined, o.reaped.signal, o.reaped.exit_code) = (false, Some(libc::SIGKILL), None);
        assert_eq!(
            classify(&o),
            (ExecutionStatus::Error, Some("the sandbox was killed by SIGKILL before the plugin started".into()))
        );
    }

    #[test]
    fn responses() {
        let plan_result = || ExecutionResult {
            id: "x".into(),
            plugin: "p".into(),
            plugin_version: "1.0.0".into(),
            plugin_digest: String::new(),
            status: ExecutionStatus::Running,
            data: None,
            error: None,
            duration_ms: 0,
            cpu_time_ms: 0,
            peak_memory_bytes: 0,
            signal: None,
            layers: LayerReport { resources: ResourceBackend::Fallback, sandbox: None, resource_gaps: vec![] },
            log: String::new(),
            started_at: 0,
            cached: false,
            sandbox_failed: false,
        };
        let mut r = plan_result();
        apply_response(&mut r, br#"{"status":"success","data":{"result":5}}"#, Some(0));
        assert_eq!((r.status, r.data), (ExecutionStatus::Success, Some(serde_json::json!({"result": 5}))));
        let mut r = plan_result();
        apply_response(&mut r, b"not json", Some(3));
        assert_eq!(r.error.as_deref(), Some("the plugin exited with status 3 without a valid response"));
        let mut r = plan_result();
        apply_response(&mut r, b"", Some(0));
        assert_eq!(r.error.as_deref(), Some("the plugin produced no response"));
        let mut r = plan_result();
        apply_response(&mut r, br#"{"status":"error","error":"nope","extra":1}"#, Some(0));
        assert_eq!(r.status, ExecutionStatus::Error);
        assert!(r.error.unwrap().contains("not valid"));
    }
}
