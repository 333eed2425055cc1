//! How an execution ended: the status the daemon, the kernel or the set-up decided, or else
//! the plugin's own response; and no secret value in what is returned.
#![forbid(unsafe_code)]

use ironclaw_plugin_sdk::{Response, ResponseStatus};
use ironclaw_protocol::message::SetupStage;
use serde_json::Value;

use crate::execution_result::{ExecutionResult, ExecutionStatus};
use crate::sys;

/// A plugin may echo what it was given: no secret value leaves in a result.
pub fn redact_secrets(result: &mut ExecutionResult, secrets: &[(String, String)]) {
    use crate::catalog::secrets::redact;
    if secrets.is_empty() {
        return;
    }
    result.log = redact(&result.log, secrets);
    result.error = result.error.as_deref().map(|e| redact(e, secrets));
    if let Some(data) = &result.data {
        let text = data.to_string();
        let clean = redact(&text, secrets);
        if clean != text {
            result.data = serde_json::from_str(&clean).ok().or(Some(Value::String(clean)));
        }
    }
}

/// Facts about how an execution ended, before its response is read.
pub struct Outcome {
    pub kill_reason: Option<ExecutionStatus>,
    pub oom_killed: bool,
    pub setup_failed: Option<(SetupStage, String)>,
    pub reaped: sys::Reaped,
    pub memory_limit: u64,
    /// The cgroup's peak, or the monitor's (anonymous + shared memory).
    pub peak_memory: u64,
    pub cpu_limit_ms: u64,
    pub output_too_large: bool,
    pub ipc_garbage: Option<String>,
    /// The runner reported itself confined: from then on, plugin code may have run.
    pub confined: bool,
    /// Why the daemon stopped it as an error, when it did.
    pub unenforceable: Option<String>,
}

/// "SIGSEGV" for 11; the number for a signal nix does not know.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map_or_else(|_| signal.to_string(), |n| n.as_str().to_string())
}

/// How an execution ended, before its response is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The daemon, the kernel or the set-up decided the status, for this reason.
    Decided(ExecutionStatus, String),
    /// The plugin ended normally: its response decides.
    Responded,
}

/// Decides how the runner ended.
pub fn classify(o: &Outcome) -> Ending {
    use ExecutionStatus::*;
    let sig = o.reaped.signal;
    if let Some(reason) = o.kill_reason {
        let message = match reason {
            Timeout => "the execution exceeded its wall-clock timeout and was killed".to_string(),
            Cancelled => "the execution was cancelled".to_string(),
            MemoryLimit => {
                format!("the execution exceeded its memory limit of {} bytes and was killed", o.memory_limit)
            }
            CpuLimit => format!("the execution exceeded its CPU time limit of {} ms and was killed", o.cpu_limit_ms),
            OutputLimit => "the execution exceeded its output limit and was killed".to_string(),
            // The only reason the daemon stops an execution as an error: a limit it cannot enforce.
            Error => format!(
                "{}; the execution was stopped",
                o.unenforceable.as_deref().unwrap_or("a limit could not be enforced")
            ),
            _ => "the execution was stopped".to_string(),
        };
        return Ending::Decided(reason, message);
    }
    if o.oom_killed {
        return Ending::Decided(
            MemoryLimit,
            format!("the kernel OOM-killed the execution at its memory limit of {} bytes", o.memory_limit),
        );
    }
    if o.output_too_large {
        return Ending::Decided(OutputLimit, "the execution exceeded its output limit".into());
    }
    if let Some((stage, message)) = &o.setup_failed {
        return match stage {
            SetupStage::Requirements => Ending::Decided(Denied, message.clone()),
            _ => Ending::Decided(Error, format!("sandbox set-up failed at stage '{stage}': {message}")),
        };
    }
    if let Some(s) = sig.filter(|_| !o.confined) {
        // Killed from outside during set-up (e.g. a pre-started runner killed while idle).
        let name = signal_name(s);
        return Ending::Decided(Error, format!("the sandbox was killed by {name} before the plugin started"));
    }
    if let Some(s) = sig {
        let cpu_killed = s == libc::SIGXCPU || (s == libc::SIGKILL && o.reaped.cpu_time_ms >= o.cpu_limit_ms);
        if cpu_killed {
            return Ending::Decided(
                CpuLimit,
                format!("the execution exceeded its CPU time limit of {} ms", o.cpu_limit_ms),
            );
        }
        // Killed by a signal near its memory limit: an allocation that failed (RLIMIT_AS) and
        // aborted, or the monitor's kill racing the exit.
        if o.peak_memory >= o.memory_limit / 10 * 9 {
            return Ending::Decided(
                MemoryLimit,
                format!("the execution died at its memory limit of {} bytes", o.memory_limit),
            );
        }
        let name = signal_name(s);
        let hint = if s == libc::SIGSYS { " (a forbidden system call)" } else { "" };
        return Ending::Decided(Crashed, format!("the plugin was killed by {name}{hint}"));
    }
    if let Some(garbage) = o.ipc_garbage.clone() {
        // Only the runner's trusted side holds the channel: this is the sandbox's failure.
        return Ending::Decided(Error, format!("the runner broke its protocol: {garbage}"));
    }
    Ending::Responded
}

/// What the plugin's response says: its status, answer and error.
pub fn read_response(body: &[u8], exit_code: Option<i32>) -> (ExecutionStatus, Option<Value>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Response>(text.trim()) {
        Ok(response) => {
            let status = match response.status {
                ResponseStatus::Success => ExecutionStatus::Success,
                ResponseStatus::Error => ExecutionStatus::Error,
                ResponseStatus::InvalidInput => ExecutionStatus::InvalidInput,
            };
            let error = match response.error {
                None if status != ExecutionStatus::Success => {
                    Some("the plugin reported a failure without a message".into())
                }
                error => error,
            };
            (status, response.data, error)
        }
        Err(e) => {
            let error = match exit_code {
                Some(0) | None if body.is_empty() => "the plugin produced no response".to_string(),
                Some(code) if code != 0 => format!("the plugin exited with status {code} without a valid response"),
                _ => format!("the plugin's response is not valid: {e}"),
            };
            (ExecutionStatus::Error, None, Some(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            kill_reason: None,
            oom_killed: false,
            setup_failed: None,
            reaped: sys::Reaped { exit_code: Some(0), signal: None, cpu_time_ms: 5, max_rss_bytes: 1 << 20 },
            memory_limit: 64 << 20,
            peak_memory: 1 << 20,
            cpu_limit_ms: 1000,
            output_too_large: false,
            ipc_garbage: None,
            confined: true,
            unenforceable: None,
        }
    }

    fn status(ending: Ending) -> ExecutionStatus {
        match ending {
            Ending::Decided(status, _) => status,
            Ending::Responded => panic!("expected a decided status"),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&outcome()), Ending::Responded);
        let mut o = outcome();
        o.kill_reason = Some(ExecutionStatus::Timeout);
        assert_eq!(status(classify(&o)), ExecutionStatus::Timeout);
        let mut o = outcome();
        o.reaped.signal = Some(libc::SIGSEGV);
        o.reaped.exit_code = None;
        assert_eq!(classify(&o), Ending::Decided(ExecutionStatus::Crashed, "the plugin was killed by SIGSEGV".into()));
        o.reaped.signal = Some(libc::SIGXCPU);
        assert_eq!(status(classify(&o)), ExecutionStatus::CpuLimit);
        let mut o = outcome();
        o.oom_killed = true;
        assert_eq!(status(classify(&o)), ExecutionStatus::MemoryLimit);
        let mut o = outcome();
        o.setup_failed = Some((SetupStage::Requirements, "policy requires layer 'cgroup_v2'".into()));
        assert_eq!(status(classify(&o)), ExecutionStatus::Denied);
        // Killed before any plugin code ran: not the plugin's crash.
        let mut o = outcome();
        (o.confined, o.reaped.signal, o.reaped.exit_code) = (false, Some(libc::SIGKILL), None);
        assert_eq!(
            classify(&o),
            Ending::Decided(
                ExecutionStatus::Error,
                "the sandbox was killed by SIGKILL before the plugin started".into()
            )
        );
    }

    #[test]
    fn responses() {
        let (status, data, _) = read_response(br#"{"status":"success","data":{"result":5}}"#, Some(0));
        assert_eq!((status, data), (ExecutionStatus::Success, Some(serde_json::json!({"result": 5}))));
        let (_, _, error) = read_response(b"not json", Some(3));
        assert_eq!(error.as_deref(), Some("the plugin exited with status 3 without a valid response"));
        let (_, _, error) = read_response(b"", Some(0));
        assert_eq!(error.as_deref(), Some("the plugin produced no response"));
        let (status, _, error) = read_response(br#"{"status":"error","error":"nope","extra":1}"#, Some(0));
        assert_eq!(status, ExecutionStatus::Error);
        assert!(error.unwrap().contains("not valid"));
        let (status, _, error) = read_response(br#"{"status":"error"}"#, Some(0));
        assert_eq!(
            (status, error.as_deref()),
            (ExecutionStatus::Error, Some("the plugin reported a failure without a message"))
        );
    }
}
