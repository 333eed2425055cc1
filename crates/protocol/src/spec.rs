//! What the daemon sends a runner: everything it needs to confine itself and run one execution.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::layers::{Requirements, ResourceBackend};

/// Everything a runner needs to confine itself and run one plugin execution. Not `Debug`: its
/// environment holds the plugin's secrets.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    pub execution_id: String,
    pub plugin_dir: PathBuf,
    pub runtime: RuntimeSpec,
    /// The encoded plugin request (see the SDK's `Request`).
    pub request: String,
    pub uid: u32,
    pub gid: u32,
    pub rlimits: RlimitSpec,
    /// Paths the plugin may read (and execute). The plugin folder is always added by the runner.
    pub read_paths: Vec<PathBuf>,
    /// Host paths the plugin may write.
    pub write_paths: Vec<PathBuf>,
    /// The plugin's workspace, mounted at `namespaces::WORKSPACE_MOUNT`.
    pub workspace: Option<WorkspaceSpec>,
    /// The size of the sandbox's private `/tmp`, in bytes: its pages are the execution's memory.
    pub tmp_size: u64,
    /// The TLS trust bundle (a host path) bound over the sandbox's system bundle, when the
    /// admin adds certificate authorities to the host's.
    pub ca_bundle: Option<PathBuf>,
    /// The egress proxy's port on the sandbox's loopback: the one TCP port it may connect to.
    pub proxy_port: Option<u16>,
    /// Environment of the plugin: nothing but these variables.
    pub env: Vec<(String, String)>,
    /// Layers policy demands; the runner refuses to run plugin code without them.
    pub requirements: Requirements,
    /// Where this execution's resource limits come from (decided by the daemon).
    pub resources: ResourceBackend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// The loop device holding the workspace's filesystem (a size-capped ext4 image).
    pub device: PathBuf,
    /// The workspace is at or over its size: this execution may only read it.
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RuntimeSpec {
    /// A cdylib, relative to the plugin folder.
    Native { library: PathBuf },
    /// argv; `argv[0]` is relative to the plugin folder when it contains a `/`, else searched in `PATH`.
    Exec { argv: Vec<String> },
}

/// Per-process rlimits applied by the runner. `None` leaves the inherited limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlimitSpec {
    pub address_space: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub processes: Option<u64>,
    pub open_files: u64,
    pub file_size: u64,
}
