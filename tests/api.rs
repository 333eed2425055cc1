//! The daemon's REST API and the `ironclaw` CLI, driven against the real `ironclawd`.

mod common;

use std::time::Duration;

use common::Daemon;
use hyper::Method;
use serde_json::{Value, json};

async fn calculator() -> Daemon {
    Daemon::with_plugins(&["calculator"]).await
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn seed_example_through_the_api() {
    require_root!();
    let d = calculator().await;
    let a = d
        .client()
        .post(
            "/api/v1/plugins/calculator/execute",
            &json!({"plugin_name": "calculator", "parameters": {"expression": "sqrt(16) + sin(pi/2)", "precision": 5}}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let r = a.body;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["result"], json!(5));
    assert_eq!(r["id"].as_str().unwrap().len(), 32);
    for field in ["duration_ms", "cpu_time_ms", "peak_memory_bytes"] {
        assert!(r[field].is_u64(), "{field} missing: {r}");
    }
    let layers = &r["layers"];
    // Whichever backend this host gives (and the one declared, if any): results and /system agree.
    assert_eq!(layers["resources"], d.resources().await.as_str(), "{r}");
    assert_eq!(layers["sandbox"]["seccomp"], true);
    assert_eq!(layers["sandbox"]["no_new_privs"], true);
    assert_eq!(layers["sandbox"]["capabilities_dropped"], true);
    assert_eq!(layers["sandbox"]["landlock"]["status"], "fully_enforced");
    assert_eq!(layers["sandbox"]["namespaces"], json!(["pid", "net", "mount", "ipc", "uts"]));
    assert!(layers["sandbox"]["uid"].as_u64().unwrap() >= d.uid_base as u64);

    // The execution is kept and can be fetched by id.
    let got = d.get(&format!("/api/v1/executions/{}", r["id"].as_str().unwrap())).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["data"]["result"], json!(5));
}

#[tokio::test]
async fn calculator_errors_are_results() {
    require_root!();
    let d = calculator().await;
    let r = d.exec("calculator", json!({"expression": "1/0"})).await;
    assert_eq!((r["status"].as_str(), r["error"].as_str()), (Some("invalid_input"), Some("division by zero")));
    let r = d.exec("calculator", json!({"expression": "factorial(100000)"})).await;
    assert_eq!(r["status"], "invalid_input", "the expression is the caller's to change");
    assert!(r["error"].as_str().unwrap().starts_with("result too large"), "{r}");
    let r = d.exec("calculator", json!({"expression": "9**9**9"})).await;
    assert!(r["error"].as_str().unwrap().starts_with("result too large"), "{r}");
    let r = d.exec("calculator", json!({"expression": "nope(1)"})).await;
    assert_eq!(r["error"], "unknown function 'nope'");
    let r = d.exec("calculator", json!({"expression": "(".repeat(200) + "1" + &")".repeat(200)})).await;
    assert_eq!(r["status"], "invalid_input");
    assert!(r["error"].as_str().unwrap().contains("nested too deeply"));
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    require_root!();
    let d = calculator().await;
    let c = d.client();
    let exec = "/api/v1/plugins/calculator/execute";

    let a = c.post("/api/v1/plugins/nope/execute", &json!({"parameters": {}})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (404, "plugin_not_found"));

    let a = c.post(exec, &json!({"parameters": {}})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (400, "invalid_parameters"));
    assert!(a.body["error"]["message"].as_str().unwrap().contains("expression"), "{}", a.body);

    let a = c.post(exec, &json!({"parameters": {"expression": 5}})).await.unwrap();
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("'/expression'"), "{}", a.body);

    let a = c.post(exec, &json!({"parameters": {"expression": "1", "precision": 99}})).await.unwrap();
    assert!(a.body["error"]["message"].as_str().unwrap().contains("'/precision'"), "{}", a.body);

    let a = c.post(exec, &json!({"parameters": {"expression": "1"}, "plugin_name": "other"})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (400, "plugin_name_mismatch"));

    let a = c.post(exec, &json!({"parameters": {"expression": "1"}, "surprise": 1})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (400, "invalid_request"));
    assert!(a.body["error"]["message"].as_str().unwrap().contains("surprise"));

    let a = c.send(Method::POST, exec, Some(b"{\"parameters\": ".to_vec())).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (400, "invalid_request"));

    // The daemon answers 413 from Content-Length alone and closes: read the early answer, as curl does.
    let (status, body) = raw_post(&d.socket, exec, &vec![b'1'; 3 << 20]).await;
    assert_eq!((status, error_code(&body)), (413, "payload_too_large"));

    let a = c.get("/api/v1/nothing-here").await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (404, "not_found"));
    let a = c.send(Method::PATCH, "/api/v1/plugins", None).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (405, "method_not_allowed"));
    let a = c.get("/api/v1/executions/..%2F..%2Fetc").await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (404, "execution_not_found"));

    // None of that hurt the daemon.
    let r = d.exec("calculator", json!({"expression": "2+2"})).await;
    assert_eq!(r["data"]["result"], json!(4));
}

/// A raw HTTP/1.1 POST that ignores write errors, so an answer sent before the body is read is seen.
async fn raw_post(socket: &std::path::Path, path: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test]
async fn enable_and_disable_persist_across_restarts() {
    require_root!();
    let d = calculator().await;
    let c = d.client();
    let a = c.put("/api/v1/plugins/calculator/enable", &json!({"enabled": false})).await.unwrap();
    assert_eq!((a.status.as_u16(), &a.body["state"]), (200, &json!("disabled")));
    let a = c.post("/api/v1/plugins/calculator/execute", &json!({"parameters": {"expression": "1"}})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (409, "plugin_disabled"));
    let a = c.put("/api/v1/plugins/calculator/enable", &json!({"enabled": "yes"})).await.unwrap();
    assert_eq!(a.status, 400);

    let dir = d.into_dir().await;
    let d = Daemon::builder().reuse(dir).start().await;
    let info = d.get("/api/v1/plugins/calculator").await.body;
    assert_eq!((info["state"].as_str(), info["enabled"].as_bool()), (Some("disabled"), Some(false)));
    let a = d.client().put("/api/v1/plugins/calculator/enable", &json!({"enabled": true})).await.unwrap();
    assert_eq!(a.body["state"], "enabled");
    let r = d.exec("calculator", json!({"expression": "6*7"})).await;
    assert_eq!(r["data"]["result"], json!(42));
}

#[tokio::test]
async fn listing_info_system_and_stats() {
    require_root!();
    let d = calculator().await;
    let list = d.get("/api/v1/plugins").await.body;
    let calc = &list["plugins"][0];
    assert_eq!(
        (calc["name"].as_str(), calc["state"].as_str(), calc["runtime"].as_str()),
        (Some("calculator"), Some("enabled"), Some("native"))
    );
    assert_eq!(calc["version"], "1.0.0");
    assert_eq!(calc["enabled"], true);

    let info = d.get("/api/v1/plugins/calculator").await.body;
    assert_eq!(info["effective_limits"]["memory"], "64MiB");
    assert_eq!(info["effective_limits"]["timeout"], "5s");
    assert_eq!(info["manifest"]["parameters"]["required"], json!(["expression"]));
    assert_eq!(info["events"][0]["event"], "on_load");

    let system = d.get("/api/v1/system").await.body;
    assert_eq!(system["plugin_api_version"], ironclaw_plugin_sdk::API_VERSION);
    assert_eq!(system["layers"]["seccomp"], "enforced");
    assert_eq!(system["layers"]["resources"], d.resources().await.as_str());
    assert_eq!(system["policy"]["executions_allowed"], true);
    assert!(system["host"]["landlock_abi"].as_u64().unwrap() >= 1);

    for expr in ["1+1", "2+2", "1/0"] {
        d.exec("calculator", json!({"expression": expr})).await;
    }
    let stats = d.get("/api/v1/plugins/calculator/stats").await.body;
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["by_status"], json!({"success": 2, "invalid_input": 1}));
    assert!(stats["latency_ms"]["p50"].is_u64() && stats["latency_ms"]["p95"].is_u64());
    assert!(stats["peak_memory_bytes"].as_u64().unwrap() > 0);
    let all = d.get("/api/v1/stats").await.body;
    assert_eq!(all["total"], 3);
    assert_eq!(all["plugins"]["calculator"]["total"], 3);
    let a = d.get("/api/v1/plugins/ghost/stats").await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn cancel_a_running_execution() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_exec"]).await;
    let c = d.client();
    let a = c
        .post(
            "/api/v1/plugins/misbehave_exec/execute",
            &json!({"parameters": {"attack": "sleep", "seconds": 30}, "wait": false}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 202);
    let id = a.body["id"].as_str().unwrap().to_string();
    let running = d.get("/api/v1/executions?state=running").await.body;
    assert_eq!(running["executions"][0]["id"], id.as_str());
    assert_eq!(d.get(&format!("/api/v1/executions/{id}")).await.body["status"], "running");

    let a = c.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await.unwrap();
    assert_eq!((a.status.as_u16(), &a.body["status"]), (200, &json!("cancelling")));
    let mut status = Value::Null;
    for _ in 0..100 {
        status = d.get(&format!("/api/v1/executions/{id}")).await.body["status"].clone();
        if status != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "cancelled");
    let a = c.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (409, "execution_finished"));
    assert!(d.settled_sandbox_processes().await.is_empty());
}

#[tokio::test]
async fn concurrency_over_the_limit_is_refused_with_retry_after() {
    require_root!();
    let d = Daemon::builder().plugins(&["misbehave_exec", "calculator"]).max_concurrent(1).max_queued(0).start().await;
    let system = d.get("/api/v1/system").await.body;
    assert_eq!(system["executions"]["prestarted_target"], 1, "no more waiting runners than slots: {system}");
    let c = d.client();
    let a = c
        .post(
            "/api/v1/plugins/misbehave_exec/execute",
            &json!({"parameters": {"attack": "sleep", "seconds": 30}, "wait": false}),
        )
        .await
        .unwrap();
    let id = a.body["id"].as_str().unwrap().to_string();
    let a = c.post("/api/v1/plugins/calculator/execute", &json!({"parameters": {"expression": "1"}})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (429, "overloaded"));
    c.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await.unwrap();
    // Once the slot is free again, executions run.
    let mut last = None;
    for _ in 0..100 {
        let a =
            c.post("/api/v1/plugins/calculator/execute", &json!({"parameters": {"expression": "1"}})).await.unwrap();
        if a.status == 200 {
            last = Some(a.body);
            break;
        }
        assert_eq!(a.status, 429, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = last.unwrap_or_else(|| panic!("the slot was never released:\n{}", d.log()));
    assert_eq!(body["status"], "success", "{body}");
}

#[tokio::test]
async fn queued_executions_wait_for_a_slot() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).max_concurrent(1).start().await;
    let runs: Vec<_> = (0..6)
        .map(|i| {
            let c = d.client();
            tokio::spawn(async move {
                c.post("/api/v1/plugins/calculator/execute", &json!({"parameters": {"expression": format!("{i}*2")}}))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let a = run.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["data"]["result"], json!(i * 2));
    }
}

#[tokio::test]
async fn a_broken_plugin_does_not_stop_the_others() {
    require_root!();
    let d = calculator().await;
    let broken = d.dir.path().join("plugins/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("plugin.toml"), "name = \"broken\"\nversion = \"1.0.0\"\nflavour = \"bad\"\n").unwrap();
    let needs = d.dir.path().join("plugins/needs_ghost");
    std::fs::create_dir_all(&needs).unwrap();
    std::fs::write(
        needs.join("plugin.toml"),
        "name = \"needs_ghost\"\nversion = \"1.0.0\"\ndescription = \"d\"\napi = \"^1\"\n[runtime]\ntype = \"exec\"\ncommand = [\"true\"]\n\
         [dependencies]\nghost = \"^1\"\n[parameters]\ntype = \"object\"\n",
    )
    .unwrap();
    let dir = d.into_dir().await;
    let d = Daemon::builder().reuse(dir).start().await;
    let list = d.get("/api/v1/plugins").await.body;
    let state = |name: &str| list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(state("calculator")["state"], "enabled");
    let b = state("broken");
    assert_eq!(b["state"], "invalid");
    let reason = b["reason"].as_str().unwrap();
    assert!(reason.contains("broken/plugin.toml:3:1") && reason.contains("unknown field `flavour`"), "{reason}");
    let n = state("needs_ghost");
    assert_eq!(
        (n["state"].as_str(), n["reason"].as_str()),
        (Some("unresolved"), Some("dependency 'ghost' is not installed"))
    );
    let a = d.client().post("/api/v1/plugins/broken/execute", &json!({"parameters": {}})).await.unwrap();
    assert_eq!((a.status.as_u16(), error_code(&a.body)), (409, "plugin_not_runnable"));
    assert_eq!(d.exec("calculator", json!({"expression": "3"})).await["status"], "success");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_executions_finish() {
    require_root!();
    let mut d = Daemon::with_plugins(&["misbehave_exec"]).await;
    let c = d.client();
    let run = tokio::spawn(async move {
        c.post("/api/v1/plugins/misbehave_exec/execute", &json!({"parameters": {"attack": "sleep", "seconds": 1}}))
            .await
            .unwrap()
    });
    d.wait_executions(1, 0).await;
    let status = d.stop().await;
    assert!(status.success(), "{status}");
    let a = run.await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["status"], "success", "{}", a.body);
    assert_eq!(a.body["data"]["slept"], true);
    assert!(!d.socket.exists(), "the socket is removed on shutdown");
    assert!(d.sandbox_processes().is_empty());
}

#[tokio::test]
async fn cli_commands_and_exit_codes() {
    require_root!();
    let d = calculator().await;
    let out = d.cli(&["plugins", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("NAME") && text.contains("calculator") && text.contains("enabled"), "{text}");

    let out =
        d.cli(&["--json", "exec", "calculator", "--json", r#"{"expression": "sqrt(16) + sin(pi/2)", "precision": 5}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["result"], json!(5));

    // `--json -` reads the parameters from stdin.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "exec", "calculator", "--json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), br#"{"expression": "lcm(4, 6)"}"#).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["data"]["result"], json!(12));

    let out = d.cli(&["exec", "calculator", "-p", "expression=2**10", "-p", "precision=0"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"result\": 1024"));

    let out = d.cli(&["exec", "calculator", "-p", "expression=1/0"]);
    assert_eq!(out.status.code(), Some(1), "a failed execution exits 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("division by zero"));

    let out = d.cli(&["exec", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no plugin named 'ghost'"));

    let out = d.cli(&["disable", "calculator"]);
    assert!(out.status.success());
    let out = d.cli(&["--json", "plugins", "info", "calculator"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["state"], "disabled");
    assert!(d.cli(&["enable", "calculator"]).status.success());

    for args in [&["stats"][..], &["stats", "calculator"], &["system"], &["executions"]] {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(String::from_utf8_lossy(&d.cli(&["system"]).stdout).contains("seccomp"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
        .args(["--socket", "/nonexistent/ironclaw.sock", "system"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "no daemon exits 3");
}

#[test]
fn doctor_needs_no_daemon() {
    let policies = common::repo_dir().join("policies");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
        .args(["--json", "doctor", "--policies"])
        .arg(&policies)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers: Vec<&str> = report["layers"].as_array().unwrap().iter().map(|l| l["layer"].as_str().unwrap()).collect();
    assert_eq!(layers, ["namespaces", "landlock", "seccomp", "cgroup_v2"]);
    let cgroup = &report["layers"][3];
    let usable = report["host"]["cgroup_v2"]["usable"].as_bool().unwrap();
    if let Ok(expected) = std::env::var(common::EXPECT_RESOURCES_ENV) {
        assert_eq!(usable, expected == "cgroup_v2", "{}={expected}: {report}", common::EXPECT_RESOURCES_ENV);
    }
    if usable {
        assert_eq!((cgroup["host"].as_str(), cgroup["daemon_would"].as_str()), (Some("supported"), Some("enforce")));
    } else {
        assert_eq!(cgroup["host"], "missing", "{report}");
        assert_eq!(cgroup["daemon_would"], "use the fallback (rlimits + monitor)");
        assert!(!report["host"]["resource_gaps"].as_array().unwrap().is_empty(), "the fallback's gaps are listed");
    }
    assert_eq!(out.status.success(), report["policy_ok"].as_bool().unwrap());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("strict.toml"), "[sandbox]\nrequire = [\"cgroup_v2\"]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
        .args(["doctor", "--policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if usable {
        assert!(out.status.success() && text.contains("are met"), "{text}");
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(text.contains("refuse every execution") && text.contains("NOT MET"), "{text}");
    }
}

/// Polls `GET /api/v1/system` until `n` pre-started runners wait (bounded).
async fn wait_for_prestarted(d: &Daemon, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let system = d.get("/api/v1/system").await.body;
        if system["executions"]["prestarted_runners"] == n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the pool never reached {n}: {system}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn prestarted_runners_serve_once_and_are_replaced() {
    require_root!();
    let d = calculator().await;
    wait_for_prestarted(&d, 2).await;
    let idle = d.runner_processes();
    assert_eq!(idle.len(), 4, "2 idle runners, outer and inner each: {idle:?}");

    // A runner killed while idle is discarded, never handed to an execution.
    let victim = *idle.iter().min().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // Dead means exited (a zombie until the daemon reaps it), not merely signalled.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{victim}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
    {
        assert!(std::time::Instant::now() < deadline, "the killed runner never exited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        let r = d.exec("calculator", json!({"expression": "6*7"})).await;
        assert_eq!((r["status"].as_str(), r["data"]["result"].as_f64()), (Some("success"), Some(42.0)), "{r}");
    }
    assert!(d.log().contains("died while idle"), "the dead runner was noticed");
    // Each runner served at most once: none of the first ones is left, and the pool refilled.
    assert!(common::settled_runners(&idle).await.is_empty(), "a pre-started runner outlived its use");
    wait_for_prestarted(&d, 2).await;
    assert_eq!(d.runner_processes().len(), 4);
}

#[tokio::test]
async fn runners_start_on_demand_without_a_pool() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).config("prestarted = 0\n").start().await;
    let r = d.exec("calculator", json!({"expression": "2**10"})).await;
    assert_eq!(r["data"]["result"], 1024, "{r}");
    let system = d.get("/api/v1/system").await.body;
    assert_eq!(system["executions"]["prestarted_target"], 0);
    assert!(d.runner_processes().is_empty());
}

#[tokio::test]
async fn tcp_listener_and_socket_permissions() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).tcp().start().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the unix socket is owner and group only");

    let url = d.tcp_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
        .args(["--url", &url, "--json", "exec", "calculator", "-p", "expression=6*7"])
        .env("IRONCLAW_TOKEN", common::TCP_EXECUTE_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["result"], 42, "{r}");

    // Without a tcp setting there is no TCP listener at all.
    let plain = calculator().await;
    assert!(!plain.log().lines().any(|l| l.contains("listening") && l.contains("addr=")), "{}", plain.log());
}
