//! The Ironclaw plugin SDK: the wire protocol, the native C ABI and the `export_plugin!` macro.
//!
//! One protocol serves both runtimes. A plugin receives a [`Request`] (JSON) and answers with a
//! [`Response`] (JSON):
//! - `exec` plugins read the request on stdin and write the response on stdout;
//! - `native` plugins export the C ABI below; [`export_plugin!`] writes it for a Rust type.
//!
//! The daemon links this crate too, so the protocol has exactly one definition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "http")]
pub mod http;

/// A secret the plugin declared and policy granted (the runner puts it in the environment).
pub fn secret(name: &str) -> Result<String, PluginError> {
    std::env::var(name).map_err(|_| PluginError::Failed(format!("the secret {name} was not provided to this plugin")))
}

/// The plugin's workspace, when it has one.
pub fn workspace() -> Result<std::path::PathBuf, PluginError> {
    std::env::var_os("IRONCLAW_WORKSPACE")
        .map(std::path::PathBuf::from)
        .ok_or_else(|| PluginError::Failed("this plugin has no workspace (declare `workspace = true`)".into()))
}

/// Version of the native C ABI. The runner reads it through [`SYMBOL_ABI_VERSION`] before it
/// calls anything else in the library, and refuses a library that reports another number.
pub const ABI_VERSION: u32 = 1;

/// Semver of the plugin API (protocol and ABI). A manifest's `api` requirement is matched against it.
pub const API_VERSION: &str = "1.0.0";

/// Version number carried in every [`Request`].
pub const PROTOCOL_VERSION: u32 = 1;

/// `extern "C" fn() -> u32`
pub const SYMBOL_ABI_VERSION: &str = "ironclaw_plugin_abi_version";
/// `extern "C" fn(req: *const u8, req_len: usize, out_len: *mut usize) -> *mut u8`
pub const SYMBOL_INVOKE: &str = "ironclaw_plugin_invoke";
/// `extern "C" fn(ptr: *mut u8, len: usize)`, releases a buffer returned by invoke.
pub const SYMBOL_FREE: &str = "ironclaw_plugin_free";

/// What the runner asks of the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Validate the parameters, then execute, then clean up.
    Execute,
    /// Validate the parameters only (used for trial loads).
    Validate,
}

/// The request a plugin receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    pub operation: Operation,
    pub execution_id: String,
    pub parameters: Value,
    /// Non-secret per-plugin configuration from the admin's policy (an empty object when none).
    #[serde(default)]
    pub config: Value,
}

/// How the plugin judged its own run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    Success,
    Error,
    InvalidInput,
}

/// The response a plugin returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub status: ResponseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn success(data: Value) -> Self {
        Self { status: ResponseStatus::Success, data: Some(data), error: None }
    }

    pub fn failure(status: ResponseStatus, message: impl Into<String>) -> Self {
        Self { status, data: None, error: Some(message.into()) }
    }
}

/// Why an execution failed, as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The parameters are acceptable to the schema but not to the plugin.
    InvalidInput(String),
    /// The plugin ran and could not produce a result.
    Failed(String),
}

impl PluginError {
    fn into_response(self) -> Response {
        match self {
            PluginError::InvalidInput(m) => Response::failure(ResponseStatus::InvalidInput, m),
            PluginError::Failed(m) => Response::failure(ResponseStatus::Error, m),
        }
    }
}

/// What a plugin may know about the execution it serves.
#[derive(Debug)]
pub struct Context<'a> {
    pub execution_id: &'a str,
    pub config: &'a Value,
}

/// The lifecycle a plugin implements. Only `execute` is required.
pub trait Plugin: Default {
    /// Checks the parameters beyond what the JSON Schema expresses.
    fn validate(&self, _parameters: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Does the work.
    fn execute(&self, parameters: &Value, context: &Context<'_>) -> Result<Value, PluginError>;

    /// Releases what `execute` acquired. Runs after every execute, successful or not.
    fn cleanup(&self) {}
}

/// Runs one request through a plugin's lifecycle and returns the encoded response.
/// Never panics on bad input: a malformed request becomes an `error` response.
pub fn handle<P: Plugin>(request: &[u8]) -> Vec<u8> {
    let response = match serde_json::from_slice::<Request>(request) {
        Err(e) => Response::failure(ResponseStatus::Error, format!("malformed request: {e}")),
        Ok(req) if req.protocol != PROTOCOL_VERSION => {
            Response::failure(ResponseStatus::Error, format!("unsupported protocol version {}", req.protocol))
        }
        Ok(req) => run_lifecycle(&P::default(), &req),
    };
    serde_json::to_vec(&response).unwrap_or_else(|_| br#"{"status":"error","error":"unencodable response"}"#.to_vec())
}

fn run_lifecycle<P: Plugin>(plugin: &P, req: &Request) -> Response {
    if let Err(message) = plugin.validate(&req.parameters) {
        return Response::failure(ResponseStatus::InvalidInput, message);
    }
    if req.operation == Operation::Validate {
        return Response::success(Value::Null);
    }
    let context = Context { execution_id: &req.execution_id, config: &req.config };
    let outcome = plugin.execute(&req.parameters, &context);
    plugin.cleanup();
    match outcome {
        Ok(data) => Response::success(data),
        Err(e) => e.into_response(),
    }
}

/// Entry point for an `exec` plugin written in Rust: request on stdin, response on stdout.
pub fn run_exec<P: Plugin>() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let mut request = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut request) {
        eprintln!("cannot read the request from stdin: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let response = handle::<P>(&request);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&response).and_then(|()| stdout.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the response to stdout: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The C side of [`export_plugin!`]. Not for direct use.
#[doc(hidden)]
pub mod ffi {
    use super::{Plugin, Response, ResponseStatus, handle};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// # Safety
    /// `request` must point to `len` readable bytes and `out_len` to a writable `usize`.
    pub unsafe fn invoke<P: Plugin>(request: *const u8, len: usize, out_len: *mut usize) -> *mut u8 {
        let bytes: &[u8] = if request.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `request` points to `len` initialised bytes that
            // outlive this call (the runner keeps its buffer alive across the call).
            unsafe { std::slice::from_raw_parts(request, len) }
        };
        // No panic may cross the FFI boundary: turn it into an error response.
        let encoded = catch_unwind(AssertUnwindSafe(|| handle::<P>(bytes))).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let response = Response::failure(ResponseStatus::Error, format!("plugin panicked: {message}"));
            serde_json::to_vec(&response).unwrap_or_default()
        });
        let boxed = encoded.into_boxed_slice();
        // SAFETY: the caller guarantees `out_len` is a valid, writable pointer.
        unsafe { *out_len = boxed.len() };
        Box::into_raw(boxed).cast::<u8>()
    }

    /// # Safety
    /// `ptr` and `len` must come from one earlier call of [`invoke`] and be freed once.
    pub unsafe fn free(ptr: *mut u8, len: usize) {
        if ptr.is_null() {
            return;
        }
        let slice = std::ptr::slice_from_raw_parts_mut(ptr, len);
        // SAFETY: `ptr`/`len` were produced by `Box::into_raw` of a `Box<[u8]>` of exactly this
        // length in `invoke`, and the caller frees each buffer once.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// Exports a [`Plugin`] type through the Ironclaw native ABI.
///
/// ```ignore
/// #[derive(Default)]
/// struct Echo;
/// impl ironclaw_plugin_sdk::Plugin for Echo {
///     fn execute(&self, p: &serde_json::Value, _: &ironclaw_plugin_sdk::Context<'_>)
///         -> Result<serde_json::Value, ironclaw_plugin_sdk::PluginError> { Ok(p.clone()) }
/// }
/// ironclaw_plugin_sdk::export_plugin!(Echo);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn ironclaw_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// # Safety
        /// See `ironclaw_plugin_sdk::ffi::invoke`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn ironclaw_plugin_invoke(
            request: *const u8,
            len: usize,
            out_len: *mut usize,
        ) -> *mut u8 {
            // SAFETY: the runner passes a live buffer of `len` bytes and a writable `out_len`.
            unsafe { $crate::ffi::invoke::<$plugin>(request, len, out_len) }
        }

        /// # Safety
        /// See `ironclaw_plugin_sdk::ffi::free`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn ironclaw_plugin_free(ptr: *mut u8, len: usize) {
            // SAFETY: the runner frees each buffer returned by invoke exactly once.
            unsafe { $crate::ffi::free(ptr, len) }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Echo;
    impl Plugin for Echo {
        fn validate(&self, p: &Value) -> Result<(), String> {
            if p.get("bad").is_some() { Err("bad is not allowed".into()) } else { Ok(()) }
        }
        fn execute(&self, p: &Value, c: &Context<'_>) -> Result<Value, PluginError> {
            if p.get("panic").is_some() {
                panic!("asked to panic");
            }
            Ok(json!({"echo": p, "id": c.execution_id}))
        }
    }

    fn request(op: Operation, parameters: Value) -> Vec<u8> {
        serde_json::to_vec(&Request {
            protocol: PROTOCOL_VERSION,
            operation: op,
            execution_id: "x1".into(),
            parameters,
            config: json!({}),
        })
        .unwrap()
    }

    fn decode(bytes: &[u8]) -> Response {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn execute_round_trip() {
        let r = decode(&handle::<Echo>(&request(Operation::Execute, json!({"a": 1}))));
        assert_eq!(r, Response::success(json!({"echo": {"a": 1}, "id": "x1"})));
    }

    #[test]
    fn validate_failure_is_invalid_input() {
        let r = decode(&handle::<Echo>(&request(Operation::Validate, json!({"bad": 1}))));
        assert_eq!(r.status, ResponseStatus::InvalidInput);
        assert_eq!(r.error.as_deref(), Some("bad is not allowed"));
    }

    #[test]
    fn malformed_request_is_an_error_response() {
        let r = decode(&handle::<Echo>(b"{not json"));
        assert_eq!(r.status, ResponseStatus::Error);
        assert!(r.error.unwrap().starts_with("malformed request"));
    }

    #[test]
    fn panics_do_not_cross_the_ffi_boundary() {
        let req = request(Operation::Execute, json!({"panic": true}));
        let mut len = 0usize;
        // SAFETY: `req` is alive for the call and `len` is a valid out pointer.
        let ptr = unsafe { ffi::invoke::<Echo>(req.as_ptr(), req.len(), &mut len) };
        // SAFETY: `ptr`/`len` come from the invoke call above.
        let out = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
        // SAFETY: freed once, with the pair invoke returned.
        unsafe { ffi::free(ptr, len) };
        let r = decode(&out);
        assert_eq!(r.status, ResponseStatus::Error);
        assert_eq!(r.error.as_deref(), Some("plugin panicked: asked to panic"));
    }
}
