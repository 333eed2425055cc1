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
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::AtFlags;

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
    let Confinement { spec, layers, entry, request_file, outer, .. } = confinement;
    if let Err(unmet) = spec.requirements.check_applied(&layers, spec.resources) {
        fail(&ipc, SetupStage::Requirements, unmet.to_string());
    }
    if frame::write_frame(&ipc, &RunnerMessage::Confined { layers }).is_err() {
        std::process::exit(EXIT_SETUP_FAILED);
    }
    // The plugin runs as pid 2, under every layer; this process stays as the namespace's init.
    match sandbox::sys::fork() {
        Ok(ForkResult::Parent { child }) => {
            drop(ipc);
            namespaces::init(child, outer)
        }
        Ok(ForkResult::Child) => drop(outer),
        Err(e) => fail(&ipc, SetupStage::Fork, e.to_string()),
    }
    match &spec.runtime {
        RuntimeSpec::Native { .. } => {
            let library = entry.expect("confine opens the native library");
            // The same environment an exec plugin gets: proxy, workspace, secrets.
            sandbox::sys::set_environment(&spec.env);
            match plugin_host::invoke(&library, spec.request.as_bytes()) {
                Ok(body) => {
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let sent = frame::write_frame(&ipc, &RunnerMessage::Response { body });
                    std::process::exit(if sent.is_ok() { 0 } else { EXIT_SETUP_FAILED })
                }
                Err(e) => fail(&ipc, SetupStage::Load, error_chain(&e)),
            }
        }
        RuntimeSpec::Exec { argv } => {
            let request = request_file.expect("confine writes an exec plugin's request");
            let e = exec_plugin(argv, &spec.env, entry, request);
            fail(&ipc, SetupStage::Exec, e)
        }
    }
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
