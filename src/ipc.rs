//! Typed messages between the daemon and a runner, over the socketpair that is the runner's stdin.
//!
//! Frames are a 4-byte little-endian length followed by that many bytes of JSON. The daemon
//! sends one [`RunnerSpec`]; the runner answers with [`RunnerMessage`]s in this order:
//! `Spawned` (from the outer runner, before the confined child may run), `Confined` (from the
//! confined child, before any plugin code runs), then `Response` (native plugins only).
//! Anything a plugin writes to the socket can only come after `Confined`, so the daemon trusts
//! the first two frames and treats the rest as plugin output.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::layers::{AppliedLayers, Requirements, ResourceBackend};

/// The largest frame either side accepts, whatever the plugin's output limit.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("failed to read a frame")]
    Read(#[source] std::io::Error),
    #[error("failed to write a frame")]
    Write(#[source] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("malformed frame")]
    Decode(#[source] serde_json::Error),
    #[error("failed to encode a frame")]
    Encode(#[source] serde_json::Error),
}

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
    pub path: PathBuf,
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
    SetupFailed { stage: String, message: String },
}

pub fn write_frame<T: Serialize>(mut w: impl Write, message: &T) -> Result<(), IpcError> {
    let body = serde_json::to_vec(message).map_err(IpcError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(IpcError::TooLarge(body.len(), MAX_FRAME));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).map_err(IpcError::Write)
}

pub fn read_frame<T: for<'de> Deserialize<'de>>(mut r: impl Read) -> Result<T, IpcError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(IpcError::Read)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(IpcError::TooLarge(len, MAX_FRAME));
    }
    // Grows with the bytes that actually arrive: a length alone (from a plugin, after
    // `Confined`) allocates nothing.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    r.by_ref().take(len as u64).read_to_end(&mut body).map_err(IpcError::Read)?;
    if body.len() < len {
        return Err(IpcError::Read(std::io::ErrorKind::UnexpectedEof.into()));
    }
    serde_json::from_slice(&body).map_err(IpcError::Decode)
}

/// Async reading for the daemon side; `limit` bounds what a plugin can make the daemon buffer.
pub async fn read_frame_async<T: for<'de> Deserialize<'de>>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: usize,
) -> Result<T, IpcError> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(IpcError::Read)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(IpcError::TooLarge(len, limit));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(IpcError::Read)?;
    serde_json::from_slice(&body).map_err(IpcError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &RunnerMessage::Spawned { pid: 42 }).unwrap();
        match read_frame::<RunnerMessage>(&buf[..]).unwrap() {
            RunnerMessage::Spawned { pid } => assert_eq!(pid, 42),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_rejected() {
        let mut buf = (u32::MAX).to_le_bytes().to_vec();
        buf.extend_from_slice(b"x");
        assert!(matches!(read_frame::<RunnerMessage>(&buf[..]), Err(IpcError::TooLarge(..))));
        let mut buf = 3u32.to_le_bytes().to_vec();
        buf.extend_from_slice(b"{x}");
        assert!(matches!(read_frame::<RunnerMessage>(&buf[..]), Err(IpcError::Decode(_))));
        assert!(matches!(read_frame::<RunnerMessage>(&[1u8][..]), Err(IpcError::Read(_))));
    }
}
