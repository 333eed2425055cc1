//! Benchmark: the calculator called as an MCP tool, over each transport, against the same
//! call through the REST API, back to back on one daemon (pre-started runners, the default):
//! - REST: `POST /api/v1/plugins/calculator/execute`, a connection per call;
//! - MCP over stdio: one `ironclaw mcp` process an assistant would start (a 2025-11-25 session),
//!   its calls one after another;
//! - MCP over Streamable HTTP on the socket: one stateless 2026-07-28 `tools/call` POST per
//!   call, a connection per call.
//!
//! Run with `make bench` or `cargo bench --bench mcp` (root). Prints a table and one JSON line.

mod common;

use std::process::Stdio;
use std::time::Instant;

use common::{BenchDaemon, install_calculator, machine, percentile};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CALLS: usize = 500;
const WARM_UP: usize = 20;
const ARGUMENTS: &str = r#"{"expression": "sqrt(16) + sin(pi/2)", "precision": 5}"#;

fn arguments() -> Value {
    serde_json::from_str(ARGUMENTS).unwrap()
}

/// Milliseconds of each of `n` calls, sorted.
async fn timed(n: usize, mut call: impl AsyncFnMut()) -> Vec<f64> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        call().await;
        all.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

async fn rest(daemon: &BenchDaemon) {
    let body = json!({"parameters": arguments()});
    let a = daemon.client.post("/api/v1/plugins/calculator/execute", &body).await.unwrap();
    assert_eq!(a.body["status"], "success", "{}", a.body);
}

async fn streamable_http(daemon: &BenchDaemon) {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "calculator", "arguments": arguments(), "_meta": meta}});
    let headers = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "calculator"),
    ];
    let a = daemon.client.post_with_headers("/mcp", &body, &headers).await.unwrap();
    assert_eq!(a.body["result"]["isError"], false, "{}", a.body);
}

/// `ironclaw mcp`, started as an assistant starts it, after the handshake.
struct StdioSession {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl StdioSession {
    async fn start(daemon: &BenchDaemon) -> StdioSession {
        let ironclaw = std::path::Path::new(env!("CARGO_BIN_EXE_ironclawd")).with_file_name("ironclaw");
        let mut child = tokio::process::Command::new(ironclaw)
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let mut session = StdioSession { child, stdin, lines: BufReader::new(stdout).lines(), next_id: 1 };
        let hello = json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}});
        session.request("initialize", hello).await;
        session.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        session
    }

    async fn send(&mut self, message: &Value) {
        self.stdin.write_all(format!("{message}\n").as_bytes()).await.unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        loop {
            let line = self.lines.next_line().await.unwrap().expect("ironclaw mcp answers");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }

    async fn call(&mut self) {
        let answer = self.request("tools/call", json!({"name": "calculator", "arguments": arguments()})).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "the benchmark runs the daemon, which needs root");
    let dir = tempfile::Builder::new().prefix("ironclaw-bench-mcp-").tempdir().unwrap();
    install_calculator(dir.path());
    let daemon = BenchDaemon::start(dir.path(), "mcp", "prestarted = 2\n");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let report = runtime.block_on(async {
        daemon.wait_ready().await;
        let mut stdio = StdioSession::start(&daemon).await;
        for _ in 0..WARM_UP {
            rest(&daemon).await;
            stdio.call().await;
            streamable_http(&daemon).await;
        }
        let rest = timed(CALLS, async || rest(&daemon).await).await;
        let over_stdio = timed(CALLS, async || stdio.call().await).await;
        let over_http = timed(CALLS, async || streamable_http(&daemon).await).await;
        let _ = stdio.child.kill().await;
        let figures = |all: &[f64]| json!({"p50": percentile(all, 0.5), "p99": percentile(all, 0.99)});
        json!({"rest_ms": figures(&rest), "mcp_stdio_ms": figures(&over_stdio), "mcp_streamable_http_ms": figures(&over_http), "calls": CALLS})
    });
    daemon.stop();
    println!("machine: {}", machine());
    println!("the calculator, {CALLS} calls each, one after another; every call is a fresh sandboxed process");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    for (label, key) in [
        ("REST (POST .../execute)", "rest_ms"),
        ("MCP over stdio (ironclaw mcp)", "mcp_stdio_ms"),
        ("MCP over Streamable HTTP (/mcp on the socket)", "mcp_streamable_http_ms"),
    ] {
        let f = &report[key];
        println!("| {label} | {:.2} ms | {:.2} ms |", f["p50"].as_f64().unwrap(), f["p99"].as_f64().unwrap());
    }
    println!("{}", json!({"machine": machine(), "mcp": report}));
}
