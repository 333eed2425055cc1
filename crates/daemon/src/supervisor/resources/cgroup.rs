//! The cgroup v2 backend: one leaf per execution under the daemon's own (delegated) cgroup.
//!
//! Never touches anything outside that subtree. The daemon moves itself into a `supervisor`
//! leaf so that its own cgroup may enable controllers for its children (the "no internal
//! processes" rule), then creates `exec-<id>` siblings.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ironclaw_protocol::layers::ResourceBackend;

use super::backend::{Backend, Meter, ResourceError, Sandbox, Totals, Verdict};
use super::monitor::Usage;
use crate::catalog::policy::Limits;
use crate::execution_result::ExecutionStatus;
use crate::host::{CgroupSupport, HostSupport};

const REQUIRED_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
const SUPERVISOR_LEAF: &str = "supervisor";
const EXEC_PREFIX: &str = "exec-";
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        err: std::io::Error,
    },
    #[error("failed to create {0}")]
    Create(PathBuf, #[source] std::io::Error),
    #[error("failed to remove {0}")]
    Remove(PathBuf, #[source] std::io::Error),
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|err| CgroupError::Write { path: path.to_path_buf(), value: value.into(), err })
}

/// Where cgroup2 is mounted, from a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The unified-hierarchy path of a `/proc/<pid>/cgroup` text.
fn own_cgroup(proc_cgroup: &str) -> Option<PathBuf> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(PathBuf::from)
}

/// The daemon's subtree: executions are created directly under `base`.
#[derive(Debug)]
pub struct CgroupRoot {
    base: PathBuf,
    /// Whether leaves have `memory.swap.max` to write.
    swap_accounted: bool,
}

/// Probes the host. Returns the report, and the subtree when cgroup v2 limits can be used.
pub fn detect() -> (CgroupSupport, Option<CgroupRoot>) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect_from(&mountinfo, &proc_cgroup, nix::unistd::geteuid().is_root())
}

fn detect_from(mountinfo: &str, proc_cgroup: &str, root: bool) -> (CgroupSupport, Option<CgroupRoot>) {
    let mount = cgroup2_mount(mountinfo);
    let own = own_cgroup(proc_cgroup);
    let mut support = CgroupSupport {
        mount: mount.clone(),
        own_cgroup: own.clone(),
        controllers: vec![],
        usable: false,
        reason: None,
        swap_accounted: false,
    };
    let (Some(mount), Some(own)) = (mount, own) else {
        support.reason = Some("no cgroup2 hierarchy is mounted".into());
        return (support, None);
    };
    // A daemon already moved into its supervisor leaf (e.g. after a restart) manages the parent.
    let own = if own.file_name().is_some_and(|n| n == SUPERVISOR_LEAF) {
        own.parent().unwrap_or(&own).to_path_buf()
    } else {
        own
    };
    let base = mount.join(own.strip_prefix("/").unwrap_or(&own));
    support.controllers = std::fs::read_to_string(base.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let missing: Vec<&str> =
        REQUIRED_CONTROLLERS.iter().copied().filter(|c| !support.controllers.iter().any(|h| h == c)).collect();
    support.reason = if own == Path::new("/") {
        Some(format!(
            "the daemon runs in the root cgroup of {}; it only manages a delegated subtree (run it under systemd with Delegate=yes)",
            mount.display()
        ))
    } else if !missing.is_empty() {
        Some(format!(
            "cgroup2 at {} offers {:?} to the daemon's cgroup; {:?} are missing",
            mount.display(),
            support.controllers,
            missing
        ))
    } else if !root {
        Some("the daemon is not running as root".into())
    } else {
        None
    };
    support.usable = support.reason.is_none();
    support.swap_accounted = base.join("memory.swap.max").is_file();
    let root = support.usable.then_some(CgroupRoot { base, swap_accounted: support.swap_accounted });
    (support, root)
}

impl CgroupRoot {
    /// Moves the daemon into its supervisor leaf, enables the controllers for its siblings and
    /// removes execution cgroups left by a daemon that was killed.
    pub fn prepare(&self) -> Result<usize, CgroupError> {
        let leaf = self.base.join(SUPERVISOR_LEAF);
        if !leaf.is_dir() {
            std::fs::create_dir(&leaf).map_err(|e| CgroupError::Create(leaf.clone(), e))?;
        }
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        let enable: Vec<String> = REQUIRED_CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
        write(&self.base.join("cgroup.subtree_control"), &enable.join(" "))?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.base).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(EXEC_PREFIX) {
                ExecCgroup { path: entry.path() }.destroy()?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Creates the leaf of one execution with its limits written.
    pub fn create(&self, execution_id: &str, limits: &Limits) -> Result<ExecCgroup, CgroupError> {
        let path = self.base.join(format!("{EXEC_PREFIX}{execution_id}"));
        std::fs::create_dir(&path).map_err(|e| CgroupError::Create(path.clone(), e))?;
        let cgroup = ExecCgroup { path };
        let quota = ((limits.cpu * CPU_PERIOD_US as f64) as u64).max(1000);
        let mut settings = vec![
            ("memory.max", limits.memory.0.to_string()),
            ("cpu.max", format!("{quota} {CPU_PERIOD_US}")),
            // The sandbox's init (pid 1) and the outer runner are ours, not the plugin's.
            ("pids.max", (limits.pids + 2).to_string()),
        ];
        // Only where the kernel accounts swap; elsewhere the gap is reported (see `HostSupport`).
        if self.swap_accounted {
            settings.push(("memory.swap.max", "0".to_string()));
        }
        for (file, value) in settings {
            if let Err(e) = write(&cgroup.path.join(file), &value) {
                cgroup.remove_soon();
                return Err(e);
            }
        }
        Ok(cgroup)
    }
}

/// The cgroup of one execution.
#[derive(Debug)]
pub struct ExecCgroup {
    path: PathBuf,
}

fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

impl ExecCgroup {
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    /// OOM kills inside this cgroup, from `memory.events`.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .ok()
            .and_then(|t| keyed_value(&t, "oom_kill"))
            .unwrap_or(0)
    }

    pub fn peak_memory(&self) -> Option<u64> {
        std::fs::read_to_string(self.path.join("memory.peak")).ok()?.trim().parse().ok()
    }

    pub fn cpu_time_ms(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.path.join("cpu.stat")).ok()?;
        keyed_value(&stat, "usage_usec").map(|us| us / 1000)
    }

    /// Kills every process in the cgroup at once.
    pub fn kill(&self) {
        let _ = write(&self.path.join("cgroup.kill"), "1");
    }

    /// Kills what is left and removes the directory; when the kernel is still reaping, the
    /// retries run on a blocking thread, never on an async worker.
    pub fn remove_soon(self) {
        self.kill();
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        let retry = move || {
            if let Err(e) = self.destroy() {
                tracing::error!(error = %ironclaw_protocol::error_chain(&e), "failed to remove an execution cgroup");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(retry)),
            Err(_) => retry(),
        }
    }

    /// Kills what is left and removes the directory, retrying while the kernel reaps (blocking:
    /// for start-up and blocking threads).
    pub fn destroy(self) -> Result<(), CgroupError> {
        self.kill();
        let mut last = None;
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(CgroupError::Remove(self.path, last.unwrap_or_else(|| std::io::Error::other("busy"))))
    }
}

impl Backend for CgroupRoot {
    fn kind(&self) -> ResourceBackend {
        ResourceBackend::CgroupV2
    }

    fn describe(&self, _host: &HostSupport) -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("memory", "cgroup memory.max"),
            ("cpu", "cgroup cpu.max + RLIMIT_CPU"),
            ("pids", "cgroup pids.max"),
        ])
    }

    fn address_space(&self, _limits: &Limits) -> Option<u64> {
        // The cgroup charges what an address-space limit would only approximate.
        None
    }

    fn prepare(&self) -> Result<usize, ResourceError> {
        CgroupRoot::prepare(self).map_err(ResourceError::new)
    }

    fn open(&self, execution_id: &str, limits: &Limits) -> Result<Box<dyn Meter>, ResourceError> {
        Ok(Box::new(self.create(execution_id, limits).map_err(ResourceError::new)?))
    }
}

impl Meter for ExecCgroup {
    fn adopt(&mut self, sandbox: Sandbox<'_>) -> Result<(), ResourceError> {
        for pid in [sandbox.outer_pid, sandbox.init_pid] {
            self.add(pid).map_err(ResourceError::new)?;
        }
        Ok(())
    }

    fn measure(&mut self, _sandbox: Sandbox<'_>, limits: &Limits, peak: &mut Usage) -> Verdict {
        // The kernel holds memory, pids and the share; CPU time is the whole cgroup's, every
        // task that ever ran in it included (RLIMIT_CPU only bounds each process).
        let Some(cpu) = self.cpu_time_ms() else { return Verdict::Within };
        peak.cpu_time_ms = peak.cpu_time_ms.max(cpu);
        if cpu > limits.cpu_time.0.as_millis() as u64 {
            Verdict::Over(ExecutionStatus::CpuLimit)
        } else {
            Verdict::Within
        }
    }

    fn release(&mut self) {}

    fn kill(&self) {
        ExecCgroup::kill(self);
    }

    fn close(self: Box<Self>) -> Totals {
        let totals = Totals {
            cpu_time_ms: self.cpu_time_ms(),
            peak_memory_bytes: self.peak_memory(),
            oom_killed: self.oom_kills() > 0,
        };
        self.remove_soon();
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::units::{ByteSize, Span};

    const HYBRID: &str = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn detection_explains_why_not() {
        let (s, root) = detect_from(HYBRID, "0::/\n", true);
        assert!(root.is_none());
        assert!(s.reason.unwrap().contains("root cgroup"));
        let (s, root) = detect_from("", "0::/x\n", true);
        assert!(root.is_none());
        assert_eq!(s.reason.as_deref(), Some("no cgroup2 hierarchy is mounted"));
    }

    #[test]
    fn delegated_subtree_is_used_and_limits_are_written() {
        let fake = tempfile::tempdir().unwrap();
        let service = fake.path().join("system.slice/ironclawd.service");
        std::fs::create_dir_all(&service).unwrap();
        std::fs::write(service.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let mountinfo = format!("30 1 0:26 / {} rw - cgroup2 cgroup2 rw\n", fake.path().display());
        // A kernel without swap accounting: everything but memory.swap.max is written.
        let (s, root) = detect_from(&mountinfo, "0::/system.slice/ironclawd.service/supervisor\n", true);
        assert!(s.usable && !s.swap_accounted, "{s:?}");
        let limits = Limits {
            memory: ByteSize(64 << 20),
            cpu: 0.5,
            cpu_time: Span(std::time::Duration::from_secs(5)),
            timeout: Span(std::time::Duration::from_secs(5)),
            pids: 16,
            output: ByteSize(1024),
            rate: None,
            cache_ttl: None,
            concurrency: 1,
        };
        root.unwrap().create("noswap", &limits).unwrap();
        assert!(service.join("exec-noswap/memory.max").is_file());
        assert!(!service.join("exec-noswap/memory.swap.max").exists());

        std::fs::write(service.join("memory.swap.max"), "max\n").unwrap();
        let (s, root) = detect_from(&mountinfo, "0::/system.slice/ironclawd.service/supervisor\n", true);
        assert!(s.usable && s.swap_accounted, "{:?}", s.reason);
        let cg = root.unwrap().create("abc", &limits).unwrap();
        let dir = service.join("exec-abc");
        assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap(), (64u64 << 20).to_string());
        assert_eq!(std::fs::read_to_string(dir.join("cpu.max")).unwrap(), "50000 100000");
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "18");
        assert_eq!(std::fs::read_to_string(dir.join("memory.swap.max")).unwrap(), "0");
        std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(cg.oom_kills(), 1);
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").unwrap();
        assert_eq!(cg.cpu_time_ms(), Some(1500));
    }
}
