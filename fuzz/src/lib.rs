//! The fuzz targets' bodies: what Ironclaw parses from hands it does not trust. Each must
//! return (an error is fine) and never panic, overflow its stack or hang. `fuzz_targets/`
//! hands libFuzzer's inputs to them; `tests/regressions.rs` replays every input kept in
//! `regressions/<target>/` and the seeds in `seeds/<target>/`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use ironclaw_daemon::catalog::manifest::Manifest;
use ironclaw_daemon::catalog::policy::PolicySet;
use ironclaw_plugin_sdk::{Context, Plugin};
use ironclaw_protocol::{frame::read_frame, message::RunnerMessage};
use serde_json::json;

/// A plugin manifest (`plugin.toml`), as a plugin author ships it.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Manifest::parse(Path::new("plugin.toml"), text);
    }
}

/// A policy file, then every permission and limit it gives a plugin that declares a bit of
/// everything.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(set) = PolicySet::parse(vec![(PathBuf::from("policy.toml"), text.to_string())]) else { return };
    let _ = set.effective(&declaring_everything());
}

fn declaring_everything() -> Manifest {
    const MANIFEST: &str = r#"
name = "weather"
version = "1.2.3"
description = "Forecasts"
api = "^1.0"
[runtime]
type = "native"
library = "libweather.so"
[limits]
memory = "64MiB"
rate = "10/min"
cache_ttl = "10m"
[permissions]
network = ["api.weather.test", "*.tiles.test:8443"]
fs_read = ["/usr/share/zoneinfo"]
fs_write = ["/var/tmp/weather"]
workspace = true
secrets = ["WEATHER_KEY"]
[parameters]
type = "object"
"#;
    Manifest::parse(Path::new("plugin.toml"), MANIFEST).expect("the fixed manifest parses")
}

/// What the daemon reads from a runner's socket (frames, the last of them written by plugin
/// code), and an exec plugin's response on stdout.
pub fn ipc_frame(data: &[u8]) {
    let mut stream = data;
    while read_frame::<RunnerMessage>(&mut stream).is_ok() {}
    let _ = serde_json::from_slice::<ironclaw_plugin_sdk::Response>(data);
}

/// The calculator plugin, whole: the expression parser and evaluator behind its protocol.
pub fn calculator(data: &[u8]) {
    let expression = String::from_utf8_lossy(data);
    let context = Context { execution_id: "fuzz", config: &json!({}) };
    let _ = calculator::Calculator.execute(&json!({"expression": expression}), &context);
}
