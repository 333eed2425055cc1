//! The MCP front end: the plugins a caller may execute, as tools any AI assistant can call,
//! through the official SDK (`rmcp`). One handler ([`ToolServer`]) on the service layer, behind
//! two transports on the daemon's own listeners, after the same role check as REST
//! (`crate::auth`, executor role):
//! - Streamable HTTP at `/mcp`, for clients that speak HTTP (protocol 2026-07-28 statelessly,
//!   2025-11-25 and before in sessions);
//! - a newline-delimited JSON-RPC stream on a connection upgraded at `/mcp/stream`, which
//!   `ironclaw mcp` relays its stdio over, with the caller's own credentials on the socket.
#![forbid(unsafe_code)]

mod handler;
mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

pub use handler::ToolServer;
use sessions::BoundedSessions;

use crate::server::ConnectionSlot;
use crate::service::Service;

/// The protocol name a client asks for in `Upgrade:` at `/mcp/stream`.
pub const STREAM_PROTOCOL: &str = "mcp-jsonrpc-lines";

/// What the MCP routes take from the configuration.
pub struct McpSettings {
    /// Browser origins allowed to call `/mcp`; a request with any other `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    /// `Host` values accepted at `/mcp` (DNS rebinding): loopback names and the TCP listener's.
    pub allowed_hosts: Vec<String>,
    /// The largest message, as the API's `max_body`.
    pub max_message: usize,
    /// Sessions of 2025-11-25 clients kept at once.
    pub max_sessions: usize,
}

/// `/mcp` and `/mcp/stream`, for the API's router (which puts them behind its role check).
/// Every session ends when `stopping` is cancelled.
pub fn routes(service: Service, settings: McpSettings, stopping: CancellationToken) -> Router<Service> {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_origins(settings.allowed_origins)
        .enforce_origin_validation()
        .with_allowed_hosts(settings.allowed_hosts)
        .with_max_request_body_bytes(settings.max_message)
        .with_json_response(true)
        .with_cancellation_token(stopping.child_token());
    let factory = {
        let (service, stopping) = (service.clone(), stopping.clone());
        move || Ok(ToolServer::new(service.clone(), &stopping))
    };
    let http = StreamableHttpService::new(factory, Arc::new(BoundedSessions::new(settings.max_sessions)), config);
    let stream = Arc::new(StreamSettings { service, stopping, max_message: settings.max_message });
    Router::new()
        .route_service("/mcp", http)
        .route("/mcp/stream", get(move |request: Request| upgrade(stream.clone(), request)))
}

struct StreamSettings {
    service: Service,
    stopping: CancellationToken,
    max_message: usize,
}

/// Switches the connection to a JSON-RPC stream served by its own [`ToolServer`], which keeps
/// the connection's slot until the stream ends.
async fn upgrade(settings: Arc<StreamSettings>, mut request: Request) -> Response {
    let asked = request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if !asked.is_some_and(|p| p.eq_ignore_ascii_case(STREAM_PROTOCOL)) {
        let message =
            format!("this endpoint upgrades to a stream: send `Connection: upgrade` and `Upgrade: {STREAM_PROTOCOL}`");
        return (StatusCode::UPGRADE_REQUIRED, [(header::UPGRADE, STREAM_PROTOCOL)], message).into_response();
    }
    let slot = request.extensions_mut().remove::<ConnectionSlot>();
    let upgrading = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "an MCP stream was not upgraded"),
        };
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        let transport = AsyncRwTransport::new_server(read, write).with_max_line_length(settings.max_message);
        let handler = ToolServer::new(settings.service.clone(), &settings.stopping);
        match rmcp::service::serve_server_with_ct(handler, transport, settings.stopping.child_token()).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::debug!(error = %e, "an MCP stream ended before it began"),
        }
        drop(slot);
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL));
    response
}
