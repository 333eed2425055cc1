//! The runner's Landlock ruleset: read-only system libraries, the plugin's own folder, a few
//! device files, and what policy grants the plugin (read paths, write paths, its workspace);
//! nothing else. TCP bind and connect are denied but for connecting to the egress proxy's port,
//! and signals/abstract sockets outside the sandbox are denied, where the kernel's ABI allows.
//!
//! Compatibility is best effort (the rust-landlock way): we ask for everything up to the ABI we
//! have tested, and report what the kernel actually enforced rather than assume it.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use ironclaw_protocol::layers::{LandlockEnforcement, LandlockReport};

/// The newest ABI this ruleset was written and tested against.
const TARGET_ABI: ABI = ABI::V7;

/// System locations a dynamically linked program or an interpreter reads, all in the sandbox's
/// own root (see `root`): its `/etc` holds only these files, generated or bound read-only.
pub const SYSTEM_READ_PATHS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
];
/// The sandbox's private `/tmp`, capped and counted as memory.
const PRIVATE_TMP: &str = "/tmp";
/// Device files a plugin may read (randomness, zeroes) or read and write (`/dev/null`,
/// `/dev/full`).
const DEVICE_READ_PATHS: &[&str] = &["/dev/urandom", "/dev/random"];
/// A shared mapping of `/dev/zero` is a shmem object whose pages no RSS shows once dropped from
/// the page tables: readable only where cgroup v2 counts that memory.
const ZERO_DEVICE: &str = "/dev/zero";
const DEVICE_READ_WRITE_PATHS: &[&str] = &["/dev/null", "/dev/full"];

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("failed to build the Landlock ruleset")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("failed to duplicate a descriptor for a Landlock rule")]
    PluginDir(#[source] std::io::Error),
    #[error("failed to open {path} for a Landlock rule")]
    Open {
        path: PathBuf,
        #[source]
        err: landlock::PathFdError,
    },
}

/// Paths and descriptors the ruleset grants, all opened before privileges are dropped.
pub struct Grants {
    rules: Vec<(OwnedFd, BitFlags<AccessFs>)>,
    /// The one TCP port the plugin may connect to: the egress proxy on its loopback.
    proxy_port: Option<u16>,
}

/// What a plugin is granted beyond the system paths.
pub struct PluginGrants<'a> {
    pub read: &'a [PathBuf],
    pub write: &'a [PathBuf],
    /// The workspace mount point, when the plugin has one.
    pub workspace: Option<&'a Path>,
    pub proxy_port: Option<u16>,
    /// Whether `/dev/zero` is readable.
    pub zero_device: bool,
}

impl Grants {
    /// Opens every path now, while the runner can still traverse directories such as `/root`.
    /// Paths that do not exist on this host are skipped.
    pub fn open(plugin_dir: &OwnedFd, plugin: PluginGrants) -> Result<Self, LandlockError> {
        let read = AccessFs::from_read(TARGET_ABI);
        // Everything but executing: write paths and the workspace hold data, not programs.
        let read_write = AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute;
        let mut rules = vec![(plugin_dir.try_clone().map_err(LandlockError::PluginDir)?, read)];
        let zero = plugin.zero_device.then_some(&ZERO_DEVICE);
        let system = SYSTEM_READ_PATHS.iter().chain(DEVICE_READ_PATHS).chain(zero).map(PathBuf::from);
        let workspace = plugin.workspace.map(Path::to_path_buf);
        let private_tmp = PathBuf::from(PRIVATE_TMP);
        let granted = plugin.write.iter().chain(workspace.as_ref()).chain([&private_tmp]);
        let paths = system
            .chain(plugin.read.iter().cloned())
            .map(|p| (p, read))
            .chain(granted.map(|p| (p.clone(), read_write)))
            .chain(
                DEVICE_READ_WRITE_PATHS.iter().map(|p| (PathBuf::from(p), AccessFs::ReadFile | AccessFs::WriteFile)),
            );
        for (path, access) in paths {
            if let Some(fd) = open_if_present(&path)? {
                let access = if is_directory(&fd) { access } else { access & AccessFs::from_file(TARGET_ABI) };
                rules.push((fd, access));
            }
        }
        Ok(Self { rules, proxy_port: plugin.proxy_port })
    }
}

/// Directory-only rights on a file rule would make the ruleset only "partially enforced".
fn is_directory(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

fn open_if_present(path: &Path) -> Result<Option<OwnedFd>, LandlockError> {
    match PathFd::new(path) {
        Ok(fd) => fd.as_fd().try_clone_to_owned().map(Some).map_err(LandlockError::PluginDir),
        Err(landlock::PathFdError::OpenCall { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(err) => Err(LandlockError::Open { path: path.to_path_buf(), err }),
    }
}

/// Restricts the calling thread (the single-threaded runner) and everything it later executes.
/// Sets no_new_privs as a side effect, as Landlock requires for an unprivileged restriction.
pub fn restrict(grants: Grants) -> Result<LandlockReport, LandlockError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        // No TCP port is granted: every TCP bind and connect is denied (ABI 4+).
        .handle_access(AccessNet::from_all(TARGET_ABI))?
        // No signals to, and no abstract unix sockets of, processes outside the sandbox (ABI 6+).
        .scope(Scope::from_all(TARGET_ABI))?
        .create()?;
    for (fd, access) in grants.rules {
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    if let Some(port) = grants.proxy_port {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    let status = ruleset.restrict_self()?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => Some(effective_abi as u32),
        _ => None,
    };
    let enforcement = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockEnforcement::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockEnforcement::PartiallyEnforced,
        _ => LandlockEnforcement::NotEnforced,
    };
    Ok(LandlockReport { status: enforcement, abi })
}
