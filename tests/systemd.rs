//! The systemd side, on this host without systemd as PID 1: the notify protocol through a
//! NOTIFY_SOCKET of the test's own, the watchdog and its freeze hook, and socket activation
//! through `systemd-socket-activate`. (The VM suite runs the same against a real systemd.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

/// The notify socket: every datagram the daemon sends, in order.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(dir: &std::path::Path) -> Notifications {
        let socket = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Notifications { socket, seen: Vec::new() }
    }

    /// Waits (at most 10 s) for a datagram containing `line`; returns it.
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(message.clone());
                if message.lines().any(|l| l == line || l.starts_with(line)) {
                    return message;
                }
            }
            assert!(Instant::now() < deadline, "no {line:?} from the daemon; got {:?}", self.seen);
        }
    }

    /// Datagrams received within `period`.
    fn during(&mut self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }
}

#[tokio::test]
async fn notify_protocol_and_watchdog() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let mut notes = Notifications::bind(dir.path());
    let notify_socket = dir.path().join("notify.sock").display().to_string();
    let mut d = Daemon::builder()
        .plugins(&["calculator"])
        .env("NOTIFY_SOCKET", &notify_socket)
        .env("WATCHDOG_USEC", "400000")
        .start()
        .await;
    let ready = notes.wait_for("READY=1");
    assert!(ready.contains("STATUS=1 plugins enabled, 0 not running"), "{ready}");
    assert!(notes.during(Duration::from_millis(600)).iter().any(|m| m.trim() == "WATCHDOG=1"), "pings every 200 ms");

    // The test hook freezes the pings (the VM suite checks that systemd then restarts it).
    if !cfg!(feature = "test-hooks") {
        panic!("this test drives the daemon's test hooks: build with --features ironclaw/test-hooks (make test does)");
    }
    let freeze = d.dir.path().join("state/freeze-watchdog");
    std::fs::write(&freeze, "").unwrap();
    notes.during(Duration::from_millis(300));
    assert!(!notes.during(Duration::from_millis(600)).iter().any(|m| m.trim() == "WATCHDOG=1"), "frozen");
    std::fs::remove_file(&freeze).unwrap();
    notes.wait_for("WATCHDOG=1");

    // SIGHUP: RELOADING=1 (with the monotonic time systemd wants), then READY=1 again.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloading = notes.wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notes.wait_for("READY=1");

    assert!(d.stop().await.success());
    notes.wait_for("STOPPING=1");
}

#[tokio::test]
async fn socket_activation() {
    require_root!();
    let mut d = Daemon::builder().plugins(&["calculator"]).socket_activated().start().await;
    assert!(d.log().contains("listening socket=passed by systemd"), "{}", d.log());
    assert_eq!(d.exec("calculator", json!({"expression": "2+2"})).await["data"]["result"], 4);
    let socket = d.socket.clone();
    assert!(d.stop().await.success());
    assert!(socket.exists(), "a socket systemd passed is systemd's to remove");
}
