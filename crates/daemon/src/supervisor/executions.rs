//! The execution table, the one owner of what callers can see of executions: those running
//! (with their cancel switch), the most recent finished ones, and per-plugin statistics.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{Notify, watch};
use utoipa::ToSchema;

use crate::execution_result::{ExecutionResult, ExecutionStatus};

/// Latencies kept per plugin for the percentiles.
const LATENCIES_KEPT: usize = 1024;
/// Finished executions listed at most.
const LISTED: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("no execution with id '{0}'")]
    NotFound(String),
    #[error("execution '{0}' has already finished")]
    AlreadyFinished(String),
}

/// One line of the execution list, or a running execution. Nothing but these fields (the
/// schema says so, which tells it apart from a full result).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionSummary {
    pub id: String,
    pub plugin: String,
    pub status: ExecutionStatus,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Finished executions only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// An execution looked up by id: its result, or that it is still running.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExecutionView {
    Finished(Box<ExecutionResult>),
    Running(ExecutionSummary),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionList {
    /// Running ones first, then the most recent finished ones (at most 100), newest first.
    pub executions: Vec<ExecutionSummary>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cancelling {
    pub id: String,
    /// Always `cancelling`: the result follows at `GET /api/v1/executions/{id}`.
    pub status: String,
}

/// Execution statistics of one plugin, or of all.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    pub total: u64,
    /// Executions by final status.
    pub by_status: BTreeMap<String, u64>,
    pub cache_hits: u64,
    pub rate_limited: u64,
    pub latency_ms: Latency,
    pub peak_memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    /// How many of the latest executions the percentiles are taken over (at most 1024).
    pub samples: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AllStats {
    #[serde(flatten)]
    pub all: Stats,
    pub plugins: BTreeMap<String, Stats>,
    /// Executions running now.
    pub running: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginStats {
    pub plugin: String,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Debug, Default)]
struct Counters {
    by_status: BTreeMap<&'static str, u64>,
    cache_hits: u64,
    rate_limited: u64,
    latencies_ms: VecDeque<u64>,
    peak_memory_bytes: u64,
}

impl Counters {
    fn record(&mut self, r: &ExecutionResult) {
        *self.by_status.entry(r.status.as_str()).or_default() += 1;
        if self.latencies_ms.len() == LATENCIES_KEPT {
            self.latencies_ms.pop_front();
        }
        self.latencies_ms.push_back(r.duration_ms);
        self.peak_memory_bytes = self.peak_memory_bytes.max(r.peak_memory_bytes);
    }

    fn merge(&mut self, other: &Counters) {
        for (k, v) in &other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        self.cache_hits += other.cache_hits;
        self.rate_limited += other.rate_limited;
        self.latencies_ms.extend(other.latencies_ms.iter());
        self.peak_memory_bytes = self.peak_memory_bytes.max(other.peak_memory_bytes);
    }

    fn report(&self) -> Stats {
        let mut sorted: Vec<u64> = self.latencies_ms.iter().copied().collect();
        sorted.sort_unstable();
        let pct = |p: f64| -> Option<u64> {
            (!sorted.is_empty()).then(|| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
        };
        Stats {
            total: self.by_status.values().sum(),
            by_status: self.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            cache_hits: self.cache_hits,
            rate_limited: self.rate_limited,
            latency_ms: Latency { p50: pct(0.5), p95: pct(0.95), samples: sorted.len() },
            peak_memory_bytes: self.peak_memory_bytes,
        }
    }
}

struct Running {
    plugin: String,
    started_at: u64,
    cancel: watch::Sender<bool>,
}

impl Running {
    fn summary(&self, id: &str) -> ExecutionSummary {
        ExecutionSummary {
            id: id.to_string(),
            plugin: self.plugin.clone(),
            status: ExecutionStatus::Running,
            started_at: self.started_at,
            duration_ms: None,
        }
    }
}

#[derive(Default)]
struct Table {
    running: HashMap<String, Running>,
    finished: HashMap<String, ExecutionResult>,
    order: VecDeque<String>,
    stats: BTreeMap<String, Counters>,
}

pub struct ExecutionTable {
    /// Finished executions kept, oldest dropped first.
    retain: usize,
    table: Mutex<Table>,
    idle: Notify,
}

impl ExecutionTable {
    pub fn new(retain: usize) -> Self {
        ExecutionTable { retain: retain.max(1), table: Mutex::new(Table::default()), idle: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An execution starts; the receiver tells it when it is cancelled.
    pub fn start(&self, id: &str, plugin: &str) -> watch::Receiver<bool> {
        let (cancel, cancelled) = watch::channel(false);
        let running = Running { plugin: plugin.to_string(), started_at: crate::audit::unix_ms(), cancel };
        self.lock().running.insert(id.to_string(), running);
        cancelled
    }

    /// An execution finished (or was refused before it ran): kept for lookups, counted.
    pub fn finish(&self, result: ExecutionResult) {
        let mut table = self.lock();
        table.stats.entry(result.plugin.clone()).or_default().record(&result);
        table.running.remove(&result.id);
        table.order.push_back(result.id.clone());
        table.finished.insert(result.id.clone(), result);
        while table.order.len() > self.retain {
            if let Some(old) = table.order.pop_front() {
                table.finished.remove(&old);
            }
        }
        if table.running.is_empty() {
            self.idle.notify_waiters();
        }
    }

    pub fn count_cache_hit(&self, plugin: &str) {
        self.lock().stats.entry(plugin.to_string()).or_default().cache_hits += 1;
    }

    pub fn count_rate_limited(&self, plugin: &str) {
        self.lock().stats.entry(plugin.to_string()).or_default().rate_limited += 1;
    }

    pub fn running_count(&self) -> usize {
        self.lock().running.len()
    }

    pub fn get(&self, id: &str) -> Result<ExecutionView, TableError> {
        let table = self.lock();
        if let Some(r) = table.finished.get(id) {
            return Ok(ExecutionView::Finished(Box::new(r.clone())));
        }
        let r = table.running.get(id).ok_or_else(|| TableError::NotFound(id.into()))?;
        Ok(ExecutionView::Running(r.summary(id)))
    }

    pub fn list(&self, plugin: Option<&str>, running_only: bool) -> ExecutionList {
        let table = self.lock();
        let mut executions: Vec<ExecutionSummary> = table
            .running
            .iter()
            .filter(|(_, r)| plugin.is_none_or(|p| p == r.plugin))
            .map(|(id, r)| r.summary(id))
            .collect();
        if !running_only {
            let finished = table.order.iter().rev().filter_map(|id| table.finished.get(id));
            executions.extend(finished.filter(|r| plugin.is_none_or(|p| p == r.plugin)).take(LISTED).map(|r| {
                ExecutionSummary {
                    id: r.id.clone(),
                    plugin: r.plugin.clone(),
                    status: r.status,
                    started_at: r.started_at,
                    duration_ms: Some(r.duration_ms),
                }
            }));
        }
        ExecutionList { executions }
    }

    pub fn cancel(&self, id: &str) -> Result<Cancelling, TableError> {
        let table = self.lock();
        match table.running.get(id) {
            Some(r) => {
                let _ = r.cancel.send(true);
                tracing::info!(id = %id, plugin = %r.plugin, "cancellation requested");
                Ok(Cancelling { id: id.into(), status: "cancelling".into() })
            }
            None if table.finished.contains_key(id) => Err(TableError::AlreadyFinished(id.into())),
            None => Err(TableError::NotFound(id.into())),
        }
    }

    /// Cancels every running execution (shutdown, once its grace is over).
    pub fn cancel_all(&self) {
        let table = self.lock();
        tracing::warn!(remaining = table.running.len(), "shutdown grace elapsed, cancelling executions");
        for r in table.running.values() {
            let _ = r.cancel.send(true);
        }
    }

    /// Returns once no execution is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.lock().running.is_empty() {
                return;
            }
            notified.await;
        }
    }

    pub fn stats(&self) -> AllStats {
        let table = self.lock();
        let mut all = Counters::default();
        for s in table.stats.values() {
            all.merge(s);
        }
        AllStats {
            all: all.report(),
            plugins: table.stats.iter().map(|(k, v)| (k.clone(), v.report())).collect(),
            running: table.running.len(),
        }
    }

    pub fn plugin_stats(&self, plugin: &str) -> PluginStats {
        let table = self.lock();
        let stats = table.stats.get(plugin).map_or_else(|| Counters::default().report(), Counters::report);
        PluginStats { plugin: plugin.into(), stats }
    }
}
