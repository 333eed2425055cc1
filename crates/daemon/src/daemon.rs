//! `ironclawd`: start-up, listeners and graceful shutdown.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::catalog::policy::PolicySet;
use crate::catalog::registry::Registry;
use crate::catalog::secrets::Secrets;
use crate::config::Config;
use crate::supervisor::reload::ReloadCause;
use crate::supervisor::{self, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("failed to give the daemon its own mount namespace (workspaces are mounted there)")]
    MountNamespace(#[source] std::io::Error),
    #[error("failed to create the state directory {0}")]
    StateDir(PathBuf, #[source] std::io::Error),
    #[error("failed to load the policies")]
    Policy(#[from] crate::catalog::policy::PolicyError),
    #[error("invalid proxy configuration")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("failed to load the secrets")]
    Secrets(#[from] crate::catalog::secrets::SecretsError),
    #[error("failed to discover plugins")]
    Registry(#[from] crate::catalog::registry::RegistryError),
    #[error("failed to claim the ids executions run under")]
    Ids(#[from] crate::id_range::IdRangeError),
    #[error("failed to prepare the resource backend")]
    Resources(#[from] supervisor::resources::ResourceError),
    #[error("another daemon is already listening on {0}")]
    SocketInUse(PathBuf),
    #[error("failed to bind {0}")]
    Bind(String, #[source] std::io::Error),
    #[error("unknown group {0:?} for the socket")]
    Group(String),
    #[error("failed to set the owner or mode of {0}")]
    SocketPermissions(PathBuf, #[source] std::io::Error),
    #[error("failed to set up the plugins' TLS trust")]
    Trust(#[from] crate::trust::TrustError),
    #[error("failed to set up API authorisation")]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("failed to take the socket systemd passed")]
    Activation(#[source] std::io::Error),
    #[error("failed to handle signals")]
    Signal(#[source] std::io::Error),
    #[error("failed to serve the API")]
    Serve(#[source] std::io::Error),
}

/// Gives the daemon a mount namespace of its own, before any thread starts (a namespace is a
/// thread's until then): the workspace images it mounts stay out of the host's mount table,
/// and go away with the daemon, however it ends. The host's later mounts still reach it.
pub fn private_mounts() -> Result<(), DaemonError> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| DaemonError::MountNamespace(e.into()))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .map_err(|e| DaemonError::MountNamespace(e.into()))
}

/// Loads everything, binds the listeners and serves until SIGTERM or SIGINT.
pub async fn run(mut config: Config) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| DaemonError::StateDir(config.state_dir.clone(), e))?;
    // Held until the daemon exits: no other daemon runs executions under these ids meanwhile.
    let holder = format!(
        "ironclawd pid {} (state {}, socket {})",
        std::process::id(),
        config.state_dir.display(),
        config.api.socket.display()
    );
    let ids = crate::id_range::claim(config.runner.uid_base, &config.state_dir, &holder)?;
    tracing::info!(uid_base = ids.base, workspace_gids = ids.workspace_gids(), "claimed the id range");
    config.runner.uid_base = Some(ids.base);
    let (host, resources) = supervisor::resources::probe_host();
    let removed = resources.prepare()?;
    if removed > 0 {
        tracing::warn!(removed, "removed execution cgroups left by a previous daemon");
    }
    let policy = PolicySet::load(&config.policies_dir)?;
    let audit_log = config.api.audit_log.clone().unwrap_or_else(|| config.state_dir.join("audit.jsonl"));
    let audit = crate::audit::AuditLog::open(&audit_log)?;
    let proxy = crate::proxy::EgressProxy::new(&config.proxy, audit.clone())?;
    let credentials = crate::catalog::secrets::credentials_dir();
    let secrets = Secrets::load(config.secrets_file.as_deref(), credentials.as_deref())?;
    let registry = Registry::open(&config.state_dir)?;
    let snapshots = config.state_dir.join(crate::supervisor::reload::SNAPSHOTS_DIR);
    crate::catalog::snapshot::clear(&snapshots).map_err(|e| DaemonError::StateDir(snapshots.clone(), e))?;
    tracing::info!(
        kernel = %host.kernel,
        landlock_abi = ?host.landlock_abi,
        seccomp = host.seccomp,
        namespaces = ?host.namespaces,
        resources = ?host.resource_backend(),
        cgroup_reason = host.cgroup_v2.reason.as_deref(),
        "host capabilities"
    );
    if let Some(reason) = &host.workspace_images_unavailable {
        tracing::error!(%reason, "workspaces cannot be size-capped filesystems: executions with a workspace will fail");
    }
    if !host.missing_capabilities.is_empty() {
        tracing::error!(
            missing = ?host.missing_capabilities,
            "the daemon lacks capabilities it needs: executions will fail at sandbox set-up"
        );
    }
    match host.check(&policy.requirements) {
        Ok(()) => {
            tracing::info!(require = ?policy.requirements.layers, "policy requirements are met")
        }
        Err(reason) => {
            tracing::error!(%reason, "policy requirements are NOT met: every execution will be refused")
        }
    }
    let loaded = crate::catalog::Loaded { policy, secrets, registry };
    let trust = crate::trust::Trust::compose(&config.runner.ca_certificates, &config.state_dir)?;
    if let Some(bundle) = &trust.bundle {
        tracing::info!(bundle = %bundle.display(), extra = ?config.runner.ca_certificates, "plugins trust extra certificate authorities");
    }
    let supervisor = Supervisor::new(config.clone(), host, resources, loaded, proxy, audit.clone(), trust);
    // Every plugin goes through the same path as a reload: snapshot, checks, trial load.
    supervisor.reloader().reload_all(ReloadCause::Startup).await;
    let (plugins, enabled) = supervisor.catalog().plugin_counts();
    tracing::info!(plugins, enabled, "plugins loaded");
    if config.reload.watch {
        let (watched, debounce) = (supervisor.clone(), config.reload.debounce.0);
        tokio::spawn(async move {
            if let Err(e) = crate::watcher::run(watched, debounce).await {
                tracing::error!(error = %ironclaw_protocol::error_chain(&e), "not watching for changes: reload with SIGHUP or the API");
            }
        });
    }
    // SIGHUP (`systemctl reload`) reloads everything.
    let reloader = supervisor.clone();
    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(DaemonError::Signal)?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloader.reloader().reload_all(ReloadCause::Sighup).await;
        }
    });
    let gate = crate::auth::Gate::new(crate::auth::GateConfig {
        admin_groups: &config.api.admin_groups,
        executor_groups: &config.api.executor_groups,
        tokens_file: config.api.tokens_file.as_deref(),
        credentials_dir: credentials.as_deref(),
        tcp: config.api.tcp,
        insecure_tcp: config.api.insecure_tcp,
        audit,
    })?;
    let mcp_sessions = tokio_util::sync::CancellationToken::new();
    let router = crate::api::router(crate::service::Service::new(supervisor.clone()), gate, mcp_sessions.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    let limits = crate::server::ConnectionLimits {
        header_timeout: config.api.header_timeout.0,
        max_connections: config.api.max_connections,
    };
    // A socket passed by systemd (ironclawd.socket) is systemd's to keep and remove; one of our
    // own is bound here and removed on exit.
    let (unix, socket) = match crate::systemd::activated_socket().map_err(DaemonError::Activation)? {
        Some(listener) => {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(listener))
                .map_err(DaemonError::Activation)?;
            (Some((listener, "passed by systemd".to_string())), None)
        }
        None if !config.api.socket.as_os_str().is_empty() => {
            let path = config.api.socket.clone();
            (Some((bind_unix(&path, &config)?, path.display().to_string())), Some(path))
        }
        None => (None, None),
    };
    if let Some((listener, from)) = unix {
        tracing::info!(socket = %from, "listening");
        let app = router.clone();
        let shutdown = stopped();
        servers.spawn(crate::server::serve(listener, app, limits, shutdown));
    }
    if let Some(addr) = config.api.tcp {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the TCP API listens beyond loopback");
        }
        let listener = TcpListener::bind(addr).await.map_err(|e| DaemonError::Bind(addr.to_string(), e))?;
        let bound = listener.local_addr().map_err(|e| DaemonError::Bind(addr.to_string(), e))?;
        tracing::info!(addr = %bound, "listening");
        let app = router.clone();
        let shutdown = stopped();
        servers.spawn(crate::server::serve(listener, app, limits, shutdown));
    }

    crate::systemd::ready(&supervisor.reloader().status_line());
    crate::systemd::spawn_watchdog(&config.state_dir);

    wait_for_signal().await;
    crate::systemd::stopping();
    tracing::info!("shutting down: no new executions, waiting for in-flight ones");
    let _ = stop_tx.send(true);
    mcp_sessions.cancel();
    supervisor.shutdown(config.executions.shutdown_grace.0).await;
    while servers.join_next().await.is_some() {}
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Binds the unix socket: refuses to steal a live daemon's socket, removes a stale one, and
/// sets the configured mode and group.
fn bind_unix(path: &Path, config: &Config) -> Result<UnixListener, DaemonError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DaemonError::Bind(path.display().to_string(), e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| DaemonError::Bind(path.display().to_string(), e))?;
    if let Some(group) = &config.api.socket_group {
        let gid = match group.parse::<u32>() {
            Ok(gid) => nix::unistd::Gid::from_raw(gid),
            Err(_) => {
                nix::unistd::Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(|| DaemonError::Group(group.clone()))?
                    .gid
            }
        };
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| DaemonError::SocketPermissions(path.to_path_buf(), e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode()))
        .map_err(|e| DaemonError::SocketPermissions(path.to_path_buf(), e))?;
    Ok(listener)
}

/// Sets up tracing: `RUST_LOG`-style filter, text or JSON lines on stderr.
pub fn init_tracing(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRONCLAW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
