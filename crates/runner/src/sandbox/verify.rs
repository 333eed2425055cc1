//! The layers as the kernel reports them, read back once every layer is in place: what the
//! runner tells the daemon is measured, never assumed. A layer that reads back weaker than it
//! was applied, or that cannot be read back at all, stops the runner before any plugin code.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;

use caps::CapSet;
use ironclaw_protocol::layers::{AppliedLayers, LandlockEnforcement, LandlockReport, NAMESPACES};

use super::sys;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("failed to read {what}")]
    Read {
        what: String,
        #[source]
        err: std::io::Error,
    },
    #[error("{0} is missing from /proc/self/status")]
    StatusField(&'static str),
    #[error("failed to read the {0:?} capability set")]
    Capabilities(CapSet, #[source] caps::errors::CapsError),
    #[error("the kernel reports {layer} as {found}, not as applied")]
    Weaker { layer: &'static str, found: String },
}

/// `/proc/self/ns/<name>` for each name of [`NAMESPACES`].
fn proc_name(namespace: &str) -> &str {
    if namespace == "mount" { "mnt" } else { namespace }
}

/// The inode of each namespace the runner started in: the daemon's, since the daemon spawns it.
pub struct HostNamespaces(Vec<(&'static str, u64)>);

impl HostNamespaces {
    pub fn record() -> Result<Self, VerifyError> {
        NAMESPACES.iter().map(|n| Ok((*n, namespace_inode(n)?))).collect::<Result<_, _>>().map(HostNamespaces)
    }
}

fn namespace_inode(namespace: &str) -> Result<u64, VerifyError> {
    let path = format!("/proc/self/ns/{}", proc_name(namespace));
    std::fs::metadata(&path).map(|m| m.ino()).map_err(|err| VerifyError::Read { what: path, err })
}

/// `/proc/self/status`, opened before Landlock (which grants no part of /proc) and read after
/// the last layer: the kernel writes it afresh at every read from the start.
pub struct StatusFile(std::fs::File);

impl StatusFile {
    pub fn open() -> Result<Self, VerifyError> {
        std::fs::File::open("/proc/self/status")
            .map(StatusFile)
            .map_err(|err| VerifyError::Read { what: "/proc/self/status".into(), err })
    }

    fn read(self) -> Result<Status, VerifyError> {
        use std::os::unix::fs::FileExt;
        let failed = |err| VerifyError::Read { what: "/proc/self/status".into(), err };
        let mut text = vec![0u8; 16 * 1024];
        let mut len = 0;
        loop {
            match self.0.read_at(&mut text[len..], len as u64).map_err(failed)? {
                0 => break,
                n => len += n,
            }
            if len == text.len() {
                text.resize(len * 2, 0);
            }
        }
        text.truncate(len);
        String::from_utf8(text).map(Status).map_err(|e| failed(std::io::Error::other(e)))
    }
}

/// The kernel's own account of this task's credentials and filters.
struct Status(String);

impl Status {
    fn field(&self, name: &'static str) -> Result<&str, VerifyError> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
            .map(str::trim)
            .ok_or(VerifyError::StatusField(name))
    }

    fn ids(&self, name: &'static str) -> Result<Vec<u32>, VerifyError> {
        self.field(name)?.split_whitespace().map(|n| n.parse().map_err(|_| VerifyError::StatusField(name))).collect()
    }
}

fn require(held: bool, layer: &'static str, found: impl FnOnce() -> String) -> Result<(), VerifyError> {
    if held { Ok(()) } else { Err(VerifyError::Weaker { layer, found: found() }) }
}

/// Reads every layer back from the kernel and fails unless each holds as applied: seccomp in
/// filter mode (`PR_GET_SECCOMP` and the status file agree), no_new_privs, every capability
/// set empty (`capget`, and the bounding and ambient sets from the status file), every
/// namespace other than the daemon's, the execution's ids in all three slots, one thread, and
/// a Landlock domain that refuses what it was not given (listing `/`) exactly when Landlock
/// reported itself enforced.
pub fn measure(
    host: &HostNamespaces,
    status: StatusFile,
    landlock: LandlockReport,
    uid: u32,
    gid: u32,
) -> Result<(AppliedLayers, sys::SingleThreaded), VerifyError> {
    let status = status.read()?;

    let mode = sys::seccomp_mode().map_err(|err| VerifyError::Read { what: "PR_GET_SECCOMP".into(), err })?;
    let filters = status.field("Seccomp_filters")?;
    require(mode == 2 && status.field("Seccomp")? == "2" && filters != "0", "seccomp", || {
        format!("mode {mode}, {filters} filters")
    })?;

    let no_new_privs = status.field("NoNewPrivs")?;
    require(no_new_privs == "1", "no_new_privs", || no_new_privs.to_string())?;

    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        let held = caps::read(None, set).map_err(|e| VerifyError::Capabilities(set, e))?;
        require(held.is_empty(), "capabilities", || format!("{set:?} holds {held:?}"))?;
    }
    for field in ["CapBnd", "CapAmb", "CapEff", "CapPrm", "CapInh"] {
        let mask = status.field(field)?;
        require(mask.bytes().all(|b| b == b'0'), "capabilities", || format!("{field} {mask}"))?;
    }

    let mut namespaces = Vec::new();
    for (name, host_inode) in &host.0 {
        let inode = namespace_inode(name)?;
        require(inode != *host_inode, "namespaces", || format!("{name} is the daemon's"))?;
        namespaces.push(name.to_string());
    }

    for (field, want) in [("Uid", uid), ("Gid", gid)] {
        let ids = status.ids(field)?;
        require(ids.iter().take(4).all(|id| *id == want), "identity", || format!("{field} {ids:?}"))?;
    }
    let groups = status.field("Groups")?;
    require(groups.is_empty(), "identity", || format!("supplementary groups {groups}"))?;
    let threads = status.field("Threads")?;
    let single_threaded = threads.parse().ok().and_then(sys::SingleThreaded::from_count);
    let single_threaded = single_threaded
        .ok_or_else(|| VerifyError::Weaker { layer: "a single thread", found: format!("{threads} threads") })?;

    let listed_root = std::fs::read_dir("/");
    let refused = matches!(&listed_root, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied);
    let enforced = landlock.status != LandlockEnforcement::NotEnforced;
    require(refused == enforced, "landlock", || {
        format!("{:?}, and listing / {}", landlock.status, if refused { "is refused" } else { "works" })
    })?;

    let layers =
        AppliedLayers { namespaces, landlock, seccomp: true, no_new_privs: true, capabilities_dropped: true, uid, gid };
    Ok((layers, single_threaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unconfined process reads back as unconfined: the report is measured, so it fails
    /// at the first layer, seccomp, rather than claiming it.
    #[test]
    fn an_unconfined_process_is_not_reported_confined() {
        let host = HostNamespaces::record().unwrap();
        let landlock = LandlockReport { status: LandlockEnforcement::FullyEnforced, abi: Some(7) };
        match measure(&host, StatusFile::open().unwrap(), landlock, 1000, 1000) {
            Err(VerifyError::Weaker { layer: "seccomp", found }) => assert!(found.starts_with("mode 0"), "{found}"),
            other => panic!("expected seccomp to read back as absent, got {other:?}"),
        }
    }

    #[test]
    fn status_fields_are_read_exactly() {
        let status = Status("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\nUid:\t5\t5\t5\t5\nGroups:\t\n".into());
        assert_eq!(status.field("Seccomp").unwrap(), "2");
        assert_eq!(status.field("Seccomp_filters").unwrap(), "1");
        assert_eq!(status.ids("Uid").unwrap(), vec![5, 5, 5, 5]);
        assert_eq!(status.field("Groups").unwrap(), "");
        assert!(matches!(status.field("NoNewPrivs"), Err(VerifyError::StatusField("NoNewPrivs"))));
    }
}
