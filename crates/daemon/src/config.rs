//! The daemon's configuration: a TOML file (strict), with command-line overrides.
//! Every default is usable as is from a checkout of the repository.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::manifest::{ManifestError, parse_error};
use crate::catalog::units::{ByteSize, Span};

pub const DEFAULT_SOCKET: &str = "/run/ironclaw/ironclaw.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Parse(ManifestError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub plugins_dir: PathBuf,
    pub policies_dir: PathBuf,
    /// Enabled/disabled state and, later, workspaces and backups.
    pub state_dir: PathBuf,
    pub api: ApiConfig,
    pub executions: ExecutionConfig,
    pub runner: RunnerConfig,
    /// A root-only TOML file of plugin secrets (`NAME = "value"`). systemd credentials
    /// (`$CREDENTIALS_DIRECTORY`) are read too, and take precedence.
    pub secrets_file: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub reload: ReloadConfig,
}

/// Hot reload of plugins and policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the plugins and policies directories (inotify) and reload on change.
    pub watch: bool,
    /// Quiet time after the last change before a reload starts.
    pub debounce: Span,
    /// Backups kept per plugin; older ones are pruned.
    pub backups_kept: usize,
    /// A new version that crashes in its first `probation` executions is rolled back.
    pub probation: u32,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig { watch: true, debounce: Span(Duration::from_millis(250)), backups_kept: 5, probation: 3 }
    }
}

/// The egress proxy every network-permitted plugin goes through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Static host entries, resolved without DNS: "host" or "host:port" to "ip" or "ip:port".
    /// An entry with a port on the right replaces the requested port, so tests can send
    /// `api.example.com:80` to a mock server on `127.0.0.1:41234`.
    pub hosts: std::collections::BTreeMap<String, String>,
    pub connect_timeout: Span,
    /// How long a request head may take to arrive.
    pub header_timeout: Span,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            hosts: Default::default(),
            connect_timeout: Span(Duration::from_secs(10)),
            header_timeout: Span(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The unix socket; set to "" to listen on TCP only.
    pub socket: PathBuf,
    /// Octal permission bits of the socket.
    pub socket_mode: String,
    /// Group owning the socket (name or number); its members may connect.
    pub socket_group: Option<String>,
    /// TCP listener, off unless set. Loopback unless configured otherwise.
    pub tcp: Option<SocketAddr>,
    pub max_body: ByteSize,
    /// The largest `parameters` of one execution request (serialized JSON).
    pub max_parameters: ByteSize,
    /// Time for a request's headers to arrive (slow clients are cut off).
    pub header_timeout: Span,
    /// Time for a request's body to arrive.
    pub body_timeout: Span,
    /// Open connections per listener; more get 503 with Retry-After.
    pub max_connections: usize,
    /// Groups (names or numbers) whose members are admins on the unix socket, besides root.
    pub admin_groups: Vec<String>,
    /// Groups whose members may list and execute plugins on the unix socket.
    pub executor_groups: Vec<String>,
    /// The audit log (JSON lines); by default `audit.jsonl` in the state directory.
    pub audit_log: Option<PathBuf>,
    /// Bearer tokens for TCP callers, a root-only TOML file:
    /// `name = { token = "<24+ characters>", scope = "admin" | "execute" }`.
    pub tokens_file: Option<PathBuf>,
    /// Let TCP callers in without a token, as admins: loopback only, and logged as a warning.
    pub insecure_tcp: bool,
    /// Browser origins (`scheme://host:port`, `:*` for any port) allowed to call `/mcp`. None by
    /// default: a request that carries any `Origin` is refused with 403.
    pub mcp_allowed_origins: Vec<String>,
    /// Names clients reach the TCP listener by, beyond loopback and its own address, accepted
    /// in `Host` at `/mcp` (which refuses others against DNS rebinding).
    pub mcp_allowed_hosts: Vec<String>,
    /// Streamable HTTP sessions (clients of MCP 2025-11-25 and before) kept at once; each ends
    /// when its client deletes it or after five idle minutes.
    pub mcp_max_sessions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// Executions running at once; more wait in the queue.
    pub max_concurrent: usize,
    /// Executions waiting for a slot; more get 429.
    pub max_queued: usize,
    /// Grace between SIGTERM and SIGKILL when an execution is stopped.
    pub kill_grace: Span,
    /// How long in-flight executions may finish on shutdown.
    pub shutdown_grace: Span,
    /// Finished executions kept for `GET /api/v1/executions/{id}`.
    pub retain: usize,
    /// How often the fallback monitor samples memory and CPU.
    pub monitor_interval: Span,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// The start of this daemon's 65536 ids: executions run as uid/gid `uid_base + slot`, one id
    /// per concurrent execution; workspace groups lie in the upper half. Unset: the range this
    /// daemon had last, else the first one no other daemon holds (see `id_range`).
    pub uid_base: Option<u32>,
    /// Extra read-only paths for every plugin (e.g. an interpreter outside /usr).
    pub extra_read_paths: Vec<PathBuf>,
    /// Runners kept started and waiting in their namespaces, so an execution skips spawning
    /// one (about 2 ms). 0 starts every runner on demand; at most `executions.max_concurrent`
    /// are kept.
    pub prestarted: usize,
    /// PEM files of certificate authorities plugins trust beside the host's system bundle (a
    /// private CA, a TLS-inspecting gateway's): certificates only, read at start-up.
    pub ca_certificates: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            plugins_dir: PathBuf::from("plugins"),
            policies_dir: PathBuf::from("policies"),
            state_dir: PathBuf::from(".ironclaw-state"),
            api: ApiConfig::default(),
            executions: ExecutionConfig::default(),
            runner: RunnerConfig::default(),
            secrets_file: None,
            proxy: ProxyConfig::default(),
            reload: ReloadConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: "0660".into(),
            socket_group: None,
            tcp: None,
            max_body: ByteSize(2 << 20),
            max_parameters: ByteSize(1 << 20),
            header_timeout: Span(Duration::from_secs(10)),
            body_timeout: Span(Duration::from_secs(30)),
            max_connections: 256,
            admin_groups: Vec::new(),
            executor_groups: Vec::new(),
            audit_log: None,
            tokens_file: None,
            insecure_tcp: false,
            mcp_allowed_origins: Vec::new(),
            mcp_allowed_hosts: Vec::new(),
            mcp_max_sessions: 256,
        }
    }
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            max_concurrent: 16,
            max_queued: 64,
            kill_grace: Span(Duration::from_millis(500)),
            shutdown_grace: Span(Duration::from_secs(10)),
            retain: 1000,
            monitor_interval: Span(Duration::from_millis(10)),
        }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { uid_base: None, extra_read_paths: Vec::new(), prestarted: 2, ca_certificates: Vec::new() }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse(parse_error(path, &text, &e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.executions.max_concurrent == 0 {
            return invalid("executions.max_concurrent must be at least 1".into());
        }
        use crate::id_range::{RANGE_SIZE, WORKSPACE_GIDS};
        if self.runner.uid_base.is_some_and(|base| !(1_000_000..=u32::MAX - 1 - RANGE_SIZE).contains(&base)) {
            return invalid(format!(
                "runner.uid_base must be at least 1000000 and leave room for its {RANGE_SIZE} ids below 2^32 - 1"
            ));
        }
        if self.executions.max_concurrent > WORKSPACE_GIDS as usize {
            return invalid(format!("executions.max_concurrent must be at most {WORKSPACE_GIDS}"));
        }
        if u32::from_str_radix(self.api.socket_mode.trim_start_matches("0o"), 8).is_err() {
            return invalid(format!("api.socket_mode {:?} is not an octal mode", self.api.socket_mode));
        }
        if self.api.socket.as_os_str().is_empty() && self.api.tcp.is_none() {
            return invalid("nothing to listen on: set api.socket or api.tcp".into());
        }
        Ok(())
    }

    /// The start of the daemon's id range, once claimed (see `daemon::run`).
    pub fn uid_base(&self) -> u32 {
        self.runner.uid_base.unwrap_or(crate::id_range::DEFAULT_BASE)
    }

    pub fn socket_mode(&self) -> u32 {
        u32::from_str_radix(self.api.socket_mode.trim_start_matches("0o"), 8).unwrap_or(0o660)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[api]\nsocket = \"/tmp/x.sock\"\nport = 1\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.toml:3:1") && err.contains("unknown field `port`"), "{err}");
        std::fs::write(&path, "[executions]\nmax_concurrent = 0\n").unwrap();
        assert!(Config::load(&path).unwrap_err().to_string().contains("max_concurrent"));
    }
}
