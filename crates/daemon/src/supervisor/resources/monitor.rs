//! The fallback backend's monitor: samples the memory and CPU time of an execution's processes
//! through `/proc`, psutil-style, so that limits without cgroup v2 still kill on excess.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant};

/// Memory of the plugin's processes and CPU time of every process of the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident anonymous and shared-memory pages and swapped-out pages (`RssAnon` + `RssShmem` +
    /// `VmSwap`): what the plugin allocated. Not file-backed pages (the runner's binary, the
    /// plugin's library), which are shared, reclaimable page cache.
    pub memory_bytes: u64,
    pub cpu_time_ms: u64,
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100, |v| v as u64)
}

/// Reads one `/proc/<pid>` directory: anonymous and shared-memory resident sizes from
/// `status`; from `stat`, the CPU time of the process and of its children it has reaped. Summed
/// over the live processes of a sandbox, that counts every process once, exited ones included
/// (pid 1 reaps the orphans).
fn read_process(dir: &Path, ticks: u64) -> Option<Usage> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // Swapped pages are still the plugin's (MADV_PAGEOUT would otherwise hide them from RSS).
    let memory_bytes = (kib("RssAnon:") + kib("RssShmem:") + kib("VmSwap:")) * 1024;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, then utime 14, stime 15, cutime 16, cstime 17.
    let mut ticks_used = 0u64;
    for field in 11..=14 {
        ticks_used += fields.get(field)?.parse::<u64>().ok()?;
    }
    Some(Usage { memory_bytes, cpu_time_ms: ticks_used * 1000 / ticks })
}

/// The period over which the fallback holds a sandbox to its CPU share (cgroup v2's default
/// `cpu.max` period).
pub const CPU_PERIOD: Duration = Duration::from_millis(100);

/// The fallback's CPU share: a token bucket refilled at `share` CPU-seconds per second, holding
/// at most one period's worth. When the sandbox has spent more than it holds, it is paused
/// (every process stopped) until the bucket is positive again.
#[derive(Debug)]
pub struct CpuThrottle {
    share: f64,
    budget_ms: f64,
    last_cpu_ms: u64,
    last_at: Instant,
    paused: bool,
}

impl CpuThrottle {
    pub fn new(share: f64, now: Instant) -> Self {
        let full = share * CPU_PERIOD.as_secs_f64() * 1000.0;
        CpuThrottle { share, budget_ms: full, last_cpu_ms: 0, last_at: now, paused: false }
    }

    /// Accounts a new sample; `Some(true)` says pause the sandbox, `Some(false)` resume it.
    pub fn update(&mut self, cpu_ms: u64, now: Instant) -> Option<bool> {
        let elapsed_ms = now.saturating_duration_since(self.last_at).as_secs_f64() * 1000.0;
        let used_ms = cpu_ms.saturating_sub(self.last_cpu_ms) as f64;
        let full = self.share * CPU_PERIOD.as_secs_f64() * 1000.0;
        self.budget_ms = (self.budget_ms + self.share * elapsed_ms - used_ms).min(full);
        self.last_cpu_ms = self.last_cpu_ms.max(cpu_ms);
        self.last_at = now;
        match (self.paused, self.budget_ms < 0.0) {
            (false, true) => {
                self.paused = true;
                Some(true)
            }
            (true, false) => {
                self.paused = false;
                Some(false)
            }
            _ => None,
        }
    }
}

/// Samples the sandbox whose pid 1 has the host pid `inner`. The sandbox's own procfs (mounted
/// in its mount namespace, reached through `/proc/<inner>/root`) lists exactly its processes.
///
/// `Ok(None)` means the sandbox is gone. An error means the daemon may not look inside it
/// (reaching another uid's `/proc/<pid>/root` needs CAP_SYS_PTRACE): the limits cannot be
/// enforced, and the caller must not carry on as if they were.
pub fn sample(inner: i32) -> std::io::Result<Option<Usage>> {
    let ticks = clock_ticks();
    let own_proc = format!("/proc/{inner}/root/proc");
    let mut total = Usage::default();
    let mut seen = false;
    let device = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
    let sandbox_device = match device(&own_proc) {
        Ok(dev) => Some(dev),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e),
        Err(_) => None,
    };
    // Until the sandbox has mounted its own procfs, that path is the host's /proc (the same
    // superblock as ours): listing it would count every process of the host.
    let sandbox_procfs = matches!((sandbox_device, device("/proc")), (Some(a), Ok(b)) if a != b);
    if let Some(entries) = sandbox_procfs.then(|| std::fs::read_dir(&own_proc).ok()).flatten() {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit())
                && let Some(u) = read_process(&entry.path(), ticks)
            {
                // The sandbox's init (pid 1) is ours, a copy of the runner sharing its pages
                // with the plugin: its memory is not the plugin's (counting it would count the
                // shared pages twice). Its CPU time is, for it reaps the plugin's orphans.
                if name != "1" {
                    total.memory_bytes += u.memory_bytes;
                }
                total.cpu_time_ms += u.cpu_time_ms;
                seen = true;
            }
        }
    }
    if !seen {
        // Before the sandbox mounted its procfs, it is a single process.
        return Ok(read_process(Path::new(&format!("/proc/{inner}")), ticks));
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a sandbox that spins on `cpus` CPUs whenever it is not paused.
    fn spin(share: f64, cpus: f64, seconds: u64) -> f64 {
        let start = Instant::now();
        let mut throttle = CpuThrottle::new(share, start);
        let (mut cpu_ms, mut paused) = (0.0f64, false);
        let tick = Duration::from_millis(10);
        let ticks = seconds * 100;
        for i in 1..=ticks {
            if !paused {
                cpu_ms += cpus * 10.0;
            }
            if let Some(pause) = throttle.update(cpu_ms as u64, start + tick * i as u32) {
                paused = pause;
            }
        }
        cpu_ms / (seconds as f64 * 1000.0)
    }

    #[test]
    fn the_throttle_holds_a_sandbox_to_its_share() {
        for share in [0.1, 0.25, 0.5] {
            let used = spin(share, 1.0, 10);
            assert!((used - share).abs() < 0.03, "share {share}: used {used}");
        }
        // Two busy threads against a share of 1.5 CPUs.
        let used = spin(1.5, 2.0, 10);
        assert!((used - 1.5).abs() < 0.1, "used {used}");
        // A share above what the sandbox uses never pauses it.
        assert_eq!(spin(2.0, 1.0, 5), 1.0);
    }

    #[test]
    fn samples_this_process() {
        let me = read_process(Path::new("/proc/self"), clock_ticks()).unwrap();
        assert!(me.memory_bytes > 0);
    }
}
