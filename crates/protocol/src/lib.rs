//! The contract between the daemon and its runners, and the only code both sides share.
//!
//! The daemon (`ironclaw-daemon`) and the runner (`ironclaw-runner`) never import each other:
//! the daemon knows a runner only through the [`spec::RunnerSpec`] it sends and the
//! [`message::RunnerMessage`]s it reads back, in [`frame`]s over the runner's socketpair, and
//! the runner reports the [`layers`] it applied in the same types.
#![forbid(unsafe_code)]

pub mod frame;
pub mod layers;
pub mod message;
pub mod spec;

use std::error::Error;

/// The argument that turns `ironclawd` into a runner.
pub const RUNNER_ARG: &str = "__runner";
/// Exit status of a runner that failed before any plugin code ran.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// The host's system directories, bound read-only into every sandbox at the same paths: a
/// symbolic link of a plugin folder may lead into them (a venv's `bin/python3`).
pub const SYSTEM_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"];
/// Where the plugin's workspace appears inside the sandbox, read-write (unless full), noexec.
pub const WORKSPACE_MOUNT: &str = "/run/ironclaw/workspace";
/// The sandbox's TLS trust bundle: the host's system bundle (Debian's path), or the bundle the
/// daemon composed from it and the admin's certificate authorities, bound over it.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// "message: cause: cause": an error and its sources on one line, for logs, API answers and
/// messages across the process boundary.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
