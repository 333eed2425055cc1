//! Benchmark: cold execution latency of the calculator through the API (every execution is a
//! fresh sandboxed process, never reused), throughput at concurrency 8, and the daemon's memory;
//! once with pre-started runners (the default) and once with runners started on demand. Also the
//! cost of a result-cache hit (the same calculator, declaring `cache_ttl`).
//!
//! Run with `make bench` (which builds the release calculator first) or `cargo bench --bench
//! execute`. Needs root, like the daemon. Prints a table and one JSON line.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{BenchDaemon, percentile};
use ironclaw_cli::client::Client;
use serde_json::json;

const SEQUENTIAL: usize = 500;
const WARM_UP: usize = 20;
const CONCURRENCY: usize = 8;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(10);
const CACHE_HITS: usize = 2000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn machine() -> String {
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

fn install_calculator(root: &Path) {
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

async fn execute(client: &Client) -> f64 {
    execute_plugin(client, "calculator").await.0
}

/// Milliseconds through the API, and whether the result came from the cache.
async fn execute_plugin(client: &Client, plugin: &str) -> (f64, bool) {
    let start = Instant::now();
    let a = client
        .post(
            &format!("/api/v1/plugins/{plugin}/execute"),
            &json!({"parameters": {"expression": "sqrt(16) + sin(pi/2)", "precision": 5}}),
        )
        .await
        .expect("the daemon answers");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(a.body["status"], "success", "{}", a.body);
    (ms, a.body["cached"] == true)
}

/// Starts a daemon on `root` with `prestarted` runners kept waiting, measures it, stops it.
fn measure(root: &Path, prestarted: usize) -> serde_json::Value {
    let daemon = BenchDaemon::start(root, &prestarted.to_string(), &format!("prestarted = {prestarted}\n"));
    let pid = daemon.pid();
    let client = daemon.client.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let report = runtime.block_on(async {
        daemon.wait_ready().await;
        let idle_rss = rss_kib(pid);
        for _ in 0..WARM_UP {
            execute(&client).await;
        }
        let mut latencies = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            latencies.push(execute(&client).await);
        }
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());

        let start = Instant::now();
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while start.elapsed() < THROUGHPUT_WINDOW {
                        execute(&client).await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut peak_rss = 0;
        while start.elapsed() < THROUGHPUT_WINDOW {
            peak_rss = peak_rss.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut total = 0;
        for w in workers {
            total += w.await.unwrap();
        }
        let per_second = total as f64 / start.elapsed().as_secs_f64();

        // The same execution with an egress proxy set up (and torn down) for it.
        let mut networked = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            networked.push(execute_plugin(&client, "calculator_net").await.0);
        }
        networked.sort_by(|a, b| a.partial_cmp(b).unwrap());
        // The same execution with its workspace mounted.
        let mut with_workspace = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            with_workspace.push(execute_plugin(&client, "calculator_ws").await.0);
        }
        with_workspace.sort_by(|a, b| a.partial_cmp(b).unwrap());

        // Cache hits: one miss fills the cache, then every call is served by the daemon alone.
        assert!(!execute_plugin(&client, "calculator_cached").await.1);
        let mut hits = Vec::with_capacity(CACHE_HITS);
        for _ in 0..CACHE_HITS {
            let (ms, cached) = execute_plugin(&client, "calculator_cached").await;
            assert!(cached, "a repeated request is a cache hit");
            hits.push(ms);
        }
        hits.sort_by(|a, b| a.partial_cmp(b).unwrap());
        json!({
            "with_egress_proxy_ms": {"p50": percentile(&networked, 0.5), "p99": percentile(&networked, 0.99)},
            "with_workspace_ms": {"p50": percentile(&with_workspace, 0.5), "p99": percentile(&with_workspace, 0.99)},
            "cache_hit_ms": {"p50": percentile(&hits, 0.5), "p99": percentile(&hits, 0.99), "samples": hits.len()},
            "prestarted_runners": prestarted,
            "cold_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "samples": latencies.len()},
            "throughput_per_second_at_8": per_second,
            "daemon_rss_kib": {"idle": idle_rss, "peak_under_load": peak_rss},
        })
    });
    daemon.stop();
    report
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list of tests; there are none.
    }
    assert!(nix::unistd::geteuid().is_root(), "the benchmark runs the daemon, which needs root");
    let dir = tempfile::Builder::new().prefix("ironclaw-bench-").tempdir().unwrap();
    install_calculator(dir.path());
    println!("machine: {}", machine());
    println!("calculator through the API on a unix socket; every execution is a fresh sandboxed process");
    println!(
        "| runners | cold p50 | cold p99 | exec/s at 8 | daemon RSS idle / peak | with egress proxy p50 | with a workspace p50 | cache hit p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut reports = Vec::new();
    for (prestarted, label) in [(2, "pre-started (default, 2 waiting)"), (0, "started on demand")] {
        let r = measure(dir.path(), prestarted);
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.0} | {:.1} / {:.1} MiB | {:.2} ms | {:.2} ms | {:.3} / {:.3} ms |",
            r["cold_latency_ms"]["p50"].as_f64().unwrap(),
            r["cold_latency_ms"]["p99"].as_f64().unwrap(),
            r["throughput_per_second_at_8"].as_f64().unwrap(),
            r["daemon_rss_kib"]["idle"].as_f64().unwrap() / 1024.0,
            r["daemon_rss_kib"]["peak_under_load"].as_f64().unwrap() / 1024.0,
            r["with_egress_proxy_ms"]["p50"].as_f64().unwrap(),
            r["with_workspace_ms"]["p50"].as_f64().unwrap(),
            r["cache_hit_ms"]["p50"].as_f64().unwrap(),
            r["cache_hit_ms"]["p99"].as_f64().unwrap(),
        );
        reports.push(r);
    }
    println!("{}", json!({"machine": machine(), "runs": reports}));
}
