//! What the benchmarks share: a release daemon on a directory of their own, and percentiles.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw_cli::client::{Client, Endpoint};

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub struct BenchDaemon {
    child: Child,
    pub client: Client,
}

impl BenchDaemon {
    /// Starts `ironclawd` on `root`'s `plugins/`, `policies/` and `state/`, with a socket and a
    /// config named after `name`, and `runner` as the body of its `[runner]` table.
    pub fn start(root: &Path, name: &str, runner: &str) -> BenchDaemon {
        let socket = root.join(format!("api-{name}.sock"));
        let config = root.join(format!("ironclawd-{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "plugins_dir = {:?}\npolicies_dir = {:?}\nstate_dir = {:?}\n[api]\nsocket = {socket:?}\n[runner]\n{runner}",
                root.join("plugins"),
                root.join("policies"),
                root.join("state"),
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ironclawd"))
            .arg("--config")
            .arg(&config)
            .arg("--log-level")
            .arg("warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        BenchDaemon { child, client: Client::new(Endpoint::Unix(socket)) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.client.get("/healthz").await.is_err() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(self) {
        drop(self);
    }
}

/// A benchmark that panics must not leave its daemon running.
impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
