//! The HTTP server under the API. `axum::serve` has no header read timeout and no connection
//! cap, and a daemon that local users and TCP clients can reach needs both: a client that
//! trickles its headers (slowloris) is cut off after `header_timeout`, and connections beyond
//! `max_connections` get a 503 with `Retry-After` at once while the others keep being served.
//! The caller's identity ([`Peer`]) is attached to every request for the role check, and its
//! [`ConnectionSlot`], which a connection upgraded to a stream (`/mcp/stream`) keeps while the
//! stream lasts. Body read timeouts are the router's (`api::router`).
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::auth::Peer;

/// Limits on the connections of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request's headers to arrive, from the first byte or from keep-alive.
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// One of a listener's `max_connections`, held by the connection and by whatever it was
/// upgraded to.
#[derive(Clone)]
pub struct ConnectionSlot {
    _held: Arc<OwnedSemaphorePermit>,
}

/// How long a graceful shutdown waits for open connections before dropping them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// A listener whose connections can name their peer.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Peer)>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Peer)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        let peer = Peer::of_unix(&stream);
        Ok((stream, peer))
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Peer)> {
        let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
        Ok((stream, Peer::Tcp(addr)))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (up to `SHUTDOWN_WAIT`).
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (io, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: not fatal.
                tracing::warn!(error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max = limits.max_connections, "connection limit reached: answering 503");
            tokio::spawn(refuse(io));
            continue;
        };
        let slot = ConnectionSlot { _held: Arc::new(permit) };
        let service = router.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            request.extensions_mut().insert(slot.clone());
            request.map(Body::new)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async { drop(stopped.wait_for(|s| *s).await) } => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_WAIT, drained).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_WAIT:?}: dropping them");
    }
}

/// Answers a connection over the limit with 503 and closes it, without reading its request.
async fn refuse(mut io: impl AsyncWrite + Unpin) {
    const BODY: &str =
        r#"{"error":{"code":"too_many_connections","message":"too many open connections; retry later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        io.write_all(response.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
