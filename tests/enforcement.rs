//! Enforcement: purpose-built misbehaving plugins (native and exec) try to break each layer,
//! through the real daemon. Every test asserts the specific denial or status, and that the host
//! was not touched.

mod common;

use std::io::Read;
use std::time::Duration;

use common::Daemon;
use serde_json::{Value, json};

const BOTH: [&str; 2] = ["misbehave_native", "misbehave_exec"];

async fn hostile() -> Daemon {
    Daemon::with_plugins(&BOTH).await
}

/// Runs one attack and returns the whole result after checking the execution completed.
async fn attack(d: &Daemon, plugin: &str, params: Value) -> Value {
    d.exec(plugin, params).await
}

/// Runs one attack that the plugin survives, and returns what it observed.
async fn observed(d: &Daemon, plugin: &str, params: Value) -> Value {
    let r = attack(d, plugin, params.clone()).await;
    assert_eq!(r["status"], "success", "{plugin} {params}: {r}");
    r["data"].clone()
}

fn errno_of(v: &Value) -> &str {
    v["errno_name"]
        .as_str()
        .unwrap_or_else(|| v["outcome"]["errno_name"].as_str().unwrap_or_else(|| panic!("no errno in {v}")))
}

#[tokio::test]
async fn filesystem_reads_outside_the_plugin_folder_are_denied() {
    require_root!();
    let d = hostile().await;
    // A world-readable file the test owns, outside the plugin folder: absent from the
    // sandbox's root. Where the root does hold something not granted, Landlock refuses it.
    let outside = tempfile::Builder::new().prefix("ironclaw-secret-").tempfile_in("/tmp").unwrap();
    std::fs::write(outside.path(), "secret").unwrap();
    std::fs::set_permissions(outside.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let outside = outside.path().to_str().unwrap().to_string();
    for plugin in BOTH {
        let absent = ["/etc/shadow", outside.as_str(), "/sys/kernel/notes", "/home", "/root", "/var/log/syslog"];
        let refused = ["/proc/1/environ", "/proc/self/status"];
        for (path, want) in absent.iter().map(|p| (p, "ENOENT")).chain(refused.iter().map(|p| (p, "EACCES"))) {
            let seen = observed(&d, plugin, json!({"attack": "read_file", "path": path})).await;
            assert_eq!(errno_of(&seen), want, "{plugin} read {path}: {seen}");
            assert_eq!(seen["content"], "", "{plugin} read {path}");
        }
        for (path, want) in [("/root", "ENOENT"), ("/", "EACCES"), ("/etc", "EACCES"), ("/run/ironclaw", "EACCES")] {
            let seen = observed(&d, plugin, json!({"attack": "list_dir", "path": path})).await;
            assert_eq!(errno_of(&seen), want, "{plugin} list {path}: {seen}");
        }
        // The sandbox's own passwd names the execution's user, none of the host's.
        let seen = observed(&d, plugin, json!({"attack": "read_file", "path": "/etc/passwd"})).await;
        let users: Vec<&str> = seen["content"].as_str().unwrap().lines().map(|l| &l[..l.find(':').unwrap()]).collect();
        assert_eq!(users, ["root", "plugin", "nobody"], "{plugin}: {seen}");
        // Its own folder is readable, at the fixed in-sandbox path.
        let seen = observed(&d, plugin, json!({"attack": "read_file", "path": "plugin.toml"})).await;
        assert_eq!(errno_of(&seen), "OK", "{plugin}: {seen}");
        assert!(seen["content"].as_str().unwrap().contains(plugin));
    }
}

#[tokio::test]
async fn filesystem_writes_are_denied_everywhere() {
    require_root!();
    let d = hostile().await;
    let canary_dir = tempfile::Builder::new().prefix("ironclaw-canary-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(canary_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let target = canary_dir.path().join("escaped");
    for plugin in BOTH {
        let writes = [
            (target.to_str().unwrap(), "ENOENT"),
            ("/dev/shm/ironclaw-escape", "ENOENT"),
            // The sandbox's root is a read-only filesystem (and Landlock's second wall behind).
            ("/etc/ironclaw-escape", "EROFS"),
            ("/ironclaw-escape", "EROFS"),
        ];
        for (path, want) in writes {
            let seen = observed(&d, plugin, json!({"attack": "write_file", "path": path})).await;
            assert_eq!(errno_of(&seen), want, "{plugin} write {path}: {seen}");
        }
        // The sandbox's /tmp is its own: writable, and nothing of it reaches the host's.
        let seen = observed(&d, plugin, json!({"attack": "write_file", "path": "/tmp/ironclaw-escape"})).await;
        assert_eq!(errno_of(&seen), "OK", "{plugin}: {seen}");
        // Its own folder is a read-only mount inside the sandbox.
        let seen = observed(&d, plugin, json!({"attack": "write_file", "path": "plugin.toml"})).await;
        assert_eq!(errno_of(&seen), "EROFS", "{plugin}: {seen}");
    }
    assert!(!target.exists());
    assert!(!std::path::Path::new("/tmp/ironclaw-escape").exists());
    let manifest = std::fs::read_to_string(d.dir.path().join("plugins/misbehave_exec/plugin.toml")).unwrap();
    assert!(manifest.contains("name = \"misbehave_exec\""), "the plugin folder is untouched");
}

#[tokio::test]
async fn host_loopback_tcp_is_unreachable() {
    require_root!();
    let d = hostile().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "tcp_connect", "addr": addr})).await;
        // Landlock denies every TCP connect; the empty namespace would refuse it anyway.
        assert_eq!(errno_of(&seen), "EACCES", "{plugin}: {seen}");
    }
    assert!(listener.accept().is_err(), "the host listener was reached");
}

#[tokio::test]
async fn host_loopback_udp_is_unreachable() {
    require_root!();
    let d = hostile().await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "udp_exchange", "addr": addr})).await;
        // The datagram goes to the sandbox's own loopback, where nothing listens or answers.
        assert_eq!(seen["send"]["errno_name"], "OK", "{plugin}: {seen}");
        assert_eq!(seen["reply"]["errno_name"], "EAGAIN", "{plugin}: no reply within the timeout: {seen}");
    }
    let mut buf = [0u8; 16];
    assert!(socket.recv_from(&mut buf).is_err(), "the host UDP socket received a datagram");
}

#[tokio::test]
async fn hosts_on_other_networks_are_unreachable() {
    require_root!();
    let d = hostile().await;
    let host = common::TestHost::create();
    let (udp, tcp) = host.inside(|| {
        let udp = std::net::UdpSocket::bind((host.addr, 0)).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let tcp = std::net::TcpListener::bind((host.addr, 0)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        (udp, tcp)
    });
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    // Control: from the host's namespace, the test host is reachable over the veth pair.
    let probe = std::net::UdpSocket::bind((host.host_side, 0)).unwrap();
    probe.send_to(b"control", udp_addr).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(udp.recv_from(&mut buf).unwrap().0, 7, "the test host is reachable from the host");

    for plugin in BOTH {
        // UDP is not Landlock's: the empty network namespace alone stops it (no route).
        let seen = observed(&d, plugin, json!({"attack": "udp_exchange", "addr": udp_addr.to_string()})).await;
        assert_eq!(seen["send"]["errno_name"], "ENETUNREACH", "{plugin}: {seen}");
        let seen = observed(&d, plugin, json!({"attack": "tcp_connect", "addr": tcp_addr.to_string()})).await;
        assert_eq!(errno_of(&seen), "EACCES", "{plugin}: {seen}");
    }
    assert!(udp.recv_from(&mut buf).is_err(), "a datagram from a sandbox reached the test host");
    assert!(tcp.accept().is_err(), "a sandbox connected to the test host");
}

#[tokio::test]
async fn unix_sockets_cannot_be_created() {
    require_root!();
    let d = hostile().await;
    let name = format!("ironclaw-test-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "unix_connect", "name": name})).await;
        // seccomp refuses socket(AF_UNIX): no unix socket, abstract or named, can be connected.
        assert_eq!(errno_of(&seen), "EAFNOSUPPORT", "{plugin}: {seen}");
        assert_eq!(seen["stage"], "socket", "{plugin}: {seen}");
    }
    assert!(listener.accept().is_err(), "the host abstract socket was reached");
}

#[tokio::test]
async fn only_loopback_is_visible() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "interfaces"})).await;
        assert_eq!(seen["interfaces"], json!(["lo"]), "{plugin}");
    }
}

#[tokio::test]
async fn dangerous_syscalls_are_denied_and_foreign_entry_points_killed() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        for name in ["ptrace", "mount", "unshare", "clone_newns", "io_uring", "bpf", "setuid_root"] {
            let seen = observed(&d, plugin, json!({"attack": name})).await;
            assert_eq!(errno_of(&seen), "EPERM", "{plugin} {name}: {seen}");
        }
        for high_bits in [false, true] {
            let seen = observed(&d, plugin, json!({"attack": "tiocsti", "high_bits": high_bits})).await;
            assert_eq!(errno_of(&seen), "EPERM", "{plugin} TIOCSTI high_bits={high_bits}: {seen}");
        }
        let seen = observed(&d, plugin, json!({"attack": "seccomp_stack"})).await;
        assert_eq!(errno_of(&seen), "EPERM", "{plugin} stacking a filter: {seen}");
        let seen = observed(&d, plugin, json!({"attack": "raw_socket"})).await;
        assert_eq!(errno_of(&seen), "EAFNOSUPPORT", "{plugin} AF_PACKET socket: {seen}");
        // Unlisted or disguised syscalls look absent, as on an older kernel.
        let seen = observed(&d, plugin, json!({"attack": "clone3"})).await;
        assert_eq!(errno_of(&seen), "ENOSYS", "{plugin} clone3: {seen}");
        let seen = observed(&d, plugin, json!({"attack": "x32_getpid"})).await;
        assert_eq!(errno_of(&seen), "ENOSYS", "{plugin} x32 syscall: {seen}");
        // A foreign syscall entry point kills the process outright.
        #[cfg(target_arch = "x86_64")]
        {
            let r = attack(&d, plugin, json!({"attack": "i386_getpid"})).await;
            assert_eq!(
                (r["status"].as_str(), r["signal"].as_i64()),
                (Some("crashed"), Some(libc::SIGSYS as i64)),
                "{plugin} int 0x80: {r}"
            );
        }
    }
}

#[tokio::test]
async fn the_daemon_cannot_be_signalled() {
    require_root!();
    let d = hostile().await;
    let pid = d.pid();
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "kill", "pid": pid})).await;
        // The daemon's pid does not exist in the sandbox's pid namespace.
        assert_eq!(errno_of(&seen), "ESRCH", "{plugin}: {seen}");
    }
    assert_eq!(d.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn identity_is_unprivileged_and_the_environment_empty() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "identity"})).await;
        let uid = seen["uid"].as_u64().unwrap();
        assert!(uid >= d.uid_base as u64 && uid < (d.uid_base + d.max_concurrent) as u64, "{plugin}: {seen}");
        assert_eq!(seen["gid"], seen["uid"]);
        assert_eq!(seen["pid"], 2, "{plugin} runs in its own pid namespace, under a minimal init");
        assert_eq!(seen["cwd"], "/run/ironclaw/plugin");
        assert!(seen["capeff"].is_null(), "/proc/self/status is not readable: {seen}");
        assert_eq!(seen["blocked_signals"], json!([]), "{plugin} starts with no blocked signal: {seen}");
        // Native and exec plugins get the same environment, and nothing of the daemon's.
        let env = seen["env"].as_array().unwrap();
        let names: Vec<&str> = env.iter().map(|kv| kv[0].as_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "LANG", "HOME", "PYTHONDONTWRITEBYTECODE"], "{plugin}: {seen}");
    }
}

#[tokio::test]
async fn library_constructors_run_fully_confined() {
    require_root!();
    let canary = std::path::Path::new("/ironclaw-ctor-escape");
    let _ = std::fs::remove_file(canary);
    let d = Daemon::with_plugins(&["ctor_native"]).await;
    let seen = observed(&d, "ctor_native", json!({})).await;
    assert_eq!(seen["open_shadow"], json!({"ret": -1, "errno": libc::ENOENT}), "{seen}");
    assert_eq!(seen["open_root"], json!({"ret": -1, "errno": libc::EACCES}), "Landlock is in place: {seen}");
    assert_eq!(seen["create_in_root"], json!({"ret": -1, "errno": libc::EROFS}), "{seen}");
    assert_eq!(seen["ptrace"], json!({"ret": -1, "errno": libc::EPERM}), "{seen}");
    assert_eq!(seen["no_new_privs"]["ret"], 1, "{seen}");
    assert_eq!(seen["seccomp_mode"]["ret"], 2, "seccomp is in filter mode before dlopen: {seen}");
    assert!(seen["getuid"]["ret"].as_u64().unwrap() >= d.uid_base as u64, "{seen}");
    assert!(!canary.exists());
}

#[tokio::test]
async fn fork_bombs_hit_the_process_limit() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let seen = observed(&d, plugin, json!({"attack": "fork_bomb"})).await;
        assert_eq!(errno_of(&seen), "EAGAIN", "{plugin}: {seen}");
        // pids = 8 in the fixture's manifest, the plugin itself included.
        assert_eq!(seen["forked"], 7, "{plugin}: {seen}");
    }
    assert!(d.settled_sandbox_processes().await.is_empty(), "forked children outlived their execution");
}

#[tokio::test]
async fn memory_bombs_are_killed_at_the_limit() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let r = attack(&d, plugin, json!({"attack": "memory_bomb"})).await;
        assert_eq!(r["status"], "memory_limit", "{plugin}: {r}");
        assert!(r["error"].as_str().unwrap().contains("67108864"), "{r}");
        assert!(r["peak_memory_bytes"].as_u64().unwrap() >= 48 << 20, "{r}");
    }
}

#[tokio::test]
async fn cpu_spins_hit_the_cpu_time_limit() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let r = attack(&d, plugin, json!({"attack": "cpu_spin"})).await;
        assert_eq!(r["status"], "cpu_limit", "{plugin}: {r}");
        assert!(r["cpu_time_ms"].as_u64().unwrap() >= 900, "{r}");
        assert!(r["duration_ms"].as_u64().unwrap() < 3000, "stopped before the wall timeout: {r}");
    }
}

#[tokio::test]
async fn cpu_spins_are_held_to_their_cpu_share() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_throttled"]).await;
    // A fifth of a CPU for 3 s of wall time: about 600 ms of CPU time, not 3000.
    let r = attack(&d, "misbehave_throttled", json!({"attack": "cpu_spin"})).await;
    assert_eq!(r["status"], "timeout", "{r}");
    let cpu = r["cpu_time_ms"].as_u64().unwrap();
    assert!((200..=800).contains(&cpu), "cpu_time_ms {cpu} for a share of 0.2 over 3 s: {r}");
}

#[tokio::test]
async fn sleeping_past_the_timeout_is_killed() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let r = attack(&d, plugin, json!({"attack": "sleep", "seconds": 60})).await;
        assert_eq!(r["status"], "timeout", "{plugin}: {r}");
        let ms = r["duration_ms"].as_u64().unwrap();
        assert!((3000..10_000).contains(&ms), "timeout is 3s plus the kill grace: {ms}");
    }
    assert!(d.settled_sandbox_processes().await.is_empty());
}

#[tokio::test]
async fn crashes_are_reported_and_harmless() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let r = attack(&d, plugin, json!({"attack": "segfault"})).await;
        assert_eq!(
            (r["status"].as_str(), r["signal"].as_i64()),
            (Some("crashed"), Some(libc::SIGSEGV as i64)),
            "{plugin}: {r}"
        );
        let r = attack(&d, plugin, json!({"attack": "abort"})).await;
        assert_eq!(
            (r["status"].as_str(), r["signal"].as_i64()),
            (Some("crashed"), Some(libc::SIGABRT as i64)),
            "{plugin}: {r}"
        );
    }
    // A native panic never crosses the FFI boundary: it becomes an error result.
    let r = attack(&d, "misbehave_native", json!({"attack": "panic"})).await;
    assert_eq!(
        (r["status"].as_str(), r["error"].as_str()),
        (Some("error"), Some("plugin panicked: misbehave panics on purpose"))
    );
    assert!(r["log"].as_str().unwrap().contains("panicked"), "stderr is the execution's log: {r}");
    let r = attack(&d, "misbehave_exec", json!({"attack": "panic"})).await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(d.get("/healthz").await.status, 200);
    let r = d.exec("misbehave_native", json!({"attack": "echo", "ok": true})).await;
    assert_eq!(r["data"]["ok"], true, "the daemon still serves after every crash");
}

#[tokio::test]
async fn output_floods_hit_the_output_limit() {
    require_root!();
    let d = hostile().await;
    for plugin in BOTH {
        let r = attack(&d, plugin, json!({"attack": "output_flood", "bytes": 8 << 20})).await;
        assert_eq!(r["status"], "output_limit", "{plugin}: {r}");
        assert!(r["data"].is_null());
    }
}

#[tokio::test]
async fn python_plugins_run_under_the_same_sandbox() {
    require_root!();
    let d = Daemon::with_plugins(&["echo_py"]).await;
    let r = d.exec("echo_py", json!({"hello": "world"})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["echo"], json!({"hello": "world"}));
    assert_eq!(r["data"]["etc_passwd_users"], json!(["root", "plugin", "nobody"]));
    assert_eq!(r["data"]["etc_shadow"], "No such file or directory");
    assert_eq!(r["data"]["list_root"], "Permission denied");
    assert_eq!(r["data"]["cwd_files"], json!(["main.py", "plugin.toml"]));
    assert!(r["data"]["uid"].as_u64().unwrap() >= d.uid_base as u64);
    assert_eq!(r["layers"]["sandbox"]["landlock"]["status"], "fully_enforced");
    let r = d.exec("echo_py", json!({"fail": true})).await;
    assert_eq!((r["status"].as_str(), r["error"].as_str()), (Some("error"), Some("asked to fail")));
}

/// Set to 1 on a host without PyPI: the test that installs a package from it is skipped.
const SKIP_PYPI_ENV: &str = "IRONCLAW_TEST_SKIP_PYPI";

/// The ordinary recipe, in the plugin folder: `python3 -m venv venv`, then
/// `venv/bin/pip install -r requirements.txt` (a real package, from PyPI, at test time).
fn build_venv(plugin: &std::path::Path) -> bool {
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program).args(args).current_dir(plugin).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The system's Python: the one every sandbox has at the same path.
    let (made, why) = run("/usr/bin/python3", &["-m", "venv", "venv"]);
    assert!(made, "python3 -m venv failed: {why}");
    let (installed, why) =
        run("venv/bin/pip", &["install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"]);
    if !installed && std::env::var(SKIP_PYPI_ENV).as_deref() == Ok("1") {
        eprintln!("SKIPPED: cannot install from PyPI: {why}");
        return false;
    }
    assert!(installed, "pip install failed ({why}); set {SKIP_PYPI_ENV}=1 to skip on a host without PyPI");
    true
}

#[tokio::test]
async fn a_python_plugin_runs_its_own_venv_with_a_package_from_pypi() {
    require_root!();
    let dir = tempfile::Builder::new().prefix("ironclaw-test-").tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/test.toml"), common::DEFAULT_POLICY).unwrap();
    common::install_plugin(&dir.path().join("plugins"), "venv_py");
    if !build_venv(&dir.path().join("plugins/venv_py")) {
        return;
    }
    let d = Daemon::builder().reuse(dir).start().await;
    let info = d.get("/api/v1/plugins/venv_py").await.body;
    assert_eq!(info["state"], "enabled", "{info}");
    let r = d.exec("venv_py", json!({})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["six"], "1.17.0", "{r}");
    // The package comes from the venv in the plugin's (read-only) folder, over the system's Python.
    let from = r["data"]["from"].as_str().unwrap();
    assert!(from.starts_with("/run/ironclaw/plugin/venv/lib/python3"), "{r}");
    assert_eq!(r["data"]["base_prefix"], "/usr", "{r}");
    assert_eq!(r["layers"]["sandbox"]["landlock"]["status"], "fully_enforced");
}

#[tokio::test]
async fn a_blind_fallback_monitor_stops_executions_instead_of_ignoring_limits() {
    require_root!();
    let d = Daemon::builder().plugins(&["misbehave_native"]).without_capabilities(&["sys_ptrace"]).start().await;
    let system = d.get("/api/v1/system").await.body;
    let r = attack(&d, "misbehave_native", json!({"attack": "memory_bomb"})).await;
    if system["layers"]["resources"] == "cgroup_v2" {
        // cgroup v2 enforces limits without looking into the sandbox.
        assert_eq!(r["status"], "memory_limit", "{r}");
        return;
    }
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("CAP_SYS_PTRACE"), "{r}");
    assert!(system["host"]["missing_capabilities"][0].as_str().unwrap().starts_with("CAP_SYS_PTRACE"), "{system}");
    assert!(system["layers"]["resource_limits"]["memory"].as_str().unwrap().starts_with("NOT enforced"));
    assert!(d.log().contains("the daemon lacks capabilities it needs"));
}

#[tokio::test]
async fn policy_requirements_fail_closed() {
    require_root!();
    let d = Daemon::builder()
        .plugins(&["calculator"])
        .policy("[sandbox]\nrequire = [\"seccomp\", \"cgroup_v2\"]\n")
        .start()
        .await;
    let r = d.exec("calculator", json!({"expression": "1+1"})).await;
    if d.resources().await == "cgroup_v2" {
        // This host meets the requirement: the execution runs, and says what held it.
        assert_eq!(
            (r["status"].as_str(), r["layers"]["resources"].as_str()),
            (Some("success"), Some("cgroup_v2")),
            "{r}"
        );
    } else {
        refused_for_cgroup_v2(&d, &r).await;
    }

    let d = Daemon::builder().plugins(&["calculator"]).policy("[sandbox]\nlandlock_min_abi = 99\n").start().await;
    let r = d.exec("calculator", json!({"expression": "1+1"})).await;
    assert_eq!(r["status"], "denied");
    assert!(r["error"].as_str().unwrap().contains("ABI 99"), "{r}");
}

/// A host without cgroup v2 refuses an execution that requires it, before any runner, and
/// audits the refusal.
async fn refused_for_cgroup_v2(d: &Daemon, r: &Value) {
    assert_eq!(r["status"], "denied", "{r}");
    assert!(r["error"].as_str().unwrap().contains("cgroup_v2"), "{r}");
    assert!(r["layers"]["sandbox"].is_null(), "no runner was started");
    let system = d.get("/api/v1/system").await.body;
    assert_eq!(system["policy"]["executions_allowed"], false);
    assert!(d.log().contains("policy requirements are NOT met"));
    let audited = d.audit().into_iter().find(|r| r["event"] == "denied" && r["reason"] == "policy");
    let audited = audited.expect("the refusal is audited");
    assert_eq!((audited["plugin"].as_str(), audited["execution"].as_str()), (Some("calculator"), r["id"].as_str()));
    assert!(audited["why"].as_str().unwrap().contains("cgroup_v2"), "{audited}");
}

#[tokio::test]
async fn runners_die_with_a_killed_daemon() {
    require_root!();
    let mut d = hostile().await;
    for plugin in BOTH {
        let a = d
            .client()
            .post(
                &format!("/api/v1/plugins/{plugin}/execute"),
                &json!({"parameters": {"attack": "fork_bomb", "max": 3}, "wait": false}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 202);
        let a = d
            .client()
            .post(
                &format!("/api/v1/plugins/{plugin}/execute"),
                &json!({"parameters": {"attack": "sleep", "seconds": 60}, "wait": false}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 202);
    }
    // Busy runners, their plugins' children, and the idle pre-started runners.
    common::wait_until("4 busy runners (outer + inner), 2 idle ones and their plugins run", async || {
        d.runner_processes().len() >= 4 * 2 + 2 && !d.sandbox_processes().is_empty()
    })
    .await;
    let runners = d.runner_processes();
    d.kill9();
    let left = d.settled_sandbox_processes().await;
    assert!(left.is_empty(), "runners outlived the daemon: {left:?}");
    let left = common::settled_runners(&runners).await;
    assert!(left.is_empty(), "runners outlived the daemon: {left:?}");
}

#[test]
fn runner_refuses_to_start_without_the_daemon() {
    // Started by hand with no spec on stdin, a runner fails at set-up and runs nothing.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ironclawd"))
        .arg("__runner")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(125), "{err}");
}
