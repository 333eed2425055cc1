//! What a runner sends the daemon, in this order: `Spawned` (from the outer runner, before the
//! confined child may run), then `Confined` (from the sandbox's init, once every layer is in
//! place and the plugin's process is forked) or `SetupFailed`. Nothing follows: no plugin
//! process ever holds the channel (it closes its copy before any plugin code runs), and the
//! plugin's response, from a native or an exec plugin alike, comes on its stdout. The daemon
//! accepts nothing on the channel after `Confined`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::layers::AppliedLayers;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RunnerMessage {
    /// The outer runner forked the confined child; its pid in the daemon's pid namespace.
    Spawned { pid: i32 },
    /// Every layer is in place, as measured; the plugin's process is forked.
    Confined { layers: AppliedLayers },
    /// Setting up failed at `stage`; no plugin code ran.
    SetupFailed { stage: SetupStage, message: String },
}

/// Where a runner's set-up failed: a step of the confinement, or the plugin's own start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupStage {
    /// Session, parent-death signal, inherited descriptors.
    Process,
    Namespaces,
    /// Receiving the spec.
    Spec,
    Rlimits,
    /// Building the sandbox's own root filesystem.
    Root,
    /// Opening the plugin folder and its entry.
    OpenPlugin,
    Landlock,
    Seccomp,
    /// The unprivileged uid and gid, capabilities dropped.
    Identity,
    NoNewPrivs,
    /// Reading the layers back from the kernel.
    Verify,
    /// A layer the policy requires was not applied.
    Requirements,
    /// Forking the plugin's process.
    Fork,
    /// The daemon could not start the runner or hand it the execution.
    Spawn,
    /// The runner broke the protocol before it was confined.
    Protocol,
}

impl SetupStage {
    /// A requirement the policy set: the admin's part. Any other stage failing is the
    /// sandbox's or the host's (a plugin that cannot be loaded or started answers `error`).
    pub fn is_plugins_part(self) -> bool {
        self == SetupStage::Requirements
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SetupStage::Process => "process",
            SetupStage::Namespaces => "namespaces",
            SetupStage::Spec => "spec",
            SetupStage::Rlimits => "rlimits",
            SetupStage::Root => "root",
            SetupStage::OpenPlugin => "open_plugin",
            SetupStage::Landlock => "landlock",
            SetupStage::Seccomp => "seccomp",
            SetupStage::Identity => "identity",
            SetupStage::NoNewPrivs => "no_new_privs",
            SetupStage::Verify => "verify",
            SetupStage::Requirements => "requirements",
            SetupStage::Fork => "fork",
            SetupStage::Spawn => "spawn",
            SetupStage::Protocol => "protocol",
        }
    }
}

impl fmt::Display for SetupStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
