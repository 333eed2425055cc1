//! The supervisor: the single owner of the daemon's state. API handlers parse requests and call
//! its methods; nothing else touches the registry, the execution table or the statistics.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cgroup;
pub mod cpu_clock;
pub mod execution;
pub mod freezer;
pub mod id_range;
pub mod monitor;
pub mod pool;
pub mod reload;
pub mod socket_meter;
pub mod workspace;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use semver::Version;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tracing::Instrument;

use crate::catalog::policy::Effective;
use crate::catalog::policy::PolicySet;
use crate::catalog::registry::{
    LifecycleEventKind, LoadedPlugin, PluginState, Registry, RegistryError, ResolveContext,
};
use crate::catalog::secrets::Secrets;
use crate::config::Config;
use crate::host::{HostSupport, probe_missing_capabilities, probe_namespaces, probe_seccomp};
use execution::{ExecutionPlan, ExecutionResult, ExecutionStatus};
use ironclaw_plugin_sdk::Operation;
use ironclaw_protocol::layers::{Layer, ResourceBackend};

const LATENCIES_KEPT: usize = 1024;
/// Under the state directory: one workspace per plugin that is granted one.
pub const WORKSPACES_DIR: &str = "workspaces";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no plugin named '{0}'")]
    NotFound(String),
    #[error("plugin '{name}' is {state}: {reason}")]
    NotRunnable { name: String, state: &'static str, reason: String },
    #[error("invalid parameters at '{path}': {message}")]
    InvalidParameters { path: String, message: String },
    #[error("too many executions in flight; retry later")]
    Overloaded,
    #[error("plugin '{name}' is over its rate limit of {rate}; retry in {}s", retry_after.as_secs_f64().ceil())]
    RateLimited { name: String, rate: crate::catalog::units::Rate, retry_after: Duration },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("no execution with id '{0}'")]
    ExecutionNotFound(String),
    #[error("execution '{0}' has already finished")]
    AlreadyFinished(String),
    #[error("plugin '{plugin}' has no backup '{backup}'")]
    BackupNotFound { plugin: String, backup: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the execution task failed")]
    TaskFailed,
}

/// Probes what the host kernel offers.
pub fn probe_host() -> (HostSupport, Option<cgroup::CgroupRoot>) {
    let (cgroup_v2, root) = cgroup::detect();
    let uts = nix::sys::utsname::uname().ok();
    let mut host = HostSupport {
        kernel: uts.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        running_as_root: nix::unistd::geteuid().is_root(),
        landlock_abi: crate::sys::landlock_abi(),
        seccomp: probe_seccomp(),
        namespaces: probe_namespaces(),
        missing_capabilities: probe_missing_capabilities(!cgroup_v2.usable),
        task_clock_unavailable: (!cgroup_v2.usable).then(cpu_clock::probe).and_then(Result::err),
        socket_meter_unavailable: (!cgroup_v2.usable).then(socket_meter::probe).and_then(Result::err),
        cgroup_v2,
        resource_gaps: Vec::new(),
    };
    host.resource_gaps = host.find_resource_gaps();
    (host, root)
}

#[derive(Debug, Default)]
struct PluginStats {
    by_status: BTreeMap<&'static str, u64>,
    cache_hits: u64,
    rate_limited: u64,
    latencies_ms: VecDeque<u64>,
    peak_memory_bytes: u64,
}

impl PluginStats {
    fn record(&mut self, r: &ExecutionResult) {
        *self.by_status.entry(r.status.as_str()).or_default() += 1;
        if self.latencies_ms.len() == LATENCIES_KEPT {
            self.latencies_ms.pop_front();
        }
        self.latencies_ms.push_back(r.duration_ms);
        self.peak_memory_bytes = self.peak_memory_bytes.max(r.peak_memory_bytes);
    }

    fn merge(&mut self, other: &PluginStats) {
        for (k, v) in &other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        self.cache_hits += other.cache_hits;
        self.rate_limited += other.rate_limited;
        self.latencies_ms.extend(other.latencies_ms.iter());
        self.peak_memory_bytes = self.peak_memory_bytes.max(other.peak_memory_bytes);
    }

    fn to_json(&self) -> Value {
        let mut sorted: Vec<u64> = self.latencies_ms.iter().copied().collect();
        sorted.sort_unstable();
        let pct = |p: f64| -> Option<u64> {
            (!sorted.is_empty()).then(|| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
        };
        json!({
            "total": self.by_status.values().sum::<u64>(),
            "by_status": self.by_status,
            "cache_hits": self.cache_hits,
            "rate_limited": self.rate_limited,
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "samples": sorted.len()},
            "peak_memory_bytes": self.peak_memory_bytes,
        })
    }
}

struct Running {
    plugin: String,
    started_at: u64,
    cancel: watch::Sender<bool>,
}

#[derive(Default)]
struct Executions {
    running: HashMap<String, Running>,
    finished: HashMap<String, ExecutionResult>,
    order: VecDeque<String>,
}

/// How a caller wants an execution.
pub enum Wait {
    /// Wait for the result.
    Result,
    /// Return the id at once; the result is fetched later.
    Detach,
}

pub enum Started {
    Finished(Box<ExecutionResult>),
    Detached(String),
}

/// A plugin's parameter schema, as the API document shows it.
pub struct PluginParameters {
    pub plugin: String,
    pub schema: Value,
    /// `{}` is valid: a request may leave `parameters` out.
    pub may_be_omitted: bool,
}

/// What the daemon read at start-up, before the supervisor owns it.
pub struct Loaded {
    pub policy: PolicySet,
    pub secrets: Secrets,
    pub registry: Registry,
}

pub struct Supervisor {
    config: Config,
    api_version: Version,
    host: HostSupport,
    policy: RwLock<Arc<PolicySet>>,
    /// Why the last policy reload was refused (the previous set stays active).
    policy_error: Mutex<Option<String>>,
    secrets: RwLock<Arc<Secrets>>,
    proxy: Arc<crate::proxy::EgressProxy>,
    /// Policy denials are audited here, where the plugin and the reason are known (the API's
    /// gate audits the caller's side: auth, rate limits, overload).
    audit: Arc<crate::audit::AuditLog>,
    /// Reloads run one at a time.
    reload_lock: tokio::sync::Mutex<()>,
    cgroups: Option<cgroup::CgroupRoot>,
    runners: Arc<pool::RunnerPool>,
    registry: RwLock<Registry>,
    slots: Arc<Semaphore>,
    /// Per-plugin slots, `(concurrency, slots)`: replaced when a reload changes the limit.
    plugin_slots: Mutex<BTreeMap<String, (u64, Arc<Semaphore>)>>,
    free_uids: Mutex<Vec<u32>>,
    waiting: AtomicUsize,
    executions: Mutex<Executions>,
    stats: Mutex<BTreeMap<String, PluginStats>>,
    rate_limiter: Mutex<admission::RateLimiter>,
    cache: Mutex<admission::ResultCache>,
    accepting: AtomicBool,
    idle: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Supervisor {
    pub fn new(
        config: Config,
        host: HostSupport,
        cgroups: Option<cgroup::CgroupRoot>,
        Loaded { policy, secrets, registry }: Loaded,
        proxy: Arc<crate::proxy::EgressProxy>,
        audit: Arc<crate::audit::AuditLog>,
    ) -> Arc<Self> {
        let n = config.executions.max_concurrent;
        let uids = (0..n as u32).rev().map(|i| config.uid_base() + i).collect();
        Arc::new(Supervisor {
            api_version: Version::parse(ironclaw_plugin_sdk::API_VERSION).expect("the SDK's API version is semver"),
            host,
            policy: RwLock::new(Arc::new(policy)),
            policy_error: Mutex::new(None),
            secrets: RwLock::new(Arc::new(secrets)),
            proxy,
            audit,
            reload_lock: tokio::sync::Mutex::new(()),
            cgroups,
            // More waiting runners than can ever run at once would only cost memory.
            runners: pool::RunnerPool::start(config.runner.prestarted.min(n)),
            registry: RwLock::new(registry),
            slots: Arc::new(Semaphore::new(n)),
            plugin_slots: Mutex::new(BTreeMap::new()),
            free_uids: Mutex::new(uids),
            waiting: AtomicUsize::new(0),
            executions: Mutex::new(Executions::default()),
            stats: Mutex::new(BTreeMap::new()),
            rate_limiter: Mutex::new(admission::RateLimiter::default()),
            cache: Mutex::new(admission::ResultCache::default()),
            accepting: AtomicBool::new(true),
            idle: tokio::sync::Notify::new(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    fn policy(&self) -> Arc<PolicySet> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn secrets(&self) -> Arc<Secrets> {
        self.secrets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` with what resolving plugin states depends on, as it is now.
    fn with_context<R>(&self, f: impl FnOnce(ResolveContext) -> R) -> R {
        let (policy, secrets) = (self.policy(), self.secrets());
        f(ResolveContext { api_version: &self.api_version, policy: &policy, secrets: &secrets })
    }

    pub fn system(&self) -> Value {
        let policy = self.policy();
        let requirements = &policy.requirements;
        let refusal = self.host.check(requirements).err();
        let layer = |on: bool| if on { "enforced" } else { "unavailable" };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "plugin_api_version": ironclaw_plugin_sdk::API_VERSION,
            "plugin_abi_version": ironclaw_plugin_sdk::ABI_VERSION,
            "host": self.host,
            "layers": {
                "namespaces": layer(self.host.missing(Layer::Namespaces).is_none()),
                "landlock": match self.host.landlock_abi {
                    Some(abi) => json!({"status": "enforced", "abi": abi}),
                    None => json!({"status": "unavailable"}),
                },
                "seccomp": layer(self.host.seccomp),
                "capabilities": "dropped",
                "no_new_privs": "enforced",
                "resources": self.host.resource_backend(),
                "resource_gaps": self.host.resource_gaps,
                "resource_limits": match self.host.resource_backend() {
                    ResourceBackend::CgroupV2 => json!({"memory": "cgroup memory.max", "cpu": "cgroup cpu.max + RLIMIT_CPU", "pids": "cgroup pids.max"}),
                    ResourceBackend::Fallback => json!({
                        "memory": if self.host.missing_capabilities.iter().any(|c| c.starts_with("CAP_SYS_PTRACE")) {
                            "NOT enforced: the monitor lacks CAP_SYS_PTRACE, so executions are stopped as errors"
                        } else {
                            "monitor (anonymous, shared and swapped pages, and socket buffers, every 10 ms) + RLIMIT_AS backstop; memfds, shared anonymous maps and /dev/zero refused"
                        },
                        "cpu_time": if self.host.task_clock_unavailable.is_none() {
                            "perf task clock inherited by every task of the sandbox, whoever reaps it + RLIMIT_CPU"
                        } else {
                            "monitor (CPU of live processes and of children they waited for) + RLIMIT_CPU"
                        },
                        "cpu_share": "every task frozen from outside (ptrace) while the sandbox is over its share (100 ms period)",
                        "pids": "RLIMIT_NPROC (one uid per execution, the ids claimed by this daemon alone)",
                    }),
                },
            },
            "policy": {
                "files": policy.files,
                "reload_error": *lock(&self.policy_error),
                "require": requirements.layers,
                "landlock_min_abi": requirements.landlock_min_abi,
                "executions_allowed": refusal.is_none(),
                "refusal": refusal,
            },
            "ids": {
                "uid_base": self.config.uid_base(),
                "slot_uids": [self.config.uid_base(), self.config.uid_base() + self.config.executions.max_concurrent as u32 - 1],
                "workspace_gids": [self.config.uid_base() + id_range::WORKSPACE_GIDS, self.config.uid_base() + id_range::RANGE_SIZE - 1],
                "claim": id_range::CLAIMS_DIR,
            },
            "executions": {
                "running": lock(&self.executions).running.len(),
                "max_concurrent": self.config.executions.max_concurrent,
                "max_queued": self.config.executions.max_queued,
                "prestarted_runners": self.runners.idle_count(),
                "prestarted_target": self.runners.target(),
            },
            "cache": {
                "entries": lock(&self.cache).entries(),
                "bytes": lock(&self.cache).bytes(),
            },
            "egress": {
                "proxy": format!("one listener per execution, at {} in the sandbox", crate::proxy::PROXY_URL),
                "static_hosts": self.config.proxy.hosts.len(),
            },
            // Names only: values never leave the daemon but for the plugins granted them.
            "secrets_available": self.secrets().names(),
        })
    }

    /// One line for systemd's STATUS: "5 plugins enabled, 1 not running".
    pub fn status_line(&self) -> String {
        let (plugins, enabled) = self.plugin_counts();
        format!("{enabled} plugins enabled, {} not running", plugins - enabled)
    }

    /// How many plugins are known, and how many are enabled.
    pub fn plugin_counts(&self) -> (usize, usize) {
        let reg = self.registry();
        (reg.plugins.len(), reg.plugins.values().filter(|e| e.state == PluginState::Enabled).count())
    }

    pub fn list_plugins(&self) -> Value {
        let reg = self.registry();
        let plugins: Vec<Value> = reg
            .plugins
            .values()
            .map(|e| {
                let m = e.plugin.as_ref().map(|p| &p.manifest);
                json!({
                    "name": e.name,
                    "version": m.map(|m| m.version.to_string()),
                    "description": m.map(|m| m.description.clone()),
                    "enabled": e.state == PluginState::Enabled,
                    "state": e.state,
                    "reason": e.reason,
                    "runtime": m.map(|m| m.runtime.kind()),
                })
            })
            .collect();
        json!({ "plugins": plugins })
    }

    pub fn plugin_info(&self, name: &str) -> Result<Value, SupervisorError> {
        let reg = self.registry();
        let e = reg.plugins.get(name).ok_or_else(|| SupervisorError::NotFound(name.into()))?;
        let m = e.plugin.as_ref().map(|p| &p.manifest);
        Ok(json!({
            "name": e.name,
            "dir": e.dir,
            "enabled": e.state == PluginState::Enabled,
            "state": e.state,
            "reason": e.reason,
            "manifest": m,
            "digest": e.plugin.as_ref().map(|p| p.short_digest()),
            "reload_error": e.reload_error,
            "on_probation": e.probation.as_ref().map(|p| json!({"executions_left": p.remaining, "previous_version": p.previous.manifest.version.to_string()})),
            "declared_permissions": m.map(|m| &m.permissions),
            // Only for a plugin whose every declaration is granted; each entry names its rule.
            "effective_permissions": e.effective.as_ref().map(|eff| json!({
                "network": eff.network,
                "network_deny": eff.network_deny,
                "private_addresses": eff.private_addresses,
                "fs_read": eff.fs_read,
                "fs_write": eff.fs_write,
                "workspace": eff.workspace,
                "secrets": eff.secrets,
                "denied": eff.denied,
            })),
            "effective_limits": e.effective.as_ref().map(|eff| &eff.limits),
            "limit_sources": e.effective.as_ref().map(|eff| &eff.limit_sources),
            "config": e.effective.as_ref().map(|eff| &eff.config),
            "events": e.events,
        }))
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<Value, SupervisorError> {
        let mut reg = self.registry_mut();
        let state = self.with_context(|ctx| reg.set_enabled(name, enabled, ctx)).map_err(|e| match e {
            RegistryError::NotFound(name) => SupervisorError::NotFound(name),
            e => SupervisorError::Registry(e),
        })?;
        tracing::info!(plugin = %name, enabled, ?state, "admin changed the enabled state");
        let reason = reg.plugins.get(name).and_then(|e| e.reason.clone());
        Ok(json!({"name": name, "enabled": state == PluginState::Enabled, "state": state, "reason": reason}))
    }

    /// Each loaded plugin's parameter schema, for the API document.
    pub fn parameter_schemas(&self) -> Vec<PluginParameters> {
        let reg = self.registry();
        reg.plugins
            .values()
            .filter_map(|e| {
                let plugin = e.plugin.as_ref()?;
                Some(PluginParameters {
                    plugin: e.name.clone(),
                    schema: plugin.manifest.parameters.clone(),
                    may_be_omitted: plugin.validator.is_valid(&serde_json::json!({})),
                })
            })
            .collect()
    }

    pub fn has_plugin(&self, name: &str) -> bool {
        self.registry().plugins.contains_key(name)
    }

    /// Validates and runs one execution.
    pub async fn execute(
        self: &Arc<Self>,
        name: &str,
        parameters: Value,
        wait: Wait,
    ) -> Result<Started, SupervisorError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(SupervisorError::ShuttingDown);
        }
        let (plugin, effective) = {
            let reg = self.registry();
            let e = reg.plugins.get(name).ok_or_else(|| SupervisorError::NotFound(name.into()))?;
            match (&e.plugin, &e.effective, e.state) {
                (Some(p), Some(eff), PluginState::Enabled) => (p.clone(), eff.clone()),
                _ => {
                    if e.state == PluginState::NotGranted {
                        self.audit_denial("policy", name, None, e.reason.as_deref().unwrap_or_default());
                    }
                    return Err(SupervisorError::NotRunnable {
                        name: name.into(),
                        state: e.state_label(),
                        reason: e.reason.clone().unwrap_or_default(),
                    });
                }
            }
        };
        if let Some(err) = plugin.validator.iter_errors(&parameters).next() {
            let path = err.instance_path.to_string();
            return Err(SupervisorError::InvalidParameters {
                path: if path.is_empty() { "/".into() } else { path },
                message: err.to_string(),
            });
        }
        // A cached result costs no runner and no rate-limit token.
        let cache_key = effective.limits.cache_ttl.map(|_| {
            let m = &plugin.manifest;
            admission::cache_key(&m.name, plugin.digest(), &parameters, &effective.config)
        });
        if let Some(key) = &cache_key
            && let Some(mut hit) = lock(&self.cache).get(key, std::time::Instant::now())
        {
            hit.cached = true;
            lock(&self.stats).entry(name.to_string()).or_default().cache_hits += 1;
            tracing::debug!(plugin = %name, id = %hit.id, "served from the result cache");
            return Ok(Started::Finished(Box::new(hit)));
        }
        if let Some(rate) = effective.limits.rate
            && let Err(retry_after) = lock(&self.rate_limiter).acquire(name, rate, std::time::Instant::now())
        {
            lock(&self.stats).entry(name.to_string()).or_default().rate_limited += 1;
            return Err(SupervisorError::RateLimited { name: name.into(), rate, retry_after });
        }
        let plan = self.plan(plugin, effective, parameters, Operation::Execute);
        self.launch(plan, cache_key, true, wait).await
    }

    /// One audit record of an execution refused before it ran.
    fn audit_denial(&self, reason: &str, plugin: &str, execution: Option<&str>, why: &str) {
        self.audit.record(serde_json::json!({
            "event": "denied", "reason": reason, "plugin": plugin, "execution": execution, "why": why,
        }));
    }

    /// Everything one execution of `plugin` needs, from its effective permissions.
    fn plan(
        &self,
        plugin: Arc<LoadedPlugin>,
        effective: Arc<Effective>,
        parameters: Value,
        operation: Operation,
    ) -> ExecutionPlan {
        let secrets = self.secrets();
        let secrets = crate::catalog::secrets::SecretEnv(
            effective
                .secrets
                .iter()
                .filter_map(|s| Some((s.value.0.clone(), secrets.get(&s.value.0)?.value.clone())))
                .collect(),
        );
        ExecutionPlan {
            id: uuid::Uuid::new_v4().simple().to_string(),
            operation,
            limits: effective.limits,
            plugin,
            parameters,
            config: effective.config.clone(),
            effective,
            secrets,
            workspaces: self.config.state_dir.join(WORKSPACES_DIR),
            proxy: self.proxy.clone(),
            uid: 0,
            uid_base: self.config.uid_base(),
            requirements: self.policy().requirements.clone(),
            cgroups: self.cgroups.clone(),
            kill_grace: self.config.executions.kill_grace.0,
            monitor_interval: self.config.executions.monitor_interval.0,
            extra_read_paths: self.config.runner.extra_read_paths.clone(),
            task_clock: self.host.task_clock_unavailable.is_none(),
            socket_meter: self.host.socket_meter_unavailable.is_none(),
            resource_gaps: self.host.resource_gaps.clone(),
        }
    }

    /// Runs a plan: fails closed when the host cannot give what policy demands, waits for a
    /// slot, and runs it in a task of its own (a client that goes away never leaves a runner
    /// un-reaped). `record`: an execution callers see (table, statistics, cache, lifecycle);
    /// trial loads are not.
    async fn launch(
        self: &Arc<Self>,
        mut plan: ExecutionPlan,
        cache_key: Option<String>,
        record: bool,
        wait: Wait,
    ) -> Result<Started, SupervisorError> {
        let id = plan.id.clone();
        let name = plan.plugin.manifest.name.clone();
        if let Err(reason) = self.host.check(&plan.requirements) {
            let result = plan.refused(ExecutionStatus::Denied, reason);
            if record {
                let why = result.error.as_deref().unwrap_or_default();
                self.audit_denial("policy", &name, Some(&id), why);
                self.finish(result.clone());
            }
            return Ok(Started::Finished(Box::new(result)));
        }

        // The plugin's own slot first, so executions queued behind a busy plugin hold no global
        // slot that other plugins could use.
        let plugin_permit = self.acquire(self.plugin_slots(&name, plan.limits.concurrency)).await?;
        let permit = self.acquire(self.slots.clone()).await?;
        plan.uid = lock(&self.free_uids).pop().expect("one uid per semaphore permit");
        let (cancel_tx, cancel_rx) = watch::channel(false);
        if record {
            lock(&self.executions).running.insert(
                id.clone(),
                Running { plugin: name.clone(), started_at: crate::audit::unix_ms(), cancel: cancel_tx },
            );
        }

        let (done_tx, done_rx) = oneshot::channel();
        let this = self.clone();
        let span = tracing::info_span!("execution", id = %id, plugin = %name, uid = plan.uid, trial = !record);
        tokio::spawn(
            async move {
                tracing::debug!("starting");
                let uid = plan.uid;
                let ttl = plan.limits.cache_ttl;
                let result = execution::execute(plan, &this.runners, cancel_rx).await;
                lock(&this.free_uids).push(uid);
                drop((permit, plugin_permit));
                // Only successes are cached: a failure may be transient, and is never replayed.
                if let (Some(key), Some(ttl), ExecutionStatus::Success) = (cache_key, ttl, result.status) {
                    lock(&this.cache).put(key, ttl.0, result.clone(), std::time::Instant::now());
                }
                if record {
                    this.finish(result.clone());
                }
                let _ = done_tx.send(result);
            }
            .instrument(span),
        );
        match wait {
            Wait::Detach => Ok(Started::Detached(id)),
            Wait::Result => {
                done_rx.await.map(|r| Started::Finished(Box::new(r))).map_err(|_| SupervisorError::TaskFailed)
            }
        }
    }

    /// A permit of `slots` now, or after a wait in the bounded queue (full: `Overloaded`).
    async fn acquire(&self, slots: Arc<Semaphore>) -> Result<OwnedSemaphorePermit, SupervisorError> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.config.executions.max_queued {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SupervisorError::Overloaded);
        }
        let acquired = slots.acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        acquired.map_err(|_| SupervisorError::ShuttingDown)
    }

    /// The plugin's slots for its current concurrency limit. Executions holding permits of a
    /// replaced semaphore finish on it; new ones use the new limit.
    fn plugin_slots(&self, plugin: &str, concurrency: u64) -> Arc<Semaphore> {
        let mut all = lock(&self.plugin_slots);
        let entry = all.entry(plugin.to_string()).or_insert_with(|| (0, Arc::new(Semaphore::new(0))));
        if entry.0 != concurrency {
            *entry = (concurrency, Arc::new(Semaphore::new(concurrency as usize)));
        }
        entry.1.clone()
    }

    /// Records a finished execution: table, statistics, lifecycle events, log line.
    fn finish(&self, result: ExecutionResult) {
        tracing::info!(
            id = %result.id,
            plugin = %result.plugin,
            status = result.status.as_str(),
            duration_ms = result.duration_ms,
            cpu_time_ms = result.cpu_time_ms,
            peak_memory_bytes = result.peak_memory_bytes,
            error = result.error.as_deref(),
            "execution finished"
        );
        if !result.log.is_empty() {
            let log: String = result.log.chars().take(4096).collect();
            tracing::debug!(id = %result.id, plugin = %result.plugin, log = %log, "plugin stderr");
        }
        let failed = matches!(
            result.status,
            ExecutionStatus::Error
                | ExecutionStatus::Crashed
                | ExecutionStatus::Timeout
                | ExecutionStatus::MemoryLimit
                | ExecutionStatus::CpuLimit
                | ExecutionStatus::OutputLimit
        );
        if failed && let Some(entry) = self.registry_mut().plugins.get_mut(&result.plugin) {
            let detail =
                format!("{} ({}): {}", result.status.as_str(), result.id, result.error.as_deref().unwrap_or(""));
            tracing::warn!(plugin = %result.plugin, id = %result.id, "on_error");
            entry.record(LifecycleEventKind::OnError, detail);
        }
        self.check_probation(&result);
        lock(&self.stats).entry(result.plugin.clone()).or_default().record(&result);
        let mut table = lock(&self.executions);
        table.running.remove(&result.id);
        table.order.push_back(result.id.clone());
        table.finished.insert(result.id.clone(), result);
        while table.order.len() > self.config.executions.retain.max(1) {
            if let Some(old) = table.order.pop_front() {
                table.finished.remove(&old);
            }
        }
        if table.running.is_empty() {
            self.idle.notify_waiters();
        }
    }

    pub fn execution(&self, id: &str) -> Result<Value, SupervisorError> {
        let table = lock(&self.executions);
        if let Some(r) = table.finished.get(id) {
            return Ok(serde_json::to_value(r).unwrap_or_default());
        }
        let r = table.running.get(id).ok_or_else(|| SupervisorError::ExecutionNotFound(id.into()))?;
        Ok(json!({"id": id, "plugin": r.plugin, "status": "running", "started_at": r.started_at}))
    }

    pub fn executions(&self, plugin: Option<&str>, running_only: bool) -> Value {
        let table = lock(&self.executions);
        let mut list: Vec<Value> = table
            .running
            .iter()
            .filter(|(_, r)| plugin.is_none_or(|p| p == r.plugin))
            .map(|(id, r)| json!({"id": id, "plugin": r.plugin, "status": "running", "started_at": r.started_at}))
            .collect();
        if !running_only {
            list.extend(table.order.iter().rev().filter_map(|id| table.finished.get(id)).filter(|r| plugin.is_none_or(|p| p == r.plugin)).take(100).map(|r| {
                json!({"id": r.id, "plugin": r.plugin, "status": r.status, "started_at": r.started_at, "duration_ms": r.duration_ms})
            }));
        }
        json!({ "executions": list })
    }

    pub fn cancel(&self, id: &str) -> Result<Value, SupervisorError> {
        let table = lock(&self.executions);
        match table.running.get(id) {
            Some(r) => {
                let _ = r.cancel.send(true);
                tracing::info!(id = %id, plugin = %r.plugin, "cancellation requested");
                Ok(json!({"id": id, "status": "cancelling"}))
            }
            None if table.finished.contains_key(id) => Err(SupervisorError::AlreadyFinished(id.into())),
            None => Err(SupervisorError::ExecutionNotFound(id.into())),
        }
    }

    pub fn stats(&self) -> Value {
        let stats = lock(&self.stats);
        let mut all = PluginStats::default();
        for s in stats.values() {
            all.merge(s);
        }
        let per_plugin: BTreeMap<&String, Value> = stats.iter().map(|(k, v)| (k, v.to_json())).collect();
        let mut out = all.to_json();
        out["plugins"] = json!(per_plugin);
        out["running"] = json!(lock(&self.executions).running.len());
        out
    }

    pub fn plugin_stats(&self, name: &str) -> Result<Value, SupervisorError> {
        if !self.registry().plugins.contains_key(name) {
            return Err(SupervisorError::NotFound(name.into()));
        }
        let stats = lock(&self.stats);
        let mut out = stats.get(name).map(PluginStats::to_json).unwrap_or_else(|| PluginStats::default().to_json());
        out["plugin"] = json!(name);
        Ok(out)
    }

    /// Stops accepting executions, lets in-flight ones finish within `grace`, then cancels the
    /// rest and waits for their runners to be reaped.
    pub async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        self.runners.close();
        let wait_idle = async {
            loop {
                let notified = self.idle.notified();
                if lock(&self.executions).running.is_empty() {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait_idle).await.is_err() {
            let table = lock(&self.executions);
            tracing::warn!(remaining = table.running.len(), "shutdown grace elapsed, cancelling executions");
            for r in table.running.values() {
                let _ = r.cancel.send(true);
            }
        }
        let settle = self.config.executions.kill_grace.0 + Duration::from_secs(3);
        let _ = tokio::time::timeout(settle, async {
            while !lock(&self.executions).running.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        for entry in self.registry_mut().plugins.values_mut().filter(|e| e.plugin.is_some()) {
            entry.record(LifecycleEventKind::OnUnload, "daemon shutdown");
            tracing::info!(plugin = %entry.name, "on_unload");
        }
        self.slots.close();
        for (_, slots) in lock(&self.plugin_slots).values() {
            slots.close();
        }
    }
}
