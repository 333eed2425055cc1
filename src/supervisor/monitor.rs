//! The fallback backend's monitor: samples the memory and CPU time of an execution's processes
//! through `/proc`, psutil-style, so that limits without cgroup v2 still kill on excess.
#![forbid(unsafe_code)]

use std::path::Path;

/// Resident memory and CPU time summed over every process of the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub cpu_time_ms: u64,
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as u64)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100, |v| v as u64)
}

/// Reads one `/proc/<pid>` directory: resident pages from `statm`, utime+stime from `stat`.
fn read_process(dir: &Path, page: u64, ticks: u64) -> Option<Usage> {
    let statm = std::fs::read_to_string(dir.join("statm")).ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Usage { rss_bytes: resident * page, cpu_time_ms: (utime + stime) * 1000 / ticks })
}

/// Samples the sandbox whose pid 1 has the host pid `inner`. The sandbox's own procfs (mounted
/// in its mount namespace, reached through `/proc/<inner>/root`) lists exactly its processes.
///
/// `Ok(None)` means the sandbox is gone. An error means the daemon may not look inside it
/// (reaching another uid's `/proc/<pid>/root` needs CAP_SYS_PTRACE): the limits cannot be
/// enforced, and the caller must not carry on as if they were.
pub fn sample(inner: i32) -> std::io::Result<Option<Usage>> {
    let (page, ticks) = (page_size(), clock_ticks());
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
            if entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())
                && let Some(u) = read_process(&entry.path(), page, ticks)
            {
                total.rss_bytes += u.rss_bytes;
                total.cpu_time_ms += u.cpu_time_ms;
                seen = true;
            }
        }
    }
    if !seen {
        // Before the sandbox mounted its procfs, it is a single process.
        return Ok(read_process(Path::new(&format!("/proc/{inner}")), page, ticks));
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let me = read_process(Path::new("/proc/self"), page_size(), clock_ticks()).unwrap();
        assert!(me.rss_bytes > 0);
    }
}
