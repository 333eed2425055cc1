//! Benchmark: cold execution latency of the calculator through the API (every execution is a
//! fresh sandboxed process, never reused), throughput at concurrency 8, and the daemon's memory;
//! once with pre-started runners (the default) and once with runners started on demand.
//!
//! Run with `make bench` (which builds the release calculator first) or `cargo bench --bench
//! execute`. Needs root, like the daemon. Prints a table and one JSON line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw::client::{Client, Endpoint};
use serde_json::json;

const SEQUENTIAL: usize = 500;
const WARM_UP: usize = 20;
const CONCURRENCY: usize = 8;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(10);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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

fn install_calculator(root: &Path) -> PathBuf {
    let plugins = root.join("plugins");
    let dir = plugins.join("calculator");
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("plugins/calculator/plugin.toml"), dir.join("plugin.toml")).unwrap();
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ironclawd")).parent().unwrap().join("libcalculator.so");
    assert!(built.is_file(), "{} is missing: run `make bench` (it builds the release plugins)", built.display());
    std::fs::copy(built, dir.join("libcalculator.so")).unwrap();
    std::fs::create_dir_all(root.join("policies")).unwrap();
    std::fs::copy(repo.join("policies/default.toml"), root.join("policies/default.toml")).unwrap();
    plugins
}

async fn execute(client: &Client) -> f64 {
    let start = Instant::now();
    let a = client
        .post(
            "/api/v1/plugins/calculator/execute",
            &json!({"parameters": {"expression": "sqrt(16) + sin(pi/2)", "precision": 5}}),
        )
        .await
        .expect("the daemon answers");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(a.body["status"], "success", "{}", a.body);
    ms
}

/// Starts a daemon on `root` with `prestarted` runners kept waiting, measures it, stops it.
fn measure(root: &Path, plugins: &Path, prestarted: usize) -> serde_json::Value {
    let socket = root.join(format!("api-{prestarted}.sock"));
    let config = root.join(format!("ironclawd-{prestarted}.toml"));
    std::fs::write(
        &config,
        format!(
            "plugins_dir = {plugins:?}\npolicies_dir = {:?}\nstate_dir = {:?}\n[api]\nsocket = {socket:?}\n\
             [runner]\nprestarted = {prestarted}\n",
            root.join("policies"),
            root.join("state"),
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_ironclawd"))
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg("warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = Client::new(Endpoint::Unix(socket));
    let report = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get("/healthz").await.is_err() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        json!({
            "prestarted_runners": prestarted,
            "cold_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "samples": latencies.len()},
            "throughput_per_second_at_8": per_second,
            "daemon_rss_kib": {"idle": idle_rss, "peak_under_load": peak_rss},
        })
    });
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.wait();
    report
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list of tests; there are none.
    }
    assert!(nix::unistd::geteuid().is_root(), "the benchmark runs the daemon, which needs root");
    let dir = tempfile::Builder::new().prefix("ironclaw-bench-").tempdir().unwrap();
    let plugins = install_calculator(dir.path());
    println!("machine: {}", machine());
    println!("calculator through the API on a unix socket; every execution is a fresh sandboxed process");
    println!("| runners | cold p50 | cold p99 | exec/s at 8 | daemon RSS idle / peak |");
    println!("|---|---|---|---|---|");
    let mut reports = Vec::new();
    for (prestarted, label) in [(2, "pre-started (default, 2 waiting)"), (0, "started on demand")] {
        let r = measure(dir.path(), &plugins, prestarted);
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.0} | {:.1} / {:.1} MiB |",
            r["cold_latency_ms"]["p50"].as_f64().unwrap(),
            r["cold_latency_ms"]["p99"].as_f64().unwrap(),
            r["throughput_per_second_at_8"].as_f64().unwrap(),
            r["daemon_rss_kib"]["idle"].as_f64().unwrap() / 1024.0,
            r["daemon_rss_kib"]["peak_under_load"].as_f64().unwrap() / 1024.0,
        );
        reports.push(r);
    }
    println!("{}", json!({"machine": machine(), "runs": reports}));
}
