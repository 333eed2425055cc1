//! What the host kernel offers the sandbox, probed at start-up, and the policy's requirements
//! checked against it before any runner is spawned.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use ironclaw_protocol::layers::{Layer, NAMESPACES, Requirements, ResourceBackend, Unmet};
use serde::{Deserialize, Serialize};

/// The cgroup v2 situation of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CgroupSupport {
    /// Where cgroup2 is mounted, if anywhere.
    #[schema(value_type = Option<String>)]
    pub mount: Option<PathBuf>,
    /// The daemon's own cgroup (relative to the mount).
    #[schema(value_type = Option<String>)]
    pub own_cgroup: Option<PathBuf>,
    /// Controllers available to the daemon's cgroup.
    pub controllers: Vec<String>,
    /// Whether executions get cgroup v2 limits; when false, `reason` says why.
    pub usable: bool,
    pub reason: Option<String>,
    /// Whether the kernel accounts swap per cgroup (`memory.swap.max` exists): without it an
    /// execution's pages may be swapped out past `memory.max`.
    pub swap_accounted: bool,
}

/// What the host kernel offers, probed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostSupport {
    pub kernel: String,
    pub arch: String,
    pub running_as_root: bool,
    pub landlock_abi: Option<u32>,
    pub seccomp: bool,
    pub namespaces: Vec<String>,
    pub cgroup_v2: CgroupSupport,
    /// Capabilities the daemon needs but lacks in its effective set (for instance under a
    /// too-narrow `CapabilityBoundingSet=`).
    pub missing_capabilities: Vec<String>,
    /// Why the fallback cannot count an execution's CPU time with a perf task clock, when it
    /// cannot (then it sums what `/proc` shows, and says so in `resource_gaps`).
    pub task_clock_unavailable: Option<String>,
    /// Why the fallback cannot measure an execution's socket buffers, when it cannot.
    pub socket_meter_unavailable: Option<String>,
    /// Why workspaces cannot be size-capped filesystems here (no loop devices, a missing
    /// tool), when they cannot: then every execution with a workspace fails.
    pub workspace_images_unavailable: Option<String>,
    /// Whether a mounted workspace can grow online (CAP_SYS_RESOURCE); otherwise a larger size
    /// applies from the daemon's next start.
    pub workspace_online_growth: bool,
    /// What the resource backend cannot enforce on this host, one line per gap (see
    /// [`HostSupport::find_resource_gaps`]); every result carries them too.
    pub resource_gaps: Vec<String>,
}

impl HostSupport {
    /// Checks the policy's requirements before any runner is spawned, so a refusal costs nothing.
    pub fn check(&self, requirements: &Requirements) -> Result<(), Unmet> {
        for &layer in &requirements.layers {
            if let Some(reason) = self.missing(layer) {
                return Err(Unmet::Unavailable { layer, reason });
            }
        }
        if let Some(min) = requirements.landlock_min_abi {
            let host = self.landlock_abi.unwrap_or(0);
            if host < min {
                return Err(Unmet::LandlockHost { min, host });
            }
        }
        Ok(())
    }

    /// Why `layer` cannot be enforced here, or `None` when it can.
    pub fn missing(&self, layer: Layer) -> Option<String> {
        match layer {
            Layer::Namespaces => {
                let absent: Vec<_> = NAMESPACES.iter().filter(|n| !self.namespaces.iter().any(|h| h == *n)).collect();
                if !self.running_as_root {
                    Some("the daemon is not running as root".into())
                } else if !absent.is_empty() {
                    Some(format!("missing namespaces {absent:?}"))
                } else {
                    None
                }
            }
            Layer::Landlock => self.landlock_abi.is_none().then(|| "Landlock is not enabled in this kernel".into()),
            Layer::Seccomp => (!self.seccomp).then(|| "seccomp filters are not available".into()),
            Layer::CgroupV2 => (!self.cgroup_v2.usable)
                .then(|| self.cgroup_v2.reason.clone().unwrap_or_else(|| "cgroup v2 is not usable".into())),
        }
    }

    pub fn resource_backend(&self) -> ResourceBackend {
        if self.cgroup_v2.usable { ResourceBackend::CgroupV2 } else { ResourceBackend::Fallback }
    }

    /// What the resource backend cannot enforce on this host, one line per gap.
    pub fn find_resource_gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        if self.resource_backend() == ResourceBackend::CgroupV2 {
            let swap_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
                m.lines().find_map(|l| l.strip_prefix("SwapTotal:")?.split_whitespace().next()?.parse::<u64>().ok())
            });
            if !self.cgroup_v2.swap_accounted && swap_kib.is_some_and(|kib| kib > 0) {
                gaps.push(format!(
                    "memory: swap is not accounted per cgroup on this host (no memory.swap.max), so an execution's \
                     pages may be swapped out past memory.max, into the host's {} KiB of swap",
                    swap_kib.unwrap_or(0)
                ));
            }
            return gaps;
        }
        if let Some(reason) = &self.task_clock_unavailable {
            gaps.push(format!(
                "cpu_time: CPU time of processes that exit without a parent waiting for them (SIGCHLD ignored) is \
                 not counted, because {reason}"
            ));
        }
        if let Some(reason) = &self.socket_meter_unavailable {
            let sysctl = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/core/{name}")).unwrap_or_default();
            gaps.push(format!(
                "memory: socket buffers are not counted, because {reason}: at most net.core.wmem_default ({} bytes) \
                 sent and rmem_default ({} bytes) received per socket, of at most 256 sockets a process",
                sysctl("wmem_default").trim(),
                sysctl("rmem_default").trim()
            ));
        }
        let pipe_pages = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft").unwrap_or_default();
        gaps.push(format!(
            "memory: pipe contents are not counted: at most 64 KiB a pipe (plugins may not resize pipes) and \
             fs.pipe-user-pages-soft ({} pages) for all of an execution's pipes",
            pipe_pages.trim()
        ));
        gaps
    }
}

/// Capabilities the daemon needs, and why.
const NEEDED_CAPABILITIES: &[(caps::Capability, &str)] = &[
    (caps::Capability::CAP_SYS_ADMIN, "namespaces and the sandbox's mounts"),
    (caps::Capability::CAP_NET_ADMIN, "bringing up loopback in the sandbox's network namespace"),
    (caps::Capability::CAP_SETUID, "switching the runner to its unprivileged uid"),
    (caps::Capability::CAP_SETGID, "switching the runner to its unprivileged gid"),
    (caps::Capability::CAP_SETPCAP, "clearing the runner's bounding set"),
    (caps::Capability::CAP_KILL, "killing runners that run as other uids"),
    (caps::Capability::CAP_CHOWN, "giving each workspace its plugin's group"),
    (caps::Capability::CAP_FSETID, "the set-group-id bit of workspaces"),
    (caps::Capability::CAP_DAC_READ_SEARCH, "regrouping workspaces whose files plugins created"),
];

/// Needed by the fallback backend only: its monitor reads `/proc/<runner>/root/proc`.
const MONITOR_CAPABILITY: (caps::Capability, &str) =
    (caps::Capability::CAP_SYS_PTRACE, "the fallback monitor's view into each sandbox's /proc");

/// Which of the capabilities the daemon needs are not in its effective set.
pub fn probe_missing_capabilities(fallback: bool) -> Vec<String> {
    let effective = caps::read(None, caps::CapSet::Effective).unwrap_or_default();
    NEEDED_CAPABILITIES
        .iter()
        .chain(fallback.then_some(&MONITOR_CAPABILITY))
        .filter(|(cap, _)| !effective.contains(cap))
        .map(|(cap, why)| format!("{cap} ({why})"))
        .collect()
}

/// Names of namespaces the kernel offers (`/proc/self/ns`).
pub fn probe_namespaces() -> Vec<String> {
    let ns = Path::new("/proc/self/ns");
    let mut names: Vec<String> = NAMESPACES
        .iter()
        .map(|n| match *n {
            "mount" => "mnt",
            other => other,
        })
        .filter(|n| ns.join(n).exists())
        .map(|n| if n == "mnt" { "mount".to_string() } else { n.to_string() })
        .collect();
    names.sort();
    names
}

/// Whether the kernel offers seccomp filters (`/proc/sys/kernel/seccomp/actions_avail`).
pub fn probe_seccomp() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map(|actions| actions.split_whitespace().any(|a| a == "errno") && actions.contains("allow"))
        .unwrap_or(false)
}
