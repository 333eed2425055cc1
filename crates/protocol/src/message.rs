//! What a runner sends the daemon, in this order: `Spawned` (from the outer runner, before the
//! confined child may run), `Confined` (from the confined child, before any plugin code runs),
//! then `Response` (native plugins only), or `SetupFailed` at any point before the plugin runs.
//! Anything a plugin writes to the socket can only come after `Confined`, so the daemon trusts
//! the frames before it and treats the rest as plugin output.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::layers::AppliedLayers;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RunnerMessage {
    /// The outer runner forked the confined child; its pid in the daemon's pid namespace.
    Spawned { pid: i32 },
    /// Every layer is in place; what was actually applied.
    Confined { layers: AppliedLayers },
    /// A native plugin's encoded response.
    Response { body: String },
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
    /// Opening the plugin folder and its entry.
    OpenPlugin,
    Landlock,
    Seccomp,
    /// The unprivileged uid and gid, capabilities dropped.
    Identity,
    NoNewPrivs,
    /// A layer the policy requires was not applied.
    Requirements,
    /// Forking the plugin's process.
    Fork,
    /// Loading a native plugin.
    Load,
    /// Executing an exec plugin.
    Exec,
    /// The daemon could not start the runner or hand it the execution.
    Spawn,
    /// The runner broke the protocol before it was confined.
    Protocol,
}

impl SetupStage {
    /// Loading or starting the plugin, or a requirement the policy set: the plugin's or the
    /// admin's part. Any other stage failing is the sandbox's or the host's.
    pub fn is_plugins_part(self) -> bool {
        matches!(self, SetupStage::Load | SetupStage::Exec | SetupStage::Requirements)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SetupStage::Process => "process",
            SetupStage::Namespaces => "namespaces",
            SetupStage::Spec => "spec",
            SetupStage::Rlimits => "rlimits",
            SetupStage::OpenPlugin => "open_plugin",
            SetupStage::Landlock => "landlock",
            SetupStage::Seccomp => "seccomp",
            SetupStage::Identity => "identity",
            SetupStage::NoNewPrivs => "no_new_privs",
            SetupStage::Requirements => "requirements",
            SetupStage::Fork => "fork",
            SetupStage::Load => "load",
            SetupStage::Exec => "exec",
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
