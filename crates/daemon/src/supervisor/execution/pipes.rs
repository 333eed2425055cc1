//! What an execution's runner sends back, read as it comes: its messages on the IPC channel,
//! its stdout (the response) and stderr (the log), each bounded, each signalling an overflow.
#![forbid(unsafe_code)]

use std::time::Duration;

use ironclaw_protocol::frame::{self, IpcError};
use ironclaw_protocol::layers::AppliedLayers;
use ironclaw_protocol::message::{RunnerMessage, SetupStage};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// The largest runner message: a set-up failure's message, or the layers report.
const FRAME_LIMIT: usize = 64 * 1024;

/// What the IPC reader saw after the runner's first frame.
#[derive(Debug, Default)]
pub struct IpcReport {
    pub layers: Option<AppliedLayers>,
    pub setup_failed: Option<(SetupStage, String)>,
    /// A frame out of order, or one that does not decode: the runner broke its protocol.
    pub garbage: Option<String>,
}

/// Reads the runner's messages after `Spawned`, to the end of the channel: one `Confined` or
/// one `SetupFailed`, then nothing (see `ironclaw_protocol::message`).
pub async fn read_ipc(mut stream: tokio::net::UnixStream) -> IpcReport {
    let mut report = IpcReport::default();
    loop {
        let decided = report.layers.is_some() || report.setup_failed.is_some();
        match frame::read_frame_async::<RunnerMessage>(&mut stream, FRAME_LIMIT).await {
            Ok(RunnerMessage::Confined { layers }) if !decided => report.layers = Some(layers),
            Ok(RunnerMessage::SetupFailed { stage, message }) if !decided => {
                report.setup_failed = Some((stage, message));
            }
            Ok(other) => {
                report.garbage = Some(format!("unexpected message on the runner channel: {other:?}"));
                break;
            }
            Err(IpcError::Read(_)) => break,
            Err(e) => {
                report.garbage = Some(ironclaw_protocol::error_chain(&e));
                break;
            }
        }
    }
    report
}

/// Reads a pipe to its end, keeping at most `keep` bytes; signals `overflow` past `limit`.
pub async fn read_pipe(
    mut pipe: impl AsyncRead + Unpin,
    keep: usize,
    limit: usize,
    overflow: mpsc::Sender<()>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                if kept.len() < keep {
                    let take = n.min(keep - kept.len());
                    kept.extend_from_slice(&buf[..take]);
                }
                if total > limit {
                    let _ = overflow.try_send(());
                    return (kept, true);
                }
            }
        }
    }
    (kept, false)
}

/// A reader's result, or its default when it does not end within `grace` (then it is aborted).
pub async fn join_or_default<T: Default>(task: tokio::task::JoinHandle<T>, grace: Duration) -> T {
    let abort = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(Ok(v)) => v,
        _ => {
            abort.abort();
            T::default()
        }
    }
}
