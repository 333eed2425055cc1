//! The egress proxy: the only way out of a sandbox's empty network namespace.
//!
//! For each execution of a plugin with network permissions, the daemon opens a listening socket
//! *inside* the sandbox's network namespace, on its loopback at [`PROXY_PORT`], before the
//! plugin runs; the plugin sees it as `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`. The daemon serves
//! it: `CONNECT host:port` and absolute-URI HTTP requests, checked against the plugin's
//! effective allowlist and deny list, resolved by the daemon itself (static host entries first),
//! and refused when an address is loopback, private, link-local, cloud metadata or the host's
//! own, unless policy allows that address for this plugin. Refusals get a 403, a log line and an
//! audit record naming the plugin and the execution.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod addresses;

use addresses::restricted_kind;

use crate::catalog::permissions::{AddressRange, HostPattern};
use crate::config::ProxyConfig;

/// The proxy's port on the sandbox's loopback (each sandbox has its own network namespace).
pub const PROXY_PORT: u16 = 3128;
/// The proxy URL plugins are given.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
const MAX_HEAD: usize = 16 * 1024;
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

    /// Serves `listener` for one execution until the returned task is aborted.
    pub fn serve(self: &Arc<Self>, listener: std::net::TcpListener, scope: Scope) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let scope = Arc::new(scope);
        tokio::spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "failed to register the proxy listener");
                    return;
                }
            };
            // Connections end with the execution: aborting this task drops the set.
            let mut connections = tokio::task::JoinSet::new();
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((mut stream, _)) => {
                            let (this, scope) = (this.clone(), scope.clone());
                            match slots.clone().try_acquire_owned() {
                                Ok(slot) => connections.spawn(async move {
                                    this.handle(stream, &scope).await;
                                    drop(slot);
                                }),
                                Err(_) => connections.spawn(async move {
                                    let reason = format!("more than {MAX_CONNECTIONS} connections at once");
                                    respond(&mut stream, 503, "Service Unavailable", &reason).await;
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

    async fn handle(&self, mut client: TcpStream, scope: &Scope) {
        let head = match tokio::time::timeout(self.header_timeout, read_head(&mut client)).await {
            Ok(Ok(head)) => head,
            Ok(Err(reason)) => return respond(&mut client, 400, "Bad Request", &reason).await,
            Err(_) => return respond(&mut client, 408, "Request Timeout", "no request head in time").await,
        };
        let request = match Request::parse(&head.bytes) {
            Ok(r) => r,
            Err(reason) => return respond(&mut client, 400, "Bad Request", &reason).await,
        };
        let target = format!("{}:{}", request.host, request.port);
        let upstream = match self.open(&request.host, request.port, scope).await {
            Ok(upstream) => upstream,
            Err(Refusal { status, reason }) => {
                tracing::warn!(
                    plugin = %scope.plugin,
                    execution = %scope.execution_id,
                    method = %request.method,
                    target = %target,
                    %reason,
                    "egress refused"
                );
                self.audit.record(serde_json::json!({
                    "event": "denied",
                    "reason": "proxy",
                    "plugin": scope.plugin,
                    "execution": scope.execution_id,
                    "method": request.method,
                    "target": target,
                    "why": reason,
                }));
                let text = if status == 403 { "Forbidden" } else { "Bad Gateway" };
                return respond(&mut client, status, text, &format!("{target}: {reason}")).await;
            }
        };
        tracing::info!(plugin = %scope.plugin, execution = %scope.execution_id, method = %request.method, target = %target, "egress allowed");
        let mut upstream = upstream;
        let forwarded = if request.method == "CONNECT" {
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await
        } else {
            upstream.write_all(&request.origin_form_head(&head.bytes)).await
        };
        if forwarded.is_err() || upstream.write_all(&head.rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
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

struct Head {
    bytes: Vec<u8>,
    /// Bytes read past the head (a request body, or TLS after CONNECT).
    rest: Vec<u8>,
}

async fn read_head(client: &mut TcpStream) -> Result<Head, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a complete request head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Head { bytes: buf, rest });
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("request head larger than {MAX_HEAD} bytes"));
        }
    }
}

struct Request {
    method: String,
    host: String,
    port: u16,
    /// For absolute-URI requests: the path and query to send upstream.
    path: String,
}

impl Request {
    fn parse(head: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
        let line = text.lines().next().unwrap_or_default();
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed request line {line:?}"));
        };
        if !version.starts_with("HTTP/1.") {
            return Err(format!("unsupported protocol {version:?}"));
        }
        let (authority, path, default_port) = if method == "CONNECT" {
            (target, String::new(), None)
        } else if let Some(rest) = target.strip_prefix("http://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            (authority, if path.is_empty() { "/".to_string() } else { path.to_string() }, Some(80))
        } else {
            return Err(format!("{target:?}: use an absolute http:// URI, or CONNECT for HTTPS"));
        };
        if authority.contains('@') {
            return Err("credentials in the URI are not supported".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                (h, p.parse::<u16>().map_err(|_| format!("invalid port in {authority:?}"))?)
            }
            _ => (authority, default_port.ok_or_else(|| format!("CONNECT target {authority:?} needs a port"))?),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err("empty host".into());
        }
        Ok(Request { method: method.to_string(), host, port, path })
    }

    /// The head rewritten for the origin server: origin-form target, no proxy headers, one
    /// request per connection.
    fn origin_form_head(&self, head: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let version = lines.next().and_then(|l| l.rsplit(' ').next()).unwrap_or("HTTP/1.1");
        let mut out = format!("{} {} {version}\r\n", self.method, self.path);
        for line in lines.filter(|l| !l.is_empty()) {
            let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            if !matches!(name.as_str(), "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive") {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

async fn respond(client: &mut TcpStream, status: u16, text: &str, reason: &str) {
    let body = format!("ironclaw egress proxy: {reason}\n");
    let response = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
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

    #[test]
    fn request_lines() {
        let r = Request::parse(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.host.as_str(), r.port), ("CONNECT", "api.example.com", 443));
        let r = Request::parse(b"GET http://Api.Example.com./v1?q=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.path.as_str()), ("api.example.com", 80, "/v1?q=1"));
        let r = Request::parse(b"GET http://h:8080 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.port, r.path.as_str()), (8080, "/"));
        assert!(Request::parse(b"GET /relative HTTP/1.1\r\n\r\n").is_err());
        assert!(Request::parse(b"CONNECT host HTTP/1.1\r\n\r\n").is_err());
        assert!(Request::parse(b"GET http://u:p@h/ HTTP/1.1\r\n\r\n").is_err());
        let head = b"GET http://h/x HTTP/1.1\r\nHost: h\r\nProxy-Connection: keep-alive\r\n\r\n";
        let rewritten = String::from_utf8(Request::parse(head).unwrap().origin_form_head(head)).unwrap();
        assert_eq!(rewritten, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    }
}
