//! The runner's confinement: every layer, applied in one ordered function, [`confine`].
//!
//! The layers run only in the runner: a fresh, single-threaded re-exec of our own binary, never
//! in the multithreaded daemon. Its `sys` module is, with `plugin_host`, the only part of the
//! runner that may use `unsafe`.

pub mod bpf;
pub mod identity;
pub mod landlock;
pub mod namespaces;
pub mod rlimits;
pub mod root;
pub mod seccomp;
#[allow(unsafe_code)]
pub mod sys;
pub mod verify;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;

use ironclaw_protocol::frame::{self, IpcError};
use ironclaw_protocol::layers::{AppliedLayers, ResourceBackend};
use ironclaw_protocol::message::{RunnerMessage, SetupStage};
use ironclaw_protocol::spec::{RunnerSpec, RuntimeSpec};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to start a new session")]
    Session(#[source] nix::Error),
    #[error("failed to set the parent-death signal")]
    DeathSignal(#[source] nix::Error),
    #[error("failed to close inherited descriptors")]
    CloseFds(#[source] std::io::Error),
    #[error(transparent)]
    Namespaces(#[from] namespaces::NamespaceError),
    #[error("failed to receive the execution spec")]
    Spec(#[source] IpcError),
    #[error(transparent)]
    Rlimits(#[from] rlimits::RlimitError),
    #[error("failed to build the sandbox's root")]
    Root(#[from] root::RootError),
    #[error("failed to open {path}")]
    Open {
        path: String,
        #[source]
        err: nix::Error,
    },
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("the outer runner exited during set-up")]
    OuterGone,
    #[error("failed to set no_new_privs")]
    NoNewPrivs(#[source] nix::Error),
    #[error("the runner is not single-threaded")]
    Threads(#[source] std::io::Error),
    #[error("failed to verify the layers")]
    Verify(#[from] verify::VerifyError),
}

impl SandboxError {
    /// The stage reported to the daemon.
    pub fn stage(&self) -> SetupStage {
        match self {
            SandboxError::Session(_)
            | SandboxError::DeathSignal(_)
            | SandboxError::CloseFds(_)
            | SandboxError::Threads(_) => SetupStage::Process,
            SandboxError::Namespaces(_) => SetupStage::Namespaces,
            SandboxError::Spec(_) => SetupStage::Spec,
            SandboxError::Rlimits(_) => SetupStage::Rlimits,
            SandboxError::Root(_) => SetupStage::Root,
            SandboxError::Open { .. } => SetupStage::OpenPlugin,
            SandboxError::Landlock(_) => SetupStage::Landlock,
            SandboxError::Seccomp(_) => SetupStage::Seccomp,
            SandboxError::Identity(_) | SandboxError::OuterGone => SetupStage::Identity,
            SandboxError::NoNewPrivs(_) => SetupStage::NoNewPrivs,
            SandboxError::Verify(_) => SetupStage::Verify,
        }
    }
}

/// What a confined runner holds once every layer is in place.
pub struct Confinement {
    pub spec: RunnerSpec,
    pub layers: AppliedLayers,
    /// Measured with the layers: the plugin's process may be forked.
    pub single_threaded: sys::SingleThreaded,
    /// The plugin folder (`O_PATH`), already the working directory.
    pub plugin_dir: OwnedFd,
    /// The native library, or the exec entry when `argv[0]` names a file in the plugin folder.
    pub entry: Option<OwnedFd>,
    /// An exec plugin's request, in a sealed memfd for its stdin (any size fits; created before
    /// seccomp, which may refuse memfds to the plugin itself).
    pub request_file: Option<OwnedFd>,
    /// The private link to the outer runner, kept by the sandbox's init only.
    pub outer: namespaces::OuterLink,
}

/// The descriptor the daemon's socketpair lives on in the runner.
pub const IPC_FD: i32 = 3;

/// Applies every layer, in order, to the calling single-threaded runner. Returns only in the
/// confined (inner) runner, with no privilege left; the outer runner never returns from step 2.
///
/// The order matters, and each step says why it stands where it does.
pub fn confine(ipc: &UnixStream) -> Result<Confinement, SandboxError> {
    let single_threaded = sys::SingleThreaded::check().map_err(SandboxError::Threads)?;

    // 1. Process hygiene. A new session has no controlling terminal, so TIOCSTI has no target.
    //    Die with the daemon. Close every inherited descriptor but stdio and the IPC socket.
    //    Note the daemon's namespaces, to prove at the end that each was left.
    nix::unistd::setsid().map_err(SandboxError::Session)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SandboxError::DeathSignal)?;
    sys::close_fds_from(IPC_FD + 1).map_err(SandboxError::CloseFds)?;
    let host_namespaces = verify::HostNamespaces::record()?;

    // 2. Namespaces: pid, net, mount, ipc, uts. This forks: the outer runner stays in the
    //    daemon's namespaces and announces the inner runner's pid, which is the first frame the
    //    daemon reads (the daemon moves both into the execution's cgroup before it answers).
    //    Then a private mount tree, loopback up, and the plugin-independent part of the
    //    sandbox's own root (system directories, /dev, a fresh /proc). Nothing here depends on
    //    the plugin, so a pre-started runner can wait after this step.
    let outer = namespaces::enter(&single_threaded, |pid| {
        let _ = frame::write_frame(ipc, &RunnerMessage::Spawned { pid });
    })?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SandboxError::DeathSignal)?;
    namespaces::populate()?;
    root::prepare()?;

    // 3. The spec. The daemon sends it once the runner is in its cgroup.
    let spec: RunnerSpec = frame::read_frame(ipc).map_err(SandboxError::Spec)?;

    // 4. rlimits, while we may still set any value.
    rlimits::apply(&spec.rlimits)?;

    // 5. The root completed and entered: the plugin folder read-only at a fixed path, the
    //    workspace beside it, the granted paths, a private /tmp; the host's root detached.
    //    Then open what the plugin needs while we are still root. Compile the seccomp filter
    //    now too: it allocates, and nothing after the drop should be able to fail for lack of
    //    memory. Files the plugin creates in its workspace stay group-writable so the next
    //    execution (under another slot's uid, the same group) can use them.
    root::enter(root::Execution {
        plugin_dir: &spec.plugin_dir,
        workspace: spec.workspace.as_ref().map(|w| (w.device.as_path(), w.read_only)),
        read: &spec.read_paths,
        write: &spec.write_paths,
        uid: spec.uid,
        gid: spec.gid,
        tmp_size: spec.tmp_size,
        ca_bundle: spec.ca_bundle.as_deref(),
    })?;
    if spec.workspace.is_some() {
        nix::sys::stat::umask(Mode::from_bits_truncate(0o007));
    }
    let plugin_dir = open_path(Path::new(root::PLUGIN_MOUNT), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)?;
    let entry = open_entry(&plugin_dir, &spec.runtime)?;
    let request_file = match spec.runtime {
        RuntimeSpec::Exec { .. } => Some(request_file(spec.request.as_bytes())?),
        RuntimeSpec::Native { .. } => None,
    };
    let grants = landlock::Grants::open(
        &plugin_dir,
        landlock::PluginGrants {
            read: &spec.read_paths,
            write: &spec.write_paths,
            workspace: spec.workspace.as_ref().map(|_| Path::new(ironclaw_protocol::WORKSPACE_MOUNT)),
            proxy_port: spec.proxy_port,
            zero_device: spec.resources != ResourceBackend::Fallback,
        },
    )?;
    let seccomp_filter = seccomp::compile(spec.resources)?;
    let status_file = verify::StatusFile::open()?;
    nix::unistd::fchdir(&plugin_dir).map_err(|err| SandboxError::Open { path: "plugin folder (chdir)".into(), err })?;

    // 6. Identity: no capabilities in any set, no groups, the execution's own uid and gid.
    identity::drop_to(spec.uid, spec.gid)?;

    // 7. Changing credentials cleared the parent-death signal: set it again, then make sure the
    //    outer runner did not die in between (the signal would have been missed).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SandboxError::DeathSignal)?;
    if !outer.outer_alive() {
        return Err(SandboxError::OuterGone);
    }

    // 8. Landlock: read-only system libraries and the plugin folder, plus what policy grants
    //    (read and write paths, the workspace); no TCP but a connect to the egress proxy;
    //    signals and abstract sockets scoped to the sandbox. This also sets no_new_privs.
    let landlock = landlock::restrict(grants)?;

    // 9. no_new_privs, explicitly: it must hold even where Landlock is absent, and seccomp
    //    needs it to be installed without privilege.
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;

    // 10. Default signal dispositions for the plugin, nothing blocked.
    sys::reset_signals();

    // 11. seccomp, last: from here on, only allowlisted syscalls work. No plugin code (not
    //     even a native library's constructors) has run before this line.
    seccomp::install(&seccomp_filter)?;

    // 12. Read every layer back from the kernel: the report is what holds, not what was asked.
    let (layers, single_threaded) = verify::measure(&host_namespaces, status_file, landlock, spec.uid, spec.gid)?;
    Ok(Confinement { spec, layers, single_threaded, plugin_dir, entry, request_file, outer })
}

/// A read-only memfd holding `request`: sealed against writes, growing and shrinking, so the
/// plugin can read its request from it and nothing else.
fn request_file(request: &[u8]) -> Result<OwnedFd, SandboxError> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let failed = |err| SandboxError::Open { path: "the request memfd".into(), err };
    let memfd = memfd_create("request", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(failed)?;
    let mut written = 0;
    while written < request.len() {
        written += nix::unistd::write(&memfd, &request[written..]).map_err(failed)?;
    }
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).map_err(failed)?;
    nix::unistd::lseek(&memfd, 0, nix::unistd::Whence::SeekSet).map_err(failed)?;
    Ok(memfd)
}

fn open_path(path: &Path, flags: OFlag) -> Result<OwnedFd, SandboxError> {
    open(path, flags, Mode::empty()).map_err(|err| SandboxError::Open { path: path.display().to_string(), err })
}

/// Opens the native library, or the exec entry when it is a file of the plugin folder. The
/// exec entry stays open across exec (no CLOEXEC) so that a script's interpreter can read it.
fn open_entry(plugin_dir: &OwnedFd, runtime: &RuntimeSpec) -> Result<Option<OwnedFd>, SandboxError> {
    let (path, flags) = match runtime {
        RuntimeSpec::Native { library } => (library.as_path(), OFlag::O_RDONLY | OFlag::O_CLOEXEC),
        RuntimeSpec::Exec { argv } if argv.first().is_some_and(|a| a.contains('/')) => {
            (Path::new(argv[0].as_str()), OFlag::O_RDONLY)
        }
        RuntimeSpec::Exec { .. } => return Ok(None),
    };
    let failed = |err| SandboxError::Open { path: path.display().to_string(), err };
    let fd = match openat(plugin_dir, path, flags | OFlag::O_NOFOLLOW, Mode::empty()) {
        Err(nix::Error::ELOOP) => open_system_link(plugin_dir, path, flags).map_err(failed)?,
        opened => opened.map_err(failed)?,
    };
    Ok(Some(fd))
}

/// An entry that is a link the daemon kept because it leads into the system directories (a
/// venv's `bin/python3`): the snapshot holds it as the resolved absolute path, which this
/// checks again before opening it in the sandbox's own root, where the same directories are.
fn open_system_link(plugin_dir: &OwnedFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let target = PathBuf::from(nix::fcntl::readlinkat(plugin_dir, path)?);
    let plain = target.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let system = ironclaw_protocol::SYSTEM_DIRS.iter().any(|dir| target.starts_with(dir));
    if !(target.is_absolute() && plain && system) {
        return Err(nix::Error::ELOOP);
    }
    open(&target, flags | OFlag::O_NOFOLLOW, Mode::empty())
}
