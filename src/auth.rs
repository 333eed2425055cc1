//! Who may call what. On the unix socket the caller is identified by the kernel (`SO_PEERCRED`,
//! and its groups from `/proc/<pid>/status`): root and the admin groups are admins, the executor
//! groups may list and execute plugins, everyone else gets 403. Every admin action and every
//! denial goes to the audit log (JSON lines, apart from the debug log; never a secret).
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown group {0:?} in api.admin_groups or api.executor_groups")]
    Group(String),
    #[error("failed to open the audit log {0}")]
    Audit(PathBuf, #[source] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May list plugins, read them, execute them and follow executions.
    Executor,
    /// Everything: enable, disable, reload, roll back, statistics, the system report.
    Admin,
}

/// The other end of a connection, as the kernel tells it.
#[derive(Debug, Clone)]
pub enum Peer {
    Unix { uid: u32, gid: u32, pid: Option<i32>, groups: Vec<u32> },
    Tcp(SocketAddr),
}

impl Peer {
    fn to_json(&self) -> Value {
        match self {
            Peer::Unix { uid, gid, pid, .. } => json!({"transport": "unix", "uid": uid, "gid": gid, "pid": pid}),
            Peer::Tcp(addr) => json!({"transport": "tcp", "addr": addr.to_string()}),
        }
    }
}

/// The caller's supplementary groups, read while it is connected.
fn groups_of(pid: Option<i32>) -> Vec<u32> {
    let status = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok()).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(cred) => Peer::Unix { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), groups: groups_of(cred.pid()) },
            // No credentials, no rights: an impossible uid.
            Err(_) => Peer::Unix { uid: u32::MAX, gid: u32::MAX, pid: None, groups: Vec::new() },
        }
    }
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
    }
}

/// Role rules and the audit log.
pub struct Gate {
    admin_gids: Vec<u32>,
    executor_gids: Vec<u32>,
    audit: Mutex<std::fs::File>,
}

/// A group by name or number.
fn gid_of(group: &str) -> Result<u32, AuthError> {
    match group.parse::<u32>() {
        Ok(gid) => Ok(gid),
        Err(_) => nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
            .ok_or_else(|| AuthError::Group(group.to_string())),
    }
}

impl Gate {
    pub fn new(admin_groups: &[String], executor_groups: &[String], audit_log: &Path) -> Result<Arc<Self>, AuthError> {
        let gids = |names: &[String]| names.iter().map(|g| gid_of(g)).collect::<Result<Vec<_>, _>>();
        if let Some(parent) = audit_log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AuthError::Audit(audit_log.to_path_buf(), e))?;
        }
        let audit = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(audit_log)
            .map_err(|e| AuthError::Audit(audit_log.to_path_buf(), e))?;
        Ok(Arc::new(Gate {
            admin_gids: gids(admin_groups)?,
            executor_gids: gids(executor_groups)?,
            audit: Mutex::new(audit),
        }))
    }

    /// The caller's role; `None` for no role at all.
    pub fn role(&self, peer: &Peer) -> Option<Role> {
        match peer {
            // The TCP listener is off unless configured, and loopback unless configured
            // otherwise; token authentication for it is still to come.
            Peer::Tcp(_) => Some(Role::Admin),
            Peer::Unix { uid, gid, groups, .. } => {
                let member = |set: &[u32]| set.contains(gid) || groups.iter().any(|g| set.contains(g));
                if *uid == 0 || member(&self.admin_gids) {
                    Some(Role::Admin)
                } else if member(&self.executor_gids) {
                    Some(Role::Executor)
                } else {
                    None
                }
            }
        }
    }

    /// Appends one JSON line to the audit log.
    pub fn audit(&self, mut record: Value) {
        record["ts_ms"] = json!(crate::supervisor::execution::unix_ms());
        let mut file = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(file, "{record}").and_then(|()| file.flush()) {
            tracing::error!(error = %e, "failed to write the audit log");
        }
    }
}

/// What a request needs: `None` for the health check, else the least role.
fn required(method: &Method, path: &str) -> Option<Role> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["", "healthz"]) => None,
        (&Method::GET, ["", "api", "v1", "plugins"])
        | (&Method::GET, ["", "api", "v1", "plugins", _])
        | (&Method::POST, ["", "api", "v1", "plugins", _, "execute"])
        | (&Method::GET, ["", "api", "v1", "executions"])
        | (&Method::GET, ["", "api", "v1", "executions", _])
        | (&Method::DELETE, ["", "api", "v1", "executions", _]) => Some(Role::Executor),
        _ => Some(Role::Admin),
    }
}

/// The middleware: checks the caller's role against the route, audits denials and admin actions.
pub async fn authorize(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.clone());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let need = required(&method, &path);
    let role = peer.as_ref().and_then(|p| gate.role(p));
    let who = peer.as_ref().map_or(json!("unknown"), Peer::to_json);
    if let Some(need) = need
        && role.is_none_or(|r| r < need)
    {
        gate.audit(json!({"event": "denied", "reason": "auth", "who": who, "role": role, "needs": need, "method": method.as_str(), "path": path}));
        let message = format!(
            "this needs the {need:?} role; the caller has {}",
            role.map_or("none".into(), |r| format!("{r:?}"))
        );
        let body = json!({"error": {"code": "forbidden", "message": message.to_lowercase()}});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if need == Some(Role::Admin) && method != Method::GET {
        gate.audit(json!({"event": "admin_action", "who": who, "method": method.as_str(), "path": path, "status": status.as_u16()}));
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        gate.audit(json!({"event": "denied", "reason": "rate_limit_or_overload", "who": who, "method": method.as_str(), "path": path}));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_roles() {
        assert_eq!(required(&Method::GET, "/healthz"), None);
        assert_eq!(required(&Method::POST, "/api/v1/plugins/calculator/execute"), Some(Role::Executor));
        assert_eq!(required(&Method::GET, "/api/v1/plugins"), Some(Role::Executor));
        assert_eq!(required(&Method::PUT, "/api/v1/plugins/calculator/enable"), Some(Role::Admin));
        assert_eq!(required(&Method::POST, "/api/v1/plugins/reload-all"), Some(Role::Admin));
        assert_eq!(required(&Method::GET, "/api/v1/plugins/calculator/backups"), Some(Role::Admin));
        assert_eq!(required(&Method::GET, "/api/v1/system"), Some(Role::Admin));
        assert_eq!(required(&Method::GET, "/nowhere"), Some(Role::Admin), "unknown routes need the most");

        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::new(&["4242".into()], &["4343".into()], &dir.path().join("audit.jsonl")).unwrap();
        let unix = |uid, gid, groups: Vec<u32>| Peer::Unix { uid, gid, pid: None, groups };
        assert_eq!(gate.role(&unix(0, 0, vec![])), Some(Role::Admin));
        assert_eq!(gate.role(&unix(1000, 1000, vec![4242])), Some(Role::Admin));
        assert_eq!(gate.role(&unix(1000, 4343, vec![])), Some(Role::Executor));
        assert_eq!(gate.role(&unix(1000, 1000, vec![7])), None);
        assert!(Gate::new(&["no-such-group-here".into()], &[], &dir.path().join("a")).is_err());
    }
}
