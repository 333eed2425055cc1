//! Authorisation on the unix socket: the kernel says who connects (SO_PEERCRED and the caller's
//! groups); root and admin groups may do everything, executor groups may list and execute,
//! anyone else gets 403; admin actions and denials land in the audit log.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::Daemon;
use serde_json::Value;

const EXECUTORS: u32 = 4343;
const ADMINS: u32 = 4242;
const NOBODY: u32 = 65534;

async fn daemon() -> Daemon {
    let d = Daemon::builder()
        .plugins(&["calculator"])
        .api(&format!("socket_mode = \"0666\"\nadmin_groups = [\"{ADMINS}\"]\nexecutor_groups = [\"{EXECUTORS}\"]\n"))
        .start()
        .await;
    // Let other users reach the socket in the test's directory.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Runs the CLI as uid `NOBODY` with `groups` as its supplementary groups.
fn cli_as(d: &Daemon, groups: &[u32], args: &[&str]) -> Output {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let mut command = std::process::Command::new("setpriv");
    command.arg(format!("--reuid={NOBODY}")).arg(format!("--regid={NOBODY}"));
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.arg(format!("--groups={}", groups.join(",")));
    }
    command.arg("--").arg(env!("CARGO_BIN_EXE_ironclaw")).arg("--socket").arg(&d.socket).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn roles_come_from_the_kernel() {
    require_root!();
    let d = daemon().await;

    // No role: 403 for everything but the health check.
    let o = cli_as(&d, &[], &["plugins", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("forbidden") && stderr(&o).contains("HTTP 403"), "{}", stderr(&o));
    let o = cli_as(&d, &[], &["exec", "calculator", "-p", "expression=1+1"]);
    assert!(stderr(&o).contains("HTTP 403"), "{}", stderr(&o));

    // Executor: list and execute, nothing more.
    let o = cli_as(&d, &[EXECUTORS], &["plugins", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli_as(&d, &[EXECUTORS], &["--json", "exec", "calculator", "-p", "expression=6*7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"result\": 42"));
    for admin_only in [&["disable", "calculator"][..], &["reload"], &["system"], &["stats"]] {
        let o = cli_as(&d, &[EXECUTORS], admin_only);
        assert!(stderr(&o).contains("HTTP 403"), "{admin_only:?}: {}", stderr(&o));
    }

    // Admin group, and root.
    let o = cli_as(&d, &[ADMINS], &["disable", "calculator"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.cli(&["enable", "calculator"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let records = d.audit();
    let denied: Vec<&Value> = records.iter().filter(|r| r["event"] == "denied").collect();
    assert!(denied.iter().any(|r| r["who"]["uid"] == NOBODY && r["path"] == "/api/v1/plugins"), "{records:?}");
    assert!(denied.iter().any(|r| r["path"] == "/api/v1/plugins/reload-all" && r["role"] == "executor"), "{records:?}");
    let actions: Vec<&Value> = records.iter().filter(|r| r["event"] == "admin_action").collect();
    assert!(
        actions.iter().any(|r| r["who"]["uid"] == NOBODY
            && r["path"] == "/api/v1/plugins/calculator/enable"
            && r["status"] == 200),
        "{records:?}"
    );
    assert!(actions.iter().any(|r| r["who"]["uid"] == 0 && r["status"] == 200), "{records:?}");
    assert!(records.iter().all(|r| r["ts_ms"].is_u64()));
}

#[tokio::test]
async fn tcp_callers_need_a_token_of_the_right_scope() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).tcp().start().await;
    let url = d.tcp_url();
    let cli = |token: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"));
        command.args(["--url", &url]).args(args).env_remove("IRONCLAW_TOKEN");
        if let Some(token) = token {
            command.env("IRONCLAW_TOKEN", token);
        }
        command.output().unwrap()
    };
    let o = cli(None, &["plugins", "list"]);
    assert!(stderr(&o).contains("unauthenticated") && stderr(&o).contains("HTTP 401"), "{}", stderr(&o));
    let o = cli(Some("test-execute-token-012345678X"), &["plugins", "list"]);
    assert!(stderr(&o).contains("HTTP 401"), "a wrong token: {}", stderr(&o));
    let o = cli(Some(common::TCP_EXECUTE_TOKEN), &["exec", "calculator", "-p", "expression=1+1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(Some(common::TCP_EXECUTE_TOKEN), &["reload"]);
    assert!(stderr(&o).contains("HTTP 403"), "{}", stderr(&o));
    let o = cli(Some(common::TCP_ADMIN_TOKEN), &["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records = d.audit();
    assert!(records.iter().any(|r| r["event"] == "admin_action" && r["who"]["token"] == "admin"), "{records:?}");
    assert!(records.iter().any(|r| r["event"] == "denied" && r["who"]["token"] == "exec"), "{records:?}");
    let text = std::fs::read_to_string(d.dir.path().join("state/audit.jsonl")).unwrap();
    assert!(
        !text.contains(common::TCP_ADMIN_TOKEN) && !text.contains(common::TCP_EXECUTE_TOKEN),
        "no token in the audit log"
    );
}

#[tokio::test]
async fn tcp_without_tokens_refuses_to_start_unless_explicitly_insecure_on_loopback() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let run = |api: &str| {
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "plugins_dir = {:?}\npolicies_dir = {:?}\nstate_dir = {:?}\n[api]\nsocket = \"\"\n{api}",
                dir.path().join("plugins"),
                dir.path().join("policies"),
                dir.path().join("state")
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ironclawd"))
            .arg("--config")
            .arg(&config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // It either refuses (and exits) or serves (and says it listens): whichever comes first.
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut log = String::new();
        let running = loop {
            match lines.recv_timeout(std::time::Duration::from_millis(20)) {
                Ok(line) => {
                    let listening = line.contains("listening");
                    log.push_str(&line);
                    log.push('\n');
                    if listening {
                        break true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stderr ended: it exited.
                    let _ = child.wait();
                    break false;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(std::time::Instant::now() < deadline, "ironclawd neither refused nor listened:\n{log}");
        };
        let _ = child.kill();
        let _ = child.wait();
        log.extend(lines.try_iter().map(|l| l + "\n"));
        (running, log)
    };
    let (running, log) = run("tcp = \"127.0.0.1:0\"\n");
    assert!(!running && log.contains("the TCP API needs tokens"), "{log}");
    let (running, log) = run("tcp = \"0.0.0.0:0\"\ninsecure_tcp = true\n");
    assert!(!running && log.contains("the TCP API needs tokens"), "not beyond loopback: {log}");
    let (running, log) = run("tcp = \"127.0.0.1:0\"\ninsecure_tcp = true\n");
    assert!(running && log.contains("WITHOUT authentication"), "{log}");
}
