//! Network egress: a plugin granted hosts reaches them through the daemon's proxy only, and
//! nothing else. The upstream is a mock server on 127.0.0.2 that the proxy reaches through a
//! static host entry and an explicit `private_addresses` grant; every other target is refused.
//! Traffic goes only to loopback or to a test host in a network namespace the test creates.

mod common;

use std::time::Duration;

use common::{Daemon, MockResponse, MockServer};
use serde_json::{Value, json};

const PLUGIN: &str = "granted_native";

fn policy() -> String {
    format!(
        r#"{}
[plugins.granted_native]
reason = "egress tests"
network = ["allowed.test", "allowed.test:8080", "*.wild.test", "loopback.test", "metadata.test", "blocked.test"]
private_addresses = [{{ value = "127.0.0.2", reason = "the mock upstream" }}]
workspace = "1MiB"
secrets = ["FIXTURE_TOKEN"]

[plugins.granted_native.deny]
network = [{{ value = "evil.wild.test", reason = "known bad" }}]

[plugins.misbehave_native]
"#,
        common::DEFAULT_POLICY
    )
}

struct Egress {
    daemon: Daemon,
    upstream: MockServer,
}

async fn start() -> Egress {
    start_with(Daemon::builder()).await
}

async fn start_with(builder: common::DaemonBuilder) -> Egress {
    let upstream = MockServer::start("127.0.0.2", |r| MockResponse::json(200, json!({"path": r.target})));
    let target = upstream.target();
    let daemon = builder
        .plugins(&[PLUGIN, "misbehave_native"])
        .policy(&policy())
        .secrets("FIXTURE_TOKEN = \"fixture-token-value\"\n")
        .proxy_host("allowed.test", &target)
        .proxy_host("ok.wild.test", &target)
        .proxy_host("evil.wild.test", &target)
        .proxy_host("loopback.test", "127.0.0.1")
        .proxy_host("metadata.test", "169.254.169.254")
        .proxy_host("other.test", &target)
        .tcp()
        .start()
        .await;
    Egress { daemon, upstream }
}

/// Sends a raw request to the proxy from inside the sandbox; returns (execution id, response).
async fn through_proxy(d: &Daemon, request: &str) -> (String, String) {
    let r = d.exec(PLUGIN, json!({"attack": "proxy_request", "request": request})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["proxy"], "http://127.0.0.1:3128", "{r}");
    (r["id"].as_str().unwrap().to_string(), r["data"]["response"].as_str().unwrap_or_default().to_string())
}

fn get(url: &str) -> String {
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn an_allowed_host_is_reached_through_the_proxy() {
    require_root!();
    let e = start().await;
    let (_, response) = through_proxy(&e.daemon, &get("http://allowed.test/v1/hello?x=1")).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""path":"/v1/hello?x=1""#), "the origin got the origin-form target: {response}");
    let connect = "CONNECT allowed.test:8080 HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n\
                   GET /tunnelled HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n";
    let (_, response) = through_proxy(&e.daemon, connect).await;
    assert!(response.starts_with("HTTP/1.1 200 Connection established"), "{response}");
    assert!(response.contains(r#""path":"/tunnelled""#), "{response}");
    let (_, response) = through_proxy(&e.daemon, &get("http://ok.wild.test/w")).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 200"), "a wildcard grant: {response}");
    let seen: Vec<String> = e.upstream.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(seen, ["/v1/hello?x=1", "/tunnelled", "/w"]);
    assert!(e.upstream.requests()[0].header("proxy-connection").is_none());
}

/// RFC 9112: a proxy sets `Host` from the target. A client's `Host` naming another site must
/// not reach it (where two share an address, the Host header would pick the site).
#[tokio::test]
async fn the_upstream_sees_the_targets_host_whatever_the_client_sent() {
    require_root!();
    let e = start().await;
    let request = "GET http://allowed.test/x HTTP/1.1\r\nHost: other.example\r\nConnection: keep-alive, X-Hop\r\n\
                   X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n";
    let (_, response) = through_proxy(&e.daemon, request).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 200"), "{response}");
    let requests = e.upstream.requests();
    let seen = &requests[0];
    assert_eq!(seen.header("host"), Some("allowed.test"), "{:?}", seen.headers);
    for hop in ["x-hop", "keep-alive", "proxy-authorization"] {
        assert!(seen.header(hop).is_none(), "{hop} is hop-by-hop: {:?}", seen.headers);
    }
    assert_eq!(seen.header("accept"), Some("*/*"), "end-to-end headers pass: {:?}", seen.headers);
    let (_, response) = through_proxy(&e.daemon, "GET http://allowed.test:8080/y HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(status_line(&response).starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(e.upstream.requests()[1].header("host"), Some("allowed.test:8080"));
}

/// A flood of refusals is logged and audited at a bounded rate, and every refusal is counted.
#[tokio::test]
async fn a_flood_of_refusals_is_recorded_at_a_bounded_rate_and_counted() {
    require_root!();
    let e = start().await;
    let d = &e.daemon;
    const FLOOD: u64 = 300;
    let r =
        d.exec(PLUGIN, json!({"attack": "proxy_request", "request": get("http://other.test/"), "repeat": FLOOD})).await;
    assert_eq!(r["status"], "success", "{r}");
    let repeated = r["data"]["repeated"].as_array().unwrap();
    assert_eq!(repeated.len() as u64, FLOOD - 1);
    assert!(repeated.iter().all(|s| s.as_str().unwrap().starts_with("HTTP/1.1 403")), "{r}");
    let id = r["id"].as_str().unwrap();
    let of_this =
        || -> Vec<Value> { d.audit().into_iter().filter(|a| a["execution"] == id && a["reason"] == "proxy").collect() };
    // The summary is written as the execution's proxy winds down, just after the result.
    common::wait_until("the suppressed refusals are summed up", async || {
        of_this().iter().any(|a| a.get("suppressed").is_some())
    })
    .await;
    let records = of_this();
    let one_by_one = records.iter().filter(|a| a.get("suppressed").is_none()).count() as u64;
    let summary = records.iter().find(|a| a.get("suppressed").is_some()).expect("a summary of the suppressed refusals");
    assert!(one_by_one < 60, "{one_by_one} refusals audited one by one");
    assert_eq!(summary["total"], FLOOD, "{summary}");
    assert_eq!(summary["suppressed"].as_u64().unwrap() + one_by_one, FLOOD, "{summary}");
    let logged = d.log().lines().filter(|l| l.contains("egress refused") && l.contains(id)).count() as u64;
    assert_eq!(logged, one_by_one, "the log and the audit agree");
}

#[tokio::test]
async fn disallowed_targets_get_403_and_a_log_line() {
    require_root!();
    let e = start().await;
    let d = &e.daemon;
    let cases = [
        (get("http://other.test/"), "not in the plugin's network allowlist"),
        ("CONNECT allowed.test:22 HTTP/1.1\r\n\r\n".to_string(), "not in the plugin's network allowlist"),
        (get("http://evil.wild.test/"), "denied by policy (evil.wild.test)"),
        (get("http://loopback.test/"), "resolves to a restricted address: 127.0.0.1 (loopback)"),
        (get("http://metadata.test/"), "resolves to a restricted address: 169.254.169.254 (cloud metadata)"),
        (get("http://127.0.0.1:8080/"), "not in the plugin's network allowlist"),
        ("GET /relative HTTP/1.1\r\n\r\n".to_string(), "use an absolute http:// URI"),
    ];
    for (request, reason) in &cases {
        let (id, response) = through_proxy(d, request).await;
        let expected = if reason.contains("absolute") { "HTTP/1.1 400" } else { "HTTP/1.1 403" };
        assert!(status_line(&response).starts_with(expected), "{request:?}: {response}");
        assert!(response.contains(reason), "{request:?}: {response}");
        if expected.ends_with("403") {
            let logged = d.log().lines().any(|l| {
                l.contains("egress refused")
                    && l.contains(&format!("execution={id}"))
                    && l.contains("plugin=granted_native")
            });
            assert!(logged, "{request:?}: no log line naming the plugin and execution {id}:\n{}", d.log());
            let audit = d.audit();
            let audited = audit.iter().any(|r| {
                r["event"] == "denied"
                    && r["reason"] == "proxy"
                    && r["execution"] == id.as_str()
                    && r["plugin"] == PLUGIN
            });
            assert!(audited, "{request:?}: no audit record for execution {id}:\n{audit:?}");
        }
    }
    assert!(e.upstream.requests().is_empty(), "a refused request reached the upstream");
}

#[tokio::test]
async fn nothing_leaves_but_through_the_proxy() {
    require_root!();
    let e = start().await;
    let d = &e.daemon;
    // Host loopback listeners, including the daemon's own TCP API: inside the sandbox,
    // 127.0.0.1 is the sandbox's loopback, and Landlock allows a TCP connect to port 3128 only.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let api = d.tcp_url().trim_start_matches("http://").to_string();
    for addr in [listener.local_addr().unwrap().to_string(), api.clone(), e.upstream.target()] {
        let seen = d.exec(PLUGIN, json!({"attack": "tcp_connect", "addr": addr})).await;
        assert_eq!(seen["data"]["errno_name"], "EACCES", "{addr}: {seen}");
    }
    assert!(listener.accept().is_err(), "a sandbox reached a host loopback listener");
    // Through the proxy, the daemon's API is neither allowed nor reachable.
    let (_, response) = through_proxy(d, &get(&format!("http://{api}/api/v1/system"))).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 403"), "{response}");

    // UDP and DNS to a resolver the test runs on the host: no route out of the namespace.
    let resolver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let to = resolver.local_addr().unwrap().to_string();
    let seen = d.exec(PLUGIN, json!({"attack": "udp_exchange", "addr": to})).await;
    assert_eq!(seen["data"]["reply"]["errno_name"], "EAGAIN", "no DNS answer: {seen}");
    assert!(resolver.recv_from(&mut [0u8; 64]).is_err(), "the host resolver received a query");

    // A test host on another network, in a namespace of the test's own.
    let host = common::TestHost::create();
    let (udp, tcp) = host.inside(|| {
        let udp = std::net::UdpSocket::bind((host.addr, 53)).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let tcp = std::net::TcpListener::bind((host.addr, 0)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        (udp, tcp)
    });
    let dns = udp.local_addr().unwrap().to_string();
    let seen = d.exec(PLUGIN, json!({"attack": "udp_exchange", "addr": dns})).await;
    assert_eq!(seen["data"]["send"]["errno_name"], "ENETUNREACH", "{seen}");
    let seen = d.exec(PLUGIN, json!({"attack": "tcp_connect", "addr": tcp.local_addr().unwrap().to_string()})).await;
    assert_eq!(seen["data"]["errno_name"], "EACCES", "{seen}");
    assert!(udp.recv_from(&mut [0u8; 64]).is_err() && tcp.accept().is_err(), "the test host was reached");
}

#[tokio::test]
async fn unix_sockets_on_the_host_are_unreachable() {
    require_root!();
    let e = start().await;
    let d = &e.daemon;
    // A socket anyone may connect to, in a directory anyone may traverse.
    let dir = tempfile::Builder::new().prefix("ironclaw-unix-").tempdir_in("/tmp").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open_socket = dir.path().join("open.sock");
    let listener = std::os::unix::net::UnixListener::bind(&open_socket).unwrap();
    std::fs::set_permissions(&open_socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    for plugin in [PLUGIN, "misbehave_native"] {
        for path in [open_socket.clone(), d.socket.clone()] {
            let r = d.exec(plugin, json!({"attack": "unix_connect", "path": path, "name": ""})).await;
            let seen: &Value = &r["data"];
            assert_eq!(seen["stage"], "socket", "{plugin} {}: {r}", path.display());
            assert_eq!(seen["outcome"]["errno_name"], "EAFNOSUPPORT", "{plugin}: {r}");
        }
    }
    assert!(listener.accept().is_err(), "a sandbox connected to a host unix socket");
}

#[tokio::test]
async fn only_granted_plugins_get_a_proxy() {
    require_root!();
    let e = start().await;
    let env_of = |r: &Value| -> Vec<String> {
        r["data"]["env"].as_array().unwrap().iter().map(|kv| kv[0].as_str().unwrap().to_string()).collect()
    };
    let granted = e.daemon.exec(PLUGIN, json!({"attack": "identity"})).await;
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"] {
        assert!(env_of(&granted).iter().any(|v| v == var), "{var}: {granted}");
    }
    let plain = e.daemon.exec("misbehave_native", json!({"attack": "proxy_request", "request": "x"})).await;
    assert_eq!(plain["data"]["error"], "no HTTP_PROXY in the environment", "{plain}");
    // Nothing listens on the proxy port of a plugin without network permission.
    let seen = e.daemon.exec("misbehave_native", json!({"attack": "tcp_connect", "addr": "127.0.0.1:3128"})).await;
    assert_eq!(seen["data"]["errno_name"], "EACCES", "{seen}");
}

#[tokio::test]
async fn an_execution_cannot_hog_the_proxy() {
    require_root!();
    let e = start().await;
    let request = get("http://allowed.test/");
    let r = e.daemon.exec(PLUGIN, json!({"attack": "proxy_request", "request": request, "idle_connections": 32})).await;
    assert_eq!(r["data"]["idle_connections"], 32, "{r}");
    let response = r["data"]["response"].as_str().unwrap();
    assert!(status_line(response).starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("more than 32 connections at once"), "{response}");
    // The next execution has its own proxy and its own allowance.
    let (_, response) = through_proxy(&e.daemon, &request).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn the_proxy_is_ready_even_for_a_runner_started_on_demand() {
    require_root!();
    // An on-demand runner is handed its spec right after it announces itself, possibly before
    // it has brought its loopback up: the proxy's listener must not depend on that.
    let e = start_with(Daemon::builder().config("prestarted = 0\n")).await;
    for _ in 0..200 {
        let (_, response) = through_proxy(&e.daemon, &get("http://allowed.test/")).await;
        assert!(status_line(&response).starts_with("HTTP/1.1 200"), "{response}");
    }
}
