//! Resource limits against plugins that try to walk around them: CPU time spent where no parent
//! waits, a CPU-share throttle the sandbox tries to undo, and memory held without mapping it.
//! Every test runs on whichever backend the host gives (see `Daemon::resources`) and asserts
//! that backend's exact outcome.

mod common;

use common::Daemon;
use serde_json::{Value, json};

/// CPU time is the whole execution's, whoever reaps the processes that spent it.
#[tokio::test]
async fn cpu_time_counts_processes_nobody_waits_for() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_native", "misbehave_exec"]).await;
    d.resources().await;
    let ways = [
        ("misbehave_native", "fork", "sig_ign"),
        ("misbehave_native", "fork", "nocldwait"),
        ("misbehave_native", "vfork", "sig_ign"),
        ("misbehave_native", "clone_parent", "none"),
        ("misbehave_native", "double_fork", "wait"),
        ("misbehave_native", "threads", "none"),
        ("misbehave_exec", "fork", "sig_ign"),
    ];
    for (plugin, how, reap) in ways {
        // 2 workers at a time for up to 3 s: up to 6 s of CPU against a 1 s limit (cpu = 1.0).
        let attack = json!({"attack": "unreaped_children", "how": how, "reap": reap, "count": 1000, "child_ms": 40});
        let r = d.exec(plugin, attack).await;
        assert_eq!(r["status"], "cpu_limit", "{plugin} {how} {reap}: {r}");
        let cpu = r["cpu_time_ms"].as_u64().unwrap();
        assert!((1000..2500).contains(&cpu), "{plugin} {how} {reap}: cpu_time_ms {cpu}: {r}");
        assert!(r["duration_ms"].as_u64().unwrap() < 3000, "{plugin} {how} {reap}: stopped before the timeout: {r}");
    }
}

/// The share holds although the sandbox sends itself the signals that would resume it.
#[tokio::test]
async fn the_cpu_share_holds_against_a_sandbox_that_resumes_itself() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_throttled"]).await;
    d.resources().await;
    for (how, spinners) in [("kill", 1), ("kill", 2), ("timer", 1), ("timer", 2)] {
        let r =
            d.exec("misbehave_throttled", json!({"attack": "throttle_escape", "how": how, "spinners": spinners})).await;
        assert_eq!(r["status"], "timeout", "{how} x{spinners}: {r}");
        let (cpu, wall) = (r["cpu_time_ms"].as_u64().unwrap() as f64, r["duration_ms"].as_u64().unwrap() as f64);
        // cpu = 0.2: a fifth of the wall time, within 0.1 of a CPU either way.
        let share = cpu / wall;
        assert!((0.1..=0.3).contains(&share), "{how} x{spinners}: share {share:.2} ({cpu} ms over {wall} ms): {r}");
    }
}

fn failure(r: &Value) -> &str {
    r["data"]["failure"]["errno_name"].as_str().unwrap_or_else(|| panic!("no refused call in {r}"))
}

/// Memory that no process maps (memfd files, shared mappings whose pages were dropped from the
/// page tables, SysV segments) counts against the limit, or the call that would create it is
/// refused. 64 MiB allowed; each attack tries to hold up to 1 GiB.
#[tokio::test]
async fn memory_that_no_process_maps_is_counted_or_refused() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_hoarder"]).await;
    let backend = d.resources().await;
    for how in ["memfd", "shared_anon", "dev_zero"] {
        let r =
            d.exec("misbehave_hoarder", json!({"attack": "hidden_memory", "how": how, "count": 64, "mib": 16})).await;
        if backend == "cgroup_v2" {
            assert_eq!(r["status"], "memory_limit", "{how}: {r}");
        } else {
            assert_eq!(r["status"], "success", "{how}: {r}");
            let expected = if how == "dev_zero" { "EACCES" } else { "EPERM" };
            assert_eq!(failure(&r), expected, "{how}: {r}");
            assert_eq!(r["data"]["held_mib"], 0, "{how}: {r}");
        }
    }
    // Socket buffers: counted (one process holds about 25 MiB of them, three hold more than
    // the limit); on the fallback they keep their default sizes (SO_SNDBUF refused).
    let holding = json!({"attack": "hidden_memory", "how": "socketpairs", "count": 120, "hold_seconds": 1});
    let r = d.exec("misbehave_hoarder", holding.clone()).await;
    assert_eq!(r["status"], "success", "{r}");
    let held = r["data"]["held_mib"].as_u64().unwrap();
    assert!(held >= 20, "{r}");
    assert!(r["peak_memory_bytes"].as_u64().unwrap() >= held << 20, "socket buffers counted: {r}");
    let mut three = holding;
    three["processes"] = json!(3);
    let r = d.exec("misbehave_hoarder", three).await;
    assert_eq!(r["status"], "memory_limit", "{r}");
    // No SysV IPC on any backend.
    let r =
        d.exec("misbehave_hoarder", json!({"attack": "hidden_memory", "how": "sysv", "count": 64, "mib": 16})).await;
    assert_eq!(failure(&r), "ENOSYS", "{r}");
}

/// Two daemons with default settings on one host: each claims ids of its own, so one's sleeping
/// executions never count against the other's per-uid limits (the calculator has `pids = 1`),
/// and neither's trial loads fail for the other's sake.
#[tokio::test]
async fn two_daemons_with_default_settings_share_a_host() {
    require_root!();
    let plugins = ["calculator", "misbehave_native"];
    let (a, b) = tokio::join!(Daemon::with_plugins(&plugins), Daemon::with_plugins(&plugins));
    let (mut a, mut b) = (a, b);
    assert!(a.uid_base.abs_diff(b.uid_base) >= 65_536, "overlapping id ranges {} and {}", a.uid_base, b.uid_base);
    for d in [&a, &b] {
        let plugins = d.get("/api/v1/plugins").await.body;
        for p in plugins["plugins"].as_array().unwrap() {
            assert_eq!(p["state"], "enabled", "{p}");
        }
    }
    for (busy, other) in [(&a, &b), (&b, &a)] {
        // A long execution holding the busy daemon's first slot uid, while the other serves.
        let sleeper = busy.exec("misbehave_native", json!({"attack": "sleep", "seconds": 10}));
        let calculations = async {
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(other.exec("calculator", json!({"expression": "6*7"})).await);
            }
            answers
        };
        let (slept, answers) = tokio::join!(sleeper, calculations);
        assert_eq!(slept["status"], "timeout", "{slept}");
        for r in answers {
            assert_eq!((r["status"].as_str(), r["data"]["result"].as_f64()), (Some("success"), Some(42.0)), "{r}");
        }
    }
    assert!(a.stop().await.success(), "{}", a.log());
    assert!(b.stop().await.success(), "{}", b.log());
}

/// A daemon told to use ids another daemon holds refuses to start, and says who holds them.
#[tokio::test]
async fn a_daemon_refuses_ids_another_daemon_holds() {
    require_root!();
    let first = Daemon::with_plugins(&["calculator"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ironclawd.toml");
    std::fs::write(
        &config,
        format!(
            "plugins_dir = {:?}\npolicies_dir = {:?}\nstate_dir = {:?}\n[api]\nsocket = {:?}\n[runner]\nuid_base = {}\n",
            dir.path(),
            dir.path(),
            dir.path().join("state"),
            dir.path().join("api.sock"),
            first.uid_base
        ),
    )
    .unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_ironclawd")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("runner.uid_base") && stderr.contains(&format!("ironclawd pid {}", first.pid())),
        "{stderr}"
    );
}

/// A trial load that the sandbox fails, not the plugin (here: the slot's uid already runs as
/// many processes as the calculator may have, so its runner cannot fork), is retried, and the
/// new version goes in once the host lets it run; the plugin is never marked invalid for it.
#[tokio::test]
async fn a_trial_load_the_sandbox_failed_is_retried() {
    require_root!();
    let d = Daemon::builder()
        .plugins(&["calculator"])
        .config("prestarted = 0\n[reload]\nwatch = false\n")
        .max_concurrent(1)
        .start()
        .await;
    // The only slot's uid: someone else's processes run under it now.
    let uid = d.uid_base.to_string();
    let mut squatters: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new("setpriv")
                .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "sleep", "60"])
                .spawn()
                .unwrap()
        })
        .collect();
    let manifest = d.dir.path().join("plugins/calculator/plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("version = \"1.0.0\"", "version = \"1.0.1\"")).unwrap();
    let client = d.client();
    let reload = tokio::spawn(async move { client.post("/api/v1/plugins/calculator/reload", &json!({})).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.log().contains("the sandbox failed, not the plugin; retrying") {
        assert!(std::time::Instant::now() < deadline, "no retried trial in the log:\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for squatter in &mut squatters {
        squatter.kill().unwrap();
        squatter.wait().unwrap();
    }
    let answer = reload.await.unwrap().unwrap();
    assert_eq!(
        (answer.body["result"].as_str(), answer.body["version"].as_str()),
        (Some("changed"), Some("1.0.1")),
        "{}",
        answer.body
    );
    let info = d.get("/api/v1/plugins/calculator").await.body;
    assert_eq!(info["state"], "enabled", "{info}");
    let r = d.exec("calculator", json!({"expression": "1+1"})).await;
    assert_eq!((r["status"].as_str(), r["plugin_version"].as_str()), (Some("success"), Some("1.0.1")), "{r}");
}
