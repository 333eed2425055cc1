//! Hot reload through the real daemon and its inotify watcher: under load with zero failed
//! requests, refused candidates (broken manifest, ABI mismatch, half-written library), the
//! automatic rollback of a version that crashes, backups and manual rollback, policy reload,
//! and plugin folders added and removed while the daemon runs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{Value, json};

/// Polls `GET /api/v1/plugins/{name}` until `done` holds; panics with the last state after 10 s.
async fn wait_for(d: &Daemon, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = d.get(&format!("/api/v1/plugins/{name}")).await.body;
        if done(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "{name} never reached the expected state: {info}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn version_of(info: &Value) -> &str {
    info["manifest"]["version"].as_str().unwrap_or_default()
}

/// Rewrites the manifest's version the way editors do: a temporary file, then a rename.
fn set_version(plugin_dir: &Path, version: &str) {
    let manifest = plugin_dir.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let old = text.lines().find(|l| l.starts_with("version = ")).unwrap().to_string();
    let tmp = plugin_dir.join(".plugin.toml.swp");
    std::fs::write(&tmp, text.replace(&old, &format!("version = \"{version}\""))).unwrap();
    std::fs::rename(&tmp, &manifest).unwrap();
}

fn calculator_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("plugins/calculator")
}

async fn calculate(d: &Daemon) -> Value {
    d.exec("calculator", json!({"expression": "6*7"})).await
}

#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    require_root!();
    let d = Arc::new(Daemon::builder().plugins(&["calculator"]).max_concurrent(8).start().await);
    let dir = calculator_dir(&d);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (d, stop) = (d.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let a = d
                        .client()
                        .post("/api/v1/plugins/calculator/execute", &json!({"parameters": {"expression": "6*7"}}))
                        .await
                        .unwrap();
                    seen.push((a.status.as_u16(), a.body));
                }
                seen
            })
        })
        .collect();
    let versions: Vec<String> = (1..=10).map(|i| format!("1.0.{i}")).collect();
    for version in &versions {
        set_version(&dir, version);
        let info = wait_for(&d, "calculator", |i| version_of(i) == version).await;
        assert_eq!(info["state"], "enabled");
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut served = std::collections::BTreeSet::new();
    for client in clients {
        for (status, body) in client.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "a request failed during reloads: {body}");
            assert_eq!((body["status"].as_str(), &body["data"]["result"]), (Some("success"), &json!(42)), "{body}");
            served.insert(body["plugin_version"].as_str().unwrap().to_string());
        }
    }
    let known: std::collections::BTreeSet<String> =
        std::iter::once("1.0.0".to_string()).chain(versions.iter().cloned()).collect();
    assert!(served.is_subset(&known), "every response is from a version that was installed: {served:?}");
    assert!(served.len() >= 5, "responses came from many versions as they were swapped in: {served:?}");
    assert!(total > 100, "{total} requests");
    let info = d.get("/api/v1/plugins/calculator").await.body;
    let reloads = info["events"].as_array().unwrap().iter().filter(|e| e["event"] == "reloaded").count();
    assert_eq!(reloads, 10, "{info}");
}

#[tokio::test]
async fn refused_candidates_leave_the_serving_version_alone() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).start().await;
    let dir = calculator_dir(&d);
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();

    // A broken manifest.
    std::fs::write(dir.join("plugin.toml"), manifest.replace("[runtime]", "colour = \"red\"\n[runtime]")).unwrap();
    let info = wait_for(&d, "calculator", |i| !i["reload_error"].is_null()).await;
    let error = info["reload_error"].as_str().unwrap();
    assert!(error.contains("plugin.toml:") && error.contains("unknown field `colour`"), "{error}");
    assert_eq!(info["state"], "enabled");
    assert_eq!(calculate(&d).await["data"]["result"], 42, "the old version keeps serving");
    assert!(info["events"].as_array().unwrap().iter().any(|e| e["event"] == "reload_failed"), "{info}");

    // A library built for another ABI: refused by the trial load.
    std::fs::write(dir.join("plugin.toml"), &manifest).unwrap();
    wait_for(&d, "calculator", |i| i["reload_error"].is_null()).await;
    std::fs::copy(common::target_dir().join("libabi_mismatch.so"), dir.join("libcalculator.so.new")).unwrap();
    std::fs::rename(dir.join("libcalculator.so.new"), dir.join("libcalculator.so")).unwrap();
    let info = wait_for(&d, "calculator", |i| i["reload_error"].as_str().is_some_and(|e| e.contains("ABI"))).await;
    assert_eq!(
        info["reload_error"],
        "trial load failed: error: failed to load the plugin: the plugin was built for ABI version 99, this runner speaks version 1"
    );
    assert_eq!(calculate(&d).await["data"]["result"], 42);

    // The reload API says the same.
    let a = d.client().post("/api/v1/plugins/calculator/reload", &json!({})).await.unwrap();
    assert_eq!((a.status.as_u16(), a.body["result"].as_str()), (200, Some("failed")), "{}", a.body);
    assert!(a.body["reason"].as_str().unwrap().contains("ABI version 99"));
}

#[tokio::test]
async fn a_half_written_library_is_never_loaded() {
    require_root!();
    let d = Arc::new(Daemon::builder().plugins(&["calculator"]).start().await);
    let dir = calculator_dir(&d);
    let library = std::fs::read(dir.join("libcalculator.so")).unwrap();
    let before = d.get("/api/v1/plugins/calculator").await.body;
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (d, stop) = (d.clone(), stop.clone());
        tokio::spawn(async move {
            let mut results = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                results.push(calculate(&d).await);
            }
            results
        })
    };
    // The new version's manifest lands first; its library is then written in place, in chunks,
    // with pauses longer than the debounce (as a slow `cp` over the file would).
    set_version(&dir, "1.1.0");
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(dir.join("libcalculator.so")).unwrap();
    use std::io::Write;
    let chunk = library.len() / 4 + 1;
    for part in library.chunks(chunk) {
        file.write_all(part).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    drop(file);
    let info = wait_for(&d, "calculator", |i| version_of(i) == "1.1.0").await;
    stop.store(true, Ordering::SeqCst);
    let complete = [before["digest"].as_str().unwrap(), info["digest"].as_str().unwrap()];
    for r in client.await.unwrap() {
        assert_eq!(r["status"], "success", "an execution failed while the library was half-written: {r}");
        assert!(complete.contains(&r["plugin_digest"].as_str().unwrap()), "served by a partial version: {r}");
    }
    let events = info["events"].as_array().unwrap();
    let refused: Vec<&Value> = events.iter().filter(|e| e["event"] == "reload_failed").collect();
    assert!(!refused.is_empty(), "partial writes were seen and refused: {info}");
    assert!(refused.iter().all(|e| e["detail"].as_str().unwrap().contains("truncated")), "{refused:?}");
    assert_eq!(
        events.iter().filter(|e| e["event"] == "reloaded").count(),
        1,
        "only the complete file was swapped in: {info}"
    );
    assert!(info["reload_error"].is_null(), "the completed write cleared the error: {info}");
    assert_ne!(info["digest"], before["digest"]);
    assert_eq!(calculate(&d).await["plugin_version"], "1.1.0");
}

const FLAKY_V1: &str = r#"read request
echo '{"status": "success", "data": {"version": 1}}'
"#;
const FLAKY_V2: &str = r#"read request
case "$request" in
  *'"validate"'*) echo '{"status": "success", "data": null}' ;;
  *) kill -SEGV $$ ;;
esac
"#;

fn write_flaky(plugins: &Path, version: &str, script: &str) {
    let dir = plugins.join("flaky");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run.sh"), script).unwrap();
    let manifest = format!(
        "name = \"flaky\"\nversion = \"{version}\"\ndescription = \"a shell plugin\"\napi = \"^1\"\n\
         [runtime]\ntype = \"exec\"\ncommand = [\"sh\", \"run.sh\"]\n[parameters]\ntype = \"object\"\n"
    );
    std::fs::write(dir.join(".plugin.toml.tmp"), manifest).unwrap();
    std::fs::rename(dir.join(".plugin.toml.tmp"), dir.join("plugin.toml")).unwrap();
}

#[tokio::test]
async fn a_new_version_that_crashes_is_rolled_back() {
    require_root!();
    let d = Daemon::builder().config("").start().await;
    let plugins = d.dir.path().join("plugins");
    // Added while the daemon runs.
    write_flaky(&plugins, "1.0.0", FLAKY_V1);
    wait_for(&d, "flaky", |i| i["state"] == "enabled").await;
    assert_eq!(d.exec("flaky", json!({})).await["data"]["version"], 1);

    // Version 2 passes its trial load (it answers `validate`) but crashes when it works.
    write_flaky(&plugins, "2.0.0", FLAKY_V2);
    wait_for(&d, "flaky", |i| version_of(i) == "2.0.0").await;
    let r = d.exec("flaky", json!({})).await;
    assert_eq!((r["status"].as_str(), r["plugin_version"].as_str()), (Some("crashed"), Some("2.0.0")), "{r}");
    let info = wait_for(&d, "flaky", |i| version_of(i) == "1.0.0").await;
    let rollback = info["events"].as_array().unwrap().iter().rev().find(|e| e["event"] == "rolled_back").unwrap();
    assert!(rollback["detail"].as_str().unwrap().starts_with("automatic rollback: version 2.0.0"), "{rollback}");
    assert!(d.log().contains("rolled back"), "the rollback is logged");
    assert_eq!(d.exec("flaky", json!({})).await["data"]["version"], 1, "version 1 serves again");

    // Removed while the daemon runs.
    std::fs::remove_dir_all(plugins.join("flaky")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/api/v1/plugins/flaky").await.status != 404 {
        assert!(Instant::now() < deadline, "the removed plugin is still listed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn backups_are_kept_pruned_and_restorable() {
    require_root!();
    let d =
        Daemon::builder().plugins(&["calculator"]).config("[reload]\nbackups_kept = 2\nwatch = false\n").start().await;
    let dir = calculator_dir(&d);
    for version in ["1.0.1", "1.0.2", "1.0.3"] {
        set_version(&dir, version);
        let a = d.client().post("/api/v1/plugins/calculator/reload", &json!({})).await.unwrap();
        assert_eq!(
            (a.body["result"].as_str(), a.body["version"].as_str()),
            (Some("changed"), Some(version)),
            "{}",
            a.body
        );
    }
    let a = d.client().post("/api/v1/plugins/calculator/reload", &json!({})).await.unwrap();
    assert_eq!(a.body["result"], "unchanged", "{}", a.body);
    let info = d.get("/api/v1/plugins/calculator").await.body;
    let last = info["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "reload_unchanged", "every reload's result is in the history: {info}");

    let list = d.get("/api/v1/plugins/calculator/backups").await.body;
    let kept: Vec<&str> = list["backups"].as_array().unwrap().iter().map(|b| b["version"].as_str().unwrap()).collect();
    assert_eq!(kept, ["1.0.2", "1.0.1"], "the last two, newest first: {list}");
    let on_disk = std::fs::read_dir(d.dir.path().join("state/backups/calculator"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(on_disk, 2);

    let oldest = list["backups"][1]["id"].as_str().unwrap();
    let out = d.cli(&["rollback", "calculator", oldest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = calculate(&d).await;
    assert_eq!((r["plugin_version"].as_str(), &r["data"]["result"]), (Some("1.0.1"), &json!(42)));
    let info = d.get("/api/v1/plugins/calculator").await.body;
    assert!(info["events"].as_array().unwrap().iter().any(|e| e["event"] == "rolled_back"), "{info}");

    for bad in ["../../../etc", "1.0.0-1", "..", "x/y"] {
        let a = d.client().post("/api/v1/plugins/calculator/rollback", &json!({"backup": bad})).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body["error"]["code"].as_str()), (404, Some("backup_not_found")), "{bad}");
    }
    let out = d.cli(&["backups", "calculator"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1.0.3"), "the version rolled back from was backed up too");
}

#[tokio::test]
async fn policy_reloads_apply_or_keep_the_last_good_set() {
    require_root!();
    let grant = format!("{}\n[plugins.file_ops]\nworkspace = \"1MiB\"\n", common::DEFAULT_POLICY);
    let d = Daemon::builder().plugins(&["file_ops", "calculator"]).policy(&grant).start().await;
    let policy_file = d.dir.path().join("policies/test.toml");
    wait_for(&d, "file_ops", |i| i["state"] == "enabled").await;

    // Invalid: the last good set stays, and the error (with its position) is in /system.
    std::fs::write(&policy_file, format!("{grant}\n[caps]\nmemroy = \"1GiB\"\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let system = d.get("/api/v1/system").await.body;
        if let Some(e) = system["policy"]["reload_error"].as_str() {
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "no policy error reported: {system}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(error.contains("test.toml:") && error.contains("unknown field `memroy`"), "{error}");
    assert!(d.log().contains("policy reload refused"));
    assert_eq!(d.exec("file_ops", json!({"operation": "list"})).await["status"], "success");

    // Valid, without the workspace grant: file_ops is no longer enabled, with the reason.
    std::fs::write(&policy_file, common::DEFAULT_POLICY).unwrap();
    let info = wait_for(&d, "file_ops", |i| i["state"] == "not_granted").await;
    assert!(info["reason"].as_str().unwrap().contains("permission workspace is not granted"), "{info}");
    assert!(d.get("/api/v1/system").await.body["policy"]["reload_error"].is_null());
    assert_eq!(calculate(&d).await["status"], "success", "the others are untouched");

    // And back.
    std::fs::write(&policy_file, &grant).unwrap();
    wait_for(&d, "file_ops", |i| i["state"] == "enabled").await;
}

#[tokio::test]
async fn sighup_reloads_everything() {
    require_root!();
    let d = Daemon::builder().plugins(&["calculator"]).config("[reload]\nwatch = false\n").start().await;
    assert!(!d.log().contains("watching for changes"), "no watcher was started: {}", d.log());
    set_version(&calculator_dir(&d), "3.0.0");
    assert_eq!(version_of(&d.get("/api/v1/plugins/calculator").await.body), "1.0.0");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(&d, "calculator", |i| version_of(i) == "3.0.0").await;
    assert!(d.log().contains("reloading everything why=\"SIGHUP\""));
    let out = d.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
