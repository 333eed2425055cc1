//! The API's errors: a status, a stable machine-readable code and a message, in one body format
//! for every refusal, mapped from the service's errors.
#![forbid(unsafe_code)]

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::ServiceError;
use crate::supervisor::SupervisorError;

/// An API error: a status, a stable machine-readable code and a human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` on 429 and 503 (1 unless known).
    retry_after: u64,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: 1 }
    }
}

/// The body of every refused request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
    /// `rate_limited` on 429 for a plugin over its rate: shaped like an execution result too,
    /// for clients that only read `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// With `status`: seconds until the plugin may run again (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `plugin_not_found`, `overloaded`.
    code: String,
    /// For people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rate_limited = self.code == "rate_limited";
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.into(), message: self.message },
            status: rate_limited.then(|| "rate_limited".into()),
            retry_after_s: rate_limited.then_some(self.retry_after),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        let e = match e {
            ServiceError::Supervisor(e) => e,
            ServiceError::PluginNameMismatch { .. } => {
                return ApiError::new(StatusCode::BAD_REQUEST, "plugin_name_mismatch", message);
            }
            ServiceError::ParametersTooLarge { .. } => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "parameters_too_large", message);
            }
        };
        use SupervisorError::*;
        match e {
            NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", message),
            NotRunnable { state: "disabled", .. } => ApiError::new(StatusCode::CONFLICT, "plugin_disabled", message),
            NotRunnable { .. } => ApiError::new(StatusCode::CONFLICT, "plugin_not_runnable", message),
            InvalidParameters { .. } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameters", message),
            Overloaded => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message),
            RateLimited { retry_after, .. } => ApiError {
                retry_after: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message),
            ExecutionNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "execution_not_found", message),
            AlreadyFinished(_) => ApiError::new(StatusCode::CONFLICT, "execution_finished", message),
            BackupNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "backup_not_found", message),
            Registry(_) | TaskFailed => {
                // Internal details go to the log, never to the client.
                tracing::error!(error = %ironclaw_protocol::error_chain(&e), "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon log")
            }
        }
    }
}
