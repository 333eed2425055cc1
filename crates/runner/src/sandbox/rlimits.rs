//! Per-process resource limits. Under the fallback backend they are the kernel-side half of the
//! limits (the daemon's monitor is the other half); under cgroup v2 they are a second fence.
#![forbid(unsafe_code)]

use nix::sys::resource::{Resource, setrlimit};

use ironclaw_protocol::spec::RlimitSpec;

#[derive(Debug, thiserror::Error)]
#[error("failed to set {resource:?} to {value}")]
pub struct RlimitError {
    resource: Resource,
    value: u64,
    #[source]
    err: nix::Error,
}

pub fn apply(spec: &RlimitSpec) -> Result<(), RlimitError> {
    let mut limits = vec![
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_NOFILE, spec.open_files, spec.open_files),
        (Resource::RLIMIT_FSIZE, spec.file_size, spec.file_size),
        // Locked memory is never needed, and io_uring would account to it.
        (Resource::RLIMIT_MEMLOCK, 0, 0),
    ];
    if let Some(bytes) = spec.address_space {
        limits.push((Resource::RLIMIT_AS, bytes, bytes));
    }
    if let Some(seconds) = spec.cpu_seconds {
        // SIGXCPU at the soft limit, SIGKILL one second later.
        limits.push((Resource::RLIMIT_CPU, seconds, seconds + 1));
    }
    if let Some(n) = spec.processes {
        limits.push((Resource::RLIMIT_NPROC, n, n));
    }
    for (resource, soft, hard) in limits {
        setrlimit(resource, soft, hard).map_err(|err| RlimitError { resource, value: soft, err })?;
    }
    Ok(())
}
