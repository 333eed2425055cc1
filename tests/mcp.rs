//! MCP with a real client: the official Python SDK (PyPI `mcp`, installed into target/venv by
//! tests/venv.sh), driven by tests/mcp/client.py, over each transport an assistant uses: stdio
//! through `ironclaw mcp`, Streamable HTTP on the unix socket, and on TCP with a token. Each
//! test judges what the client observed, line by line.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::upstreams::{SECRETS, duckduckgo, newsapi, openweathermap};
use common::{Daemon, MockServer, TCP_EXECUTE_TOKEN, TestCa};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The SDK release the tests speak with (protocol 2026-07-28, and 2025-11-25 in `legacy` mode).
const MCP_SDK: &str = "mcp==2.3.0";
const EXECUTORS: u32 = 4343;
const NOBODY: u32 = 65534;

/// Set to 1 on a host without PyPI: the tests that need the SDK are skipped, saying so.
const SKIP_CLIENTS_ENV: &str = "IRONCLAW_TEST_SKIP_MCP_CLIENTS";

/// target/venv's python with the SDK in it. PyPI out of reach fails the test, unless
/// `SKIP_CLIENTS_ENV` says this host may skip it.
fn python() -> Option<PathBuf> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = std::process::Command::new(common::repo_dir().join("tests/venv.sh")).arg(MCP_SDK).output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    match ready {
        Ok(()) => Some(common::repo_dir().join("target/venv/bin/python")),
        Err(e) if std::env::var(SKIP_CLIENTS_ENV).as_deref() == Ok("1") => {
            eprintln!("SKIPPED: cannot install {MCP_SDK} into target/venv: {e}");
            None
        }
        Err(e) => panic!("cannot install {MCP_SDK} into target/venv ({e}); set {SKIP_CLIENTS_ENV}=1 to skip"),
    }
}

/// One run of tests/mcp/client.py.
struct McpClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    said: Vec<Value>,
    /// The client's stderr (the SDK's log, and the relay's when it starts `ironclaw mcp`).
    stderr: PathBuf,
}

struct ClientSetup<'a> {
    daemon: &'a Daemon,
    transport: &'a str,
    env: Vec<(&'static str, String)>,
    /// Run as `NOBODY` with these supplementary groups.
    user: Option<Vec<u32>>,
}

impl<'a> ClientSetup<'a> {
    fn new(daemon: &'a Daemon, transport: &'a str) -> Self {
        let mut env = vec![
            ("IRONCLAW_BIN", env!("CARGO_BIN_EXE_ironclaw").to_string()),
            ("IRONCLAW_SOCKET", daemon.socket.display().to_string()),
        ];
        if transport == "tcp" {
            env.push(("IRONCLAW_URL", daemon.tcp_url()));
            env.push(("IRONCLAW_TOKEN", TCP_EXECUTE_TOKEN.to_string()));
        }
        ClientSetup { daemon, transport, env, user: None }
    }

    fn env(mut self, key: &'static str, value: &str) -> Self {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.to_string()));
        self
    }

    fn legacy(self) -> Self {
        self.env("MCP_MODE", "legacy")
    }

    fn by_nobody(mut self, groups: &[u32]) -> Self {
        self.user = Some(groups.to_vec());
        self
    }

    fn run(self, python: &std::path::Path, scenario: &str, arg: &str) -> McpClient {
        let script = common::repo_dir().join("tests/mcp/client.py");
        let stderr = tempfile::NamedTempFile::new_in(self.daemon.dir.path()).unwrap().into_temp_path().keep().unwrap();
        let mut command = match &self.user {
            None => Command::new(python),
            Some(groups) => {
                let mut setpriv = Command::new("setpriv");
                setpriv.arg(format!("--reuid={NOBODY}")).arg(format!("--regid={NOBODY}"));
                if groups.is_empty() {
                    setpriv.arg("--clear-groups");
                } else {
                    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
                    setpriv.arg(format!("--groups={}", groups.join(",")));
                }
                setpriv.arg("--").arg(python);
                setpriv
            }
        };
        let mut child = command
            .arg(script)
            .arg(self.transport)
            .arg(scenario)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", "/tmp")
            .current_dir(self.daemon.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // The scenario's argument on stdin (a tour's calls can be larger than a command line).
        let mut stdin = child.stdin.take().unwrap();
        let arg = arg.as_bytes().to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&arg).await;
        });
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        McpClient { child, lines, said: Vec::new(), stderr }
    }
}

impl McpClient {
    /// The client's next observation.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => {
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                self.said.push(value.clone());
                value
            }
            other => {
                panic!("the client said nothing more ({other:?}) after {:?}; stderr:\n{}", self.said, self.stderr())
            }
        }
    }

    /// The next observation that has `key`, skipping the others.
    async fn next_with(&mut self, key: &str) -> Value {
        loop {
            let said = self.next().await;
            assert!(said.get("refused").is_none(), "the client was refused: {said}; stderr:\n{}", self.stderr());
            if said.get(key).is_some() {
                return said;
            }
        }
    }

    /// Everything the client observed, once it has exited.
    async fn finish(mut self) -> Vec<Value> {
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line()).await {
            self.said.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")));
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "the client exited with {status}; stderr:\n{}", self.stderr());
        self.said
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The shipped plugins that need no secret, under the repo's own grants; TCP with tokens; the
/// socket open to other users, so a test can call as `NOBODY`. web_search's upstreams are a
/// closed loopback port, which the proxy refuses: its calls fail as a tool, never leave.
async fn daemon() -> Daemon {
    let grants = std::fs::read_to_string(common::repo_dir().join("policies/plugins.toml")).unwrap();
    let d = Daemon::builder()
        .plugins(&["calculator", "file_ops", "web_search", "misbehave_native"])
        .policy(&format!("{}{grants}", common::DEFAULT_POLICY))
        .proxy_host("api.duckduckgo.com", "127.0.0.1:9")
        .proxy_host("html.duckduckgo.com", "127.0.0.1:9")
        .tcp()
        .api(&format!("socket_mode = \"0666\"\nexecutor_groups = [\"{EXECUTORS}\"]\n"))
        .start()
        .await;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

const TRANSPORTS: [&str; 3] = ["stdio", "unix", "tcp"];

/// The client gave up, and every answer it had was `status` (the SDK tries more than one way
/// to connect before it gives up).
fn assert_refused_with(said: &Value, status: u16, context: &str) {
    assert_eq!(said["refused"], true, "{context}");
    let statuses = said["statuses"].as_array().unwrap_or_else(|| panic!("{context}"));
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == status), "{context}");
}

fn tool<'a>(tools: &'a Value, name: &str) -> &'a Value {
    tools.as_array().unwrap().iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no tool {name} in {tools}"))
}

#[tokio::test]
async fn tools_and_calls_over_every_transport_and_revision() {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    let calls = json!([
        ["calculator", {"expression": "6*7"}],
        ["calculator", {"expression": "1/0"}],
        ["calculator", {"expression": 5}],
        ["calculator", {"expression": "a".repeat(500 * 1024)}],
        ["web_search", {"query": "ironclaw"}],
        ["reload", {}],
    ])
    .to_string();
    for transport in TRANSPORTS {
        for legacy in [false, true] {
            let setup = ClientSetup::new(&d, transport);
            let setup = if legacy { setup.legacy() } else { setup };
            let said = setup.run(&python, "tour", &calls).finish().await;
            let context = format!("{transport}, legacy={legacy}: {said:?}");
            assert_eq!(said[0]["protocol"], if legacy { "2025-11-25" } else { "2026-07-28" }, "{context}");
            assert_eq!(said[0]["server"], "ironclaw", "{context}");
            // Tools, and nothing else an assistant could reach (no prompts, resources, logging).
            assert_eq!(said[0]["capabilities"], json!({"tools": {"listChanged": true}}), "{context}");

            // The enabled, granted plugins, with hints from what the policy grants.
            let tools = &said[1]["tools"];
            let names: Vec<&str> = tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
            assert_eq!(names, ["calculator", "file_ops", "misbehave_native", "web_search"], "{context}");
            let calculator = tool(tools, "calculator");
            assert_eq!(calculator["inputSchema"]["type"], "object", "{context}");
            assert_eq!(calculator["inputSchema"]["required"], json!(["expression"]), "{context}");
            assert_eq!(calculator["annotations"]["readOnlyHint"], true, "no write grant, no workspace");
            assert_eq!(calculator["annotations"]["openWorldHint"], false, "no network grant");
            assert_eq!(tool(tools, "file_ops")["annotations"]["readOnlyHint"], false, "a workspace is granted");
            assert_eq!(tool(tools, "web_search")["annotations"]["openWorldHint"], true, "network is granted");
            // The manifest's [output] is the tool's outputSchema; a plugin without one has none.
            assert_eq!(calculator["outputSchema"]["required"], json!(["expression", "result"]), "{context}");
            assert_eq!(calculator["title"], "Calculator", "{context}");
            assert!(tool(tools, "misbehave_native").get("outputSchema").is_none(), "{context}");
            let misbehave = &tool(tools, "misbehave_native")["inputSchema"];
            assert_eq!(misbehave["properties"]["attack"]["type"], "string", "{context}");

            // A success: the data, structured and as the same JSON in text.
            let ok = &said[2]["result"];
            assert_eq!(ok["isError"], false, "{context}");
            assert_eq!(ok["structured"], json!({"expression": "6*7", "result": 42}), "{context}");
            let text: Value = serde_json::from_str(ok["text"][0].as_str().unwrap()).unwrap();
            assert_eq!(text, ok["structured"], "{context}");

            // The caller's mistakes say invalid_input; the tool's failure says what failed.
            let zero = &said[3]["result"];
            assert_eq!(zero["isError"], true, "{context}");
            assert!(zero["text"][0].as_str().unwrap().starts_with("invalid_input: division by zero"), "{context}");
            let typed = &said[4]["result"];
            assert_eq!(typed["isError"], true, "{context}");
            let typed = typed["text"][0].as_str().unwrap();
            assert!(typed.starts_with("invalid_input: invalid parameters at '/expression'"), "{typed}");
            let long = said[5]["result"]["text"][0].as_str().unwrap();
            assert!(long.starts_with("invalid_input: invalid parameters at '/expression'"), "{long:.300}");
            assert!(long.len() < 600, "a 500 KB value is echoed in {} bytes: {long:.300}", long.len());
            let failed = &said[6]["result"];
            assert_eq!(failed["isError"], true, "{context}");
            assert!(failed["text"][0].as_str().unwrap().starts_with("error: "), "{context}");

            // A name that is not a tool is a protocol error, as MCP says.
            assert_eq!(said[7]["code"], -32602, "{context}");
            assert_eq!(said[7]["error"], "no plugin named 'reload'", "{context}");
        }
    }
}

/// Gives misbehave_native (3 s in its manifest) 20 s, reloaded, so that a call the client
/// abandons is ended by the cancellation and nothing else.
async fn with_a_long_timeout(d: &Daemon) {
    let manifest = d.dir.path().join("plugins/misbehave_native/plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("timeout = \"3s\"", "timeout = \"20s\"");
    std::fs::write(&manifest, text).unwrap();
    let reloaded = d.client().post("/api/v1/plugins/misbehave_native/reload", &json!({})).await.unwrap();
    assert_eq!(reloaded.body["result"], "changed", "{}", reloaded.body);
}

#[tokio::test]
async fn a_cancelled_call_ends_its_execution_and_leaves_no_runner() {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    with_a_long_timeout(&d).await;
    let call = json!(["misbehave_native", {"attack": "sleep", "seconds": 15}]).to_string();
    for (n, transport) in TRANSPORTS.into_iter().enumerate() {
        let said = ClientSetup::new(&d, transport).run(&python, "cancel", &call).finish().await;
        let gave_up = said.iter().find(|s| s.get("cancelled").is_some()).unwrap_or_else(|| panic!("{said:?}"));
        assert!(!said.iter().any(|s| s.get("finished").is_some()), "{transport}: the call ran to its end: {said:?}");
        // Progress was reported while it ran: seconds out of the plugin's 20 s.
        let first = &gave_up["progress"][0];
        assert!(first["progress"].as_f64().unwrap() >= 1.0, "{transport}: {said:?}");
        assert_eq!(first["total"], 20.0, "{transport}: {said:?}");
        assert!(first["message"].as_str().unwrap().starts_with("running for"), "{transport}: {said:?}");

        common::wait_until(&format!("the {transport} call's execution ends"), async || {
            let listed = d.get("/api/v1/executions?plugin=misbehave_native&state=all").await.body;
            let finished = listed["executions"].as_array().unwrap().iter().filter(|e| e["status"] != "running");
            finished.count() == n + 1
        })
        .await;
        let listed = d.get("/api/v1/executions?plugin=misbehave_native&state=all").await.body;
        let statuses: Vec<&Value> = listed["executions"].as_array().unwrap().iter().map(|e| &e["status"]).collect();
        assert!(statuses.iter().all(|s| *s == "cancelled"), "{transport}: {listed}");
        let left = d.settled_sandbox_processes().await;
        assert!(left.is_empty(), "{transport}: the cancelled plugin still runs as {left:?}");
    }
}

/// Starts a client that reports the tool names whenever the daemon says they changed.
async fn watching(d: &Daemon, python: &std::path::Path, transport: &str, legacy: bool, changes: usize) -> McpClient {
    let setup = ClientSetup::new(d, transport);
    let setup = if legacy { setup.legacy() } else { setup };
    let mut client = setup.run(python, "watch", &changes.to_string());
    if !legacy {
        assert_eq!(client.next_with("honored").await["honored"], true, "{transport}: tools_list_changed not honored");
    }
    client
}

#[tokio::test]
async fn the_tool_list_follows_disable_and_reload() {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    let all = json!(["calculator", "file_ops", "misbehave_native", "web_search"]);
    for transport in TRANSPORTS {
        for legacy in [false, true] {
            let context = format!("{transport}, legacy={legacy}");
            let mut client = watching(&d, &python, transport, legacy, 2).await;
            assert_eq!(client.next_with("ready").await["ready"], all, "{context}");

            // An admin disables a plugin: the tool goes.
            let disabled = d.client().put("/api/v1/plugins/calculator/enable", &json!({"enabled": false})).await;
            assert_eq!(disabled.unwrap().status, 200);
            let without = json!(["file_ops", "misbehave_native", "web_search"]);
            assert_eq!(client.next_with("changed").await["changed"], without, "{context}");
            assert_eq!(client.next_with("ready").await["ready"], without, "{context}");

            // A reload brings a new plugin: it appears.
            common::install_plugin(&d.dir.path().join("plugins"), "misbehave_throttled");
            let reloaded = d.client().post("/api/v1/plugins/reload-all", &json!({})).await.unwrap();
            assert_eq!(reloaded.status, 200, "{}", reloaded.body);
            let with = json!(["file_ops", "misbehave_native", "misbehave_throttled", "web_search"]);
            assert_eq!(client.next_with("changed").await["changed"], with, "{context}");
            client.finish().await;

            // Back to the start for the next client.
            d.client().put("/api/v1/plugins/calculator/enable", &json!({"enabled": true})).await.unwrap();
            std::fs::remove_dir_all(d.dir.path().join("plugins/misbehave_throttled")).unwrap();
            d.client().post("/api/v1/plugins/reload-all", &json!({})).await.unwrap();
            common::wait_until("the fixture is gone", async || {
                let tools = d.get("/api/v1/tools").await.body;
                tools["tools"].as_array().unwrap().len() == 4
            })
            .await;
        }
    }
}

#[tokio::test]
async fn only_executors_reach_the_tools_on_the_socket() {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    for transport in ["stdio", "unix"] {
        let said = ClientSetup::new(&d, transport).by_nobody(&[EXECUTORS]).run(&python, "probe", "").finish().await;
        assert_eq!(said[0]["tools"].as_array().map(Vec::len), Some(4), "{transport}: an executor lists: {said:?}");

        let client = ClientSetup::new(&d, transport).by_nobody(&[]).run(&python, "probe", "");
        let stderr = client.stderr.clone();
        let said = client.finish().await;
        assert_eq!(said[0]["refused"], true, "{transport}: a peer with no role got in: {said:?}");
        let why = format!("{said:?} {}", std::fs::read_to_string(&stderr).unwrap());
        if transport == "stdio" {
            let expected =
                "the daemon refused the MCP stream (HTTP 403): this needs the executor role; the caller has none";
            assert!(why.contains(expected), "{transport}: {why}");
        } else {
            assert_refused_with(&said[0], 403, &format!("{transport}: {why}"));
        }
    }
    let denied = d.audit().into_iter().filter(|r| r["event"] == "denied" && r["who"]["uid"] == NOBODY);
    let paths: Vec<Value> = denied.map(|r| r["path"].clone()).collect();
    assert!(paths.contains(&json!("/mcp/stream")) && paths.contains(&json!("/mcp")), "audited: {paths:?}");
}

#[tokio::test]
async fn a_browser_origin_is_refused_unless_configured() {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    for transport in ["unix", "tcp"] {
        let client =
            ClientSetup::new(&d, transport).env("MCP_ORIGIN", "https://evil.example").run(&python, "probe", "");
        let said = client.finish().await;
        assert_eq!(said[0]["refused"], true, "{transport}: {said:?}");
        assert_refused_with(&said[0], 403, &format!("{transport}: {said:?}"));
    }
    drop(d);

    let grants = std::fs::read_to_string(common::repo_dir().join("policies/plugins.toml")).unwrap();
    let d = Daemon::builder()
        .plugins(&["calculator"])
        .policy(&format!("{}{grants}", common::DEFAULT_POLICY))
        .api("mcp_allowed_origins = [\"http://localhost:6274\"]\n")
        .start()
        .await;
    let said = ClientSetup::new(&d, "unix").env("MCP_ORIGIN", "http://localhost:6274").run(&python, "probe", "");
    assert_eq!(said.finish().await[0]["tools"], json!(["calculator"]), "the configured origin is let in");
    let said = ClientSetup::new(&d, "unix").env("MCP_ORIGIN", "http://localhost:6275").run(&python, "probe", "");
    assert_refused_with(&said.finish().await[0], 403, "another port is another origin");
}

#[tokio::test]
async fn tcp_needs_a_token_with_the_execute_scope() {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    let said = ClientSetup::new(&d, "tcp").env("IRONCLAW_TOKEN", "").run(&python, "probe", "").finish().await;
    assert_eq!(said[0]["refused"], true, "{said:?}");
    assert_refused_with(&said[0], 401, &format!("no token: {said:?}"));
    let said = ClientSetup::new(&d, "tcp")
        .env("IRONCLAW_TOKEN", "not-a-token-0123456789")
        .run(&python, "probe", "")
        .finish()
        .await;
    assert_refused_with(&said[0], 401, &format!("a wrong token: {said:?}"));
    let said = ClientSetup::new(&d, "tcp").run(&python, "probe", "").finish().await;
    assert_eq!(said[0]["tools"].as_array().map(Vec::len), Some(4), "{said:?}");
}

/// An executor's MCP session tries an admin action under every name a model might give it,
/// and nothing happens: no such tool, a protocol error, no admin action in the audit log, and
/// the plugins as they were.
async fn admin_action_is_absent(names: &[&str], arguments: Value) {
    require_root!();
    let Some(python) = python() else { return };
    let d = daemon().await;
    let calls: Vec<Value> = names.iter().map(|n| json!([n, arguments])).collect();
    let said = ClientSetup::new(&d, "stdio")
        .by_nobody(&[EXECUTORS])
        .run(&python, "tour", &Value::Array(calls).to_string())
        .finish()
        .await;
    let tools = said[1]["tools"].as_array().unwrap();
    for (n, name) in names.iter().enumerate() {
        assert!(!tools.iter().any(|t| t["name"] == *name), "{name} is a tool: {said:?}");
        assert_eq!(said[2 + n]["code"], -32602, "{name}: {said:?}");
        assert_eq!(said[2 + n]["error"], format!("no plugin named '{name}'"), "{name}: {said:?}");
    }
    let admin: Vec<Value> = d.audit().into_iter().filter(|r| r["event"] == "admin_action").collect();
    assert!(admin.is_empty(), "an admin action happened: {admin:?}");
    let plugins = d.get("/api/v1/plugins").await.body;
    let enabled = plugins["plugins"].as_array().unwrap().iter().filter(|p| p["enabled"] == true).count();
    assert_eq!(enabled, 4, "{plugins}");
}

macro_rules! absent_from_mcp {
    ($($test:ident: $names:expr, $arguments:expr;)*) => {$(
        #[tokio::test]
        async fn $test() {
            admin_action_is_absent(&$names, $arguments).await;
        }
    )*};
}

absent_from_mcp! {
    mcp_cannot_enable: ["enable", "plugins_enable", "enable_plugin"], json!({"name": "calculator", "enabled": true});
    mcp_cannot_disable: ["disable", "plugins_disable", "disable_plugin"], json!({"name": "calculator", "enabled": false});
    mcp_cannot_reload_a_plugin: ["reload", "reload_plugin"], json!({"name": "calculator"});
    mcp_cannot_reload_everything: ["reload_all", "reload-all"], json!({});
    mcp_cannot_list_backups: ["backups", "list_backups"], json!({"name": "calculator"});
    mcp_cannot_roll_back: ["rollback", "roll_back"], json!({"name": "calculator", "backup": "1"});
    mcp_cannot_read_statistics: ["stats", "plugin_stats"], json!({"name": "calculator"});
    mcp_cannot_read_the_system_report: ["system", "doctor"], json!({});
}

/// The MCP Inspector's CLI (npm `@modelcontextprotocol/inspector`), configured as an assistant
/// is: `ironclaw mcp` over stdio. Its exit code, and the JSON it printed (on stdout, or its
/// error on stderr).
fn inspector(d: &Daemon, method_args: &[&str]) -> Option<(i32, Value)> {
    let out = std::process::Command::new(common::repo_dir().join("tests/inspector.sh"))
        .arg("--cli")
        .arg(env!("CARGO_BIN_EXE_ironclaw"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("mcp")
        .args(method_args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    let printed = if code == 0 { &out.stdout } else { &out.stderr };
    match serde_json::from_slice(printed) {
        Ok(json) => Some((code, json)),
        Err(_) if std::env::var(SKIP_CLIENTS_ENV).as_deref() == Ok("1") => {
            eprintln!("SKIPPED: the MCP Inspector did not run ({}): {stderr}", out.status);
            None
        }
        Err(e) => panic!("the Inspector printed no JSON ({e}, {}):\n{stderr}", out.status),
    }
}

#[tokio::test]
async fn the_inspector_lists_and_calls_the_tools_over_stdio() {
    require_root!();
    let d = daemon().await;
    let Some((code, listed)) = inspector(&d, &["--method", "tools/list"]) else { return };
    assert_eq!(code, 0, "{listed}");
    let names: Vec<&str> = listed["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["calculator", "file_ops", "misbehave_native", "web_search"], "{listed}");
    let call = |expression: &str| {
        let arg = format!("expression={expression}");
        inspector(&d, &["--method", "tools/call", "--tool-name", "calculator", "--tool-arg", &arg]).unwrap()
    };
    let (code, called) = call("6*7");
    assert_eq!((code, &called["structuredContent"]), (0, &json!({"expression": "6*7", "result": 42})), "{called}");
    // The Inspector tells a tool's isError apart from its own failures: exit 5.
    let (code, failed) = call("1/0");
    assert_eq!((code, &failed["error"]["code"]), (5, &json!("tool_is_error")), "{failed}");
}

/// The README's set-up: the repo's plugins under the repo's policies, with their keys and an
/// admin's private CA. The proxy sends each upstream's port 443 to a TLS stand-in on 127.0.0.2
/// (which each grant lets them reach, the one change to the repo's policies).
async fn shipped(ca: &TestCa) -> (Daemon, Vec<MockServer>) {
    let upstreams = vec![
        MockServer::start_tls("127.0.0.2", ca.server(&["api.duckduckgo.com", "html.duckduckgo.com"]), duckduckgo),
        MockServer::start_tls("127.0.0.2", ca.server(&["api.openweathermap.org"]), openweathermap),
        MockServer::start_tls("127.0.0.2", ca.server(&["newsapi.org"]), newsapi),
    ];
    let read = |file: &str| std::fs::read_to_string(common::repo_dir().join("policies").join(file)).unwrap();
    let mut grants = read("plugins.toml");
    for plugin in ["web_search", "weather", "news"] {
        let section = format!("[plugins.{plugin}]\n");
        grants = grants.replace(&section, &format!("{section}private_addresses = [\"127.0.0.2\"]\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(&dir.path().join("private-ca.pem"));
    let d = Daemon::builder()
        .plugins(&["calculator", "file_ops", "web_search", "weather", "news"])
        .policy(&format!("{}\n{grants}", read("default.toml")))
        .secrets(SECRETS)
        .proxy_host("api.duckduckgo.com:443", &upstreams[0].target())
        .proxy_host("html.duckduckgo.com:443", &upstreams[0].target())
        .proxy_host("api.openweathermap.org:443", &upstreams[1].target())
        .proxy_host("newsapi.org:443", &upstreams[2].target())
        .config(&format!("ca_certificates = [{ca_file:?}]\n"))
        .start()
        .await;
    // The CA is read at start-up, into the daemon's own bundle.
    drop(dir);
    (d, upstreams)
}

#[tokio::test]
async fn an_assistant_lists_and_calls_every_shipped_plugin() {
    require_root!();
    let Some(python) = python() else { return };
    let ca = TestCa::new("Ironclaw test CA");
    let (d, _upstreams) = shipped(&ca).await;
    let calls = json!([
        ["calculator", {"expression": "sqrt(16) + 2**3"}],
        ["file_ops", {"operation": "write", "path": "notes.txt", "content": "from the assistant"}],
        ["file_ops", {"operation": "read", "path": "notes.txt"}],
        ["web_search", {"query": "rust"}],
        ["weather", {"location": "London,GB"}],
        ["news", {"endpoint": "top_headlines", "country": "us"}],
    ]);
    for transport in ["stdio", "unix"] {
        let said = ClientSetup::new(&d, transport).run(&python, "tour", &calls.to_string()).finish().await;
        let tools = said[1]["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["calculator", "file_ops", "news", "weather", "web_search"], "{transport}: {said:?}");
        for tool in tools {
            assert!(
                tool["outputSchema"]["type"] == "object",
                "{transport}: every shipped plugin declares its output: {tool}"
            );
            assert!(tool["description"].as_str().unwrap().len() > 150, "{transport}: say what it does: {tool}");
        }
        for (n, call) in said[2..].iter().enumerate() {
            assert_eq!(call["result"]["isError"], false, "{transport}: call {n}: {call}");
        }
        let data = |n: usize| &said[2 + n]["result"]["structured"];
        assert_eq!(data(0)["result"], 12, "{transport}");
        assert_eq!(data(2)["content"], "from the assistant", "{transport}");
        assert_eq!(
            data(3)["results"][0]["url"],
            "https://en.wikipedia.org/wiki/Rust_(programming_language)",
            "{transport}"
        );
        assert_eq!((&data(4)["location"], &data(4)["temperature"]), (&json!("London,GB"), &json!(11.2)), "{transport}");
        assert!(!data(5)["articles"].as_array().unwrap().is_empty(), "{transport}: {}", data(5));
    }
}

#[tokio::test]
async fn sessions_are_capped_and_a_closed_one_frees_its_place() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).api("mcp_max_sessions = 2\n").start().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "flood", "version": "1"}}});
    let accept = [("accept", "application/json, text/event-stream")];
    let open = async || d.client().post_with_headers("/mcp", &initialize, &accept).await.unwrap();
    let first = open().await;
    assert_eq!(first.status, 200, "{}", first.body);
    let id = first.header("mcp-session-id").expect("a session id").to_string();
    assert_eq!(open().await.status, 200);
    let refused = open().await;
    assert_eq!(refused.status, 500, "{}", refused.body);
    let why = format!("{}", refused.body);
    assert!(why.contains("2 MCP sessions are open, the most this daemon keeps"), "{why}");

    let closed = d.client().send_with_headers(hyper::Method::DELETE, "/mcp", None, &[("mcp-session-id", &id)]).await;
    assert!(closed.unwrap().status.is_success());
    common::wait_until("the closed session's place is free", async || open().await.status == 200).await;
}
