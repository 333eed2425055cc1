//! The ids a daemon runs executions under, claimed exclusively on the host.
//!
//! Per-uid limits (RLIMIT_NPROC) and per-gid access (workspaces) only isolate executions if no
//! other process shares their ids, another daemon's included. So each daemon claims a range of
//! [`RANGE_SIZE`] ids: the slot uids (and their gids) from its start, the workspace gids from
//! [`WORKSPACE_GIDS`] on. A claim is an exclusive `flock` on one file per 65536-aligned block
//! the range touches, under [`CLAIMS_DIR`]; the kernel drops it when the daemon dies, however it
//! dies. The file names the holder. A range is also refused while any process runs under one of
//! its ids (a daemon of an older version, or anything else).
//!
//! Without `runner.uid_base`, a daemon takes the range it had last time (recorded in its state
//! directory) if it is free, else the first free one from [`DEFAULT_BASE`]. With it, it takes
//! that range or refuses to start, naming the holder.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Ids of one daemon: slot uids from the start, workspace gids from `WORKSPACE_GIDS` on.
pub const RANGE_SIZE: u32 = 65_536;
/// The first workspace gid, relative to the range's start.
pub const WORKSPACE_GIDS: u32 = 32_768;
/// Where automatic ranges start.
pub const DEFAULT_BASE: u32 = 2_100_035_584; // 32044 * 65536: the first aligned block from 2.1e9
/// Automatic ranges tried before giving up.
const AUTOMATIC_CANDIDATES: u32 = 256;
pub const CLAIMS_DIR: &str = "/run/ironclaw/id-ranges";
/// In the state directory: the range this daemon had last.
const LAST_RANGE_FILE: &str = "id-range";

#[derive(Debug, thiserror::Error)]
pub enum IdRangeError {
    #[error("failed to open the claim file {0}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error(
        "the ids {base}..{end} (runner.uid_base = {base}) are taken: {holder}; set another runner.uid_base, \
         or leave it unset to take a free range"
    )]
    Taken { base: u32, end: u64, holder: String },
    #[error("no free id range among the {AUTOMATIC_CANDIDATES} from {DEFAULT_BASE}: {last}")]
    NoneFree { last: String },
}

/// A claimed range, held as long as this value lives.
#[derive(Debug)]
pub struct IdClaim {
    pub base: u32,
    _locks: Vec<Flock<File>>,
}

impl IdClaim {
    /// The first workspace gid.
    pub fn workspace_gids(&self) -> u32 {
        self.base + WORKSPACE_GIDS
    }
}

/// Claims `explicit` (or a free range, when `None`) for a daemon whose state lives in `state_dir`,
/// recording `holder` (who the daemon is) in the claim files.
pub fn claim(explicit: Option<u32>, state_dir: &Path, holder: &str) -> Result<IdClaim, IdRangeError> {
    claim_in(Path::new(CLAIMS_DIR), explicit, state_dir, holder)
}

fn claim_in(dir: &Path, explicit: Option<u32>, state_dir: &Path, holder: &str) -> Result<IdClaim, IdRangeError> {
    std::fs::create_dir_all(dir).map_err(|e| IdRangeError::Open(dir.to_path_buf(), e))?;
    let taken = |base: u32, holder: String| IdRangeError::Taken { base, end: base as u64 + RANGE_SIZE as u64, holder };
    if let Some(base) = explicit {
        return try_claim(dir, base, holder)?.map_err(|holder| taken(base, holder));
    }
    let last = std::fs::read_to_string(state_dir.join(LAST_RANGE_FILE)).ok().and_then(|t| t.trim().parse::<u32>().ok());
    let automatic = (0..AUTOMATIC_CANDIDATES).map(|i| DEFAULT_BASE + i * RANGE_SIZE);
    let mut refusal = String::new();
    for base in last.into_iter().chain(automatic) {
        match try_claim(dir, base, holder)? {
            Ok(claim) => {
                let _ = std::fs::write(state_dir.join(LAST_RANGE_FILE), base.to_string());
                return Ok(claim);
            }
            Err(holder) => refusal = format!("{base}: {holder}"),
        }
    }
    Err(IdRangeError::NoneFree { last: refusal })
}

/// `Ok(Err(holder))` when the range is someone else's.
fn try_claim(dir: &Path, base: u32, holder: &str) -> Result<Result<IdClaim, String>, IdRangeError> {
    let end = base as u64 + RANGE_SIZE as u64;
    let mut locks = Vec::new();
    for block in blocks(base) {
        let path = dir.join(format!("{block}.lock"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| IdRangeError::Open(path.clone(), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => locks.push(lock),
            Err((mut file, _)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Ok(Err(format!("claimed by {}", text.trim())));
            }
        }
    }
    let users = processes_with_ids(base as u64..end);
    if !users.is_empty() {
        return Ok(Err(format!("processes run under these ids: pids {users:?}")));
    }
    for lock in &mut locks {
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(&mut **lock, "{holder}");
    }
    Ok(Ok(IdClaim { base, _locks: locks }))
}

/// The 65536-aligned blocks `[base, base + RANGE_SIZE)` touches.
fn blocks(base: u32) -> Vec<u64> {
    let block = |id: u64| id / RANGE_SIZE as u64 * RANGE_SIZE as u64;
    let (first, last) = (block(base as u64), block(base as u64 + RANGE_SIZE as u64 - 1));
    if first == last { vec![first] } else { vec![first, last] }
}

/// Pids of processes with a real, effective, saved or filesystem uid or gid in `ids`.
fn processes_with_ids(ids: std::ops::Range<u64>) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let inside = status
            .lines()
            .filter_map(|l| l.strip_prefix("Uid:").or_else(|| l.strip_prefix("Gid:")))
            .flat_map(|ids| ids.split_whitespace())
            .filter_map(|id| id.parse::<u64>().ok())
            .any(|id| ids.contains(&id));
        if inside {
            found.push(pid);
        }
    }
    found
}

/// Every claim on this host: its block, whether a live daemon holds it, and who it names.
pub fn claims() -> Vec<(u64, bool, String)> {
    let mut all: Vec<(u64, bool, String)> = std::fs::read_dir(CLAIMS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let block = entry.file_name().to_str()?.strip_suffix(".lock")?.parse::<u64>().ok()?;
            let mut file = File::open(entry.path()).ok()?;
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let held = Flock::lock(file, FlockArg::LockSharedNonblock).is_err();
            Some((block, held, holder.trim().to_string()))
        })
        .collect();
    all.sort();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_takes_the_next_range_or_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (claims, state_a, state_b) = (dir.path().join("claims"), dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&state_a).unwrap();
        std::fs::create_dir_all(&state_b).unwrap();
        let first = claim_in(&claims, None, &state_a, "pid 1 (a)").unwrap();
        let second = claim_in(&claims, None, &state_b, "pid 2 (b)").unwrap();
        assert_ne!(first.base, second.base);
        assert_eq!(second.base, first.base + RANGE_SIZE);
        let refused = claim_in(&claims, Some(first.base), &state_b, "pid 3").unwrap_err().to_string();
        assert!(refused.contains("runner.uid_base") && refused.contains("pid 1 (a)"), "{refused}");
        // An unaligned explicit range overlapping the first block is refused too.
        assert!(claim_in(&claims, Some(first.base + 100), &state_b, "pid 3").is_err());
        // Released when dropped; a restarted daemon gets its previous range back.
        let base = first.base;
        drop(first);
        drop(second);
        assert_eq!(claim_in(&claims, None, &state_a, "pid 4 (a again)").unwrap().base, base);
    }
}
