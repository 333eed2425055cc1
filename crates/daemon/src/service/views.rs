//! What the service answers about the daemon and its plugins, built from the owners' state.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use ironclaw_protocol::layers::{Layer, ResourceBackend};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::catalog::registry::{LifecycleEvent, PluginEntry, PluginState};
use crate::host::HostSupport;
use crate::id_range;
use crate::supervisor::Supervisor;

/// Host support, the layers every execution gets, policy, ids, executions and caches.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemReport {
    pub version: String,
    pub plugin_api_version: String,
    pub plugin_abi_version: u32,
    pub host: HostSupport,
    pub layers: LayersReport,
    pub policy: PolicyReport,
    pub ids: IdsReport,
    pub executions: ExecutionsReport,
    pub cache: CacheReport,
    pub egress: EgressReport,
    /// Names only: values never leave the daemon but for the plugins granted them.
    pub secrets_available: Vec<String>,
}

/// `enforced` or `unavailable`; `dropped` for capabilities.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayersReport {
    pub namespaces: &'static str,
    pub landlock: LandlockStatus,
    pub seccomp: &'static str,
    pub capabilities: &'static str,
    pub no_new_privs: &'static str,
    pub resources: ResourceBackend,
    /// What the resource backend cannot enforce on this host, one line per gap.
    pub resource_gaps: Vec<String>,
    /// How each resource limit is enforced, by limit.
    pub resource_limits: BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LandlockStatus {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyReport {
    #[schema(value_type = Vec<String>)]
    pub files: Vec<PathBuf>,
    /// Why the last policy reload was refused (the previous set stays active).
    pub reload_error: Option<String>,
    pub require: Vec<Layer>,
    pub landlock_min_abi: Option<u32>,
    /// False when this host cannot give what the policy requires: every execution is refused.
    pub executions_allowed: bool,
    pub refusal: Option<String>,
}

/// The ids this daemon claimed.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdsReport {
    pub uid_base: u32,
    /// First and last uid of the execution slots.
    pub slot_uids: [u32; 2],
    /// First and last workspace group.
    pub workspace_gids: [u32; 2],
    /// Where the claims are kept.
    pub claim: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionsReport {
    pub running: usize,
    /// Waiting in the queue for a slot.
    pub queued: usize,
    pub max_concurrent: usize,
    pub max_queued: usize,
    pub prestarted_runners: usize,
    pub prestarted_target: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CacheReport {
    pub entries: usize,
    pub bytes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EgressReport {
    pub proxy: String,
    /// Hosts with a fixed address in the proxy's configuration.
    pub static_hosts: usize,
}

pub fn system(supervisor: &Supervisor) -> SystemReport {
    let (config, catalog, launcher) = (supervisor.config(), supervisor.catalog(), supervisor.launcher());
    let host = launcher.host();
    let policy = catalog.policy();
    let refusal = host.check(&policy.requirements).err().map(|unmet| unmet.to_string());
    let layer = |on: bool| if on { "enforced" } else { "unavailable" };
    let uid_base = config.uid_base();
    let (entries, bytes) = launcher.admission().cache_usage();
    SystemReport {
        version: env!("CARGO_PKG_VERSION").into(),
        plugin_api_version: ironclaw_plugin_sdk::API_VERSION.into(),
        plugin_abi_version: ironclaw_plugin_sdk::ABI_VERSION,
        host: host.clone(),
        layers: LayersReport {
            namespaces: layer(host.missing(Layer::Namespaces).is_none()),
            landlock: match host.landlock_abi {
                Some(abi) => LandlockStatus { status: "enforced", abi: Some(abi) },
                None => LandlockStatus { status: "unavailable", abi: None },
            },
            seccomp: layer(host.seccomp),
            capabilities: "dropped",
            no_new_privs: "enforced",
            resources: host.resource_backend(),
            resource_gaps: host.resource_gaps.clone(),
            resource_limits: launcher.resources().describe(host),
        },
        policy: PolicyReport {
            files: policy.files.clone(),
            reload_error: catalog.policy_error(),
            require: policy.requirements.layers.clone(),
            landlock_min_abi: policy.requirements.landlock_min_abi,
            executions_allowed: refusal.is_none(),
            refusal,
        },
        ids: IdsReport {
            uid_base,
            slot_uids: [uid_base, uid_base + config.executions.max_concurrent as u32 - 1],
            workspace_gids: [uid_base + id_range::WORKSPACE_GIDS, uid_base + id_range::RANGE_SIZE - 1],
            claim: id_range::CLAIMS_DIR,
        },
        executions: ExecutionsReport {
            running: launcher.table().running_count(),
            queued: launcher.admission().queued(),
            max_concurrent: config.executions.max_concurrent,
            max_queued: config.executions.max_queued,
            prestarted_runners: launcher.runners().idle_count(),
            prestarted_target: launcher.runners().target(),
        },
        cache: CacheReport { entries, bytes },
        egress: EgressReport {
            proxy: format!("one listener per execution, at {} in the sandbox", crate::proxy::PROXY_URL),
            static_hosts: config.proxy.hosts.len(),
        },
        secrets_available: catalog.secrets().names().into_iter().map(String::from).collect(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginSummary {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub state: PluginState,
    pub reason: Option<String>,
    /// `native` or `exec`.
    pub runtime: Option<&'static str>,
}

pub fn plugins(catalog: &Catalog) -> PluginList {
    let plugins = catalog.registry(|reg| {
        reg.plugins
            .values()
            .map(|e| {
                let m = e.plugin.as_ref().map(|p| &p.manifest);
                PluginSummary {
                    name: e.name.clone(),
                    version: m.map(|m| m.version.to_string()),
                    description: m.map(|m| m.description.clone()),
                    enabled: e.state == PluginState::Enabled,
                    state: e.state,
                    reason: e.reason.clone(),
                    runtime: m.map(|m| m.runtime.kind()),
                }
            })
            .collect()
    });
    PluginList { plugins }
}

/// Manifest, state, effective permissions and limits with their sources, events.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginInfo {
    pub name: String,
    #[schema(value_type = String)]
    pub dir: PathBuf,
    pub enabled: bool,
    pub state: PluginState,
    pub reason: Option<String>,
    /// The plugin's `plugin.toml`, as parsed (null when it could not be loaded).
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
    /// The first 12 hex digits of the SHA-256 of the version's files.
    pub digest: Option<String>,
    /// Why the last reload of this plugin was refused (the current version keeps serving).
    pub reload_error: Option<String>,
    pub on_probation: Option<ProbationReport>,
    /// What the manifest asks for.
    #[schema(value_type = Option<Object>)]
    pub declared_permissions: Option<Value>,
    /// Only for a plugin whose every declaration is granted; each entry names its rule.
    #[schema(value_type = Option<Object>)]
    pub effective_permissions: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub effective_limits: Option<Value>,
    /// For each limit, where its value came from.
    pub limit_sources: Option<BTreeMap<String, String>>,
    /// The plugin's configuration, as policy set it.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// The lifecycle history, oldest first.
    #[schema(value_type = Vec<LifecycleEvent>)]
    pub events: VecDeque<LifecycleEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbationReport {
    pub executions_left: u32,
    pub previous_version: String,
}

fn to_value(v: impl Serialize) -> Option<Value> {
    serde_json::to_value(v).ok()
}

fn info(e: &PluginEntry) -> PluginInfo {
    let m = e.plugin.as_ref().map(|p| &p.manifest);
    let eff = e.effective.as_deref();
    PluginInfo {
        name: e.name.clone(),
        dir: e.dir.clone(),
        enabled: e.state == PluginState::Enabled,
        state: e.state,
        reason: e.reason.clone(),
        manifest: m.and_then(to_value),
        digest: e.plugin.as_ref().map(|p| p.short_digest().to_string()),
        reload_error: e.reload_error.clone(),
        on_probation: e.probation.as_ref().map(|p| ProbationReport {
            executions_left: p.remaining,
            previous_version: p.previous.manifest.version.to_string(),
        }),
        declared_permissions: m.and_then(|m| to_value(&m.permissions)),
        effective_permissions: eff.and_then(|eff| {
            to_value(serde_json::json!({
                "network": eff.network,
                "network_deny": eff.network_deny,
                "private_addresses": eff.private_addresses,
                "fs_read": eff.fs_read,
                "fs_write": eff.fs_write,
                "workspace": eff.workspace,
                "secrets": eff.secrets,
                "denied": eff.denied,
            }))
        }),
        effective_limits: eff.and_then(|eff| to_value(eff.limits)),
        limit_sources: eff.map(|eff| eff.limit_sources.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()),
        config: eff.map(|eff| eff.config.clone()),
        events: e.events.clone(),
    }
}

pub fn plugin(catalog: &Catalog, name: &str) -> Option<PluginInfo> {
    catalog.registry(|reg| reg.plugins.get(name).map(info))
}

/// A plugin's state after an admin enabled or disabled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnabledState {
    pub name: String,
    pub enabled: bool,
    pub state: PluginState,
    pub reason: Option<String>,
}

/// A plugin's parameter schema, as the API document shows it.
pub struct PluginParameters {
    pub plugin: String,
    pub title: Option<String>,
    pub description: String,
    pub schema: Value,
    /// The manifest's `[output]`: what `data` holds on success.
    pub output: Option<Value>,
    /// `{}` is valid: a request may leave `parameters` out.
    pub may_be_omitted: bool,
}

pub fn parameter_schemas(catalog: &Catalog) -> Vec<PluginParameters> {
    catalog.registry(|reg| {
        reg.plugins
            .values()
            .filter_map(|e| {
                let plugin = e.plugin.as_ref()?;
                Some(PluginParameters {
                    plugin: e.name.clone(),
                    title: plugin.manifest.title.clone(),
                    description: plugin.manifest.description.clone(),
                    schema: plugin.manifest.parameters.clone(),
                    output: plugin.manifest.output.clone(),
                    may_be_omitted: plugin.schemas.accepts_no_parameters(),
                })
            })
            .collect()
    })
}
