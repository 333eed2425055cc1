//! Permissions through the real daemon: policy grants and their provenance, plugins that are
//! not granted what they declare, workspace confinement (escapes fail at the kernel), secrets
//! (a plugin sees only its own; no value leaves in results or logs), rate limits and the cache.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::{Daemon, MockResponse, MockServer};
use serde_json::{Value, json};

const WORKSPACE: &str = "/run/ironclaw/workspace";

fn grants() -> String {
    format!(
        r#"{}
[plugins.granted_native]
reason = "permission tests"
network = ["allowed.test", "allowed.test:8080", "*.wild.test", "loopback.test", "metadata.test", "blocked.test"]
workspace = "64KiB"
secrets = [{{ value = "FIXTURE_TOKEN", reason = "the fixture's own token" }}]

[plugins.granted_exec]
workspace = "1MiB"
secrets = ["OTHER_TOKEN"]

[deny]
network = [{{ value = "blocked.test", reason = "blocked for everyone" }}]
"#,
        common::DEFAULT_POLICY
    )
}

const SECRETS: &str = "FIXTURE_TOKEN = \"fixture-token-value\"\nOTHER_TOKEN = \"other-token-value\"\n";

async fn daemon() -> Daemon {
    Daemon::builder().plugins(&["granted_native", "granted_exec"]).policy(&grants()).secrets(SECRETS).start().await
}

fn errno(r: &Value) -> &str {
    r["data"]["outcome"]["errno_name"].as_str().unwrap_or_else(|| panic!("no errno in {r}"))
}

fn workspace_of(d: &Daemon, plugin: &str) -> PathBuf {
    d.workspace(plugin)
}

#[tokio::test]
async fn plugin_info_shows_effective_permissions_and_their_rules() {
    require_root!();
    let d = daemon().await;
    let info = d.get("/api/v1/plugins/granted_native").await.body;
    let eff = &info["effective_permissions"];
    let hosts: Vec<&str> = eff["network"].as_array().unwrap().iter().map(|g| g["value"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["allowed.test", "allowed.test:8080", "*.wild.test", "loopback.test", "metadata.test"]);
    assert_eq!(eff["network"][0]["granted_by"]["rule"], "plugins.granted_native.network[0]");
    assert_eq!(eff["network"][0]["granted_by"]["reason"], "permission tests");
    assert!(eff["network"][0]["granted_by"]["file"].as_str().unwrap().ends_with("policies/test.toml"));
    assert_eq!(
        eff["denied"][0],
        json!({
            "permission": "network", "value": "blocked.test",
            "denied_by": {"file": eff["network"][0]["granted_by"]["file"], "rule": "deny.network[0]", "reason": "blocked for everyone"}
        })
    );
    assert_eq!(eff["secrets"][0]["value"], "FIXTURE_TOKEN");
    assert_eq!(eff["secrets"][0]["granted_by"]["reason"], "the fixture's own token");
    assert_eq!(eff["workspace"]["value"], "64KiB");
    assert_eq!(info["effective_limits"]["timeout"], "8s");
    assert_eq!(info["limit_sources"]["timeout"], "plugin.toml");
    assert!(!info.to_string().contains("fixture-token-value"), "a secret value in the API: {info}");
}

#[tokio::test]
async fn a_plugin_declaring_an_ungranted_permission_is_not_enabled() {
    require_root!();
    let narrower = grants().replace("\"*.wild.test\", ", "");
    let d = Daemon::builder().plugins(&["granted_native"]).policy(&narrower).secrets(SECRETS).start().await;
    let info = d.get("/api/v1/plugins/granted_native").await.body;
    assert_eq!(info["state"], "not_granted", "{info}");
    assert_eq!(
        info["reason"],
        "permission network \"*.wild.test\" is not granted by any policy (grant it under [plugins.granted_native])"
    );
    let a = d
        .client()
        .post("/api/v1/plugins/granted_native/execute", &json!({"parameters": {"attack": "identity"}}))
        .await
        .unwrap();
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("not_granted"), "{}", a.body);
    let audited = d.audit().into_iter().find(|r| r["event"] == "denied" && r["reason"] == "policy");
    let audited = audited.expect("the policy denial is audited");
    assert_eq!(audited["plugin"], "granted_native");
    assert!(audited["why"].as_str().unwrap().contains("*.wild.test"), "{audited}");

    // Granted, but the secret has no value: not enabled either, and the reason says so.
    let d =
        Daemon::builder().plugins(&["granted_exec"]).policy(&grants()).secrets("FIXTURE_TOKEN = \"x\"\n").start().await;
    let info = d.get("/api/v1/plugins/granted_exec").await.body;
    assert_eq!(info["state"], "not_granted");
    assert!(info["reason"].as_str().unwrap().contains("granted secret OTHER_TOKEN has no value"), "{info}");
}

#[tokio::test]
async fn the_workspace_is_private_persistent_and_group_owned() {
    require_root!();
    let d = daemon().await;
    for plugin in ["granted_native", "granted_exec"] {
        let file = format!("{WORKSPACE}/note.txt");
        let r = d.exec(plugin, json!({"attack": "write_file", "path": file})).await;
        assert_eq!(errno(&r), "OK", "{plugin}: {r}");
        // A later execution (possibly under another slot's uid) reads it back.
        let r = d.exec(plugin, json!({"attack": "read_file", "path": file})).await;
        assert_eq!(r["data"]["content"], "escaped", "{plugin}: {r}");
        let host = workspace_of(&d, plugin);
        let meta = std::fs::metadata(&host).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o2770), "{plugin}");
        let note = std::fs::metadata(host.join("note.txt")).unwrap();
        assert_eq!(note.gid(), meta.gid(), "files inherit the plugin's group");
        assert_eq!(note.mode() & 0o070, 0o060, "and stay group-writable");
    }
    let a = std::fs::metadata(workspace_of(&d, "granted_native")).unwrap().gid();
    let b = std::fs::metadata(workspace_of(&d, "granted_exec")).unwrap().gid();
    assert_ne!(a, b, "each plugin has its own group");
    let r = d.exec("granted_native", json!({"attack": "identity"})).await;
    assert_eq!(r["data"]["gid"], a, "{r}");
    // Files written there cannot be executed (noexec mount, no Landlock execute right).
    let r = d.exec("granted_native", json!({"attack": "list_dir", "path": WORKSPACE})).await;
    assert_eq!(errno(&r), "OK", "{r}");
}

#[tokio::test]
async fn workspace_escapes_fail_at_the_kernel() {
    require_root!();
    let d = daemon().await;
    let outside = tempfile::Builder::new().prefix("ironclaw-outside-").tempdir_in("/tmp").unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret_path = secret.display().to_string();
    for plugin in ["granted_native", "granted_exec"] {
        // `..` out of the workspace, and absolute paths: the sandbox's root does not hold them.
        let dotdot = format!("{WORKSPACE}/../../..{secret_path}");
        for path in [dotdot.as_str(), secret_path.as_str(), "/etc/shadow", "/proc/self/root/etc/shadow"] {
            let r = d.exec(plugin, json!({"attack": "read_file", "path": path})).await;
            assert_eq!(errno(&r), "ENOENT", "{plugin} read {path}: {r}");
            assert_eq!(r["data"]["content"], "", "{plugin} {path}");
        }
        let escape = outside.path().join(format!("{plugin}-written"));
        let r = d
            .exec(plugin, json!({"attack": "write_file", "path": format!("{WORKSPACE}/../../..{}", escape.display())}))
            .await;
        assert_eq!(errno(&r), "ENOENT", "{plugin}: {r}");
        assert!(!escape.exists());

        // A symlink the plugin plants in its workspace, pointing out: it leads nowhere.
        let link = format!("{WORKSPACE}/{plugin}-link");
        let r = d.exec(plugin, json!({"attack": "symlink", "target": secret_path, "link": link})).await;
        assert_eq!(errno(&r), "OK", "creating a symlink is allowed: {r}");
        let r = d.exec(plugin, json!({"attack": "read_file", "path": link})).await;
        assert_eq!(errno(&r), "ENOENT", "{plugin} through its symlink: {r}");

        // A hard link to a file of the sandbox's root, made from inside: the workspace is a
        // mount of its own, and the kernel refuses links across mounts.
        let hard = format!("{WORKSPACE}/{plugin}-hard");
        let r = d.exec(plugin, json!({"attack": "hardlink", "target": "/etc/passwd", "link": hard})).await;
        assert_eq!(errno(&r), "EXDEV", "{plugin} hard link out of the workspace: {r}");
    }
    // A symlink planted from the host (by anyone able to write the workspace) is no way out.
    let planted = workspace_of(&d, "granted_native").join("planted");
    std::os::unix::fs::symlink(&secret, &planted).unwrap();
    let r = d.exec("granted_native", json!({"attack": "read_file", "path": format!("{WORKSPACE}/planted")})).await;
    assert_eq!(errno(&r), "ENOENT", "{r}");
    // Another plugin's workspace is out of reach too.
    std::fs::write(workspace_of(&d, "granted_exec").join("note.txt"), "theirs").unwrap();
    let other = format!("{}/state/workspaces/granted_exec/note.txt", d.dir.path().display());
    let r = d.exec("granted_native", json!({"attack": "read_file", "path": other})).await;
    assert_eq!(errno(&r), "ENOENT", "{r}");
}

/// The workspace's size holds while the plugin writes: thousands of small files (each far under
/// RLIMIT_FSIZE) stop at the cap with ENOSPC, in the same execution.
#[tokio::test]
async fn writing_past_the_workspace_size_with_many_files_gets_enospc() {
    require_root!();
    let d = daemon().await;
    let fill = json!({"attack": "fill_dir", "dir": format!("{WORKSPACE}/many"), "count": 4000, "bytes": 4096});
    let r = d.exec("granted_exec", fill).await;
    assert_eq!(errno(&r), "ENOSPC", "{r}");
    let written = r["data"]["bytes"].as_u64().unwrap();
    assert!(
        written > 0 && written <= 1 << 20,
        "stopped at the 1 MiB size: {written} bytes in {} files",
        r["data"]["files"]
    );
    // Measured from the daemon's side: the workspace's filesystem holds no more than its size.
    let stats = nix::sys::statvfs::statvfs(&workspace_of(&d, "granted_exec")).unwrap();
    assert!(stats.blocks() * stats.fragment_size() <= 1 << 20, "{}", stats.blocks() * stats.fragment_size());
    // And the plugin still has what it wrote, read-only from now on.
    let r = d.exec("granted_exec", json!({"attack": "read_file", "path": format!("{WORKSPACE}/many/d0/f0")})).await;
    assert_eq!(errno(&r), "OK", "{r}");
    let r = d.exec("granted_exec", json!({"attack": "write_file", "path": format!("{WORKSPACE}/more")})).await;
    assert!(["ENOSPC", "EROFS"].contains(&errno(&r)), "{r}");
}

#[tokio::test]
async fn a_full_workspace_is_read_only() {
    require_root!();
    let d = daemon().await;
    let big = format!("{WORKSPACE}/big");
    // 100 KiB fits under RLIMIT_FSIZE but fills the 64 KiB workspace.
    let r = d.exec("granted_native", json!({"attack": "write_file", "path": big, "bytes": 100 * 1024})).await;
    assert_eq!(errno(&r), "OK", "{r}");
    let r = d.exec("granted_native", json!({"attack": "write_file", "path": format!("{WORKSPACE}/more")})).await;
    assert_eq!(errno(&r), "EROFS", "a full workspace is mounted read-only: {r}");
    let r = d.exec("granted_native", json!({"attack": "read_file", "path": big})).await;
    assert_eq!(errno(&r), "OK", "and stays readable: {}", r["status"]);
}

#[tokio::test]
async fn each_plugin_sees_only_its_own_secrets_and_no_value_leaves() {
    require_root!();
    let d = daemon().await;
    let names = |r: &Value| -> Vec<String> {
        r["data"]["env"].as_array().unwrap().iter().map(|kv| kv[0].as_str().unwrap().to_string()).collect()
    };
    let native = d.exec("granted_native", json!({"attack": "identity"})).await;
    assert!(
        names(&native).contains(&"FIXTURE_TOKEN".to_string()) && !names(&native).contains(&"OTHER_TOKEN".to_string())
    );
    let exec = d.exec("granted_exec", json!({"attack": "identity"})).await;
    assert!(names(&exec).contains(&"OTHER_TOKEN".to_string()) && !names(&exec).contains(&"FIXTURE_TOKEN".to_string()));
    // The plugin did receive the value; it is redacted on the way out.
    let value =
        native["data"]["env"].as_array().unwrap().iter().find(|kv| kv[0] == "FIXTURE_TOKEN").unwrap()[1].clone();
    assert_eq!(value, "[REDACTED:FIXTURE_TOKEN]");

    // A plugin that prints its secret to stderr and puts it in its error.
    let leak = d.exec("granted_exec", json!({"attack": "leak_env"})).await;
    assert_eq!(leak["status"], "error");
    assert!(leak["error"].as_str().unwrap().contains("OTHER_TOKEN=[REDACTED:OTHER_TOKEN]"), "{leak}");
    assert!(leak["log"].as_str().unwrap().contains("[REDACTED:OTHER_TOKEN]"), "{leak}");
    let id = leak["id"].as_str().unwrap();
    let stored = d.get(&format!("/api/v1/executions/{id}")).await.body;
    let everything = [
        native.to_string(),
        exec.to_string(),
        leak.to_string(),
        stored.to_string(),
        d.get("/api/v1/plugins/granted_exec").await.body.to_string(),
        d.get("/api/v1/system").await.body.to_string(),
        d.log(),
    ];
    for text in everything {
        assert!(
            !text.contains("fixture-token-value") && !text.contains("other-token-value"),
            "a secret leaked: {text}"
        );
    }
}

fn search_policy(rate: &str) -> String {
    format!(
        r#"{}
[plugins.web_search]
network = ["api.duckduckgo.com", "html.duckduckgo.com"]
private_addresses = ["127.0.0.2"]
caps = {{ rate = "{rate}" }}
config = {{ api_url = "http://api.duckduckgo.com/", html_url = "http://html.duckduckgo.com/html/", timeout_s = 3 }}
"#,
        common::DEFAULT_POLICY
    )
}

fn instant_answer(r: &common::MockRequest) -> MockResponse {
    match r.query("q").as_deref() {
        Some("fail") => MockResponse::json(500, json!({})),
        q => MockResponse::json(
            200,
            json!({
                "Heading": q, "AbstractText": format!("About {}", q.unwrap_or_default()),
                "AbstractURL": "https://example.org/", "RelatedTopics": []
            }),
        ),
    }
}

/// web_search at `rate`, against a stand-in for the Instant Answer API.
async fn search_daemon(rate: &str) -> (Daemon, MockServer) {
    let upstream = MockServer::start("127.0.0.2", instant_answer);
    let d = Daemon::builder()
        .plugins(&["web_search"])
        .policy(&search_policy(rate))
        .proxy_host("api.duckduckgo.com", &upstream.target())
        .start()
        .await;
    (d, upstream)
}

#[tokio::test]
async fn results_are_cached_but_failures_never() {
    require_root!();
    let (d, upstream) = search_daemon("100/min").await;
    let first = d.exec("web_search", json!({"query": "rust", "max_results": 3})).await;
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(first["cached"], false);
    // The same parameters, in another key order: a hit, marked, with the first execution's id.
    let again = d.exec("web_search", json!({"max_results": 3, "query": "rust"})).await;
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["data"], first["data"]);
    assert_eq!(upstream.requests().len(), 1, "a hit does not reach the upstream");
    // Different parameters miss.
    let other = d.exec("web_search", json!({"query": "rust", "max_results": 2})).await;
    assert_eq!(other["cached"], false);
    // Failures run again every time.
    for _ in 0..2 {
        let failed = d.exec("web_search", json!({"query": "fail"})).await;
        assert_eq!(failed["status"], "error", "{failed}");
        assert_eq!(failed["cached"], false);
    }
    assert_eq!(upstream.requests().len(), 4);
    let stats = d.get("/api/v1/plugins/web_search/stats").await.body;
    assert_eq!(stats["cache_hits"], 1, "{stats}");
}

#[tokio::test]
async fn over_the_rate_limit_callers_get_429_with_retry_after() {
    require_root!();
    let (d, upstream) = search_daemon("2/min").await;
    for q in ["one", "two"] {
        assert_eq!(d.exec("web_search", json!({"query": q})).await["status"], "success");
    }
    let a = d
        .client()
        .post("/api/v1/plugins/web_search/execute", &json!({"parameters": {"query": "three"}}))
        .await
        .unwrap();
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["status"], "rate_limited");
    assert_eq!(a.body["error"]["code"], "rate_limited");
    let retry = a.header("retry-after").expect("a Retry-After header").parse::<u64>().unwrap();
    assert!((25..=30).contains(&retry), "one token every 30 s: {retry}");
    assert_eq!(a.body["retry_after_s"], retry);
    let audited = d.audit().into_iter().filter(|r| r["event"] == "denied" && r["reason"] == "rate_limit").count();
    assert_eq!(audited, 1, "the rate-limit denial is audited once");
    // A cached result is still served: it costs no token.
    assert_eq!(d.exec("web_search", json!({"query": "one"})).await["cached"], true);
    assert_eq!(upstream.requests().len(), 2);
    let stats = d.get("/api/v1/plugins/web_search/stats").await.body;
    assert_eq!(stats["rate_limited"], 1, "{stats}");
}

#[tokio::test]
async fn policy_check_validates_offline() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    let plugins = common::repo_dir().join("plugins");
    std::fs::create_dir(&policies).unwrap();
    let check = |global: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
            .args(global)
            .args(["policy", "check"])
            .arg(&policies)
            .arg("--plugins")
            .arg(&plugins)
            .output()
            .unwrap()
    };
    // The repository's own policies grant everything its plugins declare.
    for file in ["default.toml", "plugins.toml"] {
        std::fs::copy(common::repo_dir().join("policies").join(file), policies.join(file)).unwrap();
    }
    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("weather: ok"), "{stdout}");
    assert!(
        stdout.contains("api.openweathermap.org") && stdout.contains("plugins.weather.network[0] (OpenWeatherMap API)"),
        "{stdout}"
    );
    let report: Value = serde_json::from_slice(&check(&["--json"]).stdout).unwrap();
    assert_eq!(report["ok"], true);
    let weather = report["plugins"].as_array().unwrap().iter().find(|p| p["plugin"] == "weather").unwrap();
    assert_eq!(weather["effective"]["secrets"][0]["value"], "OPENWEATHER_API_KEY", "{weather}");

    // A typo: exit 1, with the file, line and column and what was expected.
    let plugins_toml = std::fs::read_to_string(policies.join("plugins.toml")).unwrap();
    std::fs::write(
        policies.join("plugins.toml"),
        plugins_toml.replace("secrets = [{ value = \"NEWSAPI_KEY\"", "secret = [{ value = \"NEWSAPI_KEY\""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclaw"))
        .args(["--json", "policy", "check"])
        .arg(&policies)
        .arg("--plugins")
        .arg(&plugins)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("plugins.toml:") && stderr.contains("unknown field `secret`"), "{stderr}");
    assert!(stderr.contains("expected one of"), "what was expected: {stderr}");

    // Valid, but a plugin loses a grant: exit 1, naming the plugin and the permission.
    std::fs::write(
        policies.join("plugins.toml"),
        plugins_toml.replace("network = [{ value = \"newsapi.org\", reason = \"NewsAPI\" }]\n", ""),
    )
    .unwrap();
    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("news: NOT ENABLED: permission network \"newsapi.org\" is not granted"), "{stdout}");
}

/// Granted host paths appear in the sandbox's root at their own names, bound as the grant says
/// (read-only, or writable and never executable); a grant through a host symlink reaches its
/// target; everything beside them stays absent.
#[tokio::test]
async fn granted_host_paths_are_bound_at_their_names_and_nothing_beside_them() {
    require_root!();
    let base = std::path::Path::new("/tmp/ironclaw-grant-test");
    let _ = std::fs::remove_dir_all(base);
    for dir in ["read", "write", "other"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
    }
    std::fs::write(base.join("read/note.txt"), "granted to read").unwrap();
    std::fs::write(base.join("other/note.txt"), "not granted").unwrap();
    std::os::unix::fs::symlink(base.join("read"), base.join("via-link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base.join("write"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let policy = format!(
        "{}\n[plugins.granted_paths]\nreason = \"host path grants\"\nfs_read = [\"{b}/read\", \"{b}/via-link\", \"{b}/absent\"]\nfs_write = [\"{b}/write\"]\n",
        common::DEFAULT_POLICY,
        b = base.display()
    );
    let d = Daemon::builder().plugins(&["granted_paths"]).policy(&policy).start().await;
    let exec = |params: Value| d.exec("granted_paths", params);

    for path in ["read/note.txt", "via-link/note.txt"] {
        let r = exec(json!({"attack": "read_file", "path": base.join(path)})).await;
        assert_eq!((errno(&r), r["data"]["content"].as_str()), ("OK", Some("granted to read")), "{path}: {r}");
    }
    let r = exec(json!({"attack": "write_file", "path": base.join("read/new")})).await;
    assert_eq!(errno(&r), "EROFS", "a read grant is a read-only mount: {r}");
    let r = exec(json!({"attack": "write_file", "path": base.join("write/new")})).await;
    assert_eq!(errno(&r), "OK", "{r}");
    assert_eq!(std::fs::read_to_string(base.join("write/new")).unwrap(), "escaped", "the write reached the host");
    let r = exec(json!({"attack": "exec", "path": base.join("write/new")})).await;
    assert_eq!(errno(&r), "EACCES", "nothing in a write grant runs: {r}");
    for absent in ["other/note.txt", "absent"] {
        let r = exec(json!({"attack": "stat", "path": base.join(absent)})).await;
        assert_eq!(errno(&r), "ENOENT", "{absent}: {r}");
    }
    let _ = std::fs::remove_dir_all(base);
}

/// The tool list an AI assistant sees: enabled, granted plugins, with hints from what the
/// policy grants; and the same list in the vendors' function-calling formats.
#[tokio::test]
async fn the_tool_list_follows_the_grants() {
    require_root!();
    let d = daemon().await;
    let tools = d.get("/api/v1/tools").await.body;
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["granted_exec", "granted_native"], "{tools}");
    let native = &tools["tools"][1];
    assert_eq!(
        native["annotations"],
        json!({"readOnlyHint": false, "openWorldHint": true, "idempotentHint": false}),
        "a workspace and network, as granted: {native}"
    );
    assert_eq!(tools["tools"][0]["annotations"]["openWorldHint"], false);
    assert_eq!(native["inputSchema"]["required"], json!(["attack"]));
    let out = d.cli(&["tools", "export", "--format", "openai"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let openai: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(openai[1]["function"]["name"], "granted_native");
    assert_eq!(openai[1]["function"]["parameters"], native["inputSchema"]);
    // A disabled plugin is no tool.
    let disabled = d.client().put("/api/v1/plugins/granted_exec/enable", &json!({"enabled": false})).await.unwrap();
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    let tools = d.get("/api/v1/tools").await.body;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 1, "{tools}");
}
