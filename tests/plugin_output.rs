//! Broken plugins: malformed responses, odd exits and libraries that cannot be loaded. Each gets
//! a result with a clear reason; the daemon carries on serving.

mod common;

use common::Daemon;
use serde_json::{Value, json};

/// Runs the exit_with_output attack: `text` on stdout, then exit with `code`.
async fn exit_with(d: &Daemon, plugin: &str, text: &str, code: u64) -> Value {
    d.exec(plugin, json!({"attack": "exit_with_output", "text": text, "code": code})).await
}

fn error(r: &Value) -> &str {
    r["error"].as_str().unwrap_or_else(|| panic!("no error in {r}"))
}

#[tokio::test]
async fn malformed_exec_responses_are_errors_with_the_reason() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_exec"]).await;
    let plugin = "misbehave_exec";

    let r = exit_with(&d, plugin, "this is not JSON", 0).await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(error(&r).starts_with("the plugin's response is not valid: "), "{r}");

    let r = exit_with(&d, plugin, "", 3).await;
    assert_eq!(error(&r), "the plugin exited with status 3 without a valid response", "{r}");

    let r = exit_with(&d, plugin, "", 0).await;
    assert_eq!(error(&r), "the plugin produced no response", "{r}");

    // Unknown fields are refused, not ignored.
    let r = exit_with(&d, plugin, r#"{"status": "success", "data": 1, "admin": true}"#, 0).await;
    assert!(error(&r).contains("unknown field `admin`"), "{r}");

    // A status the protocol does not have: plugins cannot claim sandbox outcomes.
    let r = exit_with(&d, plugin, r#"{"status": "timeout"}"#, 0).await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(error(&r).contains("unknown variant `timeout`"), "{r}");

    let r = exit_with(&d, plugin, r#"{"status": "error"}"#, 0).await;
    assert_eq!(error(&r), "the plugin reported a failure without a message", "{r}");

    // A valid response followed by a non-zero exit still counts: the response is the contract.
    let r = exit_with(&d, plugin, r#"{"status": "success", "data": {"ok": true}}"#, 7).await;
    assert_eq!((r["status"].as_str(), &r["data"]), (Some("success"), &json!({"ok": true})), "{r}");

    assert_eq!(d.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_native_plugin_that_exits_without_answering_is_an_error() {
    require_root!();
    let d = Daemon::with_plugins(&["misbehave_native"]).await;
    let r = exit_with(&d, "misbehave_native", "stdout is not the native response channel", 0).await;
    assert_eq!((r["status"].as_str(), error(&r)), (Some("error"), "the plugin produced no response"), "{r}");
}

#[tokio::test]
async fn libraries_that_cannot_be_loaded_are_refused_with_the_reason() {
    require_root!();
    let d = Daemon::with_plugins(&["abi_mismatch", "not_elf", "calculator"]).await;

    // Both are refused by their trial load, in a sandboxed runner, before they can serve. The
    // version is checked before any other symbol is looked up: this library has no other.
    let abi = d.get("/api/v1/plugins/abi_mismatch").await.body;
    assert_eq!(abi["state"], "invalid", "{abi}");
    assert_eq!(
        abi["reason"],
        "trial load failed: error: failed to load the plugin: the plugin was built for ABI version 99, this runner speaks version 1"
    );
    let not_elf = d.get("/api/v1/plugins/not_elf").await.body;
    assert_eq!(not_elf["state"], "invalid", "{not_elf}");
    let reason = not_elf["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("trial load failed: error: failed to load the plugin: failed to load the plugin library"),
        "{reason}"
    );
    let a = d.client().post("/api/v1/plugins/not_elf/execute", &json!({"parameters": {}})).await.unwrap();
    assert_eq!(a.status, 409, "{}", a.body);

    let r = d.exec("calculator", json!({"expression": "1+1"})).await;
    assert_eq!(r["data"]["result"], 2, "the others still run: {r}");
}
