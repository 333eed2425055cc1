//! The audit log: who did what, and what was refused (JSON lines, apart from the debug log;
//! never a secret or a token). The API's gate records callers' actions and denials, the
//! supervisor policy denials, the egress proxy its refusals.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
#[error("failed to open the audit log {0}")]
pub struct AuditError(PathBuf, #[source] std::io::Error);

/// The audit log: one JSON object per line, appended and flushed at once. Shared by the API's
/// gate and the egress proxy.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Arc<Self>, AuditError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AuditError(path.to_path_buf(), e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| AuditError(path.to_path_buf(), e))?;
        Ok(Arc::new(AuditLog { file: Mutex::new(file) }))
    }

    /// Appends one record, stamped with the time.
    pub fn record(&self, mut record: Value) {
        record["ts_ms"] = json!(unix_ms());
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(file, "{record}").and_then(|()| file.flush()) {
            tracing::error!(error = %e, "failed to write the audit log");
        }
    }
}

/// Milliseconds since the Unix epoch: the time stamp of audit records, results and backups.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
