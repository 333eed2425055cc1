//! Who may call what. On the unix socket the caller is identified by the kernel (`SO_PEERCRED`,
//! and its groups by `SO_PEERGROUPS`): root and the admin groups are admins, the executor
//! groups may list and execute plugins, everyone else gets 403. On TCP the caller presents a
//! bearer token (from a root-only file or a systemd credential) with an admin or execute scope,
//! compared in constant time; no token, 401. Every admin action and every denial goes to the
//! audit log (JSON lines, apart from the debug log; never a secret or a token).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::audit::AuditLog;

/// The systemd credential that may hold API tokens (`LoadCredential=ironclaw-api-tokens:...`).
pub const TOKENS_CREDENTIAL: &str = "ironclaw-api-tokens";
const MIN_TOKEN_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown group {0:?} in api.admin_groups or api.executor_groups")]
    Group(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("failed to read the API tokens")]
    Tokens(#[source] crate::catalog::secrets::SecretsError),
    #[error("API token {0:?} is shorter than {MIN_TOKEN_LEN} characters")]
    ShortToken(String),
    #[error(
        "the TCP API needs tokens (api.tokens_file, or the {TOKENS_CREDENTIAL} credential); \
         without them it only starts with api.insecure_tcp = true on a loopback address"
    )]
    TcpWithoutTokens,
}

/// One entry of the tokens file: `ci = { token = "...", scope = "execute" }`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    scope: Scope,
}

#[derive(serde::Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Scope {
    Admin,
    Execute,
}

/// A token's name (for the audit log), its bytes and its role.
struct Token {
    name: String,
    secret: Vec<u8>,
    role: Role,
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

impl Peer {
    /// The caller on a unix socket, from `SO_PEERCRED` and `SO_PEERGROUPS`.
    pub fn of_unix(stream: &tokio::net::UnixStream) -> Self {
        use std::os::fd::AsFd;
        match (stream.peer_cred(), crate::sys::peer_groups(stream.as_fd())) {
            (Ok(cred), Ok(groups)) => Peer::Unix { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), groups },
            // No credentials, no rights: an impossible uid.
            _ => Peer::Unix { uid: u32::MAX, gid: u32::MAX, pid: None, groups: Vec::new() },
        }
    }
}

/// Role rules, the TCP tokens and the audit log.
pub struct Gate {
    admin_gids: Vec<u32>,
    executor_gids: Vec<u32>,
    tokens: Vec<Token>,
    /// TCP callers are admins without a token (loopback only; refused otherwise at start).
    insecure_tcp: bool,
    audit: Arc<AuditLog>,
}

/// What `Gate::new` needs from the configuration.
pub struct GateConfig<'a> {
    pub admin_groups: &'a [String],
    pub executor_groups: &'a [String],
    pub tokens_file: Option<&'a Path>,
    pub credentials_dir: Option<&'a Path>,
    /// The TCP listener's address, if any.
    pub tcp: Option<SocketAddr>,
    pub insecure_tcp: bool,
    pub audit: Arc<AuditLog>,
}

fn load_tokens(file: &Path, into: &mut Vec<Token>) -> Result<(), AuthError> {
    let table: std::collections::BTreeMap<String, TokenEntry> =
        crate::catalog::secrets::read_private_toml(file).map_err(AuthError::Tokens)?;
    for (name, entry) in table {
        if entry.token.len() < MIN_TOKEN_LEN {
            return Err(AuthError::ShortToken(name));
        }
        let role = match entry.scope {
            Scope::Admin => Role::Admin,
            Scope::Execute => Role::Executor,
        };
        into.push(Token { name, secret: entry.token.into_bytes(), role });
    }
    Ok(())
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
    pub fn new(c: GateConfig) -> Result<Arc<Self>, AuthError> {
        let gids = |names: &[String]| names.iter().map(|g| gid_of(g)).collect::<Result<Vec<_>, _>>();
        let mut tokens = Vec::new();
        if let Some(file) = c.tokens_file {
            load_tokens(file, &mut tokens)?;
        }
        if let Some(file) = c.credentials_dir.map(|d| d.join(TOKENS_CREDENTIAL)).filter(|f| f.exists()) {
            load_tokens(&file, &mut tokens)?;
        }
        if let Some(addr) = c.tcp
            && tokens.is_empty()
        {
            if !(c.insecure_tcp && addr.ip().is_loopback()) {
                return Err(AuthError::TcpWithoutTokens);
            }
            tracing::warn!(%addr, "the TCP API runs WITHOUT authentication (api.insecure_tcp): every local user is an admin");
        }
        Ok(Arc::new(Gate {
            admin_gids: gids(c.admin_groups)?,
            executor_gids: gids(c.executor_groups)?,
            insecure_tcp: c.insecure_tcp && tokens.is_empty(),
            tokens,
            audit: c.audit,
        }))
    }

    /// The token a TCP caller presents, compared with every known one in constant time.
    fn token(&self, headers: &HeaderMap) -> Option<&Token> {
        use subtle::ConstantTimeEq;
        let presented = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?.trim().as_bytes();
        let mut found = None;
        for token in &self.tokens {
            // Every token is compared, whichever matches: the time says nothing.
            if bool::from(token.secret.ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }

    /// The caller's role; `None` for no role at all.
    pub fn role(&self, peer: &Peer, headers: &HeaderMap) -> Option<Role> {
        match peer {
            Peer::Tcp(_) if self.insecure_tcp => Some(Role::Admin),
            Peer::Tcp(_) => self.token(headers).map(|t| t.role),
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

    pub fn audit(&self, record: Value) {
        self.audit.record(record);
    }
}

/// What a request needs: `None` for the health check, else the least role.
fn required(method: &Method, path: &str) -> Option<Role> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["", "healthz"]) => None,
        (&Method::GET, ["", "api", "v1", "plugins"])
        | (&Method::GET, ["", "api", "v1", "tools"])
        | (&Method::GET, ["", "api", "v1", "openapi.json"])
        | (&Method::GET, ["", "api", "v1", "plugins", _])
        | (&Method::POST, ["", "api", "v1", "plugins", _, "execute"])
        | (&Method::GET, ["", "api", "v1", "executions"])
        | (&Method::GET, ["", "api", "v1", "executions", _])
        | (&Method::POST, ["", "api", "v1", "executions", _, "cancel"])
        | (_, ["", "mcp"])
        | (&Method::GET, ["", "mcp", "stream"]) => Some(Role::Executor),
        _ => Some(Role::Admin),
    }
}

/// The middleware: checks the caller's role against the route, audits denials and admin actions.
pub async fn authorize(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.clone());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let need = required(&method, &path);
    let role = peer.as_ref().and_then(|p| gate.role(p, request.headers()));
    let mut who = peer.as_ref().map_or(json!("unknown"), Peer::to_json);
    if matches!(peer, Some(Peer::Tcp(_))) {
        who["token"] = json!(gate.token(request.headers()).map(|t| t.name.clone()));
    }
    if let Some(need) = need
        && role.is_none_or(|r| r < need)
    {
        gate.audit(json!({"event": "denied", "reason": "auth", "who": who, "role": role, "needs": need, "method": method.as_str(), "path": path}));
        // A TCP caller without a valid token is unauthenticated (401), not merely unauthorised.
        let unauthenticated = matches!(peer, Some(Peer::Tcp(_))) && role.is_none();
        let (status, code, message) = if unauthenticated {
            (StatusCode::UNAUTHORIZED, "unauthenticated", "a valid bearer token is required on TCP".to_string())
        } else {
            let has = role.map_or("none".into(), |r| format!("{r:?}"));
            (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {need:?} role; the caller has {has}").to_lowercase(),
            )
        };
        let mut response = (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response();
        if unauthenticated {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return response;
    }
    let response = next.run(request).await;
    let status = response.status();
    if need == Some(Role::Admin) && method != Method::GET {
        gate.audit(json!({"event": "admin_action", "who": who, "method": method.as_str(), "path": path, "status": status.as_u16()}));
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        gate.audit(
            json!({"event": "denied", "reason": "rate_limit", "who": who, "method": method.as_str(), "path": path}),
        );
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
        assert_eq!(required(&Method::GET, "/api/v1/tools"), Some(Role::Executor));
        for method in [Method::POST, Method::GET, Method::DELETE] {
            assert_eq!(required(&method, "/mcp"), Some(Role::Executor), "MCP is the executor's, whatever the method");
        }
        assert_eq!(required(&Method::GET, "/mcp/stream"), Some(Role::Executor));
        assert_eq!(required(&Method::POST, "/mcp/anything"), Some(Role::Admin));
        assert_eq!(required(&Method::PUT, "/api/v1/plugins/calculator/enable"), Some(Role::Admin));
        assert_eq!(required(&Method::POST, "/api/v1/plugins/reload-all"), Some(Role::Admin));
        assert_eq!(required(&Method::GET, "/api/v1/plugins/calculator/backups"), Some(Role::Admin));
        assert_eq!(required(&Method::GET, "/api/v1/system"), Some(Role::Admin));
        assert_eq!(required(&Method::GET, "/nowhere"), Some(Role::Admin), "unknown routes need the most");

        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens,
            "ops = { token = \"admin-token-0123456789abcdef\", scope = \"admin\" }\n\
             ci = { token = \"exec-token-0123456789abcdef\", scope = \"execute\" }\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (admins, executors) = (["4242".to_string()], ["4343".to_string()]);
        let audit = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
        let config = |tokens_file, tcp, insecure_tcp| GateConfig {
            admin_groups: &admins,
            executor_groups: &executors,
            tokens_file,
            credentials_dir: None,
            tcp,
            insecure_tcp,
            audit: audit.clone(),
        };
        let loopback: SocketAddr = "127.0.0.1:8787".parse().unwrap();
        let gate = Gate::new(config(Some(&tokens), Some(loopback), false)).unwrap();
        let none = HeaderMap::new();
        let unix = |uid, gid, groups: Vec<u32>| Peer::Unix { uid, gid, pid: None, groups };
        assert_eq!(gate.role(&unix(0, 0, vec![]), &none), Some(Role::Admin));
        assert_eq!(gate.role(&unix(1000, 1000, vec![4242]), &none), Some(Role::Admin));
        assert_eq!(gate.role(&unix(1000, 4343, vec![]), &none), Some(Role::Executor));
        assert_eq!(gate.role(&unix(1000, 1000, vec![7]), &none), None);

        let bearer = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
            h
        };
        let tcp = Peer::Tcp(loopback);
        assert_eq!(gate.role(&tcp, &none), None);
        assert_eq!(gate.role(&tcp, &bearer("admin-token-0123456789abcdef")), Some(Role::Admin));
        assert_eq!(gate.role(&tcp, &bearer("exec-token-0123456789abcdef")), Some(Role::Executor));
        assert_eq!(gate.role(&tcp, &bearer("exec-token-0123456789abcdeX")), None);

        assert!(matches!(Gate::new(config(None, Some(loopback), false)), Err(AuthError::TcpWithoutTokens)));
        let wide: SocketAddr = "0.0.0.0:8787".parse().unwrap();
        assert!(matches!(Gate::new(config(None, Some(wide), true)), Err(AuthError::TcpWithoutTokens)));
        let insecure = Gate::new(config(None, Some(loopback), true)).unwrap();
        assert_eq!(insecure.role(&tcp, &none), Some(Role::Admin));
        let bad = GateConfig { admin_groups: &["no-such-group-here".to_string()], ..config(None, None, false) };
        assert!(Gate::new(bad).is_err());
    }
}
