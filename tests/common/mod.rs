//! Test harness: starts the real `ironclawd` on a temporary socket, with copies of the plugins
//! it needs, and talks to it with the same client as the CLI.
#![allow(dead_code)]

pub mod upstreams;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ironclaw_cli::client::{Answer, Client, Endpoint};
use serde_json::{Value, json};

/// Set to 1 to let tests that need root skip (loudly) instead of failing.
pub const SKIP_ENV: &str = "IRONCLAW_TEST_SKIP_PRIVILEGED";
/// Set to `fallback` or `cgroup_v2` to declare which resource backend this host must give.
pub const EXPECT_RESOURCES_ENV: &str = "IRONCLAW_TEST_EXPECT_RESOURCES";

/// Fails the test unless running as root, or skips it loudly when SKIP_ENV=1.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            if std::env::var(common::SKIP_ENV).as_deref() == Ok("1") {
                eprintln!("SKIPPED {}: needs root (namespaces, uid switch)", module_path!());
                return;
            }
            panic!("this test needs root (namespaces, uid switch); set {}=1 to skip it explicitly", common::SKIP_ENV);
        }
    };
}

/// `target/debug`, where cargo put the daemon and the fixture plugins.
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ironclawd")).parent().unwrap().to_path_buf()
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built artifact each plugin needs in its folder.
fn artifact(plugin: &str) -> Option<&'static str> {
    match plugin {
        "calculator" => Some("libcalculator.so"),
        "misbehave_native" | "misbehave_throttled" | "misbehave_hoarder" | "granted_native" | "granted_paths" => {
            Some("libmisbehave.so")
        }
        "misbehave_exec" | "granted_exec" => Some("misbehave-exec"),
        "file_ops" => Some("libfile_ops.so"),
        "weather" => Some("libweather.so"),
        "web_search" => Some("libweb_search.so"),
        "ctor_native" => Some("libctor_fixture.so"),
        "abi_mismatch" => Some("libabi_mismatch.so"),
        _ => None,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "src" && entry.file_name() != "target" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies a plugin folder (from `plugins/` or `tests/fixtures/plugins/`) with its built artifact.
pub fn install_plugin(plugins_dir: &Path, name: &str) {
    let repo = repo_dir();
    let source = [repo.join("plugins").join(name), repo.join("tests/fixtures/plugins").join(name)]
        .into_iter()
        .find(|p| p.join("plugin.toml").is_file())
        .unwrap_or_else(|| panic!("no plugin folder for {name}"));
    let dest = plugins_dir.join(name);
    copy_dir(&source, &dest);
    if let Some(file) = artifact(name) {
        let built = target_dir().join(file);
        assert!(
            built.is_file(),
            "{} is missing: build the workspace first (`make test` does: cargo build --workspace)",
            built.display()
        );
        std::fs::copy(&built, dest.join(file)).unwrap();
    }
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub uid_base: u32,
    pub max_concurrent: u32,
    child: Option<Child>,
}

pub struct DaemonBuilder {
    plugins: Vec<String>,
    policy: String,
    config: String,
    max_concurrent: u32,
    max_queued: u32,
    dir: Option<tempfile::TempDir>,
    dropped_capabilities: Vec<String>,
    tcp: bool,
    secrets: Option<String>,
    proxy_hosts: Vec<(String, String)>,
    env: Vec<(String, String)>,
    socket_activated: bool,
    api: String,
}

/// The tokens of `DaemonBuilder::tcp`'s API, one per scope.
pub const TCP_ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const TCP_EXECUTE_TOKEN: &str = "test-execute-token-0123456789";

pub const DEFAULT_POLICY: &str = "[sandbox]\nrequire = [\"namespaces\", \"landlock\", \"seccomp\"]\n";

impl DaemonBuilder {
    pub fn plugins(mut self, names: &[&str]) -> Self {
        self.plugins = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn policy(mut self, text: &str) -> Self {
        self.policy = text.to_string();
        self
    }

    /// Extra TOML appended to the generated config file, inside its `[runner]` table (open a
    /// new table for other sections).
    pub fn config(mut self, text: &str) -> Self {
        self.config = text.to_string();
        self
    }

    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = n;
        self
    }

    pub fn max_queued(mut self, n: u32) -> Self {
        self.max_queued = n;
        self
    }

    /// Starts the daemon without these capabilities (e.g. "sys_ptrace"), through setpriv.
    pub fn without_capabilities(mut self, caps: &[&str]) -> Self {
        self.dropped_capabilities = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Also listens on TCP, on a free port of 127.0.0.1 (see [`Daemon::tcp_url`]).
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// Writes a root-only secrets file with this TOML and points the daemon at it.
    pub fn secrets(mut self, toml: &str) -> Self {
        self.secrets = Some(toml.to_string());
        self
    }

    /// A static host entry of the egress proxy: `name` ("host" or "host:port") to `target`.
    pub fn proxy_host(mut self, name: &str, target: &str) -> Self {
        self.proxy_hosts.push((name.to_string(), target.to_string()));
        self
    }

    /// Extra TOML inside the generated config's `[api]` table.
    pub fn api(mut self, text: &str) -> Self {
        self.api = text.to_string();
        self
    }

    /// An environment variable for the daemon (e.g. systemd's NOTIFY_SOCKET).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the daemon through `systemd-socket-activate`, which listens on the API socket and
    /// passes it (LISTEN_FDS) when the first client connects.
    pub fn socket_activated(mut self) -> Self {
        self.socket_activated = true;
        self
    }

    /// Reuses the directory (plugins, policies, state) of an earlier daemon.
    pub fn reuse(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> Daemon {
        let fresh = self.dir.is_none();
        let dir = self.dir.unwrap_or_else(|| tempfile::Builder::new().prefix("ironclaw-test-").tempdir().unwrap());
        let root = dir.path();
        if fresh {
            std::fs::create_dir_all(root.join("plugins")).unwrap();
            std::fs::create_dir_all(root.join("policies")).unwrap();
            for p in &self.plugins {
                install_plugin(&root.join("plugins"), p);
            }
            std::fs::write(root.join("policies/test.toml"), &self.policy).unwrap();
        }
        let socket = root.join("api.sock");
        let mut top = String::new();
        if let Some(secrets) = &self.secrets {
            use std::os::unix::fs::PermissionsExt;
            let file = root.join("secrets.toml");
            std::fs::write(&file, secrets).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            top.push_str(&format!("secrets_file = {file:?}\n"));
        }
        let hosts: String = self.proxy_hosts.iter().map(|(k, v)| format!("{k:?} = {v:?}\n")).collect();
        let tcp_api = if self.tcp {
            use std::os::unix::fs::PermissionsExt;
            let tokens = root.join("tokens.toml");
            std::fs::write(
                &tokens,
                format!(
                    "admin = {{ token = {TCP_ADMIN_TOKEN:?}, scope = \"admin\" }}\n\
                     exec = {{ token = {TCP_EXECUTE_TOKEN:?}, scope = \"execute\" }}\n"
                ),
            )
            .unwrap();
            std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!("tcp = \"127.0.0.1:0\"\ntokens_file = {tokens:?}\n")
        } else {
            String::new()
        };
        let config = format!(
            "plugins_dir = {:?}\npolicies_dir = {:?}\nstate_dir = {:?}\n{top}[proxy.hosts]\n{hosts}[api]\nsocket = {:?}\n{}{}\
             [executions]\nmax_concurrent = {}\nmax_queued = {}\n[runner]\n{}",
            root.join("plugins"),
            root.join("policies"),
            root.join("state"),
            socket,
            self.api,
            tcp_api,
            self.max_concurrent,
            self.max_queued,
            self.config
        );
        std::fs::write(root.join("ironclawd.toml"), config).unwrap();
        let log = std::fs::File::create(root.join("daemon.log")).unwrap();
        let mut command = if self.socket_activated {
            let mut activate = Command::new("systemd-socket-activate");
            activate.arg("-l").arg(&socket).arg(env!("CARGO_BIN_EXE_ironclawd"));
            activate
        } else if self.dropped_capabilities.is_empty() {
            Command::new(env!("CARGO_BIN_EXE_ironclawd"))
        } else {
            let drop: Vec<String> = self.dropped_capabilities.iter().map(|c| format!("-{c}")).collect();
            let mut setpriv = Command::new("setpriv");
            setpriv.arg("--bounding-set").arg(drop.join(",")).arg("--").arg(env!("CARGO_BIN_EXE_ironclawd"));
            setpriv
        };
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(root.join("ironclawd.toml"))
            .arg("--log-level")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { dir, socket, uid_base: 0, max_concurrent: self.max_concurrent, child: Some(child) };
        daemon.wait_ready().await;
        // Each daemon claims an id range of its own (as with the default config on any host),
        // so rlimits that count per uid never mix executions of concurrent tests.
        let system = daemon.get("/api/v1/system").await.body;
        daemon.uid_base =
            system["ids"]["uid_base"].as_u64().unwrap_or_else(|| panic!("no id range in {system}")) as u32;
        daemon
    }
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            plugins: vec![],
            policy: DEFAULT_POLICY.into(),
            config: String::new(),
            max_concurrent: 4,
            max_queued: 64,
            dir: None,
            dropped_capabilities: vec![],
            tcp: false,
            secrets: None,
            proxy_hosts: vec![],
            env: vec![],
            socket_activated: false,
            api: String::new(),
        }
    }

    pub async fn with_plugins(names: &[&str]) -> Daemon {
        Self::builder().plugins(names).start().await
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) = self.client().get("/healthz").await
                && a.status == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ironclawd exited with {status} during start-up:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "ironclawd did not start:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A plugin's workspace as the daemon sees it: its filesystem is mounted in the daemon's
    /// own mount namespace, so the host's view of the same path is an empty directory.
    pub fn workspace(&self, plugin: &str) -> PathBuf {
        let state = self.dir.path().join("state/workspaces").join(plugin);
        Path::new(&format!("/proc/{}/root", self.pid())).join(state.strip_prefix("/").unwrap())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.client().get(path).await.unwrap()
    }

    /// Executes and expects HTTP 200 (a completed execution, whatever its status).
    pub async fn exec(&self, plugin: &str, parameters: Value) -> Value {
        let a = self
            .client()
            .post(&format!("/api/v1/plugins/{plugin}/execute"), &json!({"parameters": parameters}))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "execute {plugin} answered {}: {}", a.status, a.body);
        a.body
    }

    /// The TCP API's URL, from the daemon's "listening" log line (the port is chosen at bind).
    pub fn tcp_url(&self) -> String {
        let log = self.log();
        let addr = log
            .lines()
            .filter(|l| l.contains("listening"))
            .find_map(|l| l.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next()))
            .unwrap_or_else(|| panic!("no TCP listener in the log:\n{log}"));
        format!("http://{addr}")
    }

    /// The resource backend the daemon enforces limits with (`fallback` or `cgroup_v2`). When
    /// `IRONCLAW_TEST_EXPECT_RESOURCES` is set, the daemon must report that one: a host that was
    /// meant to delegate cgroup v2 and does not fails loudly instead of testing the fallback.
    pub async fn resources(&self) -> String {
        let system = self.get("/api/v1/system").await.body;
        let backend = system["layers"]["resources"].as_str().unwrap_or_else(|| panic!("no backend in {system}"));
        if let Ok(expected) = std::env::var(EXPECT_RESOURCES_ENV) {
            assert_eq!(backend, expected, "{EXPECT_RESOURCES_ENV}={expected}, the daemon reports {backend}");
        }
        backend.to_string()
    }

    /// The audit log's records, in order (every line must be a JSON object).
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("state/audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"))).collect()
    }

    /// Runs the `ironclaw` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ironclaw")).arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }

    /// Processes on the host running as one of this daemon's execution uids.
    pub fn sandbox_processes(&self) -> Vec<u32> {
        let range = self.uid_base..self.uid_base + self.max_concurrent;
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
            if uid.is_some_and(|u| range.contains(&u)) {
                found.push(pid);
            }
        }
        found
    }

    /// The daemon's runner processes (`ironclawd __runner`, idle or busy) and their descendants.
    pub fn runner_processes(&self) -> Vec<u32> {
        let children = |pid: u32| -> Vec<u32> {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
            tasks
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
                .collect()
        };
        let mut found = Vec::new();
        let mut queue: Vec<u32> = children(self.pid()).into_iter().filter(|&p| is_runner(p)).collect();
        while let Some(pid) = queue.pop() {
            found.push(pid);
            queue.extend(children(pid));
        }
        found
    }

    /// Waits (bounded) until the daemon shows `running` executions running and `queued`
    /// waiting for a slot.
    pub async fn wait_executions(&self, running: u64, queued: u64) {
        wait_until(&format!("{running} executions running and {queued} queued"), async || {
            let e = &self.get("/api/v1/system").await.body["executions"];
            e["running"] == running && e["queued"] == queued
        })
        .await;
    }

    /// Waits until no sandbox process of this daemon is left (bounded), and returns what is.
    pub async fn settled_sandbox_processes(&self) -> Vec<u32> {
        settle(|| self.sandbox_processes()).await
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ironclawd did not stop on SIGTERM:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the daemon and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Stops the daemon and hands back its directory, for a restart on the same state.
    pub async fn into_dir(mut self) -> tempfile::TempDir {
        self.stop().await;
        let dir = tempfile::Builder::new().tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `pid` is (still) an Ironclaw runner process.
pub fn is_runner(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"__runner"))
}

/// Waits (bounded) until none of `pids` is a runner any more; returns those that still are.
pub async fn settled_runners(pids: &[u32]) -> Vec<u32> {
    settle(|| pids.iter().copied().filter(|&p| is_runner(p)).collect()).await
}

/// Polls `check` until it holds; fails the test, naming `what`, after 15 s.
pub async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `left` until it is empty or 5 s have passed, and returns its last answer.
pub async fn settle(mut left: impl FnMut() -> Vec<u32>) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now_left = left();
        if now_left.is_empty() || Instant::now() > deadline {
            return now_left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test host: a network namespace of the test's own, joined to the host's namespace by a veth
/// pair (host side 10.213.x.y+1/30, test host +2). Only these addresses are ever used.
/// Removed on drop.
pub struct TestHost {
    netns: String,
    veth: String,
    pub host_side: std::net::Ipv4Addr,
    pub addr: std::net::Ipv4Addr,
}

static TEST_HOSTS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2's `ip` runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl TestHost {
    pub fn create() -> TestHost {
        let (pid, n) = (std::process::id(), TEST_HOSTS.fetch_add(1, Ordering::SeqCst));
        // A /30 of 10.213.0.0/16 per (test process, host); pids rarely collide modulo 16384.
        let base = ((pid + n * 7919) % 16384) * 4;
        let octets = |last: u32| std::net::Ipv4Addr::new(10, 213, (base >> 8) as u8, (base & 0xff) as u8 + last as u8);
        let host = TestHost {
            netns: format!("ictest-{pid}-{n}"),
            veth: format!("icv{}{n}", pid % 100_000),
            host_side: octets(1),
            addr: octets(2),
        };
        let peer = format!("{}p", host.veth);
        ip(&["netns", "add", &host.netns]);
        ip(&["link", "add", &host.veth, "type", "veth", "peer", "name", &peer, "netns", &host.netns]);
        ip(&["addr", "add", &format!("{}/30", host.host_side), "dev", &host.veth]);
        ip(&["link", "set", &host.veth, "up"]);
        ip(&["-n", &host.netns, "addr", "add", &format!("{}/30", host.addr), "dev", &peer]);
        ip(&["-n", &host.netns, "link", "set", &peer, "up"]);
        ip(&["-n", &host.netns, "link", "set", "lo", "up"]);
        host
    }

    /// Runs `f` on a thread inside the test host's network namespace: sockets it creates belong
    /// to the test host.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.netns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

/// One request a [`MockServer`] received.
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl MockRequest {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| decode(v))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a [`MockServer`] answers.
pub struct MockResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Wait this long before answering (a slow upstream).
    pub delay: Duration,
}

impl MockResponse {
    pub fn json(status: u16, body: Value) -> Self {
        MockResponse { status, content_type: "application/json", body: body.to_string(), delay: Duration::ZERO }
    }

    pub fn text(status: u16, content_type: &'static str, body: &str) -> Self {
        MockResponse { status, content_type, body: body.to_string(), delay: Duration::ZERO }
    }
}

type Handler = dyn Fn(&MockRequest) -> MockResponse + Send + Sync;

/// A local stand-in for a web API: HTTP/1.1 on a loopback address, one thread per connection,
/// every request recorded; over TLS with [`MockServer::start_tls`].
pub struct MockServer {
    pub addr: std::net::SocketAddr,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<MockRequest>>>,
    /// Every byte a TLS server received on the wire, before decryption.
    wire: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl MockServer {
    /// Listens on `ip` (a loopback address), port chosen by the kernel.
    pub fn start(ip: &str, handler: impl Fn(&MockRequest) -> MockResponse + Send + Sync + 'static) -> MockServer {
        Self::listen(ip, None, handler)
    }

    /// The same over TLS, with the certificate `tls` presents.
    pub fn start_tls(
        ip: &str,
        tls: std::sync::Arc<rustls::ServerConfig>,
        handler: impl Fn(&MockRequest) -> MockResponse + Send + Sync + 'static,
    ) -> MockServer {
        Self::listen(ip, Some(tls), handler)
    }

    fn listen(
        ip: &str,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
        handler: impl Fn(&MockRequest) -> MockResponse + Send + Sync + 'static,
    ) -> MockServer {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let wire = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
        let (seen, received) = (requests.clone(), wire.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, handler, tls, received) = (seen.clone(), handler.clone(), tls.clone(), received.clone());
                std::thread::spawn(move || match tls {
                    None => serve_one(stream, &seen, handler.as_ref()),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                        let recorded = Recorded { stream, received };
                        let mut tls = rustls::StreamOwned::new(connection, recorded);
                        serve_one(&mut tls, &seen, handler.as_ref());
                        tls.conn.send_close_notify();
                        let _ = std::io::Write::flush(&mut tls);
                    }
                });
            }
        });
        MockServer { addr, requests, wire }
    }

    /// The bytes a TLS server received before decryption (what the proxy forwarded).
    pub fn wire(&self) -> Vec<u8> {
        self.wire.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<MockRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// "127.0.0.2:PORT", for a static host entry of the daemon's proxy.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// Reads one request from `stream`, records it, answers it with `handler`.
fn serve_one<S: std::io::Read + std::io::Write>(
    stream: S,
    seen: &std::sync::Mutex<Vec<MockRequest>>,
    handler: &Handler,
) {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let request = MockRequest { method, target, headers };
    seen.lock().unwrap().push(request.clone());
    let response = handler(&request);
    std::thread::sleep(response.delay);
    let head = format!(
        "HTTP/1.1 {} Mock\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    let stream = reader.get_mut();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(response.body.as_bytes());
    let _ = stream.flush();
}

/// A TCP stream that keeps a copy of every byte read from it.
struct Recorded {
    stream: std::net::TcpStream,
    received: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl std::io::Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.received.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl std::io::Write for Recorded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A certificate authority made for one test (rcgen), and server certificates it signs.
pub struct TestCa {
    key: rcgen::KeyPair,
    certificate: rcgen::Certificate,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        TestCa { key, certificate }
    }

    /// Writes the CA's certificate as PEM to `path`, for `runner.ca_certificates`.
    pub fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.certificate.pem()).unwrap();
        path.to_path_buf()
    }

    /// A TLS server configuration presenting a certificate for `names`, signed by this CA.
    pub fn server(&self, names: &[&str]) -> std::sync::Arc<rustls::ServerConfig> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &self.certificate, &self.key).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.certificate.der().clone()], key)
            .unwrap();
        std::sync::Arc::new(config)
    }
}
