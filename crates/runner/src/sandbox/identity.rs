//! Dropping every capability and switching to the execution's unprivileged uid and gid.
#![forbid(unsafe_code)]

use caps::CapSet;
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("refusing to run a plugin as root (uid or gid 0)")]
    Root,
    #[error("failed to clear the {0:?} capability set")]
    Clear(CapSet, #[source] caps::errors::CapsError),
    #[error("failed to drop supplementary groups")]
    Groups(#[source] nix::Error),
    #[error("failed to switch to gid {0}")]
    Gid(u32, #[source] nix::Error),
    #[error("failed to switch to uid {0}")]
    Uid(u32, #[source] nix::Error),
    #[error("capabilities remain after the drop: {0}")]
    Remaining(String),
    #[error("failed to clear the dumpable flag")]
    Dumpable(#[source] nix::Error),
}

/// Clears the bounding, ambient and inheritable sets while still privileged, then changes ids,
/// which clears the permitted and effective sets. Verifies that nothing is left.
pub fn drop_to(uid: u32, gid: u32) -> Result<(), IdentityError> {
    if uid == 0 || gid == 0 {
        return Err(IdentityError::Root);
    }
    for set in [CapSet::Bounding, CapSet::Ambient, CapSet::Inheritable] {
        caps::clear(None, set).map_err(|e| IdentityError::Clear(set, e))?;
    }
    setgroups(&[]).map_err(IdentityError::Groups)?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| IdentityError::Gid(gid, e))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| IdentityError::Uid(uid, e))?;
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Bounding, CapSet::Ambient, CapSet::Inheritable] {
        let remaining = caps::read(None, set).map_err(|e| IdentityError::Clear(set, e))?;
        if !remaining.is_empty() {
            return Err(IdentityError::Remaining(format!("{set:?}: {remaining:?}")));
        }
    }
    // Not dumpable: no core files, and /proc/<pid> entries stay owned by root.
    nix::sys::prctl::set_dumpable(false).map_err(IdentityError::Dumpable)?;
    Ok(())
}
