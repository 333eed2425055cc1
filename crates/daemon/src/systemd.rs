//! The systemd side of the daemon: the notify protocol (READY, STATUS, RELOADING, STOPPING,
//! the watchdog) and socket activation. Everything here is a no-op outside systemd.
#![forbid(unsafe_code)]

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;

/// While this file exists in the state directory, the watchdog is not pinged: a test hook that
/// lets the VM suite check that systemd restarts a daemon that stops answering.
#[cfg(feature = "test-hooks")]
pub const FREEZE_WATCHDOG_FILE: &str = "freeze-watchdog";

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "failed to notify systemd");
    }
}

/// Plugins and policies are loaded, the API listens.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload has begun; `ready` ends it. systemd needs the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now, NotifyState::Status("reloading")]),
        Err(_) => notify(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping: finishing in-flight executions")]);
}

/// Pings the watchdog at half its period, for as long as the daemon's runtime runs (a wedged
/// runtime stops the pings, and systemd restarts the daemon).
pub fn spawn_watchdog(state_dir: &Path) {
    let Some(period) = sd_notify::watchdog_enabled() else { return };
    #[cfg(feature = "test-hooks")]
    let freeze = state_dir.join(FREEZE_WATCHDOG_FILE);
    #[cfg(not(feature = "test-hooks"))]
    let _ = state_dir;
    tracing::info!(?period, "pinging the systemd watchdog");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            #[cfg(feature = "test-hooks")]
            if freeze.exists() {
                tracing::warn!(file = %freeze.display(), "watchdog pings frozen by the test hook");
                continue;
            }
            notify(&[NotifyState::Watchdog]);
        }
    });
}

/// The API socket systemd passed (`ironclawd.socket`), if any.
pub fn activated_socket() -> std::io::Result<Option<UnixListener>> {
    let mut fds = sd_notify::listen_fds()?;
    match fds.len() {
        0 => Ok(None),
        1 => Ok(fds.next().map(crate::sys::take_listener)),
        n => Err(std::io::Error::other(format!("systemd passed {n} sockets; ironclawd takes one"))),
    }
}
