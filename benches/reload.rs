//! Benchmark: hot-reload latency, from a change of a plugin's files to the first execution
//! served by the new version, through the daemon's inotify watcher (debounce included), its
//! snapshot, checks and trial load. p50 and p95 over repeated reloads of the calculator.
//!
//! Run with `make bench` or `cargo bench --bench reload` (release plugins built first). Needs
//! root, like the daemon.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{BenchDaemon, percentile};
use serde_json::json;

const RELOADS: usize = 40;

/// Rewrites the manifest with a new version, the way an editor saves: a new file, renamed over.
fn set_version(dir: &Path, version: &str) {
    let manifest = dir.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let old = text.lines().find(|l| l.starts_with("version = ")).unwrap().to_string();
    std::fs::write(dir.join(".plugin.toml.new"), text.replace(&old, &format!("version = \"{version}\""))).unwrap();
    std::fs::rename(dir.join(".plugin.toml.new"), &manifest).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "the benchmark runs the daemon, which needs root");
    let root = tempfile::Builder::new().prefix("ironclaw-bench-reload-").tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.path().join("plugins/calculator");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo.join("plugins/calculator/plugin.toml"), dir.join("plugin.toml")).unwrap();
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ironclawd")).parent().unwrap().join("libcalculator.so");
    assert!(built.is_file(), "{} is missing: run `make bench`", built.display());
    std::fs::copy(&built, dir.join("libcalculator.so")).unwrap();
    std::fs::create_dir_all(root.path().join("policies")).unwrap();
    std::fs::copy(repo.join("policies/default.toml"), root.path().join("policies/default.toml")).unwrap();
    let daemon = BenchDaemon::start(root.path(), "reload", "");
    let client = daemon.client.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let latencies = runtime.block_on(async {
        daemon.wait_ready().await;
        let mut latencies = Vec::with_capacity(RELOADS);
        for i in 1..=RELOADS {
            let version = format!("1.0.{i}");
            let changed = Instant::now();
            set_version(&dir, &version);
            loop {
                let a = client
                    .post("/api/v1/plugins/calculator/execute", &json!({"parameters": {"expression": "1+1"}}))
                    .await
                    .unwrap();
                assert_eq!(a.body["status"], "success", "{}", a.body);
                if a.body["plugin_version"] == version.as_str() {
                    break;
                }
                assert!(changed.elapsed() < Duration::from_secs(10), "version {version} never served");
            }
            latencies.push(changed.elapsed().as_secs_f64() * 1000.0);
            // Let the next change be a change of its own, not part of this one's debounce.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        latencies
    });
    daemon.stop();
    let mut sorted = latencies.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p95) = (percentile(&sorted, 0.5), percentile(&sorted, 0.95));
    println!("hot reload, file change to the first execution served by the new version (debounce 250 ms included)");
    println!("| reloads | p50 | p95 | max |");
    println!("|---|---|---|---|");
    println!("| {} | {p50:.0} ms | {p95:.0} ms | {:.0} ms |", sorted.len(), sorted[sorted.len() - 1]);
    println!("{}", json!({"reloads": sorted.len(), "p50_ms": p50, "p95_ms": p95, "max_ms": sorted[sorted.len() - 1]}));
}
