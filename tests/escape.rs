//! The adversarial escape suite: every known escape class, tried by purpose-built hostile
//! plugins (native and exec) through the real daemon. Each attempt asserts two things: it failed
//! in the expected way (the errno, the status, the proxy's refusal), and the host is untouched
//! (canary files unchanged, canary sockets never reached, a canary process alive, no stray
//! sandbox process or cgroup, the daemon healthy, no canary value in any answer). The suite
//! ends with a summary line, "N attempted, 0 escaped", that the README quotes.
//!
//! Traffic goes only to host loopback and to a test host in a network namespace the test makes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::Daemon;
use serde_json::{Value, json};

const NATIVE: &str = "misbehave_native";
const EXEC: &str = "misbehave_exec";
const BOTH: [&str; 2] = [NATIVE, EXEC];
/// Granted a workspace, egress through the proxy and a secret.
const GRANTED: &str = "granted_native";
/// Granted a workspace and another secret: the neighbour `GRANTED` must not reach.
const NEIGHBOUR: &str = "granted_exec";
/// A fifth of a CPU, for attacks on the CPU-share throttle.
const THROTTLED: &str = "misbehave_throttled";
/// Files as large as 16 MiB, for memory held outside the page tables.
const HOARDER: &str = "misbehave_hoarder";
const WORKSPACE: &str = "/run/ironclaw/workspace";
/// The size the policy below grants each workspace ("256KiB").
const WORKSPACE_SIZE: u64 = 256 * 1024;

const CANARY_TEXT: &str = "canary-file-secret-7f3a";
const CANARY_ENV: &str = "canary-host-env-91bd";
const SECRETS: &str = "FIXTURE_TOKEN = \"fixture-token-value\"\nOTHER_TOKEN = \"other-token-value\"\n";
/// Values that must never appear in any answer: a redacted secret is fine, a raw one is a leak.
const NEVER_SEEN: [&str; 4] = [CANARY_TEXT, CANARY_ENV, "fixture-token-value", "other-token-value"];

fn policy() -> String {
    format!(
        r#"{}
[plugins.granted_native]
reason = "escape suite"
network = ["allowed.test", "allowed.test:8080", "*.wild.test", "loopback.test", "metadata.test", "blocked.test"]
workspace = "256KiB"
secrets = ["FIXTURE_TOKEN"]

[plugins.granted_exec]
workspace = "256KiB"
secrets = ["OTHER_TOKEN"]
"#,
        common::DEFAULT_POLICY
    )
}

/// A check of an execution's answer that explains what it found wrong.
type Judgement = dyn Fn(&Value) -> Result<(), String>;

/// What an attempt must end in.
#[derive(Clone)]
enum Expect {
    /// The execution succeeded and the plugin saw this errno (`EACCES`, `EPERM`, ...).
    Errno(&'static str),
    /// The execution ended with this status (and, for `crashed`, this signal).
    Status(&'static str, Option<i32>),
    /// The egress proxy answered with this HTTP status.
    Proxy(u16),
    /// Anything else, checked by a function that explains a failure.
    Check(Rc<Judgement>),
}

struct Attempt {
    class: &'static str,
    name: String,
    plugin: &'static str,
    /// Set-up steps first (each must succeed), the attack itself last.
    steps: Vec<Value>,
    expect: Expect,
}

/// Collects the suite's attempts.
#[derive(Default)]
struct Suite(Vec<Attempt>);

impl Suite {
    fn add(&mut self, class: &'static str, name: &str, plugins: &[&'static str], steps: Vec<Value>, e: Expect) {
        for plugin in plugins {
            let (name, steps, expect) = (name.to_string(), steps.clone(), e.clone());
            self.0.push(Attempt { class, name, plugin, steps, expect });
        }
    }

    fn errno(
        &mut self,
        class: &'static str,
        name: &'static str,
        plugins: &[&'static str],
        attack: Value,
        errno: &'static str,
    ) {
        self.add(class, name, plugins, vec![attack], Expect::Errno(errno));
    }
}

fn errno_of(data: &Value) -> Option<&str> {
    data["errno_name"].as_str().or_else(|| data["outcome"]["errno_name"].as_str())
}

fn judge(expect: &Expect, r: &Value) -> Result<(), String> {
    let status = r["status"].as_str().unwrap_or_default();
    match expect {
        Expect::Errno(want) => {
            if status != "success" {
                return Err(format!("expected the plugin to observe {want}, but the execution ended {status}"));
            }
            match errno_of(&r["data"]) {
                Some(got) if got == *want => Ok(()),
                got => Err(format!("expected {want}, the plugin observed {got:?}")),
            }
        }
        Expect::Status(want, signal) => {
            let got_signal = r["signal"].as_i64().map(|s| s as i32);
            if status == *want && (signal.is_none() || *signal == got_signal) {
                Ok(())
            } else {
                Err(format!("expected status {want} (signal {signal:?}), got {status} (signal {got_signal:?})"))
            }
        }
        Expect::Proxy(code) => {
            let response = r["data"]["response"].as_str().unwrap_or_default();
            let line = response.lines().next().unwrap_or_default();
            if status == "success" && line.starts_with(&format!("HTTP/1.1 {code} ")) {
                Ok(())
            } else {
                Err(format!("expected the proxy to answer {code}, got {line:?} ({status})"))
            }
        }
        Expect::Check(check) => check(r),
    }
}

/// Everything an escape would disturb, observed from the host.
struct Canaries {
    dir: tempfile::TempDir,
    files: BTreeMap<PathBuf, Vec<u8>>,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    unix: Vec<UnixListener>,
    abstract_name: String,
    process: std::process::Child,
    cgroups: Vec<PathBuf>,
    _host: common::TestHost,
}

/// Every file under `root`, skipping `skip` (the daemon's own state and log).
fn files_under(root: &Path, skip: &[&str], into: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if skip.iter().any(|s| entry.file_name() == *s) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&path, skip, into);
        } else if kind.is_file() {
            into.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
}

/// The cgroup directories on this host that carry the daemon's name.
fn ironclaw_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            if entry.file_name().to_string_lossy().contains("ironclaw") {
                found.push(entry.path());
            }
            if depth < 4 {
                walk(&entry.path(), depth + 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 0, &mut found);
    found.sort();
    found
}

impl Canaries {
    fn plant(d: &Daemon, host: common::TestHost) -> Canaries {
        let dir = tempfile::Builder::new().prefix("ironclaw-canary-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, CANARY_TEXT).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
        let neighbour_note = d.workspace(NEIGHBOUR).join("note.txt");
        std::fs::write(&neighbour_note, CANARY_TEXT).unwrap();

        let unix_path = dir.path().join("canary.sock");
        let unix_file = UnixListener::bind(&unix_path).unwrap();
        std::fs::set_permissions(&unix_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        use std::os::linux::net::SocketAddrExt;
        let abstract_name = canary_abstract_name();
        let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        let unix_abstract = UnixListener::bind_addr(&abstract_addr).unwrap();
        let (host_tcp, host_udp) =
            host.inside(|| (TcpListener::bind((host.addr, 0)).unwrap(), UdpSocket::bind((host.addr, 0)).unwrap()));
        let tcp = vec![
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("[::1]:0").unwrap(),
            // The daemon's own interfaces count too: its TCP API is a canary of its own.
            host_tcp,
        ];
        let udp = vec![UdpSocket::bind("127.0.0.1:0").unwrap(), host_udp];
        for l in &tcp {
            l.set_nonblocking(true).unwrap();
        }
        for u in &udp {
            u.set_nonblocking(true).unwrap();
        }
        let unix = vec![unix_file, unix_abstract];
        for l in &unix {
            l.set_nonblocking(true).unwrap();
        }
        let process = std::process::Command::new("sleep").arg("600").spawn().unwrap();

        let mut files = BTreeMap::new();
        files_under(dir.path(), &[], &mut files);
        files_under(d.dir.path(), &["state", "daemon.log", "audit.jsonl"], &mut files);
        files.insert(neighbour_note, CANARY_TEXT.into());
        Canaries { dir, files, tcp, udp, unix, abstract_name, process, cgroups: ironclaw_cgroups(), _host: host }
    }

    fn secret(&self) -> PathBuf {
        self.dir.path().join("secret.txt")
    }

    fn tcp_addr(&self, i: usize) -> String {
        self.tcp[i].local_addr().unwrap().to_string()
    }

    fn udp_addr(&self, i: usize) -> String {
        self.udp[i].local_addr().unwrap().to_string()
    }

    /// Everything that shows the host was touched, after one attempt.
    async fn breaches(&mut self, d: &Daemon, allowed_processes: &[u32], answer: &Value) -> Vec<String> {
        let mut found = Vec::new();
        let mut now = BTreeMap::new();
        files_under(self.dir.path(), &[], &mut now);
        files_under(d.dir.path(), &["state", "daemon.log", "audit.jsonl"], &mut now);
        // Files watched one by one (a neighbour's workspace note) are read again the same way.
        for path in self.files.keys().filter(|p| !now.contains_key(*p)).cloned().collect::<Vec<_>>() {
            if let Ok(content) = std::fs::read(&path) {
                now.insert(path, content);
            }
        }
        for (path, before) in &self.files {
            if now.get(path) != Some(before) {
                found.push(format!("canary file {} changed or vanished", path.display()));
            }
        }
        for path in now.keys().filter(|p| !self.files.contains_key(*p)) {
            found.push(format!("a file appeared on the host: {}", path.display()));
        }
        for l in &self.tcp {
            if l.accept().is_ok() {
                found.push(format!("canary TCP listener {} was reached", l.local_addr().unwrap()));
            }
        }
        let mut buf = [0u8; 64];
        for u in &self.udp {
            if u.recv_from(&mut buf).is_ok() {
                found.push(format!("canary UDP socket {} received a datagram", u.local_addr().unwrap()));
            }
        }
        for l in &self.unix {
            if l.accept().is_ok() {
                found.push("a canary unix socket was reached".into());
            }
        }
        if self.process.try_wait().unwrap().is_some() {
            found.push("the canary host process was killed".into());
        }
        let stray: Vec<u32> =
            common::settle(|| d.sandbox_processes().into_iter().filter(|p| !allowed_processes.contains(p)).collect())
                .await;
        if !stray.is_empty() {
            found.push(format!("sandbox processes outlived their execution: {stray:?}"));
        }
        if ironclaw_cgroups() != self.cgroups {
            found.push(format!("cgroups changed: {:?} -> {:?}", self.cgroups, ironclaw_cgroups()));
        }
        if d.get("/healthz").await.status != 200 {
            found.push("the daemon stopped answering".into());
        }
        let text = answer.to_string();
        for value in NEVER_SEEN.iter().filter(|v| text.contains(*v)) {
            found.push(format!("a canary value reached the answer: {value}"));
        }
        found
    }
}

impl Drop for Canaries {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A name of its own for each set of canaries, as tests run side by side.
fn canary_abstract_name() -> String {
    static PLANTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PLANTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("ironclaw-escape-canary-{}-{n}", std::process::id())
}

fn attack(name: &str, extra: Value) -> Value {
    let mut v = extra;
    v["attack"] = json!(name);
    v
}

fn read(path: &str) -> Value {
    attack("read_file", json!({"path": path}))
}

fn write(path: &str) -> Value {
    attack("write_file", json!({"path": path}))
}

fn raw_syscall(nr: i64, args: &[i64]) -> Value {
    attack("syscall", json!({"nr": nr, "args": args}))
}

fn proxy(request_line: &str, host: &str) -> Value {
    attack("proxy_request", json!({"request": format!("{request_line} HTTP/1.1\r\nHost: {host}\r\n\r\n")}))
}

/// The errno the plugin saw at `pointer` in its observation (e.g. `/reply/errno_name`).
fn errno_at(pointer: &'static str, want: &'static str) -> Expect {
    check(move |r| match r["data"].pointer(pointer).and_then(Value::as_str) {
        Some(got) if got == want => Ok(()),
        got => Err(format!("expected {want} at {pointer}, got {got:?}: {}", r["data"])),
    })
}

/// `want` after fewer than `bound` of `counted` were made: a limit ended the attack, not its end.
fn stopped_below(counted: &'static str, bound: u64, want: &'static str) -> Expect {
    check(move |r| match (errno_of(&r["data"]), r["data"][counted].as_u64()) {
        (Some(got), Some(n)) if got == want && n < bound => Ok(()),
        _ => Err(format!("expected {want} with {counted} below {bound}: {}", r["data"])),
    })
}

/// Checks a field of the plugin's observation.
fn check(f: impl Fn(&Value) -> Result<(), String> + 'static) -> Expect {
    Expect::Check(Rc::new(f))
}

/// The attempts that need a live victim: another plugin's runner, sleeping.
fn process_attempts(s: &mut Suite, daemon_pid: u32, victim: u32) {
    use libc::*;
    let (daemon, victim) = (daemon_pid as i64, victim as i64);
    s.errno("process", "ptrace the daemon", &BOTH, raw_syscall(SYS_ptrace, &[PTRACE_ATTACH as i64, daemon]), "EPERM");
    s.errno(
        "process",
        "ptrace another runner",
        &BOTH,
        raw_syscall(SYS_ptrace, &[PTRACE_SEIZE as i64, victim]),
        "EPERM",
    );
    s.errno("process", "kill the daemon", &BOTH, attack("kill", json!({"pid": daemon})), "ESRCH");
    s.errno("process", "kill another runner", &BOTH, attack("kill", json!({"pid": victim})), "ESRCH");
    // Neither pid exists in the sandbox's own pid namespace and /proc.
    s.errno(
        "process",
        "write the daemon's memory through /proc/<pid>/mem",
        &BOTH,
        attack("open", json!({"path": format!("/proc/{daemon}/mem"), "write": true})),
        "ENOENT",
    );
    s.errno(
        "process",
        "write another runner's memory through /proc/<pid>/mem",
        &BOTH,
        attack("open", json!({"path": format!("/proc/{victim}/mem"), "write": true})),
        "ENOENT",
    );
    s.errno(
        "process",
        "write the sandbox init's memory through /proc/1/mem",
        &BOTH,
        attack("open", json!({"path": "/proc/1/mem", "write": true})),
        "EACCES",
    );
    s.errno(
        "process",
        "process_vm_writev into another runner",
        &BOTH,
        raw_syscall(SYS_process_vm_writev, &[victim, 0, 0, 0, 0, 0]),
        "EPERM",
    );
    s.errno("process", "pidfd_getfd from another runner", &BOTH, raw_syscall(SYS_pidfd_getfd, &[0, 0, 0]), "EPERM");
}

fn filesystem_attempts(s: &mut Suite, c: &Canaries, d: &Daemon) {
    let secret = c.secret().display().to_string();
    let canary_dir = c.dir.path().display().to_string();
    let plugins = d.dir.path().join("plugins");
    let neighbour_ws = d.dir.path().join("state/workspaces").join(NEIGHBOUR);
    // The sandbox's root is its own: the host's files are absent (ENOENT), and what the root
    // holds but does not grant, Landlock refuses (EACCES).
    s.errno("filesystem", "read an absolute path (/etc/shadow)", &BOTH, read("/etc/shadow"), "ENOENT");
    s.errno("filesystem", "read a world-readable host file", &BOTH, read(&secret), "ENOENT");
    s.errno("filesystem", "climb out with ..", &BOTH, read("../../../../../../../etc/shadow"), "ENOENT");
    s.errno(
        "filesystem",
        "write a world-writable host directory",
        &BOTH,
        write(&format!("{canary_dir}/escaped")),
        "ENOENT",
    );
    s.errno("filesystem", "write /dev/shm", &BOTH, write("/dev/shm/ironclaw-escape"), "ENOENT");
    s.errno("filesystem", "write the sandbox's root", &BOTH, write("/ironclaw-escape"), "EROFS");
    s.errno("filesystem", "through /proc/1/root", &BOTH, read(&format!("/proc/1/root{secret}")), "EACCES");
    s.errno("filesystem", "through /proc/self/root", &BOTH, read("/proc/self/root/etc/shadow"), "ENOENT");
    s.errno(
        "filesystem",
        "list /proc/self/fd for inherited descriptors",
        &BOTH,
        attack("fd_scan", json!({})),
        "EACCES",
    );
    // Reopening works for what a plugin already holds (pipes, sockets, its request memfd,
    // /dev/null, its own read-only folder and artifact) and must reach nothing else.
    s.add(
        "filesystem",
        "reopen inherited descriptors through /proc/self/fd",
        &BOTH,
        vec![attack("reopen_fds", json!({}))],
        check(|r| {
            let reopened = r["data"]["reopened"].as_object().ok_or("no answer")?;
            let own = |fd: &Value| {
                let target = fd["target"].as_str().unwrap_or_default();
                matches!(fd["kind"].as_str(), Some("fifo" | "socket"))
                    || target == "/dev/null"
                    || target.starts_with("/memfd:")
                    || target == "/run/ironclaw/plugin"
                    || target.starts_with("/run/ironclaw/plugin/")
            };
            match reopened.iter().find(|(_, fd)| !own(fd)) {
                None if !reopened.is_empty() => Ok(()),
                None => Err("nothing reopened: the attack did not run".into()),
                Some((n, fd)) => Err(format!("descriptor {n} reopened: {fd}")),
            }
        }),
    );
    s.add(
        "filesystem",
        "follow a symlink planted in the workspace",
        &[GRANTED],
        vec![
            attack("symlink", json!({"target": secret, "link": format!("{WORKSPACE}/link")})),
            read(&format!("{WORKSPACE}/link")),
        ],
        Expect::Errno("ENOENT"),
    );
    s.errno(
        "filesystem",
        "follow a symlink planted from the host",
        &[GRANTED],
        read(&format!("{WORKSPACE}/planted")),
        "ENOENT",
    );
    s.errno(
        "filesystem",
        "hard-link a host file into the workspace",
        &[GRANTED],
        attack("hardlink", json!({"target": secret, "link": format!("{WORKSPACE}/hard")})),
        "ENOENT",
    );
    // mknod is not on the seccomp allowlist at all: FIFOs and device nodes look unsupported.
    s.errno(
        "filesystem",
        "make a FIFO on the host",
        &BOTH,
        attack("mknod", json!({"path": format!("{canary_dir}/fifo"), "mode": libc::S_IFIFO | 0o666})),
        "ENOSYS",
    );
    s.errno(
        "filesystem",
        "make a FIFO in the workspace",
        &[GRANTED],
        attack("mknod", json!({"path": format!("{WORKSPACE}/fifo"), "mode": libc::S_IFIFO | 0o666})),
        "ENOSYS",
    );
    s.errno(
        "filesystem",
        "make a device node (/dev/mem) in the workspace",
        &[GRANTED],
        attack(
            "mknod",
            json!({"path": format!("{WORKSPACE}/mem"), "mode": libc::S_IFCHR | 0o666, "dev": libc::makedev(1, 1)}),
        ),
        "ENOSYS",
    );
    s.add(
        "filesystem",
        "make a setuid program in the workspace and run it",
        &[GRANTED],
        vec![
            attack("copy", json!({"from": "/usr/bin/true", "to": format!("{WORKSPACE}/suid")})),
            attack("chmod", json!({"path": format!("{WORKSPACE}/suid"), "mode": 0o4755})),
            attack("exec", json!({"path": format!("{WORKSPACE}/suid")})),
        ],
        Expect::Errno("EACCES"),
    );
    s.errno(
        "filesystem",
        "run a root-owned setuid program planted in the workspace",
        &[GRANTED],
        attack("exec", json!({"path": format!("{WORKSPACE}/planted-suid"), "args": ["euid"]})),
        "EACCES",
    );
    s.add(
        "filesystem",
        "run a setuid-root program shipped in the plugin folder",
        &[EXEC],
        vec![attack("exec", json!({"path": "./suid-helper", "args": ["euid"]}))],
        check(|r| {
            let euid = r["data"]["stdout"].as_str().unwrap_or_default().trim().parse::<u32>();
            match euid {
                Ok(euid) if euid != 0 => Ok(()),
                _ => Err(format!("the helper's euid: {}", r["data"])),
            }
        }),
    );
    s.errno("filesystem", "write its own plugin folder", &BOTH, write("plugin.toml"), "EROFS");
    s.errno(
        "filesystem",
        "write another plugin's folder",
        &BOTH,
        write(&plugins.join(NEIGHBOUR).join("plugin.toml").display().to_string()),
        "ENOENT",
    );
    s.errno(
        "filesystem",
        "read another plugin's workspace",
        &[GRANTED],
        read(&neighbour_ws.join("note.txt").display().to_string()),
        "ENOENT",
    );
    s.errno(
        "filesystem",
        "write another plugin's workspace",
        &[GRANTED],
        write(&neighbour_ws.join("note.txt").display().to_string()),
        "ENOENT",
    );
}

/// The sandbox's root holds only what plugins need: the host's directories are absent, not
/// merely unreadable, so not even their metadata or names are reachable.
fn root_attempts(s: &mut Suite, c: &Canaries, d: &Daemon) {
    let stat = |path: &str| attack("stat", json!({"path": path}));
    let state = d.dir.path().join("state").display().to_string();
    let canary_dir = c.dir.path().display().to_string();
    let absent = [
        ("the host's /home", "/home"),
        ("the host's /root", "/root"),
        ("the host's /var", "/var"),
        ("the host's /srv and /opt", "/opt"),
        ("the host's /boot", "/boot"),
        ("the host's /run (systemd, D-Bus)", "/run/systemd"),
        ("the host's /tmp (a directory in it)", &canary_dir),
        ("the daemon's state directory", &state),
        ("/dev/shm", "/dev/shm"),
        ("/sys", "/sys"),
    ];
    for (what, path) in absent {
        s.add("root", &format!("stat {what}"), &BOTH, vec![stat(path)], Expect::Errno("ENOENT"));
    }
    // The same call works on what the root holds: the answers above are absence, not a refusal.
    s.errno("root", "stat a system file the root holds", &BOTH, stat("/usr/bin/true"), "OK");
    s.add(
        "root",
        "list /tmp for the host's files",
        &BOTH,
        vec![attack("list_dir", json!({"path": "/tmp"}))],
        check(|r| match r["data"]["entries"].as_array() {
            Some(entries) if entries.is_empty() => Ok(()),
            _ => Err(format!("expected the sandbox's own, empty /tmp: {}", r["data"])),
        }),
    );
    s.errno("root", "list /", &BOTH, attack("list_dir", json!({"path": "/"})), "EACCES");
    s.errno("root", "list /etc", &BOTH, attack("list_dir", json!({"path": "/etc"})), "EACCES");
    s.add(
        "root",
        "read the host's users from /etc/passwd",
        &BOTH,
        vec![read("/etc/passwd")],
        check(|r| {
            let content = r["data"]["content"].as_str().unwrap_or_default();
            let users: Vec<&str> = content.lines().filter_map(|l| l.split(':').next()).collect();
            if users == ["root", "plugin", "nobody"] {
                Ok(())
            } else {
                Err(format!("expected the sandbox's own users: {users:?}"))
            }
        }),
    );
}

fn credential_attempts(s: &mut Suite) {
    use libc::*;
    s.errno("process", "setuid(0)", &BOTH, raw_syscall(SYS_setuid, &[0]), "EPERM");
    s.errno("process", "setgid(0)", &BOTH, raw_syscall(SYS_setgid, &[0]), "EPERM");
    s.errno("process", "setgroups", &BOTH, raw_syscall(SYS_setgroups, &[0, 0]), "EPERM");
    s.errno("process", "capset", &BOTH, raw_syscall(SYS_capset, &[0, 0]), "EPERM");
    s.errno(
        "process",
        "a new user namespace (unshare)",
        &BOTH,
        raw_syscall(SYS_unshare, &[CLONE_NEWUSER as i64]),
        "EPERM",
    );
    s.errno(
        "process",
        "a new user namespace (clone)",
        &BOTH,
        raw_syscall(SYS_clone, &[(CLONE_NEWUSER | SIGCHLD) as i64, 0, 0, 0, 0]),
        "EPERM",
    );
    s.errno(
        "process",
        "clone with a new mount namespace",
        &BOTH,
        raw_syscall(SYS_clone, &[(CLONE_NEWNS | SIGCHLD) as i64, 0, 0, 0, 0]),
        "EPERM",
    );
    s.errno("process", "clone3 (flags hidden in memory)", &BOTH, raw_syscall(SYS_clone3, &[0, 0]), "ENOSYS");
    s.errno("process", "mount", &BOTH, attack("mount", json!({})), "EPERM");
    s.errno("process", "pivot_root", &BOTH, raw_syscall(SYS_pivot_root, &[0, 0]), "EPERM");
    s.errno("process", "chroot", &BOTH, raw_syscall(SYS_chroot, &[0]), "EPERM");
    s.errno("process", "setns", &BOTH, raw_syscall(SYS_setns, &[0, 0]), "EPERM");
    s.errno("process", "personality (READ_IMPLIES_EXEC)", &BOTH, raw_syscall(SYS_personality, &[0x0040_0000]), "EPERM");
}

fn kernel_attempts(s: &mut Suite) {
    use libc::*;
    let denied: [(&'static str, i64); 11] = [
        ("io_uring_setup", SYS_io_uring_setup),
        ("bpf", SYS_bpf),
        ("perf_event_open", SYS_perf_event_open),
        ("keyctl", SYS_keyctl),
        ("add_key", SYS_add_key),
        ("userfaultfd", SYS_userfaultfd),
        ("kexec_load", SYS_kexec_load),
        ("kexec_file_load", SYS_kexec_file_load),
        ("init_module", SYS_init_module),
        ("finit_module", SYS_finit_module),
        ("stacking a seccomp filter", SYS_seccomp),
    ];
    for (name, nr) in denied {
        s.errno("kernel", name, &BOTH, raw_syscall(nr, &[0, 0, 0]), "EPERM");
    }
    s.errno("kernel", "an x32 syscall (getpid | 0x40000000)", &BOTH, attack("x32_getpid", json!({})), "ENOSYS");
    #[cfg(target_arch = "x86_64")]
    s.add(
        "kernel",
        "the i386 int 0x80 entry point",
        &BOTH,
        vec![attack("i386_getpid", json!({}))],
        Expect::Status("crashed", Some(SIGSYS)),
    );
    for (name, request) in [
        ("TIOCSTI", TIOCSTI),
        ("TIOCSTI with high bits set", TIOCSTI | 0xFFFF_FFFF_0000_0000),
        ("TIOCLINUX", TIOCLINUX),
        ("TIOCLINUX with high bits set", TIOCLINUX | 0xFFFF_FFFF_0000_0000),
    ] {
        s.errno("kernel", name, &BOTH, raw_syscall(SYS_ioctl, &[0, request as i64, 0]), "EPERM");
    }
    // MPTCP is TCP that Landlock's TCP rules do not govern; SCTP is not governed at all.
    for (name, protocol) in [("MPTCP", IPPROTO_MPTCP), ("SCTP", IPPROTO_SCTP)] {
        for (family, domain) in [("IPv4", AF_INET), ("IPv6", AF_INET6)] {
            s.add(
                "kernel",
                &format!("an {name} socket over {family}"),
                &BOTH,
                vec![raw_syscall(SYS_socket, &[domain as i64, SOCK_STREAM as i64, protocol as i64])],
                Expect::Errno("EPROTONOSUPPORT"),
            );
        }
    }
    // prctl answers only the options a runtime uses.
    for (name, option) in [
        ("PR_SET_DUMPABLE (make /proc/<pid> readable again)", PR_SET_DUMPABLE),
        ("PR_SET_PTRACER (invite a tracer)", PR_SET_PTRACER),
        ("PR_SET_MM (rewrite its own memory map's bounds)", PR_SET_MM),
        ("PR_SET_SECCOMP (strict mode)", PR_SET_SECCOMP),
        ("PR_SET_CHILD_SUBREAPER", PR_SET_CHILD_SUBREAPER),
    ] {
        s.add(
            "kernel",
            &format!("prctl {name}"),
            &BOTH,
            vec![raw_syscall(SYS_prctl, &[option as i64, 1, 0])],
            Expect::Errno("EINVAL"),
        );
    }
}

fn env_names(r: &Value) -> Vec<&str> {
    r["data"]["env"].as_array().into_iter().flatten().filter_map(|kv| kv[0].as_str()).collect()
}

fn network_attempts(s: &mut Suite, c: &Canaries, d: &Daemon) {
    let (tcp4, tcp6, test_host_tcp) = (c.tcp_addr(0), c.tcp_addr(1), c.tcp_addr(2));
    let (udp4, test_host_udp) = (c.udp_addr(0), c.udp_addr(1));
    let port4 = c.tcp[0].local_addr().unwrap().port();
    let tcp = |addr: &str| attack("tcp_connect", json!({"addr": addr}));
    s.errno("network", "TCP to a host loopback listener", &BOTH, tcp(&tcp4), "EACCES");
    s.errno("network", "TCP to a host IPv6 loopback listener", &BOTH, tcp(&tcp6), "EACCES");
    s.errno(
        "network",
        "TCP to the daemon's API socket's peer (decimal 127.0.0.1)",
        &BOTH,
        tcp(&format!("2130706433:{port4}")),
        "EACCES",
    );
    s.errno("network", "TCP to a test host in another namespace", &BOTH, tcp(&test_host_tcp), "EACCES");
    // The datagram stays on the sandbox's own loopback, where nobody answers.
    s.add(
        "network",
        "UDP to a host loopback socket",
        &BOTH,
        vec![attack("udp_exchange", json!({"addr": udp4}))],
        errno_at("/reply/errno_name", "EAGAIN"),
    );
    // No route leaves the sandbox's network namespace.
    s.add(
        "network",
        "UDP to a test host in another namespace",
        &BOTH,
        vec![attack("udp_exchange", json!({"addr": test_host_udp}))],
        errno_at("/send/errno_name", "ENETUNREACH"),
    );
    s.errno(
        "network",
        "a raw IP socket",
        &BOTH,
        raw_syscall(libc::SYS_socket, &[libc::AF_INET as i64, libc::SOCK_RAW as i64, libc::IPPROTO_ICMP as i64]),
        "EPERM",
    );
    s.errno("network", "an AF_PACKET socket", &BOTH, attack("raw_socket", json!({})), "EAFNOSUPPORT");
    s.errno(
        "network",
        "AF_NETLINK: listen to the host's uevents",
        &BOTH,
        attack("netlink", json!({"protocol": libc::NETLINK_KOBJECT_UEVENT, "groups": 1})),
        "EPROTONOSUPPORT",
    );
    s.errno(
        "network",
        "AF_NETLINK: audit",
        &BOTH,
        attack("netlink", json!({"protocol": libc::NETLINK_AUDIT})),
        "EPROTONOSUPPORT",
    );
    s.errno(
        "network",
        "AF_UNIX to the daemon's API socket",
        &BOTH,
        attack("unix_connect", json!({"path": d.socket.display().to_string()})),
        "EAFNOSUPPORT",
    );
    s.errno(
        "network",
        "AF_UNIX to a world-writable host socket",
        &BOTH,
        attack("unix_connect", json!({"path": c.dir.path().join("canary.sock").display().to_string()})),
        "EAFNOSUPPORT",
    );
    s.errno(
        "network",
        "an abstract unix socket",
        &BOTH,
        attack("unix_connect", json!({"name": c.abstract_name})),
        "EAFNOSUPPORT",
    );
    // Through the egress proxy: the plugin is granted loopback.test, which resolves to 127.0.0.1.
    s.add(
        "network",
        "DNS rebinding: an allowed name resolving to loopback",
        &[GRANTED],
        vec![proxy(&format!("GET http://loopback.test:{port4}/"), "loopback.test")],
        Expect::Proxy(403),
    );
    s.add(
        "network",
        "CONNECT to a disallowed port of an allowed host",
        &[GRANTED],
        vec![proxy("CONNECT allowed.test:22", "allowed.test:22")],
        Expect::Proxy(403),
    );
    // Names the plugin is granted (*.wild.test) whose address is an IPv6 form carrying a
    // restricted IPv4 address to its destination: refused by the address table, not the grant.
    for (form, name) in [
        ("IPv4-mapped loopback", "mapped.wild.test"),
        ("IPv4-compatible loopback", "compatible.wild.test"),
        ("NAT64 (64:ff9b::/96) loopback", "nat64.wild.test"),
        ("NAT64 local-use (64:ff9b:1::/48) loopback", "nat64-local.wild.test"),
        ("6to4 cloud metadata", "sixtofour.wild.test"),
        ("Teredo loopback", "teredo.wild.test"),
        ("the IPv6 cloud metadata address", "metadata6.wild.test"),
    ] {
        s.add(
            "network",
            &format!("a granted name resolving to {form}"),
            &[GRANTED],
            vec![proxy(&format!("CONNECT {name}:{port4}"), &format!("{name}:{port4}"))],
            Expect::Proxy(403),
        );
    }
    for (name, host) in [
        ("an IPv4 literal aimed at loopback", "127.0.0.1".to_string()),
        ("an IPv6 literal aimed at loopback", "[::1]".to_string()),
        ("an IPv4-mapped IPv6 literal", "[::ffff:127.0.0.1]".to_string()),
        ("a decimal IP", "2130706433".to_string()),
        ("a hex IP", "0x7f000001".to_string()),
        ("an octal IP", "0177.0.0.1".to_string()),
        ("a short-form IP", "127.1".to_string()),
    ] {
        let target = format!("{host}:{port4}");
        s.add(
            "network",
            &format!("CONNECT through the proxy to {name}"),
            &[GRANTED],
            vec![proxy(&format!("CONNECT {target}"), &target)],
            Expect::Proxy(403),
        );
    }
}

/// Limits walked around: CPU time where no parent collects it, a throttle the sandbox tries to
/// undo, memory that no process maps. `backend` is the daemon's resource backend: cgroup v2
/// counts every kind of memory, the fallback refuses what it cannot count.
fn resource_attempts(s: &mut Suite, backend: &str) {
    for (how, reap) in [
        ("fork", "sig_ign"),
        ("fork", "nocldwait"),
        ("vfork", "sig_ign"),
        ("clone_parent", "none"),
        ("double_fork", "wait"),
        ("threads", "none"),
    ] {
        let workers = attack("unreaped_children", json!({"how": how, "reap": reap, "count": 1000, "child_ms": 40}));
        s.add(
            "resources",
            &format!("CPU time in {how} workers ({reap})"),
            if how == "fork" { &BOTH } else { &[NATIVE] },
            vec![workers],
            check(|r| match (r["status"].as_str(), r["cpu_time_ms"].as_u64()) {
                (Some("cpu_limit"), Some(cpu)) if cpu >= 1000 => Ok(()),
                _ => Err(format!("expected cpu_limit with the workers' CPU counted: {r}")),
            }),
        );
    }
    for (how, spinners) in [("kill", 1), ("kill", 2), ("timer", 1)] {
        s.add(
            "resources",
            &format!("undo the CPU share with {how} ({spinners} spinners)"),
            &[THROTTLED],
            vec![attack("throttle_escape", json!({"how": how, "spinners": spinners}))],
            // Held, the share is 0.2 plus what runs after the deadline (the freezer lets go so
            // the plugin can act on SIGTERM) and the last monitor tick's debt: up to about 0.35
            // on a loaded 2-core host. Undone, it is 1 per spinner.
            check(|r| {
                let share = r["cpu_time_ms"].as_f64().unwrap_or(0.0) / r["duration_ms"].as_f64().unwrap_or(1.0);
                match r["status"].as_str() {
                    Some("timeout") if (0.1..=0.35).contains(&share) => Ok(()),
                    _ => Err(format!("expected the 0.2 share held (got {share:.2}): {r}")),
                }
            }),
        );
    }
    let fallback = backend == "fallback";
    for (how, refused) in [("memfd", "EPERM"), ("shared_anon", "EPERM"), ("dev_zero", "EACCES"), ("noreserve", "")] {
        s.add(
            "resources",
            &format!("memory in {how} pages"),
            &[HOARDER],
            vec![attack("hidden_memory", json!({"how": how, "count": 64, "mib": 16}))],
            check(move |r| {
                let seen = errno_of(&r["data"]["failure"]).unwrap_or("");
                match r["status"].as_str() {
                    Some("memory_limit") => Ok(()),
                    Some("success") if fallback && seen == refused && r["data"]["held_mib"] == 0 => Ok(()),
                    _ => Err(format!("expected memory_limit (or {refused} under the fallback): {r}")),
                }
            }),
        );
    }
    s.add(
        "resources",
        "memory in socket buffers of three processes",
        &[HOARDER],
        vec![attack("hidden_memory", json!({"how": "socketpairs", "count": 120, "processes": 3, "hold_seconds": 2}))],
        Expect::Status("memory_limit", None),
    );
    s.add(
        "resources",
        "memory in files of the sandbox's /tmp",
        &[HOARDER],
        vec![attack("hidden_memory", json!({"how": "tmp_files", "count": 64, "mib": 16, "hold_seconds": 2}))],
        Expect::Status("memory_limit", None),
    );
    s.add(
        "resources",
        "a SysV shared memory segment",
        &[HOARDER],
        vec![attack("hidden_memory", json!({"how": "sysv", "count": 64, "mib": 16}))],
        check(|r| match errno_of(&r["data"]["failure"]) {
            Some("ENOSYS") => Ok(()),
            _ => Err(format!("expected ENOSYS: {r}")),
        }),
    );
    for how in ["fallocate", "sparse"] {
        s.add(
            "resources",
            &format!("a workspace file grown by {how}"),
            &[GRANTED],
            vec![attack("hidden_memory", json!({"how": how, "mib": 64, "path": format!("{WORKSPACE}/{how}")}))],
            check(|r| match (r["status"].as_str(), r["signal"].as_i64()) {
                (Some("crashed"), Some(s)) if s == libc::SIGXFSZ as i64 => Ok(()),
                (Some("success"), _) if errno_of(&r["data"]["failure"]) == Some("EFBIG") => Ok(()),
                _ => Err(format!("expected SIGXFSZ or EFBIG at the workspace size: {r}")),
            }),
        );
    }
    s.add(
        "resources",
        "fork bomb",
        &BOTH,
        vec![attack("fork_bomb", json!({}))],
        // pids = 8 in the fixture's manifest, the plugin itself included.
        stopped_below("forked", 8, "EAGAIN"),
    );
    s.add("resources", "thread bomb", &BOTH, vec![attack("thread_bomb", json!({}))], Expect::Errno("EAGAIN"));
    s.add(
        "resources",
        "memory bomb",
        &BOTH,
        vec![attack("memory_bomb", json!({}))],
        Expect::Status("memory_limit", None),
    );
    s.add("resources", "CPU spin", &BOTH, vec![attack("cpu_spin", json!({}))], Expect::Status("cpu_limit", None));
    s.add(
        "resources",
        "CPU spin with perf counters disabled (PR_TASK_PERF_EVENTS_DISABLE)",
        &BOTH,
        vec![attack("cpu_spin", json!({"perf_disable": true}))],
        check(|r| match (r["status"].as_str(), r["cpu_time_ms"].as_u64()) {
            (Some("cpu_limit"), Some(cpu)) if cpu >= 1000 => Ok(()),
            _ => Err(format!("expected cpu_limit with the spin counted: {r}")),
        }),
    );
    s.add(
        "resources",
        "sleep past the timeout",
        &[NATIVE],
        vec![attack("sleep", json!({"seconds": 60}))],
        Expect::Status("timeout", None),
    );
    s.add(
        "resources",
        "output flood",
        &BOTH,
        vec![attack("output_flood", json!({"bytes": 8 << 20}))],
        Expect::Status("output_limit", None),
    );
    s.add(
        "resources",
        "fd exhaustion",
        &BOTH,
        vec![attack("fd_exhaust", json!({}))],
        stopped_below("opened", 4096, "EMFILE"),
    );
    s.add(
        "resources",
        "fill the disk through the workspace",
        &[GRANTED],
        vec![attack("write_file", json!({"path": format!("{WORKSPACE}/fill"), "bytes": 4 << 20}))],
        check(|r| match (r["status"].as_str(), r["signal"].as_i64()) {
            (Some("crashed"), Some(s)) if s == libc::SIGXFSZ as i64 => Ok(()),
            // The workspace's own filesystem is full: its size holds whatever the file limit.
            (Some("success"), _) if matches!(errno_of(&r["data"]), Some("EFBIG" | "ENOSPC")) => Ok(()),
            _ => Err(format!("expected ENOSPC, SIGXFSZ or EFBIG at the workspace size: {r}")),
        }),
    );
    s.add(
        "resources",
        "fill the disk through the workspace with many small files",
        // The neighbour's workspace is untouched by every other attempt: this one starts empty.
        &[NEIGHBOUR],
        vec![attack("fill_dir", json!({"dir": format!("{WORKSPACE}/many"), "count": 20_000, "bytes": 4096}))],
        check(|r| match (errno_of(&r["data"]), r["data"]["bytes"].as_u64()) {
            (Some("ENOSPC"), Some(bytes)) if bytes <= WORKSPACE_SIZE => Ok(()),
            _ => Err(format!("expected ENOSPC within the workspace's {WORKSPACE_SIZE} bytes: {r}")),
        }),
    );
}

fn leak_attempts(s: &mut Suite, d: &Daemon) {
    s.add(
        "leaks",
        "the host environment",
        &BOTH,
        vec![attack("identity", json!({}))],
        check(|r| {
            let names = env_names(r);
            if names == ["PATH", "LANG", "HOME", "PYTHONDONTWRITEBYTECODE"] {
                Ok(())
            } else {
                Err(format!("unexpected environment: {names:?}"))
            }
        }),
    );
    s.add(
        "leaks",
        "another plugin's secret",
        &[GRANTED],
        vec![attack("identity", json!({}))],
        check(|r| {
            let names = env_names(r);
            if names.contains(&"FIXTURE_TOKEN") && !names.contains(&"OTHER_TOKEN") {
                Ok(())
            } else {
                Err(format!("expected its own secret only: {names:?}"))
            }
        }),
    );
    s.errno("leaks", "/proc/1/environ", &BOTH, read("/proc/1/environ"), "EACCES");
    s.errno("leaks", "/proc/1/cmdline", &BOTH, read("/proc/1/cmdline"), "EACCES");
    s.errno("leaks", "the kernel log (syslog)", &BOTH, raw_syscall(libc::SYS_syslog, &[3, 0, 0]), "EPERM");
    s.errno("leaks", "the kernel log (/dev/kmsg)", &BOTH, read("/dev/kmsg"), "ENOENT");
    s.errno("leaks", "/sys", &BOTH, attack("list_dir", json!({"path": "/sys/class/net"})), "ENOENT");
    s.errno(
        "leaks",
        "the daemon's config file",
        &BOTH,
        read(&d.dir.path().join("ironclawd.toml").display().to_string()),
        "ENOENT",
    );
    s.errno(
        "leaks",
        "the secrets file",
        &BOTH,
        read(&d.dir.path().join("secrets.toml").display().to_string()),
        "ENOENT",
    );
}

fn channel_attempts(s: &mut Suite) {
    // The runner's control channel is held by the sandbox's init alone: forged frames (a
    // denial, a sandbox failure) reach only the plugin's own response channel and its log.
    s.add(
        "channel",
        "forge runner frames on every descriptor and through /proc/1/fd",
        &BOTH,
        vec![attack("forge_frames", json!({}))],
        check(|r| {
            let log = r["log"].as_str().unwrap_or_default();
            let at = log.find("forged frames reached").ok_or("the attack did not run")?;
            let reached = log[at..].lines().next().unwrap_or_default();
            let through_init = reached.split("through /proc/1/fd: ").nth(1).unwrap_or_default();
            if through_init.split(' ').any(|fd| !fd.ends_with(":EACCES")) {
                return Err(format!("the init's descriptors were reachable: {reached}"));
            }
            match (r["status"].as_str(), r["error"].as_str()) {
                (Some("error"), Some("the plugin exited with status 125 without a valid response")) => Ok(()),
                (status, error) => Err(format!("a forged frame decided the outcome: {status:?} {error:?}")),
            }
        }),
    );
}

/// What the suite tried and what got through.
#[derive(Default)]
struct Tally {
    attempted: BTreeSet<(&'static str, String)>,
    runs: usize,
    escaped: Vec<String>,
}

impl Tally {
    async fn run(&mut self, s: Suite, d: &Daemon, c: &mut Canaries, allowed_processes: &[u32]) {
        for a in s.0 {
            let mut answers = Vec::new();
            for step in &a.steps {
                answers.push(d.exec(a.plugin, step.clone()).await);
            }
            let (last, setup) = answers.split_last().unwrap();
            let mut problems = Vec::new();
            let failed_step = |r: &&Value| r["status"] != "success" || errno_of(&r["data"]).is_some_and(|e| e != "OK");
            if let Some(failed) = setup.iter().find(failed_step) {
                problems.push(format!("a set-up step failed: {failed}"));
            }
            if let Err(e) = judge(&a.expect, last) {
                problems.push(format!("{e}\n      answer: {last}"));
            }
            problems.extend(c.breaches(d, allowed_processes, &json!(answers)).await);
            let verdict = if problems.is_empty() { "held" } else { "ESCAPED" };
            println!("[{verdict}] {:<10} {:<17} {}", a.class, a.plugin, a.name);
            for p in &problems {
                println!("      {p}");
            }
            if !problems.is_empty() {
                self.escaped.push(format!("{} / {} / {}: {}", a.class, a.plugin, a.name, problems.join("; ")));
            }
            self.runs += 1;
            self.attempted.insert((a.class, a.name));
        }
    }
}

async fn start() -> (Daemon, Canaries) {
    let dir = tempfile::Builder::new().prefix("ironclaw-test-").tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    for p in [NATIVE, EXEC, GRANTED, NEIGHBOUR, THROTTLED, HOARDER] {
        common::install_plugin(&plugins, p);
    }
    // A plugin author ships a setuid-root helper: executions must not gain root through it.
    let helper = plugins.join(EXEC).join("suid-helper");
    std::fs::copy(plugins.join(EXEC).join("misbehave-exec"), &helper).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/test.toml"), policy()).unwrap();
    let d = Daemon::builder()
        .reuse(dir)
        .secrets(SECRETS)
        .proxy_host("loopback.test", "127.0.0.1")
        .proxy_host("mapped.wild.test", "::ffff:127.0.0.1")
        .proxy_host("compatible.wild.test", "::127.0.0.1")
        .proxy_host("nat64.wild.test", "64:ff9b::7f00:1")
        .proxy_host("nat64-local.wild.test", "64:ff9b:1:7f00:0:100::")
        .proxy_host("sixtofour.wild.test", "2002:a9fe:a9fe::1")
        .proxy_host("teredo.wild.test", "2001:0:4136:e378:8000:63bf:80ff:fffe")
        .proxy_host("metadata6.wild.test", "fd00:ec2::254")
        .proxy_host("allowed.test", "127.0.0.1")
        .env("IRONCLAW_HOST_CANARY", CANARY_ENV)
        .max_concurrent(4)
        .start()
        .await;
    // Workspaces exist once each plugin has run; then the host plants its own traps.
    for p in [GRANTED, NEIGHBOUR] {
        assert_eq!(d.exec(p, json!({"attack": "echo"})).await["status"], "success");
    }
    let workspace = d.workspace(GRANTED);
    let c = Canaries::plant(&d, common::TestHost::create());
    std::os::unix::fs::symlink(c.secret(), workspace.join("planted")).unwrap();
    std::fs::copy("/usr/bin/true", workspace.join("planted-suid")).unwrap();
    std::fs::set_permissions(workspace.join("planted-suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    (d, c)
}

/// Starts an execution of the neighbour that sleeps until its 8 s timeout; returns its id.
async fn sleeping_neighbour(d: &Daemon) -> String {
    let sleep = json!({"parameters": {"attack": "sleep", "seconds": 30}, "wait": false});
    let a = d.client().post(&format!("/api/v1/plugins/{NEIGHBOUR}/execute"), &sleep).await.unwrap();
    assert_eq!(a.status, 202, "{}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn no_escape_attempt_gets_through() {
    require_root!();
    let (d, mut c) = start().await;
    let mut tally = Tally::default();

    // Process attacks against a live neighbour: a sleeping runner of another plugin (its
    // sandbox init and the plugin).
    let victim = sleeping_neighbour(&d).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while d.sandbox_processes().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the victim runner did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let victims = d.sandbox_processes();
    let mut s = Suite::default();
    process_attempts(&mut s, d.pid(), *victims.iter().max().unwrap());
    tally.run(s, &d, &mut c, &victims).await;
    let cancelled = d.client().post(&format!("/api/v1/executions/{victim}/cancel"), &json!({})).await.unwrap();
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);

    let mut s = Suite::default();
    filesystem_attempts(&mut s, &c, &d);
    root_attempts(&mut s, &c, &d);
    credential_attempts(&mut s);
    kernel_attempts(&mut s);
    network_attempts(&mut s, &c, &d);
    resource_attempts(&mut s, &d.resources().await);
    leak_attempts(&mut s, &d);
    channel_attempts(&mut s);
    tally.run(s, &d, &mut c, &[]).await;

    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for (class, _) in &tally.attempted {
        *classes.entry(class).or_default() += 1;
    }
    let classes: Vec<String> = classes.iter().map(|(class, n)| format!("{class} {n}")).collect();
    println!(
        "\nescape suite: {} attempted, {} escaped ({} runs of native and exec plugins; {})",
        tally.attempted.len(),
        tally.escaped.len(),
        tally.runs,
        classes.join(", ")
    );
    assert!(tally.escaped.is_empty(), "{} attempts got through:\n{}", tally.escaped.len(), tally.escaped.join("\n"));
}

/// The canaries are not checks that cannot fail: each breach, made from the host, is noticed.
#[tokio::test]
async fn the_canaries_notice_every_kind_of_breach() {
    require_root!();
    let (d, mut c) = start().await;
    assert_eq!(c.breaches(&d, &[], &json!({})).await, Vec::<String>::new(), "a clean host has no breach");

    std::fs::write(c.secret(), "changed").unwrap();
    std::fs::write(c.dir.path().join("new-file"), "x").unwrap();
    let _tcp = std::net::TcpStream::connect(c.tcp_addr(0)).unwrap();
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", c.udp_addr(0)).unwrap();
    let _unix = std::os::unix::net::UnixStream::connect(c.dir.path().join("canary.sock")).unwrap();
    c.process.kill().unwrap();
    c.process.wait().unwrap();
    let found = c.breaches(&d, &[], &json!({"leaked": CANARY_ENV})).await;
    for expected in [
        "canary file",
        "a file appeared on the host",
        "canary TCP listener",
        "canary UDP socket",
        "a canary unix socket was reached",
        "the canary host process was killed",
        "a canary value reached the answer",
    ] {
        assert!(found.iter().any(|f| f.starts_with(expected)), "{expected:?} not noticed in {found:?}");
    }

    // A sandbox process still running after its execution is a breach too (this one sleeps
    // within its 8 s timeout, longer than the check waits for processes to go).
    sleeping_neighbour(&d).await;
    let found = c.breaches(&d, &[], &json!({})).await;
    assert!(found.iter().any(|f| f.starts_with("sandbox processes outlived")), "{found:?}");
}
