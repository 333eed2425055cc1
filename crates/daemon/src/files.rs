//! The daemon's two ways of changing files it owns: whole replacement, and removal that does
//! not mind the file being gone already.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `content` to `path` through a temporary file and a rename, so a reader (a runner
/// binding it, the next daemon reading it back) sees the old file or the new one, never half of
/// one. `mode` is the new file's permissions.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&partial)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// The result of a removal, with "it was not there" counted as success.
pub fn unless_missing(removal: std::io::Result<()>) -> std::io::Result<()> {
    match removal {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
