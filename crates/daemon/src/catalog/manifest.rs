//! `plugin.toml`: what a plugin is, how it runs, what it may use and what input it takes.
//!
//! Parsing is strict (unknown fields are rejected) and every error names the file and the field.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::permissions::{HostPath, HostPattern, SecretName};
use crate::catalog::units::{ByteSize, Rate, Span};

pub const MANIFEST_FILE: &str = "plugin.toml";
const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{file}: failed to read: {message}")]
    Read { file: PathBuf, message: String },
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: PathBuf, line: usize, column: usize, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Invalid { file: PathBuf, field: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// For people: what a client shows as the tool's name (from `name` when absent).
    #[serde(default)]
    pub title: Option<String>,
    pub version: Version,
    /// For the model: what the plugin does, what it needs and what it returns.
    pub description: String,
    /// A semver requirement on the plugin API version (see `ironclaw_plugin_sdk::API_VERSION`).
    pub api: VersionReq,
    pub runtime: Runtime,
    #[serde(default)]
    pub dependencies: BTreeMap<String, VersionReq>,
    #[serde(default)]
    pub limits: DeclaredLimits,
    #[serde(default)]
    pub permissions: Permissions,
    /// The JSON Schema of the `parameters` object.
    pub parameters: Value,
    /// The JSON Schema of a successful result's `data`, when the plugin declares it: results
    /// are checked against it, and MCP clients get it as the tool's `outputSchema`.
    #[serde(default)]
    pub output: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum Runtime {
    /// A cdylib exporting the Ironclaw C ABI, relative to the plugin folder.
    Native { library: PathBuf },
    /// Any executable speaking JSON on stdin/stdout; argv relative to the plugin folder.
    Exec { command: Vec<String> },
}

impl Runtime {
    pub fn kind(&self) -> &'static str {
        match self {
            Runtime::Native { .. } => "native",
            Runtime::Exec { .. } => "exec",
        }
    }
}

/// Limits a plugin asks for; the daemon's defaults fill the gaps and its caps bound them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredLimits {
    pub memory: Option<ByteSize>,
    /// Share of one CPU, e.g. 0.5.
    pub cpu: Option<f64>,
    /// CPU time over the whole execution.
    pub cpu_time: Option<Span>,
    /// Wall-clock time.
    pub timeout: Option<Span>,
    pub pids: Option<u64>,
    /// Bytes of response (stdout for exec plugins).
    pub output: Option<ByteSize>,
    /// Executions allowed per period, e.g. "10/min"; over it, callers get 429.
    pub rate: Option<Rate>,
    /// How long a successful result may be served again for the same parameters.
    pub cache_ttl: Option<Span>,
    /// Executions of this plugin running at once; more wait in the daemon's bounded queue.
    pub concurrency: Option<u64>,
}

impl DeclaredLimits {
    /// Checks the values; on failure names the field (relative to `[limits]`) and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.memory.is_some_and(|m| m.0 < 1 << 20) {
            return Err(("memory", "must be at least 1MiB".into()));
        }
        if self.cpu.is_some_and(|c| !(c > 0.0 && c <= 1024.0)) {
            return Err(("cpu", "must be a share of one CPU greater than 0, e.g. 0.5".into()));
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(("timeout", "must be greater than zero".into()));
        }
        if self.cpu_time.is_some_and(|t| t.0.as_secs() < 1) {
            return Err(("cpu_time", "must be at least 1s (the kernel counts whole seconds)".into()));
        }
        if self.pids.is_some_and(|p| p == 0) {
            return Err(("pids", "must be at least 1".into()));
        }
        if self.output.is_some_and(|o| o.0 == 0) {
            return Err(("output", "must be greater than zero".into()));
        }
        if self.concurrency.is_some_and(|c| c == 0) {
            return Err(("concurrency", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// What a plugin asks to reach. It gets the part an admin's policy grants, minus what policy
/// denies (see `policy`); a declaration no policy grants keeps the plugin from being enabled.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Hosts reachable through the daemon's egress proxy.
    #[serde(default)]
    pub network: Vec<HostPattern>,
    /// Host paths readable (absolute).
    #[serde(default)]
    pub fs_read: Vec<HostPath>,
    /// Host paths writable (absolute). Most plugins want `workspace` instead.
    #[serde(default)]
    pub fs_write: Vec<HostPath>,
    /// A private, persistent directory, read-write, at `/workspace` in the sandbox.
    #[serde(default)]
    pub workspace: bool,
    /// Secrets the plugin receives as environment variables.
    #[serde(default)]
    pub secrets: Vec<SecretName>,
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A relative path that stays inside its base: no `..`, no absolute part.
fn contained_relative(path: &Path) -> bool {
    use std::path::Component::{CurDir, Normal};
    path.components().any(|c| matches!(c, Normal(_))) && path.components().all(|c| matches!(c, Normal(_) | CurDir))
}

impl Manifest {
    /// Reads and validates `dir/plugin.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        Self::load_as(dir, dir)
    }

    /// Reads `dir/plugin.toml` (a snapshot) but names `shown/plugin.toml` (the live folder it
    /// was copied from) in errors.
    pub fn load_as(dir: &Path, shown: &Path) -> Result<Self, ManifestError> {
        let file = shown.join(MANIFEST_FILE);
        let read_error = |message: String| ManifestError::Read { file: file.clone(), message };
        let meta = std::fs::metadata(dir.join(MANIFEST_FILE)).map_err(|e| read_error(e.to_string()))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(read_error(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).map_err(|e| read_error(e.to_string()))?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| parse_error(file, text, &e))?;
        manifest.validate(file)?;
        Ok(manifest)
    }

    fn validate(&self, file: &Path) -> Result<(), ManifestError> {
        let invalid = |field: &str, message: String| ManifestError::Invalid {
            file: file.to_path_buf(),
            field: field.to_string(),
            message,
        };
        if !valid_name(&self.name) {
            return Err(invalid("name", format!("{:?} must match ^[a-z][a-z0-9_-]{{0,63}}$", self.name)));
        }
        if self.description.trim().is_empty() {
            return Err(invalid("description", "must not be empty".into()));
        }
        match &self.runtime {
            Runtime::Native { library } if !contained_relative(library) => {
                return Err(invalid(
                    "runtime.library",
                    format!("{} must be a path inside the plugin folder", library.display()),
                ));
            }
            Runtime::Exec { command } if command.is_empty() || command[0].is_empty() => {
                return Err(invalid("runtime.command", "must name a program".into()));
            }
            Runtime::Exec { command } if command[0].contains('/') && !contained_relative(Path::new(&command[0])) => {
                return Err(invalid(
                    "runtime.command",
                    format!("{:?} must be a path inside the plugin folder", command[0]),
                ));
            }
            Runtime::Exec { command } if command.iter().any(|a| a.contains('\0')) => {
                return Err(invalid("runtime.command", "arguments must not contain NUL bytes".into()));
            }
            _ => {}
        }
        for dep in self.dependencies.keys() {
            if !valid_name(dep) {
                return Err(invalid(&format!("dependencies.{dep}"), "is not a valid plugin name".into()));
            }
            if dep == &self.name {
                return Err(invalid(&format!("dependencies.{dep}"), "a plugin cannot depend on itself".into()));
            }
        }
        if let Err((field, message)) = self.limits.check() {
            return Err(invalid(&format!("limits.{field}"), message));
        }
        if !self.parameters.is_object() {
            return Err(invalid("parameters", "must be a JSON Schema object".into()));
        }
        if let Err(e) = jsonschema::validator_for(&self.parameters) {
            return Err(invalid("parameters", format!("is not a valid JSON Schema: {e}")));
        }
        if let Some(output) = &self.output {
            // MCP's outputSchema describes an object, and so does every result a tool returns.
            if output.get("type").and_then(Value::as_str) != Some("object") {
                return Err(invalid("output", "must be a JSON Schema with type = \"object\"".into()));
            }
            if let Err(e) = jsonschema::validator_for(output) {
                return Err(invalid("output", format!("is not a valid JSON Schema: {e}")));
            }
        }
        if self.title.as_ref().is_some_and(|t| t.trim().is_empty() || t.len() > 100) {
            return Err(invalid("title", "must be 1 to 100 characters".into()));
        }
        Ok(())
    }
}

/// Turns a TOML error into `file:line:col: message`.
pub fn parse_error(file: &Path, text: &str, e: &toml::de::Error) -> ManifestError {
    let (line, column) = e.span().map_or((0, 0), |span| line_col(text, span.start));
    ManifestError::Parse { file: file.to_path_buf(), line, column, message: e.message().trim().to_string() }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "calc"
version = "1.2.3"
description = "adds numbers"
api = "^1.0"

[runtime]
type = "native"
library = "libcalc.so"

[dependencies]
base = ">=1.0, <2"

[limits]
memory = "64MiB"
cpu = 0.5
timeout = "5s"
pids = 8
output = "64KiB"

[permissions]
network = ["api.example.com:443", "*.example.org"]
secrets = ["API_KEY"]
workspace = true

[parameters]
type = "object"
required = ["expression"]
properties.expression = { type = "string" }
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("p/plugin.toml"), text)
    }

    fn field_error(text: &str) -> String {
        match parse(text).unwrap_err() {
            ManifestError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn good_manifest_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "calc");
        assert_eq!(m.limits.memory, Some(ByteSize(64 << 20)));
        assert_eq!(m.runtime, Runtime::Native { library: "libcalc.so".into() });
        assert_eq!(m.dependencies["base"].to_string(), ">=1.0, <2");
    }

    #[test]
    fn unknown_fields_are_rejected_with_position() {
        let err = parse(&GOOD.replace("pids = 8", "pids = 8\nswap = 1")).unwrap_err();
        match &err {
            ManifestError::Parse { line, message, .. } => {
                assert_eq!(*line, 19);
                assert!(message.contains("unknown field `swap`"), "{message}");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().starts_with("p/plugin.toml:19:"), "{err}");
    }

    #[test]
    fn invalid_fields_are_named() {
        assert_eq!(field_error(&GOOD.replace("\"calc\"", "\"Calc!\"")), "name");
        assert_eq!(field_error(&GOOD.replace("libcalc.so", "../evil.so")), "runtime.library");
        assert_eq!(field_error(&GOOD.replace("cpu = 0.5", "cpu = -1.0")), "limits.cpu");
        assert_eq!(field_error(&GOOD.replace("type = \"object\"", "type = 12")), "parameters");
        assert_eq!(field_error(&GOOD.replace("base = ", "calc = ")), "dependencies.calc");
        let with = |extra: &str| format!("{GOOD}\n{extra}\n");
        assert_eq!(field_error(&with("[output]\ntype = \"array\"")), "output", "a result is an object");
        assert_eq!(field_error(&with("[output]\ntype = \"object\"\nrequired = 3")), "output");
        assert_eq!(field_error(&GOOD.replace("version = ", "title = \" \"\nversion = ")), "title");
        let m = parse(&with("[output]\ntype = \"object\"\nrequired = [\"result\"]")).unwrap();
        assert_eq!(m.output.unwrap()["required"][0], "result");
    }

    #[test]
    fn bad_semver_and_types_are_parse_errors() {
        assert!(matches!(parse(&GOOD.replace("1.2.3", "one")), Err(ManifestError::Parse { .. })));
        assert!(matches!(parse(&GOOD.replace("\"^1.0\"", "\"~~1\"")), Err(ManifestError::Parse { .. })));
        assert!(matches!(parse(&GOOD.replace("\"native\"", "\"wasm\"")), Err(ManifestError::Parse { .. })));
        assert!(matches!(parse("name = "), Err(ManifestError::Parse { line: 1, .. })));
        for (from, to, line) in [
            ("\"*.example.org\"", "\"http://x\"", 22),
            ("\"API_KEY\"", "\"api key\"", 23),
            ("pids = 8", "pids = 8\nrate = \"10/fortnight\"", 19),
        ] {
            match parse(&GOOD.replace(from, to)) {
                Err(ManifestError::Parse { line: l, message, .. }) => assert_eq!(l, line, "{message}"),
                other => panic!("{to}: {other:?}"),
            }
        }
    }
}
