//! Probing the host, and choosing its resource backend.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::backend::Backend;
use super::{cgroup, cpu_clock, fallback, socket_meter};
use crate::host::{HostSupport, probe_missing_capabilities, probe_namespaces, probe_seccomp};

/// Probes what the host kernel offers, and chooses the resource backend.
pub fn probe_host() -> (HostSupport, Arc<dyn Backend>) {
    let (cgroup_v2, root) = cgroup::detect();
    let uts = nix::sys::utsname::uname().ok();
    let fallback = root.is_none();
    let mut host = HostSupport {
        kernel: uts.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        running_as_root: nix::unistd::geteuid().is_root(),
        landlock_abi: crate::sys::landlock_abi(),
        seccomp: probe_seccomp(),
        namespaces: probe_namespaces(),
        missing_capabilities: probe_missing_capabilities(fallback),
        task_clock_unavailable: fallback.then(cpu_clock::probe).and_then(Result::err),
        socket_meter_unavailable: fallback.then(socket_meter::probe).and_then(Result::err),
        cgroup_v2,
        workspace_images_unavailable: crate::supervisor::workspace::probe().err(),
        workspace_online_growth: caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE)
            .unwrap_or(false),
        resource_gaps: Vec::new(),
    };
    host.resource_gaps = host.find_resource_gaps();
    let backend: Arc<dyn Backend> = match root {
        Some(root) => Arc::new(root),
        None => Arc::new(fallback::Fallback::new(&host)),
    };
    (host, backend)
}
