//! The supervisor's errors: why an execution, a lookup or a reload request was refused.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::admission::Refusal;
use super::executions::TableError;
use crate::catalog::CatalogError;
use crate::catalog::registry::RegistryError;
use crate::catalog::units::Rate;

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
    RateLimited { name: String, rate: Rate, retry_after: Duration },
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

impl From<CatalogError> for SupervisorError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(name) => SupervisorError::NotFound(name),
            CatalogError::NotRunnable { name, state, reason } => SupervisorError::NotRunnable { name, state, reason },
            CatalogError::Registry(e) => SupervisorError::Registry(e),
        }
    }
}

impl From<Refusal> for SupervisorError {
    fn from(e: Refusal) -> Self {
        match e {
            Refusal::Overloaded => SupervisorError::Overloaded,
            Refusal::ShuttingDown => SupervisorError::ShuttingDown,
        }
    }
}

impl From<TableError> for SupervisorError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::NotFound(id) => SupervisorError::ExecutionNotFound(id),
            TableError::AlreadyFinished(id) => SupervisorError::AlreadyFinished(id),
        }
    }
}
