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
    // No SysV IPC on any backend.
    let r =
        d.exec("misbehave_hoarder", json!({"attack": "hidden_memory", "how": "sysv", "count": 64, "mib": 16})).await;
    assert_eq!(failure(&r), "ENOSYS", "{r}");
}
