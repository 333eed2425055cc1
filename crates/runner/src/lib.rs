//! The runner: the re-exec'd, single-threaded process that confines itself and then runs
//! exactly one plugin execution. Everything that runs in that process lives in this crate: the
//! entry point ([`main`]), every layer ([`sandbox`]) and the plugin host ([`plugin_host`]).
//!
//! The daemon starts it as `/proc/self/exe __runner`, with an empty environment, the socketpair
//! as stdin and pipes as stdout and stderr. It never starts a thread or an async runtime. It
//! knows the daemon only through `ironclaw-protocol`: the spec it reads and the messages it sends.
//!
//! Unsafe code is denied here and allowed only in `sandbox::sys` and `plugin_host`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod plugin_host;
pub mod sandbox;

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::AtFlags;

use ironclaw_plugin_sdk::{Response, ResponseStatus};
use ironclaw_protocol::message::{RunnerMessage, SetupStage};
use ironclaw_protocol::spec::RuntimeSpec;
use ironclaw_protocol::{EXIT_SETUP_FAILED, error_chain, frame};
use nix::unistd::ForkResult;

use crate::sandbox::{Confinement, IPC_FD, namespaces};

/// Where a plugin that names a bare command finds it, unless its environment says otherwise.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn fail(ipc: &UnixStream, stage: SetupStage, message: String) -> ! {
    let _ = frame::write_frame(ipc, &RunnerMessage::SetupFailed { stage, message });
    std::process::exit(EXIT_SETUP_FAILED)
}

/// The runner's `main`.
pub fn main() -> ! {
    let ipc = match sandbox::sys::take_ipc_socket(IPC_FD) {
        Ok(ipc) => ipc,
        Err(e) => {
            eprintln!("ironclaw runner: cannot take the IPC socket: {e}");
            std::process::exit(EXIT_SETUP_FAILED)
        }
    };
    let confinement = match sandbox::confine(&ipc) {
        Ok(c) => c,
        Err(e) => fail(&ipc, e.stage(), error_chain(&e)),
    };
    let Confinement { spec, layers, single_threaded, entry, request_file, outer, .. } = confinement;
    if let Err(unmet) = spec.requirements.check_applied(&layers, spec.resources) {
        fail(&ipc, SetupStage::Requirements, unmet.to_string());
    }
    // The plugin runs as pid 2, under every layer; this process stays as the namespace's init,
    // and the only holder of the control channel. `Confined` is its last message: the plugin's
    // process closes the channel before any of its code runs, so nothing it writes can reach
    // the daemon but as its response, on stdout.
    match sandbox::sys::fork(&single_threaded) {
        Ok(ForkResult::Parent { child }) => {
            let confined = frame::write_frame(&ipc, &RunnerMessage::Confined { layers });
            drop(ipc);
            if confined.is_err() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                std::process::exit(EXIT_SETUP_FAILED);
            }
            namespaces::init(child, outer)
        }
        Ok(ForkResult::Child) => drop((ipc, outer)),
        Err(e) => fail(&ipc, SetupStage::Fork, e.to_string()),
    }
    match &spec.runtime {
        RuntimeSpec::Native { .. } => {
            let library = entry.expect("confine opens the native library");
            let response = take_response_channel();
            // The same environment an exec plugin gets: proxy, workspace, secrets.
            sandbox::sys::set_environment(&single_threaded, &spec.env);
            let body = plugin_host::invoke(&library, spec.request.as_bytes())
                .unwrap_or_else(|e| failure(&format!("failed to load the plugin: {}", error_chain(&e))));
            let sent = (&response).write_all(&body);
            std::process::exit(if sent.is_ok() { 0 } else { EXIT_SETUP_FAILED })
        }
        RuntimeSpec::Exec { argv } => {
            let request = request_file.expect("confine writes an exec plugin's request");
            let e = exec_plugin(argv, &spec.env, entry, request);
            let _ = std::io::stdout().write_all(&failure(&format!("failed to start the plugin: {e}")));
            std::process::exit(EXIT_SETUP_FAILED)
        }
    }
}

/// An `error` response: what a plugin that could not be loaded or started answers. Its plugin
/// could have written the same, so it is no claim about the sandbox.
fn failure(message: &str) -> Vec<u8> {
    serde_json::to_vec(&Response::failure(ResponseStatus::Error, message)).expect("a response encodes")
}

/// A native plugin's response goes to the runner's stdout, which the daemon reads as an exec
/// plugin's. The plugin's own prints go to stderr, its log, so they cannot corrupt it.
fn take_response_channel() -> std::fs::File {
    let moved = nix::unistd::dup(std::io::stdout())
        .map_err(std::io::Error::from)
        .and_then(|out| sandbox::sys::redirect_fd(2, 1).map(|()| std::fs::File::from(out)));
    moved.unwrap_or_else(|e| {
        eprintln!("ironclaw runner: cannot set up the response channel: {e}");
        std::process::exit(EXIT_SETUP_FAILED)
    })
}

/// Replaces the runner with the exec plugin: the request on stdin, only the declared
/// environment. Returns only on failure.
fn exec_plugin(argv: &[String], env: &[(String, String)], entry: Option<OwnedFd>, request: OwnedFd) -> String {
    let prepared = (|| -> Result<(Vec<CString>, Vec<CString>), String> {
        sandbox::sys::redirect_fd(request.as_raw_fd(), 0).map_err(|e| format!("cannot set stdin: {e}"))?;
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
        let argv = argv.iter().map(|a| cstr(a)).collect::<Result<Vec<_>, _>>()?;
        let envp = env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
        Ok((argv, envp))
    })();
    let (c_argv, c_envp) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Some(fd) = entry {
        let err = nix::unistd::execveat(&fd, c"", &c_argv, &c_envp, AtFlags::AT_EMPTY_PATH).unwrap_err();
        return format!("cannot execute {}: {err}", argv[0]);
    }
    let search = env.iter().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let mut last = nix::errno::Errno::ENOENT;
    for dir in search.split(':').filter(|d| d.starts_with('/')) {
        let Ok(path) = CString::new(Path::new(dir).join(&argv[0]).into_os_string().into_encoded_bytes()) else {
            continue;
        };
        let err = nix::unistd::execve(&path, &c_argv, &c_envp).unwrap_err();
        if err != nix::errno::Errno::ENOENT {
            last = err;
        }
    }
    format!("cannot execute {}: {last}", argv[0])
}
