//! The fallback's CPU-share throttle: it freezes every task of a sandbox from outside, with
//! ptrace, so that nothing inside can undo it.
//!
//! A job-control stop (SIGSTOP) would not hold: any task of the sandbox, or the kernel on its
//! behalf (a POSIX timer, F_SETSIG, a parent-death signal, an orphaned process group), can send
//! SIGCONT. A task in a ptrace stop ignores SIGCONT; only its tracer (a thread of the daemon)
//! lets it go, or SIGKILL ends it. So the freezer seizes each task (`PTRACE_SEIZE`, which does
//! not stop it), interrupts it (`PTRACE_INTERRUPT`: it stops before it next runs user code),
//! and on thaw detaches it again, handing back any signal that arrived in between. Tasks the
//! sandbox creates meanwhile are attached by the kernel (`PTRACE_O_TRACEFORK` and friends) and
//! start frozen. Between freezes the sandbox is not traced at all.
//!
//! ptrace requests must all come from the tracer thread, so each freezer is a thread of its own,
//! commanded over a channel. It never waits on anything but its own tracees, by tid, so it
//! cannot reap the daemon's runners.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How often the tracer thread looks at its tracees while it has no command.
const POLL: Duration = Duration::from_millis(2);
/// Passes over the sandbox's tasks per freeze: tasks forked during a pass are found by the next.
const MAX_PASSES: usize = 8;

enum Command {
    Freeze,
    Thaw,
}

/// The handle the execution keeps; dropping it thaws the sandbox and ends the thread.
pub struct Freezer {
    commands: Option<Sender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Why a task of the sandbox could not be frozen, once one could not.
    failure: Arc<Mutex<Option<String>>>,
}

impl Freezer {
    /// A freezer for the sandbox whose init has the host pid `init` (init itself is never frozen:
    /// it only reaps, and must go on doing so).
    pub fn start(init: i32) -> std::io::Result<Freezer> {
        let (tx, rx) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let tracer = Tracer { init, tracees: HashMap::new(), frozen: false, failure: failure.clone() };
        let thread = std::thread::Builder::new().name(format!("freezer-{init}")).spawn(move || tracer.run(rx))?;
        Ok(Freezer { commands: Some(tx), thread: Some(thread), failure })
    }

    /// Why the freezer could not hold the sandbox, if it could not: the share is then not held,
    /// and the execution must not go on as if it were.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn freeze(&self) {
        self.send(Command::Freeze);
    }

    pub fn thaw(&self) {
        self.send(Command::Thaw);
    }

    fn send(&self, command: Command) {
        if let Some(tx) = &self.commands {
            let _ = tx.send(command);
        }
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which detaches whatever it still traces.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Default)]
struct Tracee {
    /// In a ptrace stop (it reported one), so it can be detached.
    stopped: bool,
    /// A signal that stopped it on its way in: handed back on detach.
    pending: Option<Signal>,
}

struct Tracer {
    init: i32,
    tracees: HashMap<Pid, Tracee>,
    frozen: bool,
    failure: Arc<Mutex<Option<String>>>,
}

impl Tracer {
    fn run(mut self, commands: Receiver<Command>) {
        loop {
            match commands.recv_timeout(POLL) {
                Ok(Command::Freeze) => {
                    self.frozen = true;
                    self.freeze();
                }
                Ok(Command::Thaw) => {
                    self.frozen = false;
                    self.release_stopped();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.collect();
            if !self.frozen {
                // Tasks that were still in the kernel when the thaw came stop now: let them go.
                self.release_stopped();
            }
        }
        self.frozen = false;
        self.collect();
        self.release_stopped();
        // Anything still traced (in the middle of a syscall) is detached by the kernel as this
        // thread exits.
    }

    /// Seizes and interrupts every task of the sandbox not yet traced, until a pass finds none.
    fn freeze(&mut self) {
        let options = Options::PTRACE_O_TRACEFORK | Options::PTRACE_O_TRACEVFORK | Options::PTRACE_O_TRACECLONE;
        for _ in 0..MAX_PASSES {
            let mut found = 0;
            for tid in sandbox_tasks(self.init) {
                if self.tracees.contains_key(&tid) {
                    continue;
                }
                match ptrace::seize(tid, options) {
                    Ok(()) => {}
                    // Auto-attached as the child of a tracee, before its event was collected.
                    Err(Errno::EPERM) if traced_by_me(tid) => {}
                    // Gone meanwhile, or dead and waiting to be reaped (no user code to stop).
                    Err(Errno::ESRCH) => continue,
                    Err(Errno::EPERM) if is_dead(tid) => continue,
                    Err(e) => {
                        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("cannot freeze task {tid} of the sandbox: {e}"));
                        continue;
                    }
                }
                let _ = ptrace::interrupt(tid);
                self.tracees.insert(tid, Tracee::default());
                found += 1;
            }
            self.collect();
            if found == 0 {
                break;
            }
        }
    }

    /// Collects the stops, new tasks and exits of every tracee.
    fn collect(&mut self) {
        let tids: Vec<Pid> = self.tracees.keys().copied().collect();
        for tid in tids {
            loop {
                let status = waitpid(tid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL));
                match status {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(WaitStatus::PtraceEvent(_, _, event)) => {
                        let spawned = [
                            ptrace::Event::PTRACE_EVENT_FORK,
                            ptrace::Event::PTRACE_EVENT_VFORK,
                            ptrace::Event::PTRACE_EVENT_CLONE,
                        ]
                        .iter()
                        .any(|e| *e as i32 == event);
                        if spawned && let Ok(child) = ptrace::getevent(tid) {
                            // It starts in a ptrace stop of its own, reported separately.
                            self.tracees.entry(Pid::from_raw(child as i32)).or_default();
                        }
                        self.tracees.entry(tid).or_default().stopped = true;
                    }
                    Ok(WaitStatus::Stopped(_, signal)) => {
                        let tracee = self.tracees.entry(tid).or_default();
                        tracee.stopped = true;
                        tracee.pending = Some(signal);
                    }
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => {
                        self.tracees.remove(&tid);
                        break;
                    }
                    Ok(_) => break,
                }
            }
        }
    }

    /// Detaches every tracee that is in a ptrace stop, handing back the signal it was stopped with.
    fn release_stopped(&mut self) {
        self.tracees.retain(|tid, tracee| {
            if !tracee.stopped {
                return true;
            }
            let _ = ptrace::detach(*tid, tracee.pending);
            false
        });
    }
}

/// Whether the calling thread traces `tid` (its `TracerPid` is our tid).
fn traced_by_me(tid: Pid) -> bool {
    let me = nix::unistd::gettid().as_raw().to_string();
    std::fs::read_to_string(format!("/proc/{tid}/status")).is_ok_and(|status| {
        status.lines().find_map(|l| l.strip_prefix("TracerPid:")).is_some_and(|pid| pid.trim() == me)
    })
}

/// Whether `tid` has exited (a zombie or on its way out), or is gone.
fn is_dead(tid: Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, None | Some("Z") | Some("X") | Some("x"))
}

/// Every task (thread) of the sandbox whose init is `init`, init's own threads excepted: the
/// tree of its children, read from `/proc/<pid>/task/<tid>/children`, with host tids.
fn sandbox_tasks(init: i32) -> Vec<Pid> {
    let mut tasks = Vec::new();
    let mut pending = vec![init];
    while let Some(pid) = pending.pop() {
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for thread in threads.flatten() {
            let Some(tid) = thread.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else { continue };
            if pid != init {
                tasks.push(Pid::from_raw(tid));
            }
            let children = std::fs::read_to_string(thread.path().join("children")).unwrap_or_default();
            pending.extend(children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    tasks
}
