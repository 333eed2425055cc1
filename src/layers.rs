//! What the host supports, what a runner actually applied, and what policy requires.
//!
//! Nothing here is assumed: the host report comes from probing the kernel, and the per-execution
//! report comes from the runner after it applied each layer.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A layer that policy can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Namespaces,
    Landlock,
    Seccomp,
    CgroupV2,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Namespaces => "namespaces",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::CgroupV2 => "cgroup_v2",
        })
    }
}

/// The namespaces every runner enters.
pub const NAMESPACES: [&str; 5] = ["pid", "net", "mount", "ipc", "uts"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockEnforcement {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockReport {
    pub status: LandlockEnforcement,
    /// The ABI the ruleset was built against (the kernel's, capped by what the crate knows).
    pub abi: Option<u32>,
}

/// Reported by the confined runner once every layer is in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLayers {
    pub namespaces: Vec<String>,
    pub landlock: LandlockReport,
    pub seccomp: bool,
    pub no_new_privs: bool,
    pub capabilities_dropped: bool,
    pub uid: u32,
    pub gid: u32,
}

/// Where resource limits come from for an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceBackend {
    /// A cgroup v2 leaf with memory.max, memory.swap.max, cpu.max and pids.max.
    CgroupV2,
    /// rlimits plus the daemon's /proc sampling monitor.
    Fallback,
}

/// The `layers` field of every execution result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    pub resources: ResourceBackend,
    /// `None` when the runner never reached the point of reporting (setup failure, refusal).
    pub sandbox: Option<AppliedLayers>,
    /// What the resource backend could not see or hold on this host, one line per gap (empty
    /// when every limit is enforced as documented).
    #[serde(default)]
    pub resource_gaps: Vec<String>,
}

/// What policy demands of every execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    pub layers: Vec<Layer>,
    pub landlock_min_abi: Option<u32>,
}

impl Requirements {
    /// Checks what a runner applied (and the resource backend) against the requirements.
    pub fn check_applied(&self, applied: &AppliedLayers, resources: ResourceBackend) -> Result<(), String> {
        for layer in &self.layers {
            let ok = match layer {
                Layer::Namespaces => NAMESPACES.iter().all(|n| applied.namespaces.iter().any(|a| a == n)),
                Layer::Landlock => applied.landlock.status != LandlockEnforcement::NotEnforced,
                Layer::Seccomp => applied.seccomp,
                Layer::CgroupV2 => resources == ResourceBackend::CgroupV2,
            };
            if !ok {
                return Err(format!("policy requires layer '{layer}', which was not applied"));
            }
        }
        if let Some(min) = self.landlock_min_abi {
            match applied.landlock.abi {
                Some(abi) if abi >= min && applied.landlock.status != LandlockEnforcement::NotEnforced => {}
                abi => {
                    return Err(format!(
                        "policy requires Landlock ABI {min} or later, the runner applied {}",
                        abi.map_or("none".to_string(), |a| a.to_string())
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the host before any runner is spawned, so a refusal costs nothing.
    pub fn check_host(&self, host: &HostSupport) -> Result<(), String> {
        for layer in &self.layers {
            if let Some(reason) = host.missing(*layer) {
                return Err(format!("policy requires layer '{layer}', which this host cannot enforce: {reason}"));
            }
        }
        if let Some(min) = self.landlock_min_abi {
            let abi = host.landlock_abi.unwrap_or(0);
            if abi < min {
                return Err(format!("policy requires Landlock ABI {min} or later, this host has ABI {abi}"));
            }
        }
        Ok(())
    }
}

/// The cgroup v2 situation of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSupport {
    /// Where cgroup2 is mounted, if anywhere.
    pub mount: Option<PathBuf>,
    /// The daemon's own cgroup (relative to the mount).
    pub own_cgroup: Option<PathBuf>,
    /// Controllers available to the daemon's cgroup.
    pub controllers: Vec<String>,
    /// Whether executions get cgroup v2 limits; when false, `reason` says why.
    pub usable: bool,
    pub reason: Option<String>,
}

/// What the host kernel offers, probed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// What the resource backend cannot enforce on this host, one line per gap (see
    /// [`HostSupport::find_resource_gaps`]); every result carries them too.
    pub resource_gaps: Vec<String>,
}

impl HostSupport {
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
    (caps::Capability::CAP_DAC_READ_SEARCH, "measuring workspaces whose files plugins created"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn applied() -> AppliedLayers {
        AppliedLayers {
            namespaces: NAMESPACES.iter().map(|s| s.to_string()).collect(),
            landlock: LandlockReport { status: LandlockEnforcement::FullyEnforced, abi: Some(6) },
            seccomp: true,
            no_new_privs: true,
            capabilities_dropped: true,
            uid: 1,
            gid: 1,
        }
    }

    #[test]
    fn requirements_fail_closed() {
        let req = Requirements { layers: vec![Layer::Seccomp, Layer::CgroupV2], landlock_min_abi: None };
        let err = req.check_applied(&applied(), ResourceBackend::Fallback).unwrap_err();
        assert!(err.contains("cgroup_v2"), "{err}");
        assert!(req.check_applied(&applied(), ResourceBackend::CgroupV2).is_ok());

        let req = Requirements { layers: vec![], landlock_min_abi: Some(7) };
        assert!(req.check_applied(&applied(), ResourceBackend::Fallback).unwrap_err().contains("ABI 7"));

        let mut weak = applied();
        weak.landlock.status = LandlockEnforcement::NotEnforced;
        let req = Requirements { layers: vec![Layer::Landlock], landlock_min_abi: None };
        assert!(req.check_applied(&weak, ResourceBackend::Fallback).is_err());
    }
}
