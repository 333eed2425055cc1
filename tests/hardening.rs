//! Hardened input handling through the real daemon: JSON depth and parameter size limits,
//! identifiers that never reach a path, slow clients cut off (headers and bodies), a cap on
//! open connections, and per-plugin concurrency with a bounded queue. After each abuse the
//! daemon still serves.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn still_serves(d: &Daemon) {
    let r = d.exec("calculator", json!({"expression": "6*7"})).await;
    assert_eq!(r["data"]["result"], json!(42), "{r}");
}

/// Reads until the daemon closes the connection (or `limit` passes); returns what was read and
/// how long it took.
async fn read_until_closed(stream: &mut UnixStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                panic!("the connection was still open after {limit:?}; read: {:?}", String::from_utf8_lossy(&answer))
            }
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), start.elapsed())
}

#[tokio::test]
async fn deep_or_large_requests_are_refused_before_any_work() {
    require_root!();
    let d = Daemon::with_plugins(&["calculator"]).await;
    let c = d.client();
    let exec = "/api/v1/plugins/calculator/execute";

    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let body = format!(r#"{{"parameters": {{"expression": "1", "x": {deep}}}}}"#).into_bytes();
    let a = c.send(hyper::Method::POST, exec, Some(body)).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (400, "json_too_deep"), "{}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("64 levels"), "{}", a.body);

    // Brackets inside a string are text, not nesting.
    let a = c.post(exec, &json!({"parameters": {"expression": "[".repeat(200)}})).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "invalid_input", "the calculator itself refuses it: {}", a.body);

    // Parameters over 1 MiB, in a body under the 2 MiB body limit.
    let a = c.post(exec, &json!({"parameters": {"expression": "1".repeat(1100 << 10)}})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (413, "parameters_too_large"), "{}", a.body);

    // Only JSON is parsed as JSON.
    let mut raw = UnixStream::connect(&d.socket).await.unwrap();
    let body = r#"{"parameters": {"expression": "1"}}"#;
    let head = format!(
        "POST {exec} HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    raw.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut raw, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert!(answer.contains("unsupported_media_type"), "{answer}");
    still_serves(&d).await;
}

#[tokio::test]
async fn identifiers_never_reach_a_path() {
    require_root!();
    let d = Daemon::with_plugins(&["calculator"]).await;
    let c = d.client();
    let long = "a".repeat(300);
    for name in ["..", "..%2F..%2Fetc", "%2E%2E", "Calculator", "calc%00ulator", long.as_str(), "a%20b"] {
        let a = c.get(&format!("/api/v1/plugins/{name}")).await.unwrap();
        assert_eq!((a.status.as_u16(), error_code(&a.body)), (404, "plugin_not_found"), "{name}: {}", a.body);
        let a = c.post(&format!("/api/v1/plugins/{name}/reload"), &json!({})).await.unwrap();
        assert_eq!(a.status, 404, "{name}: {}", a.body);
    }
    // A segment that is not UTF-8 is refused in the same JSON format.
    let a = c.get("/api/v1/plugins/%FF%FE").await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (400, "invalid_request"), "{}", a.body);
    for backup in ["../../../etc", "/etc/passwd", "1.0.0-..", ""] {
        let a = c.post("/api/v1/plugins/calculator/rollback", &json!({"backup": backup})).await.unwrap();
        assert_eq!((a.status.as_u16(), error_code(&a.body)), (404, "backup_not_found"), "{backup:?}: {}", a.body);
    }
    for id in ["..%2F..%2Fetc%2Fpasswd", "0123456789abcdef0123456789abcdeg", "00000000000000000000000000000000"] {
        let a = c.get(&format!("/api/v1/executions/{id}")).await.unwrap();
        assert_eq!((a.status.as_u16(), error_code(&a.body)), (404, "execution_not_found"), "{id}: {}", a.body);
    }
    let state = std::fs::read_dir(d.dir.path().join("state")).unwrap().count();
    assert!(state > 0);
    assert!(!d.dir.path().join("etc").exists() && !d.dir.path().join("state/etc").exists());
    still_serves(&d).await;
}

async fn slow_daemon() -> Daemon {
    Daemon::builder()
        .plugins(&["calculator"])
        .api("header_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_connections = 4\n")
        .start()
        .await
}

#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off() {
    require_root!();
    let d = slow_daemon().await;

    // Slowloris: a header line, then one byte at a time, never finishing the head.
    let mut slow = UnixStream::connect(&d.socket).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(3)).await;
    assert!(!answer.contains("200 OK"), "a head that never ends is not served: {answer}");

    // A silent connection is closed too.
    let mut silent = UnixStream::connect(&d.socket).await.unwrap();
    let (_, waited) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(900), "closed after the header timeout, not before: {waited:?}");

    // A body that stops halfway.
    let mut stalled = UnixStream::connect(&d.socket).await.unwrap();
    stalled
        .write_all(
            b"POST /api/v1/plugins/calculator/execute HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"parameters\": ",
        )
        .await
        .unwrap();
    let (answer, waited) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    let status = answer.split_whitespace().nth(1).unwrap_or_default();
    assert!(status == "400" || status == "408", "a stalled body gets an error answer: {answer}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    still_serves(&d).await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_others_are_served_again() {
    require_root!();
    let d =
        Daemon::builder().plugins(&["calculator"]).api("header_timeout = \"30s\"\nmax_connections = 4\n").start().await;
    // Six connections at once, each asking for /healthz and keeping its connection: at most
    // four are served (and stay open), the others get 503 with Retry-After and are closed.
    let mut connections = Vec::new();
    for _ in 0..6 {
        let mut c = UnixStream::connect(&d.socket).await.unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
        connections.push(c);
    }
    let (mut served, mut refused) = (0, 0);
    for c in &mut connections {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await.map_or(0, |r| r.unwrap_or(0));
        let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        if answer.starts_with("http/1.1 200") {
            served += 1;
        } else {
            assert!(answer.starts_with("http/1.1 503"), "{answer}");
            assert!(answer.contains("retry-after: 1") && answer.contains("too_many_connections"), "{answer}");
            refused += 1;
        }
    }
    assert!(served <= 4 && refused >= 2, "served {served}, refused {refused}");
    let idle = connections;
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serves(&d).await;
}

#[tokio::test]
async fn one_busy_plugin_cannot_take_every_slot() {
    require_root!();
    let policy = format!("{}[plugins.misbehave_exec]\ncaps = {{ concurrency = 1 }}\n", common::DEFAULT_POLICY);
    let d = Daemon::builder()
        .plugins(&["misbehave_exec", "calculator"])
        .policy(&policy)
        .max_concurrent(4)
        .max_queued(1)
        .start()
        .await;
    let info = d.get("/api/v1/plugins/misbehave_exec").await.body;
    assert_eq!(info["effective_limits"]["concurrency"], 1, "{info}");
    assert!(info["limit_sources"]["concurrency"].as_str().unwrap().contains("caps.concurrency"), "{info}");

    let sleep = json!({"parameters": {"attack": "sleep", "seconds": 2}, "wait": false});
    let c = d.client();
    let first = c.post("/api/v1/plugins/misbehave_exec/execute", &sleep).await.unwrap();
    assert_eq!(first.status, 202, "{}", first.body);
    // The second waits in the queue (its one place) for the plugin's only slot...
    let queued = {
        let c = d.client();
        let sleep = sleep.clone();
        tokio::spawn(async move { c.post("/api/v1/plugins/misbehave_exec/execute", &sleep).await.unwrap() })
    };
    d.wait_executions(1, 1).await;
    // ... the third finds the queue full ...
    let third = c.post("/api/v1/plugins/misbehave_exec/execute", &sleep).await.unwrap();
    assert_eq!((third.status.as_u16(), error_code(&third.body)), (429, "overloaded"), "{}", third.body);
    assert_eq!(third.header("retry-after"), Some("1"));
    // ... while other plugins still get the free global slots at once: the calculator is
    // served while the busy plugin's execution still holds its slot and the other still waits.
    still_serves(&d).await;
    let busy = d.get(&format!("/api/v1/executions/{}", first.body["id"].as_str().unwrap())).await.body;
    assert_eq!(busy["status"], "running", "the calculator waited for the busy plugin: {busy}");
    assert!(!queued.is_finished(), "the calculator waited for the queued execution");
    let queued = queued.await.unwrap();
    assert_eq!(queued.status, 202, "the queued execution ran once the slot was free: {}", queued.body);
}
