//! Immutable copies of plugin folders. Executions never run from the live folder, where an
//! editor, `cp` or cargo may be halfway through a write: each loaded version is copied into the
//! state directory first, checked for writes that happened during the copy, and identified by
//! the SHA-256 of its files. The copy lives as long as anything (a running execution, the
//! registry) still holds the version, and is removed with it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Bounds on what a plugin folder may hold.
const MAX_FILES: usize = 10_000;
const MAX_BYTES: u64 = 512 << 20;

static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to copy {0}")]
    Copy(PathBuf, #[source] std::io::Error),
    #[error("{0} changed while it was being read (a write in progress?); the next change retries")]
    Changed(PathBuf),
    #[error("{0} is a symbolic link that leads outside the plugin folder")]
    LinkOut(PathBuf),
    #[error("the plugin folder holds more than {MAX_FILES} files or {MAX_BYTES} bytes")]
    TooLarge,
}

/// One copy of a plugin folder. Removing it is the `Drop` of the last holder.
#[derive(Debug)]
pub struct Snapshot {
    pub dir: PathBuf,
    /// SHA-256 of every file's relative path and contents, in path order.
    pub digest: String,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "failed to remove a plugin snapshot");
        }
    }
}

/// What a file looked like before the copy, to notice writes during it.
type Stamp = (u64, Option<SystemTime>, u64);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (meta.len(), meta.modified().ok(), meta.ino())
}

/// Copies `source` into a new directory under `root`.
pub fn take(source: &Path, root: &Path) -> Result<Snapshot, SnapshotError> {
    let canonical = source.canonicalize().map_err(|e| SnapshotError::Copy(source.to_path_buf(), e))?;
    let mut files: BTreeMap<PathBuf, (PathBuf, Stamp)> = BTreeMap::new();
    let mut system_links: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    let mut total = 0u64;
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = source.join(&relative);
        let entries = std::fs::read_dir(&here).map_err(|e| SnapshotError::Copy(here.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SnapshotError::Copy(here.clone(), e))?;
            // Editors' and tools' scratch files are not part of a version.
            if is_scratch(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let rel = relative.join(entry.file_name());
            let path = entry.path();
            let link = entry.file_type().map_err(|e| SnapshotError::Copy(path.clone(), e))?.is_symlink();
            if link {
                let target = path.canonicalize().map_err(|e| SnapshotError::Copy(path.clone(), e))?;
                if is_system(&target) {
                    // Into the system directories every sandbox has at the same paths (a
                    // venv's interpreter): kept as a link, which grants nothing new.
                    system_links.insert(rel, target);
                    continue;
                }
                if !target.starts_with(&canonical) {
                    return Err(SnapshotError::LinkOut(path));
                }
            }
            let meta = std::fs::metadata(&path).map_err(|e| SnapshotError::Copy(path.clone(), e))?;
            if meta.is_dir() {
                if !link {
                    dirs.push(rel.clone());
                    pending.push(rel);
                }
            } else if meta.is_file() {
                total += meta.len();
                files.insert(rel, (path, stamp(&meta)));
            }
            if files.len() > MAX_FILES || total > MAX_BYTES {
                return Err(SnapshotError::TooLarge);
            }
        }
    }

    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = source.file_name().map_or_else(|| "plugin".into(), |n| n.to_string_lossy().into_owned());
    let dir = root.join(format!("{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(root).map_err(|e| SnapshotError::Copy(root.to_path_buf(), e))?;
    // From here on, a failure removes the partial copy (Drop).
    let mut snapshot = Snapshot { dir, digest: String::new() };
    for rel in &dirs {
        let target = snapshot.dir.join(rel);
        std::fs::create_dir_all(&target).map_err(|e| SnapshotError::Copy(target.clone(), e))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SnapshotError::Copy(target, e))?;
    }
    let mut hasher = Sha256::new();
    for (rel, (path, before)) in &files {
        let target = snapshot.dir.join(rel);
        let mut input = std::fs::File::open(path).map_err(|e| SnapshotError::Copy(path.clone(), e))?;
        let mut bytes = Vec::with_capacity(before.0 as usize);
        input.read_to_end(&mut bytes).map_err(|e| SnapshotError::Copy(path.clone(), e))?;
        let after = std::fs::metadata(path).map_err(|e| SnapshotError::Copy(path.clone(), e))?;
        if stamp(&after) != *before || bytes.len() as u64 != before.0 {
            return Err(SnapshotError::Changed(path.clone()));
        }
        std::fs::write(&target, &bytes).map_err(|e| SnapshotError::Copy(target.clone(), e))?;
        // Readable by the plugin's uid; executable where the original was.
        let mode = if after.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| SnapshotError::Copy(target, e))?;
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    for (rel, target) in &system_links {
        let link = snapshot.dir.join(rel);
        std::os::unix::fs::symlink(target, &link).map_err(|e| SnapshotError::Copy(link, e))?;
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update(b"\0->");
        hasher.update(target.as_os_str().as_encoded_bytes());
    }
    snapshot.digest = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(snapshot)
}

/// Whether a link's resolved target lies in the host's system directories.
fn is_system(target: &Path) -> bool {
    ironclaw_protocol::SYSTEM_DIRS.iter().any(|dir| target.starts_with(dir))
}

/// Refuses an ELF file that ends before what its headers describe: the section header table (at
/// the end of files that linkers write), every program segment and every section. A copy or a
/// build writing the file in place looks exactly like this until it is done. Other files pass.
pub fn check_elf_complete(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let truncated = |what: &str| {
        format!("{} is truncated ({what} lies past its {} bytes): a write in progress?", path.display(), bytes.len())
    };
    let len = bytes.len() as u64;
    let header = goblin::elf::Elf::parse_header(&bytes).map_err(|_| truncated("the ELF header"))?;
    let table_end = |offset: u64, count: u16, size: u16| offset.saturating_add(u64::from(count) * u64::from(size));
    if table_end(header.e_shoff, header.e_shnum, header.e_shentsize) > len {
        return Err(truncated("the section header table"));
    }
    if table_end(header.e_phoff, header.e_phnum, header.e_phentsize) > len {
        return Err(truncated("the program header table"));
    }
    let elf =
        goblin::elf::Elf::parse(&bytes).map_err(|e| format!("{} is not a valid ELF file: {e}", path.display()))?;
    if elf.program_headers.iter().any(|ph| ph.p_offset.saturating_add(ph.p_filesz) > len) {
        return Err(truncated("a program segment"));
    }
    let nobits = goblin::elf::section_header::SHT_NOBITS;
    if elf.section_headers.iter().any(|sh| sh.sh_type != nobits && sh.sh_offset.saturating_add(sh.sh_size) > len) {
        return Err(truncated("a section"));
    }
    Ok(())
}

/// Copies an immutable directory tree (a snapshot, for a backup) to `to`.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Removes what a previous daemon left under `root`.
pub fn clear(root: &Path) -> std::io::Result<()> {
    crate::files::unless_missing(std::fs::remove_dir_all(root))
}

/// Names editors and tools use for temporary files: never a reason to reload.
pub fn is_scratch(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_hash_and_clean_up() {
        let source = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(source.path().join("sub")).unwrap();
        std::fs::write(source.path().join("plugin.toml"), "a").unwrap();
        std::fs::write(source.path().join("sub/data"), "b").unwrap();
        std::os::unix::fs::symlink("plugin.toml", source.path().join("alias")).unwrap();
        let one = take(source.path(), root.path()).unwrap();
        assert_eq!(std::fs::read_to_string(one.dir.join("sub/data")).unwrap(), "b");
        assert_eq!(std::fs::read_to_string(one.dir.join("alias")).unwrap(), "a", "inside links are copied as files");
        let two = take(source.path(), root.path()).unwrap();
        assert_eq!(one.digest, two.digest, "same files, same digest");
        assert_ne!(one.dir, two.dir);
        std::fs::write(source.path().join("sub/data"), "c").unwrap();
        assert_ne!(take(source.path(), root.path()).unwrap().digest, one.digest);
        let dir = one.dir.clone();
        drop(one);
        assert!(!dir.exists(), "the copy goes with its last holder");

        // A venv's interpreter: a link into the system directories stays a link.
        std::fs::create_dir(source.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/env", source.path().join("bin/interpreter")).unwrap();
        let venv = take(source.path(), root.path()).unwrap();
        let kept = std::fs::read_link(venv.dir.join("bin/interpreter")).unwrap();
        assert_eq!(kept, Path::new("/usr/bin/env").canonicalize().unwrap());
        std::fs::remove_file(source.path().join("bin/interpreter")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/true", source.path().join("bin/interpreter")).unwrap();
        assert_ne!(take(source.path(), root.path()).unwrap().digest, venv.digest, "a link's target is hashed");

        // Judged by where a link resolves to, not by how its text begins.
        std::os::unix::fs::symlink("/usr/../etc/passwd", source.path().join("dotted")).unwrap();
        assert!(matches!(take(source.path(), root.path()), Err(SnapshotError::LinkOut(_))));
        std::fs::remove_file(source.path().join("dotted")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", source.path().join("escape")).unwrap();
        assert!(matches!(take(source.path(), root.path()), Err(SnapshotError::LinkOut(_))));
    }

    #[test]
    fn truncated_elf_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let whole = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let file = dir.path().join("lib.so");
        std::fs::write(&file, &whole).unwrap();
        assert_eq!(check_elf_complete(&file), Ok(()));
        for cut in [10, 100, whole.len() / 4, whole.len() - 1] {
            std::fs::write(&file, &whole[..cut]).unwrap();
            let err = check_elf_complete(&file).unwrap_err();
            assert!(err.contains("truncated") || err.contains("not a valid ELF"), "{cut}: {err}");
        }
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        assert_eq!(check_elf_complete(&file), Ok(()), "not ELF: not this check's business");
    }
}
