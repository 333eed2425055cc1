//! Runners, spawned and pre-started.
//!
//! A runner re-executes the daemon's binary, enters fresh namespaces and announces itself; then
//! it blocks until the daemon sends its spec (step 3 of `sandbox::confine`). Nothing up to that
//! point depends on the plugin or the execution, so the pool keeps a few runners waiting there
//! and an execution takes one instead of spawning: that skips ~2 ms of exec, dynamic loading and
//! namespace creation. An idle runner is still root, but it has run no plugin code and holds
//! only its own, empty namespaces; it dies with the daemon (parent-death signal).
//!
//! Runners are spawned from async worker threads, which live as long as the daemon: the
//! parent-death signal fires when the spawning *thread* exits.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use ironclaw_protocol::message::{RunnerMessage, SetupStage};
use ironclaw_protocol::{RUNNER_ARG, frame};

use crate::sys;

/// How long a runner may take to announce itself; it has done nothing plugin-specific yet.
const SPAWN_DEADLINE: Duration = Duration::from_secs(10);
/// After a pre-started runner fails to start, the pool waits before trying again: first this
/// long, doubling up to `REFILL_BACKOFF_MAX` while the failures go on.
const REFILL_BACKOFF: Duration = Duration::from_secs(1);
const REFILL_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why no runner could be spawned.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("failed to create the runner's socketpair")]
    Socketpair(#[source] std::io::Error),
    #[error("failed to spawn the runner")]
    Spawn(#[source] std::io::Error),
    #[error("failed to open the runner's {0}")]
    Handle(&'static str, #[source] std::io::Error),
}

/// A runner that has announced itself (or failed to) and waits for its spec.
pub struct Runner {
    pub outer: Child,
    pub outer_exit: AsyncFd<OwnedFd>,
    /// The confined runner (pid 1 of the sandbox): its host pid and a pidfd. `Err` holds the
    /// stage and message of a runner that failed before announcing itself.
    pub inner: Result<(i32, OwnedFd), (SetupStage, String)>,
    pub ipc: tokio::net::UnixStream,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

impl Runner {
    /// Spawns a runner and waits for its first frame. `Err` only when nothing could be spawned;
    /// a runner that failed later is returned with `inner` holding the failure.
    pub async fn spawn() -> Result<Runner, PoolError> {
        let (daemon_end, runner_end) = StdUnixStream::pair().map_err(PoolError::Socketpair)?;
        let mut outer = Command::new("/proc/self/exe")
            .arg(RUNNER_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(runner_end)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(PoolError::Spawn)?;
        let handles = (|| -> Result<_, PoolError> {
            let outer_exit = sys::pidfd_open(outer.id() as i32)
                .and_then(sys::async_pidfd)
                .map_err(|e| PoolError::Handle("pidfd", e))?;
            let stdout = async_pipe(outer.stdout.take().expect("piped")).map_err(|e| PoolError::Handle("stdout", e))?;
            let stderr = async_pipe(outer.stderr.take().expect("piped")).map_err(|e| PoolError::Handle("stderr", e))?;
            daemon_end.set_nonblocking(true).map_err(|e| PoolError::Handle("socket", e))?;
            let ipc = tokio::net::UnixStream::from_std(daemon_end).map_err(|e| PoolError::Handle("socket", e))?;
            Ok((outer_exit, stdout, stderr, ipc))
        })();
        let (outer_exit, stdout, stderr, mut ipc) = match handles {
            Ok(h) => h,
            Err(e) => {
                // It waits for a spec that will never come: end it now.
                let _ = outer.kill();
                let _ = outer.wait();
                return Err(e);
            }
        };
        // The first frame comes from the outer runner, before the confined one may act.
        let first =
            tokio::time::timeout(SPAWN_DEADLINE, frame::read_frame_async::<RunnerMessage>(&mut ipc, 64 * 1024)).await;
        let inner = match first {
            Ok(Ok(RunnerMessage::Spawned { pid })) => match sys::pidfd_open(pid) {
                Ok(pidfd) => Ok((pid, pidfd)),
                Err(e) => Err((SetupStage::Spawn, format!("pidfd of the confined runner: {e}"))),
            },
            Ok(Ok(RunnerMessage::SetupFailed { stage, message })) => Err((stage, message)),
            Ok(Ok(other)) => Err((SetupStage::Protocol, format!("unexpected first frame {other:?}"))),
            Ok(Err(e)) => Err((SetupStage::Protocol, ironclaw_protocol::error_chain(&e))),
            Err(_) => Err((SetupStage::Spawn, "the runner did not start in time".into())),
        };
        Ok(Runner { outer, outer_exit, inner, ipc, stdout, stderr })
    }

    /// Whether the runner is still waiting (neither part has exited).
    fn is_waiting(&self) -> bool {
        match &self.inner {
            Ok((_, inner)) => !has_exited(self.outer_exit.get_ref().as_fd()) && !has_exited(inner.as_fd()),
            Err(_) => false,
        }
    }

    /// Kills an unused runner and reaps it.
    fn discard(mut self) {
        let _ = sys::pidfd_kill(self.outer_exit.get_ref().as_fd(), libc::SIGKILL);
        // SIGKILL is immediate; the inner runner follows by its parent-death signal.
        let _ = self.outer.wait();
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd is readable).
pub fn has_exited(pidfd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    poll(&mut [PollFd::new(pidfd, PollFlags::POLLIN)], PollTimeout::ZERO).map_or(true, |n| n > 0)
}

fn async_pipe(fd: impl Into<OwnedFd>) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd.into())
}

/// A few runners kept waiting for their spec.
pub struct RunnerPool {
    target: usize,
    idle: Mutex<VecDeque<Runner>>,
    wanted: Notify,
    closed: AtomicBool,
}

impl RunnerPool {
    /// Starts the pool and its refill task. `target = 0` disables pre-starting.
    pub fn start(target: usize) -> Arc<Self> {
        let pool = Arc::new(RunnerPool {
            target,
            idle: Mutex::new(VecDeque::new()),
            wanted: Notify::new(),
            closed: AtomicBool::new(false),
        });
        if target > 0 {
            tokio::spawn(pool.clone().refill());
        }
        pool
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Runner>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runners waiting right now (dead ones are discarded first).
    pub fn idle_count(&self) -> usize {
        self.prune();
        self.idle().len()
    }

    /// Discards idle runners that died (killed from outside, or out of memory).
    fn prune(&self) {
        let dead: VecDeque<Runner> = {
            let mut idle = self.idle();
            let (waiting, dead) = idle.drain(..).partition(Runner::is_waiting);
            *idle = waiting;
            dead
        };
        if !dead.is_empty() {
            tracing::warn!(count = dead.len(), "pre-started runners died while idle; discarding them");
            self.wanted.notify_one();
        }
        dead.into_iter().for_each(Runner::discard);
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// A waiting runner: the oldest pre-started one when there is one, else a fresh one.
    pub async fn take(&self) -> Result<Runner, PoolError> {
        self.prune();
        let pooled = self.idle().pop_front();
        self.wanted.notify_one();
        match pooled {
            // It might still die between the check in `prune` and now, like any runner during
            // its set-up; the execution then reports that the runner failed.
            Some(runner) => Ok(runner),
            None => Runner::spawn().await,
        }
    }

    /// Keeps `target` runners waiting, until the daemon stops.
    async fn refill(self: Arc<Self>) {
        let mut backoff = REFILL_BACKOFF;
        while !self.closed.load(Ordering::SeqCst) {
            if self.idle_count() >= self.target {
                self.wanted.notified().await;
                continue;
            }
            let failure = match Runner::spawn().await {
                Ok(runner) if runner.is_waiting() => {
                    if !self.closed.load(Ordering::SeqCst) {
                        self.idle().push_back(runner);
                    } else {
                        runner.discard();
                    }
                    backoff = REFILL_BACKOFF;
                    continue;
                }
                Ok(runner) => {
                    let failure = match &runner.inner {
                        Err((stage, message)) => format!("stage '{stage}': {message}"),
                        Ok(_) => "it exited before its spec".to_string(),
                    };
                    runner.discard();
                    failure
                }
                Err(e) => ironclaw_protocol::error_chain(&e),
            };
            tracing::warn!(%failure, retry_in = ?backoff, "cannot pre-start a runner");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(REFILL_BACKOFF_MAX);
        }
    }

    /// Stops pre-starting and kills every idle runner (on shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wanted.notify_one();
        let idle: Vec<Runner> = self.idle().drain(..).collect();
        for runner in idle {
            runner.discard();
        }
    }
}
