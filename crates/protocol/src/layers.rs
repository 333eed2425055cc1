//! What a runner actually applied, and what policy requires of it.
//!
//! Nothing here is assumed: the report comes from the runner after it applied each layer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A layer that policy can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LandlockEnforcement {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct LandlockReport {
    pub status: LandlockEnforcement,
    /// The ABI the ruleset was built against (the kernel's, capped by what the crate knows).
    pub abi: Option<u32>,
}

/// Reported by the confined runner once every layer is in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResourceBackend {
    /// A cgroup v2 leaf with memory.max, memory.swap.max, cpu.max and pids.max.
    CgroupV2,
    /// rlimits plus the daemon's /proc sampling monitor.
    Fallback,
}

/// What policy demands of every execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Requirements {
    pub layers: Vec<Layer>,
    pub landlock_min_abi: Option<u32>,
}

/// A requirement of the policy that was not met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    #[error("policy requires layer '{0}', which was not applied")]
    NotApplied(Layer),
    #[error("policy requires layer '{layer}', which this host cannot enforce: {reason}")]
    Unavailable { layer: Layer, reason: String },
    #[error("policy requires Landlock ABI {min} or later, the runner applied {}", abi_name(*.applied))]
    LandlockApplied { min: u32, applied: Option<u32> },
    #[error("policy requires Landlock ABI {min} or later, this host has ABI {host}")]
    LandlockHost { min: u32, host: u32 },
}

fn abi_name(abi: Option<u32>) -> String {
    abi.map_or("none".to_string(), |a| a.to_string())
}

impl Requirements {
    /// Checks what a runner applied (and the resource backend) against the requirements.
    pub fn check_applied(&self, applied: &AppliedLayers, resources: ResourceBackend) -> Result<(), Unmet> {
        for layer in &self.layers {
            let ok = match layer {
                Layer::Namespaces => NAMESPACES.iter().all(|n| applied.namespaces.iter().any(|a| a == n)),
                Layer::Landlock => applied.landlock.status != LandlockEnforcement::NotEnforced,
                Layer::Seccomp => applied.seccomp,
                Layer::CgroupV2 => resources == ResourceBackend::CgroupV2,
            };
            if !ok {
                return Err(Unmet::NotApplied(*layer));
            }
        }
        if let Some(min) = self.landlock_min_abi {
            match applied.landlock.abi {
                Some(abi) if abi >= min && applied.landlock.status != LandlockEnforcement::NotEnforced => {}
                applied => return Err(Unmet::LandlockApplied { min, applied }),
            }
        }
        Ok(())
    }
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
        assert_eq!(err, Unmet::NotApplied(Layer::CgroupV2));
        assert!(err.to_string().contains("cgroup_v2"), "{err}");
        assert!(req.check_applied(&applied(), ResourceBackend::CgroupV2).is_ok());

        let req = Requirements { layers: vec![], landlock_min_abi: Some(7) };
        assert!(req.check_applied(&applied(), ResourceBackend::Fallback).unwrap_err().to_string().contains("ABI 7"));

        let mut weak = applied();
        weak.landlock.status = LandlockEnforcement::NotEnforced;
        let req = Requirements { layers: vec![Layer::Landlock], landlock_min_abi: None };
        assert!(req.check_applied(&weak, ResourceBackend::Fallback).is_err());
    }
}
