//! What an execution's runner sends back, read as it comes: its messages on the IPC channel,
//! its stdout and stderr, each bounded, each signalling an overflow.
#![forbid(unsafe_code)]

use std::time::Duration;

use ironclaw_protocol::frame::{self, IpcError};
use ironclaw_protocol::layers::AppliedLayers;
use ironclaw_protocol::message::{RunnerMessage, SetupStage};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// What the IPC reader saw after the runner's first frame.
#[derive(Debug, Default)]
pub struct IpcReport {
    pub layers: Option<AppliedLayers>,
    pub setup_failed: Option<(SetupStage, String)>,
    pub response: Option<String>,
    pub too_large: bool,
    pub garbage: Option<String>,
}

/// Reads the runner's messages after `Spawned`, to the end of the channel.
pub async fn read_ipc(
    mut stream: tokio::net::UnixStream,
    response_limit: usize,
    overflow: mpsc::Sender<()>,
) -> IpcReport {
    let mut report = IpcReport::default();
    // JSON escaping can at most double a body, plus the frame's envelope.
    let frame_limit = response_limit.saturating_mul(2).saturating_add(4096);
    loop {
        match frame::read_frame_async::<RunnerMessage>(&mut stream, frame_limit).await {
            Ok(RunnerMessage::Confined { layers }) if report.layers.is_none() => report.layers = Some(layers),
            Ok(RunnerMessage::SetupFailed { stage, message }) if report.setup_failed.is_none() => {
                report.setup_failed = Some((stage, message));
            }
            Ok(RunnerMessage::Response { body }) if report.response.is_none() && report.layers.is_some() => {
                if body.len() > response_limit {
                    report.too_large = true;
                    let _ = overflow.try_send(());
                }
                report.response = Some(body);
            }
            Ok(other) => {
                report.garbage = Some(format!("unexpected message on the runner channel: {other:?}"));
                break;
            }
            Err(IpcError::Read(_)) => break,
            Err(IpcError::TooLarge(..)) => {
                report.too_large = true;
                let _ = overflow.try_send(());
                break;
            }
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
