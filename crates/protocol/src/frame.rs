//! Frames on the socketpair that is the runner's stdin: a 4-byte little-endian length, then
//! that many bytes of JSON.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

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
    use crate::message::RunnerMessage;

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
