//! The result of an execution, as every front end returns it: its status, the plugin's answer,
//! what it used, and the layers that were enforced.
#![forbid(unsafe_code)]

use ironclaw_protocol::layers::{AppliedLayers, ResourceBackend};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Running,
    Success,
    Error,
    InvalidInput,
    Timeout,
    MemoryLimit,
    CpuLimit,
    OutputLimit,
    Crashed,
    Cancelled,
    Denied,
}

impl ExecutionStatus {
    pub const FINAL: [ExecutionStatus; 10] = [
        ExecutionStatus::Success,
        ExecutionStatus::Error,
        ExecutionStatus::InvalidInput,
        ExecutionStatus::Timeout,
        ExecutionStatus::MemoryLimit,
        ExecutionStatus::CpuLimit,
        ExecutionStatus::OutputLimit,
        ExecutionStatus::Crashed,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Success => "success",
            ExecutionStatus::Error => "error",
            ExecutionStatus::InvalidInput => "invalid_input",
            ExecutionStatus::Timeout => "timeout",
            ExecutionStatus::MemoryLimit => "memory_limit",
            ExecutionStatus::CpuLimit => "cpu_limit",
            ExecutionStatus::OutputLimit => "output_limit",
            ExecutionStatus::Crashed => "crashed",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Denied => "denied",
        }
    }
}

/// The result object of every execution.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionResult {
    pub id: String,
    pub plugin: String,
    pub plugin_version: String,
    /// The first 12 hex digits of the SHA-256 of the version's files.
    #[serde(default)]
    pub plugin_digest: String,
    pub status: ExecutionStatus,
    /// The plugin's answer: any JSON value.
    #[schema(value_type = Option<Value>)]
    pub data: Option<Value>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub cpu_time_ms: u64,
    pub peak_memory_bytes: u64,
    /// The signal that ended the plugin, when it crashed.
    pub signal: Option<i32>,
    /// The layers actually enforced: `resources` and `sandbox` (null when no runner started).
    pub layers: LayerReport,
    /// The plugin's stderr (the first 64 KiB).
    pub log: String,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Served from the result cache: this is the result of execution `id`, run earlier.
    #[serde(default)]
    pub cached: bool,
    /// The sandbox failed before the plugin could run (no fault of the plugin's): a trial load
    /// that ends so is retried, not held against the plugin.
    #[serde(skip)]
    pub sandbox_failed: bool,
}

/// The `layers` field of every execution result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerReport {
    pub resources: ResourceBackend,
    /// `None` when the runner never reached the point of reporting (setup failure, refusal).
    pub sandbox: Option<AppliedLayers>,
    /// What the resource backend could not see or hold on this host, one line per gap (empty
    /// when every limit is enforced as documented).
    #[serde(default)]
    pub resource_gaps: Vec<String>,
}
