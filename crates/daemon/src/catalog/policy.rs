//! Admin policy files (`policies/*.toml`): the layers the host must enforce, default limits and
//! caps, per-plugin grants and config, and deny lists that override every grant.
//!
//! A plugin's effective permissions are what it declares, covered by a grant, minus what any
//! deny rule matches; a declaration no grant covers keeps the plugin from being enabled. Every
//! effective permission and limit carries the file and rule that produced it.
//!
//! Parsing is strict (unknown fields are rejected), every error carries `file:line:col`, and a
//! broken file never silently becomes "no policy".
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::catalog::manifest::{DeclaredLimits, Manifest, ManifestError, parse_error, valid_name};
use crate::catalog::permissions::{AddressRange, HostPath, HostPattern, SecretName};
use crate::catalog::units::{ByteSize, Rate, Span};
use ironclaw_protocol::layers::{Layer, Requirements};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to read the policies directory {0}")]
    ReadDir(PathBuf, #[source] std::io::Error),
    #[error("failed to read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Parse(ManifestError),
}

/// One allowance or denial: a bare value, or `{ value = "...", reason = "..." }`.
#[derive(Debug, Clone)]
struct Rule<T> {
    value: T,
    reason: Option<String>,
}

impl<'de, T: FromStr<Err = String>> Deserialize<'de> for Rule<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RuleVisitor<T>(PhantomData<T>);
        impl<'de, T: FromStr<Err = String>> Visitor<'de> for RuleVisitor<T> {
            type Value = Rule<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, or a table { value = \"...\", reason = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Rule { value: s.parse().map_err(E::custom)?, reason: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut value, mut reason) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "value" => value = Some(map.next_value::<String>()?.parse().map_err(de::Error::custom)?),
                        "reason" => reason = Some(map.next_value::<String>()?),
                        other => return Err(de::Error::unknown_field(other, &["value", "reason"])),
                    }
                }
                Ok(Rule { value: value.ok_or_else(|| de::Error::missing_field("value"))?, reason })
            }
        }
        d.deserialize_any(RuleVisitor(PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    sandbox: SandboxPolicy,
    /// Limits for plugins that declare none.
    #[serde(default)]
    defaults: CheckedLimits,
    /// Upper bounds on every plugin's limits.
    #[serde(default)]
    caps: CheckedLimits,
    /// Denials for every plugin.
    #[serde(default)]
    deny: DenyRules,
    #[serde(default)]
    plugins: BTreeMap<PluginName, PluginPolicy>,
}

/// Limits checked as they are read, so a bad value is reported at its table's position.
#[derive(Debug, Default)]
struct CheckedLimits(DeclaredLimits);

impl<'de> Deserialize<'de> for CheckedLimits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let limits = DeclaredLimits::deserialize(d)?;
        limits.check().map_err(|(field, message)| de::Error::custom(format!("`{field}` {message}")))?;
        Ok(CheckedLimits(limits))
    }
}

/// A `[plugins.<name>]` key, checked as it is read.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PluginName(String);

impl<'de> Deserialize<'de> for PluginName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if !valid_name(&name) {
            return Err(de::Error::custom(format!("{name:?} is not a valid plugin name (^[a-z][a-z0-9_-]{{0,63}}$)")));
        }
        Ok(PluginName(name))
    }
}

impl std::borrow::Borrow<str> for PluginName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxPolicy {
    /// Layers every execution must get; without them the daemon refuses to execute.
    #[serde(default)]
    require: Vec<Layer>,
    /// The oldest Landlock ABI accepted.
    landlock_min_abi: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyRules {
    #[serde(default)]
    network: Vec<Rule<HostPattern>>,
    /// Host paths no plugin may read or write, whatever it is granted.
    #[serde(default)]
    fs: Vec<Rule<HostPath>>,
    #[serde(default)]
    secrets: Vec<Rule<SecretName>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginPolicy {
    /// Why this plugin gets what it gets; the reason of every rule that gives none.
    reason: Option<String>,
    #[serde(default)]
    network: Vec<Rule<HostPattern>>,
    /// Addresses the proxy may reach for this plugin although they are loopback, private,
    /// link-local, cloud metadata or the host's own.
    #[serde(default)]
    private_addresses: Vec<Rule<AddressRange>>,
    #[serde(default)]
    fs_read: Vec<Rule<HostPath>>,
    #[serde(default)]
    fs_write: Vec<Rule<HostPath>>,
    /// A workspace of at most this size.
    workspace: Option<ByteSize>,
    #[serde(default)]
    secrets: Vec<Rule<SecretName>>,
    #[serde(default)]
    caps: CheckedLimits,
    #[serde(default)]
    deny: DenyRules,
    /// Non-secret settings passed to the plugin as the request's `config`.
    #[serde(default)]
    config: serde_json::Map<String, Value>,
}

/// Where an effective permission or limit came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub file: PathBuf,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.rule)?;
        match &self.reason {
            Some(reason) => write!(f, " ({reason})"),
            None => Ok(()),
        }
    }
}

/// One effective permission and the rule that granted it.
#[derive(Debug, Clone, Serialize)]
pub struct Granted<T> {
    pub value: T,
    pub granted_by: Source,
}

/// A declared permission that a deny rule removed.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub permission: &'static str,
    pub value: String,
    pub denied_by: Source,
}

/// Effective limits of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory: ByteSize,
    pub cpu: f64,
    pub cpu_time: Span,
    pub timeout: Span,
    pub pids: u64,
    pub output: ByteSize,
    pub rate: Option<Rate>,
    pub cache_ttl: Option<Span>,
    pub concurrency: u64,
}

/// Limits for plugins that declare none, unless a policy's `[defaults]` says otherwise.
/// Every field but `rate` and `cache_ttl` is set.
pub const BUILTIN_DEFAULTS: DeclaredLimits = DeclaredLimits {
    memory: Some(ByteSize(256 << 20)),
    cpu: Some(1.0),
    cpu_time: Some(Span(Duration::from_secs(30))),
    timeout: Some(Span(Duration::from_secs(30))),
    pids: Some(32),
    output: Some(ByteSize(1 << 20)),
    rate: None,
    cache_ttl: None,
    // Half the default global slots: one busy plugin never takes them all.
    concurrency: Some(8),
};

/// Bounds no declaration or policy default can exceed; policy `[caps]` only lower them.
pub const BUILTIN_CAPS: DeclaredLimits = DeclaredLimits {
    memory: Some(ByteSize(2 << 30)),
    cpu: Some(2.0),
    cpu_time: Some(Span(Duration::from_secs(300))),
    timeout: Some(Span(Duration::from_secs(300))),
    pids: Some(512),
    output: Some(ByteSize(16 << 20)),
    rate: None,
    cache_ttl: Some(Span(Duration::from_secs(3600))),
    concurrency: Some(256),
};

/// Everything one plugin is allowed, with provenance.
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    pub network: Vec<Granted<HostPattern>>,
    /// Requests to these patterns are refused even when a network grant matches.
    pub network_deny: Vec<Granted<HostPattern>>,
    pub private_addresses: Vec<Granted<AddressRange>>,
    pub fs_read: Vec<Granted<HostPath>>,
    pub fs_write: Vec<Granted<HostPath>>,
    pub workspace: Option<Granted<ByteSize>>,
    pub secrets: Vec<Granted<SecretName>>,
    pub denied: Vec<Removed>,
    pub limits: Limits,
    /// For each limit, where its value came from.
    pub limit_sources: BTreeMap<&'static str, String>,
    pub config: Value,
}

/// The merged policy set of a directory.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub files: Vec<PathBuf>,
    pub requirements: Requirements,
    parsed: Vec<(PathBuf, PolicyFile)>,
}

impl PolicySet {
    /// Reads every `*.toml` in `dir`, in name order. Requirements add up across files; grants
    /// add up; caps take the lowest value; a later file's defaults replace an earlier one's.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| PolicyError::ReadDir(dir.to_path_buf(), e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        files.sort();
        let texts = files
            .into_iter()
            .map(|file| {
                std::fs::read_to_string(&file).map(|text| (file.clone(), text)).map_err(|e| PolicyError::Read(file, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::parse(texts)
    }

    /// The set from files already read, `(path, text)` in order.
    pub fn parse(texts: Vec<(PathBuf, String)>) -> Result<Self, PolicyError> {
        let mut set = PolicySet { files: texts.iter().map(|(file, _)| file.clone()).collect(), ..Default::default() };
        for (file, text) in texts {
            let parsed = Self::parse_file(&file, &text)?;
            for layer in &parsed.sandbox.require {
                if !set.requirements.layers.contains(layer) {
                    set.requirements.layers.push(*layer);
                }
            }
            set.requirements.landlock_min_abi = set.requirements.landlock_min_abi.max(parsed.sandbox.landlock_min_abi);
            set.parsed.push((file, parsed));
        }
        Ok(set)
    }

    fn parse_file(file: &Path, text: &str) -> Result<PolicyFile, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::Parse(parse_error(file, text, &e)))
    }

    fn source(file: &Path, rule: String, reason: Option<&String>) -> Source {
        Source { file: file.to_path_buf(), rule, reason: reason.cloned() }
    }

    /// Global deny rules, then the plugin's own, each with its source.
    fn deny_rules<'a>(&'a self, plugin: &'a str) -> impl Iterator<Item = (&'a DenyRules, String, &'a Path)> {
        self.parsed.iter().flat_map(move |(file, p)| {
            let own = p.plugins.get(plugin).map(|pp| (&pp.deny, format!("plugins.{plugin}.deny"), file.as_path()));
            std::iter::once((&p.deny, "deny".to_string(), file.as_path())).chain(own)
        })
    }

    /// The first grant (in file order) covering `declared` in the plugin's `field` list.
    fn grant<T, F>(&self, plugin: &str, field: &str, declared: &T, list: F) -> Option<Source>
    where
        F: Fn(&PluginPolicy) -> &Vec<Rule<T>>,
        T: Covers,
    {
        self.parsed.iter().find_map(|(file, p)| {
            let pp = p.plugins.get(plugin)?;
            list(pp).iter().enumerate().find(|(_, rule)| rule.value.covers(declared)).map(|(i, rule)| {
                Self::source(
                    file,
                    format!("plugins.{plugin}.{field}[{i}]"),
                    rule.reason.as_ref().or(pp.reason.as_ref()),
                )
            })
        })
    }

    /// Computes what `manifest`'s plugin may use. `Err` lists every declared permission that no
    /// policy grants: such a plugin is not enabled.
    pub fn effective(&self, manifest: &Manifest) -> Result<Effective, Vec<String>> {
        let name = manifest.name.as_str();
        let declared = &manifest.permissions;
        let mut missing = Vec::new();
        let mut denied = Vec::new();
        let not_granted = |kind: &str, value: &dyn fmt::Display| {
            format!("permission {kind} \"{value}\" is not granted by any policy (grant it under [plugins.{name}])")
        };

        let mut network = Vec::new();
        for host in &declared.network {
            match self.grant(name, "network", host, |p| &p.network) {
                None => missing.push(not_granted("network", host)),
                Some(granted_by) => match self.find_deny(name, "network", |d| &d.network, |d| d.denies_all_of(host)) {
                    Some(denied_by) => {
                        denied.push(Removed { permission: "network", value: host.to_string(), denied_by })
                    }
                    None => network.push(Granted { value: host.clone(), granted_by }),
                },
            }
        }
        let mut fs = |field: &'static str, paths: &Vec<HostPath>, list: fn(&PluginPolicy) -> &Vec<Rule<HostPath>>| {
            let mut out = Vec::new();
            for path in paths {
                match self.grant(name, field, path, list) {
                    None => missing.push(not_granted(field, path)),
                    // A path beneath a denied one, or holding one (Landlock cannot carve a hole).
                    Some(granted_by) => {
                        match self.find_deny(name, "fs", |d| &d.fs, |d| d.covers(path) || path.covers(d)) {
                            Some(denied_by) => {
                                denied.push(Removed { permission: field, value: path.to_string(), denied_by })
                            }
                            None => out.push(Granted { value: path.clone(), granted_by }),
                        }
                    }
                }
            }
            out
        };
        let fs_read = fs("fs_read", &declared.fs_read, |p| &p.fs_read);
        let fs_write = fs("fs_write", &declared.fs_write, |p| &p.fs_write);

        let mut secrets = Vec::new();
        for secret in &declared.secrets {
            match self.grant(name, "secrets", secret, |p| &p.secrets) {
                None => missing.push(not_granted("secrets", secret)),
                Some(granted_by) => match self.find_deny(name, "secrets", |d| &d.secrets, |d| d == secret) {
                    Some(denied_by) => {
                        denied.push(Removed { permission: "secrets", value: secret.to_string(), denied_by })
                    }
                    None => secrets.push(Granted { value: secret.clone(), granted_by }),
                },
            }
        }

        let workspace = if declared.workspace {
            let grant = self.parsed.iter().rev().find_map(|(file, p)| {
                let pp = p.plugins.get(name)?;
                pp.workspace.map(|size| Granted {
                    value: size,
                    granted_by: Self::source(file, format!("plugins.{name}.workspace"), pp.reason.as_ref()),
                })
            });
            if grant.is_none() {
                missing.push(format!(
                    "permission workspace is not granted by any policy (set workspace = \"<size>\" under [plugins.{name}])"
                ));
            }
            grant
        } else {
            None
        };
        if !missing.is_empty() {
            return Err(missing);
        }

        let mut network_deny = Vec::new();
        for (rules, table, file) in self.deny_rules(name) {
            for (i, rule) in rules.network.iter().enumerate() {
                let granted_by = Self::source(file, format!("{table}.network[{i}]"), rule.reason.as_ref());
                network_deny.push(Granted { value: rule.value.clone(), granted_by });
            }
        }
        let private_addresses = self
            .parsed
            .iter()
            .filter_map(|(file, p)| Some((file, p.plugins.get(name)?)))
            .flat_map(|(file, pp)| {
                pp.private_addresses.iter().enumerate().map(move |(i, rule)| Granted {
                    value: rule.value,
                    granted_by: Self::source(
                        file,
                        format!("plugins.{name}.private_addresses[{i}]"),
                        rule.reason.as_ref().or(pp.reason.as_ref()),
                    ),
                })
            })
            .collect();
        let mut config = serde_json::Map::new();
        for (_, p) in &self.parsed {
            if let Some(pp) = p.plugins.get(name) {
                config.extend(pp.config.clone());
            }
        }
        let (limits, limit_sources) = self.limits(name, &manifest.limits);
        Ok(Effective {
            network,
            network_deny,
            private_addresses,
            fs_read,
            fs_write,
            workspace,
            secrets,
            denied,
            limits,
            limit_sources,
            config: Value::Object(config),
        })
    }

    fn find_deny<T>(
        &self,
        plugin: &str,
        field: &str,
        list: impl Fn(&DenyRules) -> &Vec<Rule<T>>,
        hit: impl Fn(&T) -> bool,
    ) -> Option<Source> {
        self.deny_rules(plugin).find_map(|(rules, table, file)| {
            list(rules)
                .iter()
                .enumerate()
                .find(|(_, rule)| hit(&rule.value))
                .map(|(i, rule)| Self::source(file, format!("{table}.{field}[{i}]"), rule.reason.as_ref()))
        })
    }

    /// Each limit: the declaration, else the last policy default, else the built-in default;
    /// then the lowest of the built-in cap and every policy cap (global and the plugin's own).
    fn limits(&self, plugin: &str, declared: &DeclaredLimits) -> (Limits, BTreeMap<&'static str, String>) {
        let mut sources = BTreeMap::new();
        let mut caps: Vec<(&DeclaredLimits, String)> = Vec::new();
        for (file, p) in &self.parsed {
            caps.push((&p.caps.0, format!("{}: caps", file.display())));
            if let Some(pp) = p.plugins.get(plugin) {
                caps.push((&pp.caps.0, format!("{}: plugins.{plugin}.caps", file.display())));
            }
        }
        macro_rules! limit {
            ($field:ident, $lower:expr) => {{
                let name = stringify!($field);
                let default = self.parsed.iter().rev().find_map(|(file, p)| {
                    p.defaults.0.$field.map(|v| (Some(v), format!("{}: defaults.{name}", file.display())))
                });
                let (mut value, mut source) = match declared.$field {
                    Some(v) => (Some(v), "plugin.toml".to_string()),
                    None => default.unwrap_or((BUILTIN_DEFAULTS.$field, "built-in default".to_string())),
                };
                let all_caps = std::iter::once((BUILTIN_CAPS.$field, "built-in cap".to_string()))
                    .chain(caps.iter().map(|(c, s)| (c.$field, format!("{s}.{name}"))));
                for (cap, cap_source) in all_caps {
                    if let Some(cap) = cap {
                        if value.is_none_or(|v| ($lower)(&cap, &v)) {
                            value = Some(cap);
                            source = format!("{cap_source} (capped)");
                        }
                    }
                }
                sources.insert(name, source);
                value
            }};
        }
        let memory = limit!(memory, |a: &ByteSize, b: &ByteSize| a < b);
        let cpu = limit!(cpu, |a: &f64, b: &f64| a < b);
        let timeout = limit!(timeout, |a: &Span, b: &Span| a < b);
        let pids = limit!(pids, |a: &u64, b: &u64| a < b);
        let output = limit!(output, |a: &ByteSize, b: &ByteSize| a < b);
        let rate = limit!(rate, |a: &Rate, b: &Rate| a.per_second() < b.per_second());
        let concurrency = limit!(concurrency, |a: &u64, b: &u64| a < b);
        // Caching is off unless the plugin asks for it: a cap only shortens a declared TTL.
        let cache_ttl = declared.cache_ttl.and(limit!(cache_ttl, |a: &Span, b: &Span| a < b));
        if declared.cache_ttl.is_none() {
            sources.insert("cache_ttl", "plugin.toml (not declared: no caching)".into());
        }
        const SET: &str = "every built-in default but rate and cache_ttl is set";
        let timeout = timeout.expect(SET);
        // Without a declaration, CPU time is bounded by the wall clock anyway.
        let cpu_time = match declared.cpu_time {
            Some(_) => limit!(cpu_time, |a: &Span, b: &Span| a < b),
            None => {
                sources.insert("cpu_time", "the timeout (not declared)".into());
                Some(timeout)
            }
        };
        let limits = Limits {
            memory: memory.expect(SET),
            cpu: cpu.expect(SET),
            cpu_time: cpu_time.expect(SET),
            timeout,
            pids: pids.expect(SET),
            output: output.expect(SET),
            rate,
            cache_ttl,
            concurrency: concurrency.expect(SET),
        };
        (limits, sources)
    }

    /// Plugins that policy files name but no plugin folder provides: worth a warning.
    pub fn named_plugins(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.parsed.iter().flat_map(|(file, p)| p.plugins.keys().map(move |k| (file.as_path(), k.0.as_str())))
    }
}

/// "A grant of `self` covers the declaration `other`", for each kind of permission.
trait Covers {
    fn covers(&self, other: &Self) -> bool;
}

impl Covers for HostPattern {
    fn covers(&self, other: &Self) -> bool {
        HostPattern::covers(self, other)
    }
}

impl Covers for HostPath {
    fn covers(&self, other: &Self) -> bool {
        HostPath::covers(self, other)
    }
}

impl Covers for SecretName {
    fn covers(&self, other: &Self) -> bool {
        self == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name = "weather"
version = "1.0.0"
description = "d"
api = "^1"
[runtime]
type = "exec"
command = ["true"]
[limits]
memory = "512MiB"
timeout = "20s"
rate = "100/min"
cache_ttl = "2h"
[permissions]
network = ["api.example.com", "cdn.example.net:8443"]
fs_read = ["/srv/maps/europe"]
secrets = ["API_KEY"]
workspace = true
[parameters]
type = "object"
"#;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(Path::new("plugin.toml"), text).unwrap()
    }

    fn policies(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<PolicySet, PolicyError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let set = PolicySet::load(dir.path());
        (dir, set)
    }

    const GRANTS: &str = r#"
[caps]
memory = "256MiB"

[plugins.weather]
reason = "forecasts for the assistant"
network = [{ value = "*.example.com", reason = "the vendor's API" }, "cdn.example.net:8443"]
fs_read = ["/srv/maps"]
secrets = ["API_KEY"]
workspace = "16MiB"
private_addresses = ["127.0.0.1"]
config = { base_url = "http://api.example.com/v1", units = "metric" }

[plugins.weather.caps]
rate = "10/min"
"#;

    #[test]
    fn effective_is_declared_covered_by_grants_with_sources() {
        let (_dir, set) = policies(&[("10-weather.toml", GRANTS)]);
        let eff = set.unwrap().effective(&manifest(MANIFEST)).unwrap();
        let hosts: Vec<String> = eff.network.iter().map(|g| g.value.to_string()).collect();
        assert_eq!(hosts, ["api.example.com", "cdn.example.net:8443"], "the declaration, not the wider grant");
        let first = &eff.network[0].granted_by;
        assert!(first.file.ends_with("10-weather.toml"));
        assert_eq!(first.rule, "plugins.weather.network[0]");
        assert_eq!(first.reason.as_deref(), Some("the vendor's API"));
        assert_eq!(eff.network[1].granted_by.reason.as_deref(), Some("forecasts for the assistant"));
        assert_eq!(eff.fs_read[0].value.to_string(), "/srv/maps/europe");
        assert_eq!(eff.workspace.as_ref().unwrap().value, ByteSize(16 << 20));
        assert_eq!(eff.config["units"], "metric");
        assert_eq!(eff.private_addresses.len(), 1);
        // Lower of declared and cap, with where each came from.
        assert_eq!(eff.limits.memory, ByteSize(256 << 20));
        assert!(eff.limit_sources["memory"].contains("10-weather.toml: caps.memory (capped)"));
        assert_eq!(eff.limits.timeout.0, Duration::from_secs(20));
        assert_eq!(eff.limit_sources["timeout"], "plugin.toml");
        assert_eq!(eff.limits.rate.unwrap().to_string(), "10/min");
        assert_eq!(eff.limits.cache_ttl.unwrap().0, Duration::from_secs(3600), "the built-in cap");
        assert_eq!(eff.limits.pids, 32);
        assert_eq!(eff.limit_sources["pids"], "built-in default");
    }

    #[test]
    fn an_ungranted_declaration_names_the_missing_permission() {
        let narrower = GRANTS.replace("\"cdn.example.net:8443\"", "\"cdn.example.net\"");
        let (_dir, set) = policies(&[("a.toml", &narrower)]);
        let missing = set.unwrap().effective(&manifest(MANIFEST)).unwrap_err();
        assert_eq!(
            missing,
            [
                "permission network \"cdn.example.net:8443\" is not granted by any policy (grant it under [plugins.weather])"
            ]
        );
        let (_dir, set) = policies(&[("a.toml", "[sandbox]\nrequire = []\n")]);
        let missing = set.unwrap().effective(&manifest(MANIFEST)).unwrap_err();
        assert_eq!(missing.len(), 5, "{missing:?}");
        assert!(missing.iter().any(|m| m.contains("permission secrets \"API_KEY\"")));
        assert!(missing.iter().any(|m| m.contains("permission workspace")));
    }

    #[test]
    fn deny_always_wins() {
        let deny = r#"
[deny]
network = [{ value = "cdn.example.net", reason = "exfiltration risk" }]
fs = ["/srv/maps/europe/secret"]

[plugins.weather.deny]
secrets = ["API_KEY"]
network = ["evil.example.com"]
"#;
        let (_dir, set) = policies(&[("10-weather.toml", GRANTS), ("90-deny.toml", deny)]);
        let eff = set.unwrap().effective(&manifest(MANIFEST)).unwrap();
        let hosts: Vec<String> = eff.network.iter().map(|g| g.value.to_string()).collect();
        assert_eq!(hosts, ["api.example.com"]);
        assert!(eff.secrets.is_empty() && eff.fs_read.is_empty());
        let removed: Vec<(&str, &str)> = eff.denied.iter().map(|r| (r.permission, r.value.as_str())).collect();
        assert_eq!(
            removed,
            [("network", "cdn.example.net:8443"), ("fs_read", "/srv/maps/europe"), ("secrets", "API_KEY")]
        );
        assert_eq!(eff.denied[0].denied_by.rule, "deny.network[0]");
        assert_eq!(eff.denied[0].denied_by.reason.as_deref(), Some("exfiltration risk"));
        // Deny patterns also reach the proxy, for requests under a wider declaration.
        let patterns: Vec<String> = eff.network_deny.iter().map(|g| g.value.to_string()).collect();
        assert_eq!(patterns, ["cdn.example.net", "evil.example.com"]);
        assert_eq!(eff.network_deny[1].granted_by.rule, "plugins.weather.deny.network[0]");
    }

    #[test]
    fn caps_take_the_lowest_and_defaults_the_last() {
        let a = "[defaults]\npids = 8\n[caps]\npids = 100\ntimeout = \"10s\"\n";
        let b = "[defaults]\npids = 12\n[caps]\npids = 50\n";
        let (_dir, set) = policies(&[("a.toml", a), ("b.toml", b)]);
        let without_permissions = MANIFEST.split("[permissions]").next().unwrap();
        let plain = manifest(&format!("{without_permissions}[parameters]\ntype = \"object\"\n"));
        let eff = set.unwrap().effective(&plain).unwrap();
        assert_eq!(eff.limits.pids, 12);
        assert!(eff.limit_sources["pids"].ends_with("b.toml: defaults.pids"), "{}", eff.limit_sources["pids"]);
        assert_eq!(eff.limits.timeout.0, Duration::from_secs(10));
        assert_eq!(eff.limits.cpu_time.0, Duration::from_secs(10), "cpu time follows the capped timeout");
    }

    #[test]
    fn errors_have_positions_and_say_what_was_expected() {
        let cases = [
            ("[sandbox]\nrequire = [\"seccomp\", \"magic\"]\n", "a.toml:2:", "magic"),
            ("[sandbox]\nrequires = []\n", "a.toml:2:1", "unknown field `requires`"),
            ("[plugins.w]\nnetwork = [\"http://x\"]\n", "a.toml:2:", "is not host[:port]"),
            ("[plugins.w]\nnetwork = [{ value = \"x.com\", why = \"?\" }]\n", "a.toml:2:", "unknown field `why`"),
            ("[plugins.w]\nfs_read = [\"relative/path\"]\n", "a.toml:2:", "must be an absolute path"),
            ("[plugins.w]\nnetwork = [12]\n", "a.toml:2:", "a string, or a table"),
            ("[caps]\nrate = \"lots\"\n", "a.toml:2:", "10/min"),
            ("[plugins.w]\nprivate_addresses = [\"10.0.0.0/40\"]\n", "a.toml:2:", "not an IP address"),
            ("[caps]\ncpu = -1.0\n", "a.toml:1:1", "`cpu` must be a share of one CPU greater than 0"),
            ("[plugins.w]\ncaps = { pids = 0 }\n", "a.toml:2:8", "`pids` must be at least 1"),
            ("[plugins.Bad]\n", "a.toml:1:10", "\"Bad\" is not a valid plugin name"),
        ];
        for (text, position, expected) in cases {
            let (_dir, set) = policies(&[("a.toml", text)]);
            let err = set.unwrap_err().to_string();
            let at = err.find("a.toml").unwrap();
            assert!(err[at..].starts_with(position) && err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn files_merge() {
        let (_dir, set) = policies(&[
            ("a.toml", "[sandbox]\nrequire = [\"seccomp\"]\n"),
            ("b.toml", "[sandbox]\nrequire = [\"landlock\", \"seccomp\"]\nlandlock_min_abi = 3\n"),
            ("notes.txt", "ignored"),
        ]);
        let set = set.unwrap();
        assert_eq!(set.requirements.layers, vec![Layer::Seccomp, Layer::Landlock]);
        assert_eq!(set.requirements.landlock_min_abi, Some(3));
        assert_eq!(set.files.len(), 2);
    }
}
