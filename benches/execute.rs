//! Benchmark: cold execution latency of the calculator through the API (every execution is a
//! fresh sandboxed process, never reused), throughput at concurrency 8, and the daemon's memory;
//! once with pre-started runners (the default) and once with runners started on demand. Also the
//! cost of a result-cache hit (the same calculator, declaring `cache_ttl`).
//!
//! Run with `make bench` (which builds the release calculator first) or `cargo bench --bench
//! execute`. Needs root, like the daemon. Prints a table and one JSON line.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{BenchDaemon, install_calculator, machine, percentile};
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
