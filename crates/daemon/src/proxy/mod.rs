//! The egress proxy: the only way out of a sandbox's empty network namespace.
//!
//! For each execution of a plugin with network permissions, the daemon opens a listening socket
//! *inside* the sandbox's network namespace, on its loopback at [`PROXY_PORT`], before the
//! plugin runs; the plugin sees it as `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`. The daemon serves
//! it with hyper: `CONNECT host:port` (an upgrade, then a tunnel) and absolute-URI HTTP requests
//! (forwarded by a hyper client, with `Host` set from the target as RFC 9112 requires of a proxy,
//! and hop-by-hop headers removed both ways), checked against the plugin's effective allowlist
//! and deny list, resolved by the daemon itself (static host entries first), and refused when an
//! address is restricted (see [`addresses`]) or the host's own, unless policy allows that address
//! for this plugin. Refusals get a 403, and a log line and an audit record naming the plugin and
//! the execution, at a bounded rate: beyond it they are counted, and the count is recorded when
//! the execution ends. Everything the proxy starts for an execution ends with it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Instant;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod addresses;

use addresses::restricted_kind;

use crate::catalog::permissions::{AddressRange, HostPattern};
use crate::config::ProxyConfig;

/// The proxy's port on the sandbox's loopback (each sandbox has its own network namespace).
pub const PROXY_PORT: u16 = 3128;
/// The proxy URL plugins are given.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
/// The largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// Refusals one execution may have logged and audited at once, and how fast that allowance
/// refills; the rest are counted.
const REFUSAL_BURST: f64 = 20.0;
const REFUSALS_PER_SECOND: f64 = 5.0;
/// Connections one execution may have open through the proxy at once.
pub const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("static host entry {0:?} = {1:?}: expected \"host[:port]\" = \"ip[:port]\"")]
    HostEntry(String, String),
    #[error("failed to open the proxy listener in the sandbox's network namespace")]
    Listen(#[source] std::io::Error),
}

/// What one execution may reach, and whom to name in the log.
#[derive(Debug, Clone)]
pub struct Scope {
    pub plugin: String,
    pub execution_id: String,
    pub allow: Vec<HostPattern>,
    pub deny: Vec<HostPattern>,
    pub private_addresses: Vec<AddressRange>,
}

/// A static host entry's target: an address, and a port that replaces the requested one.
#[derive(Debug, Clone, Copy)]
struct StaticTarget {
    ip: IpAddr,
    port: Option<u16>,
}

#[derive(Debug)]
pub struct EgressProxy {
    hosts: BTreeMap<(String, Option<u16>), StaticTarget>,
    connect_timeout: Duration,
    header_timeout: Duration,
    own_addresses: Vec<IpAddr>,
    audit: Arc<crate::audit::AuditLog>,
}

impl EgressProxy {
    pub fn new(config: &ProxyConfig, audit: Arc<crate::audit::AuditLog>) -> Result<Arc<Self>, ProxyError> {
        let mut hosts = BTreeMap::new();
        for (name, target) in &config.hosts {
            let bad = || ProxyError::HostEntry(name.clone(), target.clone());
            let key = match name.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p.parse::<u16>().map_err(|_| bad())?)),
                None => (name.to_ascii_lowercase(), None),
            };
            let target = match target.parse::<SocketAddr>() {
                Ok(sa) => StaticTarget { ip: sa.ip(), port: Some(sa.port()) },
                Err(_) => StaticTarget { ip: target.parse().map_err(|_| bad())?, port: None },
            };
            hosts.insert(key, target);
        }
        let own_addresses = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Arc::new(EgressProxy {
            hosts,
            connect_timeout: config.connect_timeout.0,
            header_timeout: config.header_timeout.0,
            own_addresses,
            audit,
        }))
    }

    /// Opens the proxy's listening socket inside the network namespace of the process `pidfd`
    /// refers to. A dedicated thread enters the namespace and ends, so no thread of the daemon
    /// stays in it; the socket keeps the namespace it was created in.
    pub fn listen_in(pidfd: BorrowedFd<'_>) -> Result<std::net::TcpListener, ProxyError> {
        let pidfd = pidfd.try_clone_to_owned().map_err(ProxyError::Listen)?;
        std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
            nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            // The runner may not have brought loopback up yet (it does so right after
            // announcing itself); doing it twice is harmless.
            loopback_up()?;
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, PROXY_PORT))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| ProxyError::Listen(std::io::Error::other("the namespace thread panicked")))?
        .map_err(ProxyError::Listen)
    }

    /// Serves `listener` for one execution until the returned task is aborted. Every task it
    /// starts (connections, tunnels, upstream clients) ends with it.
    pub fn serve(self: &Arc<Self>, listener: std::net::TcpListener, scope: Scope) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let refusals = Arc::new(RefusalLog::new(&scope, self.audit.clone()));
        let scope = Arc::new(scope);
        tokio::spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "failed to register the proxy listener");
                    return;
                }
            };
            // Connections end with the execution: aborting this task drops the set, and the
            // sender whose loss ends every upstream client.
            let mut connections = tokio::task::JoinSet::new();
            let (_alive, ended) = watch::channel(());
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let execution = Execution { scope: scope.clone(), refusals: refusals.clone(), ended: ended.clone() };
                            let this = this.clone();
                            match slots.clone().try_acquire_owned() {
                                Ok(slot) => connections.spawn(async move {
                                    this.serve_connection(stream, execution).await;
                                    drop(slot);
                                }),
                                Err(_) => connections.spawn(async move {
                                    let reason = format!("more than {MAX_CONNECTIONS} connections at once");
                                    let answer = text(StatusCode::SERVICE_UNAVAILABLE, &reason);
                                    let service = hyper::service::service_fn(move |_| {
                                        let answer = answer.clone();
                                        async move { Ok::<_, Infallible>(answer.into_response()) }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .keep_alive(false)
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }),
                            };
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "proxy accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        })
    }

    /// One client connection: HTTP/1 requests until it closes, or a CONNECT that turns it into a
    /// tunnel, run here (in the connection's own task) once hyper hands the connection over.
    async fn serve_connection(self: Arc<Self>, stream: TcpStream, execution: Execution) {
        let tunnel: Arc<Mutex<Option<(OnUpgrade, TcpStream)>>> = Arc::default();
        let service = {
            let (this, tunnel, execution) = (self.clone(), tunnel.clone(), execution.clone());
            hyper::service::service_fn(move |request| {
                let (this, tunnel, execution) = (this.clone(), tunnel.clone(), execution.clone());
                async move { Ok::<_, Infallible>(this.route(request, &execution, &tunnel).await) }
            })
        };
        // One request per connection, as each may go to another upstream: the client learns
        // the response's end from the connection's.
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let _ = connection.await;
        let accepted = tunnel.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((upgrade, mut upstream)) = accepted
            && let Ok(upgraded) = upgrade.await
        {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
        }
    }

    /// Decides one request: refused with the reason, a tunnel accepted, or a request forwarded.
    async fn route(
        &self,
        mut request: Request<Incoming>,
        execution: &Execution,
        tunnel: &Mutex<Option<(OnUpgrade, TcpStream)>>,
    ) -> Response<ProxyBody> {
        let target = match Target::of(&request) {
            Ok(target) => target,
            Err(reason) => return text(StatusCode::BAD_REQUEST, &reason).into_response(),
        };
        let scope = &execution.scope;
        let upstream = match self.open(&target.host, target.port, scope).await {
            Ok(upstream) => upstream,
            Err(Refusal { status, reason }) => {
                execution.refusals.record(request.method(), &target, &reason);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                return text(status, &format!("{target}: {reason}")).into_response();
            }
        };
        tracing::info!(plugin = %scope.plugin, execution = %scope.execution_id, method = %request.method(), target = %target, "egress allowed");
        if request.method() == Method::CONNECT {
            *tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some((hyper::upgrade::on(&mut request), upstream));
            let mut established = Response::new(Empty::new().map_err(|never| match never {}).boxed());
            established.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Connection established"));
            return established;
        }
        forward(request, &target, upstream, execution.ended.clone()).await
    }

    /// Checks a target against the scope, resolves it and connects.
    async fn open(&self, host: &str, port: u16, scope: &Scope) -> Result<TcpStream, Refusal> {
        if let Some(rule) = scope.deny.iter().find(|d| d.denies(host, port)) {
            return Err(Refusal::forbidden(format!("denied by policy ({rule})")));
        }
        if !scope.allow.iter().any(|a| a.matches(host, port)) {
            return Err(Refusal::forbidden("not in the plugin's network allowlist".into()));
        }
        let candidates: Vec<SocketAddr> = match self.static_target(host, port) {
            Some(addr) => vec![addr],
            None => match tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => return Err(Refusal::bad_gateway(format!("cannot resolve: {e}"))),
                Err(_) => return Err(Refusal::bad_gateway("name resolution timed out".into())),
            },
        };
        let mut refused = Vec::new();
        let allowed: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|addr| {
                let ip = addr.ip().to_canonical();
                let restricted = self.restriction(ip);
                match restricted {
                    Some(kind) if !scope.private_addresses.iter().any(|r| r.contains(ip)) => {
                        refused.push(format!("{ip} ({kind})"));
                        false
                    }
                    _ => true,
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(Refusal::forbidden(if refused.is_empty() {
                "resolves to no address".into()
            } else {
                format!("resolves to a restricted address: {}", refused.join(", "))
            }));
        }
        let mut last = String::new();
        for addr in allowed {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
                Err(_) => last = format!("connecting to {addr} timed out"),
            }
        }
        Err(Refusal::bad_gateway(last))
    }

    fn static_target(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let t =
            self.hosts.get(&(host.to_string(), Some(port))).or_else(|| self.hosts.get(&(host.to_string(), None)))?;
        Some(SocketAddr::new(t.ip, t.port.unwrap_or(port)))
    }

    /// Why an address needs an explicit grant, if it does.
    fn restriction(&self, ip: IpAddr) -> Option<&'static str> {
        restricted_kind(ip).or_else(|| self.own_addresses.contains(&ip).then_some("the host's own address"))
    }
}

struct Refusal {
    status: u16,
    reason: String,
}

impl Refusal {
    fn forbidden(reason: String) -> Self {
        Refusal { status: 403, reason }
    }

    fn bad_gateway(reason: String) -> Self {
        Refusal { status: 502, reason }
    }
}

/// What one execution's connections share.
#[derive(Clone)]
struct Execution {
    scope: Arc<Scope>,
    refusals: Arc<RefusalLog>,
    /// Closed when the execution's proxy task ends.
    ended: watch::Receiver<()>,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A short text answer of the proxy's own.
#[derive(Clone)]
struct Text {
    status: StatusCode,
    body: String,
}

fn text(status: StatusCode, reason: &str) -> Text {
    Text { status, body: format!("ironclaw egress proxy: {reason}\n") }
}

impl Text {
    fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(Full::new(Bytes::from(self.body)).map_err(|never| match never {}).boxed());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Where a request goes: `CONNECT host:port`, or the authority of an absolute `http://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Target {
    fn of<B>(request: &Request<B>) -> Result<Self, String> {
        let uri = request.uri();
        let connect = request.method() == Method::CONNECT;
        if !connect && uri.scheme_str() != Some("http") {
            return Err(format!("{uri}: use an absolute http:// URI, or CONNECT for HTTPS"));
        }
        let authority = uri.authority().ok_or_else(|| format!("{uri}: no host"))?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URI are not supported".into());
        }
        let port = match (authority.port_u16(), connect) {
            (Some(port), _) => port,
            (None, false) => 80,
            (None, true) => return Err(format!("CONNECT target {authority} needs a port")),
        };
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err("empty host".into());
        }
        Ok(Target { host, port })
    }

    /// The `Host` header for the target (the port only when it is not HTTP's own).
    fn host_header(&self) -> String {
        if self.port == 80 { self.host.clone() } else { self.to_string() }
    }
}

/// Headers that describe one hop, not the message: never forwarded (RFC 9110 §7.6.1), nor
/// any header the message's `Connection` names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Forwards an absolute-URI request to `upstream` with a hyper client: the origin-form target,
/// `Host` from the target whatever the client sent, hop-by-hop headers removed both ways, one
/// request per upstream connection.
async fn forward(
    mut request: Request<Incoming>,
    target: &Target,
    upstream: TcpStream,
    mut ended: watch::Receiver<()>,
) -> Response<ProxyBody> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    *request.version_mut() = hyper::Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    match HeaderValue::from_str(&target.host_header()) {
        Ok(host) => headers.insert(header::HOST, host),
        Err(_) => return text(StatusCode::BAD_REQUEST, &format!("{target}: not a valid host")).into_response(),
    };
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
        Ok(client) => client,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("{target}: {e}")).into_response(),
    };
    // Drives the upstream connection while the response streams back; ends with the execution.
    tokio::spawn(async move {
        tokio::select! {
            _ = connection => {}
            _ = ended.changed() => {}
        }
    });
    match sender.send_request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("{target}: the upstream failed: {e}")).into_response(),
    }
}

/// An execution's refusals, logged and audited at a bounded rate (a flood of refusals must not
/// fill the disk); those beyond it are counted, and the count is logged and audited when the
/// execution's proxy ends.
struct RefusalLog {
    plugin: String,
    execution_id: String,
    audit: Arc<crate::audit::AuditLog>,
    bucket: Mutex<RefusalBucket>,
}

struct RefusalBucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
    total: u64,
}

impl RefusalLog {
    fn new(scope: &Scope, audit: Arc<crate::audit::AuditLog>) -> Self {
        let bucket = RefusalBucket { tokens: REFUSAL_BURST, refilled: Instant::now(), suppressed: 0, total: 0 };
        RefusalLog {
            plugin: scope.plugin.clone(),
            execution_id: scope.execution_id.clone(),
            audit,
            bucket: Mutex::new(bucket),
        }
    }

    fn record(&self, method: &Method, target: &Target, reason: &str) {
        {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(bucket.refilled).as_secs_f64() * REFUSALS_PER_SECOND;
            bucket.tokens = (bucket.tokens + refill).min(REFUSAL_BURST);
            bucket.refilled = now;
            bucket.total += 1;
            if bucket.tokens < 1.0 {
                bucket.suppressed += 1;
                return;
            }
            bucket.tokens -= 1.0;
        }
        tracing::warn!(plugin = %self.plugin, execution = %self.execution_id, %method, %target, %reason, "egress refused");
        self.audit.record(serde_json::json!({
            "event": "denied",
            "reason": "proxy",
            "plugin": self.plugin,
            "execution": self.execution_id,
            "method": method.as_str(),
            "target": target.to_string(),
            "why": reason,
        }));
    }
}

impl Drop for RefusalLog {
    fn drop(&mut self) {
        let bucket = self.bucket.get_mut().unwrap_or_else(|p| p.into_inner());
        if bucket.suppressed == 0 {
            return;
        }
        tracing::warn!(
            plugin = %self.plugin,
            execution = %self.execution_id,
            suppressed = bucket.suppressed,
            total = bucket.total,
            "egress refusals beyond the log's rate were counted, not logged one by one"
        );
        self.audit.record(serde_json::json!({
            "event": "denied",
            "reason": "proxy",
            "plugin": self.plugin,
            "execution": self.execution_id,
            "suppressed": bucket.suppressed,
            "total": bucket.total,
        }));
    }
}

/// Brings up the loopback interface of the calling thread's network namespace, over rtnetlink
/// (`RTM_SETLINK` with `IFF_UP`), and waits for the kernel's answer.
fn loopback_up() -> std::io::Result<()> {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkFlags, LinkMessage};
    use netlink_sys::protocols::NETLINK_ROUTE;
    use netlink_sys::{Socket, SocketAddr};

    let mut link = LinkMessage::default();
    link.header.index = nix::net::if_::if_nametoindex("lo")?;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)));
    packet.finalize();
    let mut request = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut request);
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&request, 0)?;
    let mut answer = vec![0u8; 4096];
    let size = socket.recv(&mut &mut answer[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..size])
        .map_err(|e| std::io::Error::other(format!("malformed rtnetlink answer: {e}")))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: &str, uri: &str) -> Result<Target, String> {
        Target::of(&Request::builder().method(method).uri(uri).body(()).unwrap())
    }

    #[test]
    fn targets() {
        let t = target("CONNECT", "api.example.com:443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        let t = target("GET", "http://Api.Example.com./v1?q=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.host_header().as_str()), ("api.example.com", 80, "api.example.com"));
        let t = target("GET", "http://h:8080").unwrap();
        assert_eq!((t.port, t.host_header().as_str()), (8080, "h:8080"));
        assert!(target("GET", "/relative").is_err());
        assert!(target("GET", "https://h/").is_err());
        assert!(target("CONNECT", "host").is_err());
        assert!(target("GET", "http://u:p@h/").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }
}
