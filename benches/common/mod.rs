//! What the benchmarks share: a release daemon on a directory of their own, and percentiles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw_cli::client::{Client, Endpoint};

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} x {cpu}, Linux {}", std::thread::available_parallelism().map_or(0, |n| n.get()), kernel.trim())
}

/// The calculator, and its variants: results cached; a network grant, so every execution also
/// gets an egress proxy; a workspace, mounted into each sandbox.
pub fn install_calculator(root: &Path) {
    let plugins = root.join("plugins");
    let dir = plugins.join("calculator");
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("plugins/calculator/plugin.toml"), dir.join("plugin.toml")).unwrap();
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ironclawd")).parent().unwrap().join("libcalculator.so");
    assert!(built.is_file(), "{} is missing: run `make bench` (it builds the release plugins)", built.display());
    std::fs::copy(&built, dir.join("libcalculator.so")).unwrap();
    // The same plugin, with its results cached; with a network grant, so every execution also
    // gets an egress proxy in its namespace; and with a workspace, mounted into each sandbox.
    let variant = |name: &str, edit: &dyn Fn(String) -> String| {
        let dir = plugins.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = std::fs::read_to_string(repo.join("plugins/calculator/plugin.toml")).unwrap();
        let manifest = edit(manifest.replace("name = \"calculator\"", &format!("name = \"{name}\"")));
        std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
        std::fs::copy(&built, dir.join("libcalculator.so")).unwrap();
    };
    variant("calculator_cached", &|m| m.replace("[limits]", "[limits]\ncache_ttl = \"1h\""));
    variant("calculator_net", &|m| {
        m.replace("[parameters]", "[permissions]\nnetwork = [\"api.example.test\"]\n\n[parameters]")
    });
    variant("calculator_ws", &|m| m.replace("[parameters]", "[permissions]\nworkspace = true\n\n[parameters]"));
    std::fs::create_dir_all(root.join("policies")).unwrap();
    std::fs::copy(repo.join("policies/default.toml"), root.join("policies/default.toml")).unwrap();
    let grants = "[plugins.calculator_net]\nnetwork = [\"api.example.test\"]\n\n[plugins.calculator_ws]\nworkspace = \"16MiB\"\n";
    std::fs::write(root.join("policies/bench.toml"), grants).unwrap();
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub struct BenchDaemon {
    child: Child,
    pub client: Client,
    pub socket: PathBuf,
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
        BenchDaemon { child, client: Client::new(Endpoint::Unix(socket.clone())), socket }
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
