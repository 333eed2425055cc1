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

#[tokio::test]
async fn a_result_of_another_shape_than_its_output_schema_is_an_error() {
    require_root!();
    let d = Daemon::builder().plugins(&["misbehave_native"]).start().await;
    // The fixture's `sleep` answers {"slept": true}; declare that it answers a string.
    let manifest = d.dir.path().join("plugins/misbehave_native/plugin.toml");
    let declared = "\n[output]\ntype = \"object\"\nrequired = [\"slept\"]\nproperties.slept = { type = \"string\" }\n";
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(declared);
    std::fs::write(&manifest, &text).unwrap();
    let reloaded = d.client().post("/api/v1/plugins/misbehave_native/reload", &json!({})).await.unwrap();
    assert_eq!(reloaded.body["result"], "changed", "{}", reloaded.body);

    let r = d.exec("misbehave_native", json!({"attack": "sleep", "seconds": 0})).await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(
        error(&r),
        "the plugin's result does not match its [output] schema at '/slept': true is not of type \"string\"",
        "{r}"
    );
    assert!(r["data"].is_null(), "the mismatching data is not passed on: {r}");

    // Declared as it is, the same result passes.
    let as_it_is = declared.replace("{ type = \"string\" }", "{ type = \"boolean\" }");
    std::fs::write(&manifest, text.replace(declared, &as_it_is)).unwrap();
    d.client().post("/api/v1/plugins/misbehave_native/reload", &json!({})).await.unwrap();
    let r = d.exec("misbehave_native", json!({"attack": "sleep", "seconds": 0})).await;
    assert_eq!((&r["status"], &r["data"]), (&json!("success"), &json!({"slept": true})), "{r}");
}
