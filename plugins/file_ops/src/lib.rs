//! file_ops: file operations confined to the plugin's workspace.
//!
//! Paths are checked here first, for a clear error ("'..' is not allowed"), and the kernel
//! (Landlock, plus the workspace being the only writable mount) denies anything that slips by:
//! symlinks are never followed out of the workspace, because the check happens on the resolved
//! path and Landlock checks it again.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use ironclaw_plugin_sdk::{Context, Plugin, PluginError, export_plugin};
use serde_json::{Value, json};

/// The largest file read or written at once (the plugin's output limit is 2 MiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Entries returned at most by list and search.
const MAX_ENTRIES: usize = 1000;

#[derive(Default)]
pub struct FileOps;

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidInput(message.into())
}

fn failed(action: &str, path: &str, e: std::io::Error) -> PluginError {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied (outside the workspace?)".to_string(),
        std::io::ErrorKind::ReadOnlyFilesystem => "the workspace is full, so read-only for this execution".to_string(),
        std::io::ErrorKind::AlreadyExists => "already exists".to_string(),
        std::io::ErrorKind::DirectoryNotEmpty => "directory not empty (use recursive: true)".to_string(),
        _ if e.raw_os_error() == Some(27) => format!("file too large (over {MAX_FILE_BYTES} bytes)"),
        _ => e.to_string(),
    };
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
            invalid(format!("cannot {action} '{path}': {reason}"))
        }
        _ => PluginError::Failed(format!("cannot {action} '{path}': {reason}")),
    }
}

/// Resolves a request path inside `root`: relative, no `..`, and, once symlinks are resolved,
/// still inside the workspace.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, PluginError> {
    let relative = Path::new(path);
    if relative.is_absolute() {
        return Err(invalid(format!("'{path}': absolute paths are not allowed; paths are relative to the workspace")));
    }
    if relative.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(format!("'{path}': '..' is not allowed; paths stay inside the workspace")));
    }
    let full = root.join(relative);
    // The deepest existing ancestor, with symlinks resolved, must still be in the workspace.
    let root_real = root.canonicalize().map_err(|e| failed("open", ".", e))?;
    let mut existing = full.as_path();
    while !existing.exists() && existing.symlink_metadata().is_err() {
        existing = existing.parent().unwrap_or(root);
    }
    let real = existing.canonicalize().unwrap_or_else(|_| existing.to_path_buf());
    if !real.starts_with(&root_real) {
        return Err(invalid(format!("'{path}' leads outside the workspace (through a symlink)")));
    }
    Ok(full)
}

fn glob_match(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..])),
        (Some('?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn describe(root: &Path, path: &Path) -> Value {
    let meta = path.symlink_metadata().ok();
    let kind = match &meta {
        Some(m) if m.is_dir() => "directory",
        Some(m) if m.file_type().is_symlink() => "symlink",
        Some(_) => "file",
        None => "unknown",
    };
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    json!({
        "path": path.strip_prefix(root).unwrap_or(path).display().to_string(),
        "type": kind,
        "size": meta.as_ref().map_or(0, |m| m.len()),
        "modified": modified,
    })
}

fn read_limited(path: &Path, shown: &str) -> Result<String, PluginError> {
    let file = std::fs::File::open(path).map_err(|e| failed("read", shown, e))?;
    let size = file.metadata().map_err(|e| failed("read", shown, e))?.len();
    if size > MAX_FILE_BYTES {
        return Err(invalid(format!("'{shown}' is {size} bytes; the limit is {MAX_FILE_BYTES}")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes).map_err(|e| failed("read", shown, e))?;
    String::from_utf8(bytes).map_err(|_| invalid(format!("'{shown}' is not UTF-8 text")))
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for entry in entries {
        if out.len() >= MAX_ENTRIES {
            break;
        }
        let is_dir = entry.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
        out.push(entry.clone());
        if recursive && is_dir {
            walk(&entry, true, out)?;
        }
    }
    Ok(())
}

impl Plugin for FileOps {
    fn execute(&self, p: &Value, _context: &Context<'_>) -> Result<Value, PluginError> {
        let root = ironclaw_plugin_sdk::workspace()?;
        let operation = p["operation"].as_str().ok_or_else(|| invalid("'operation' is required"))?;
        let shown = p["path"].as_str().unwrap_or(".");
        let path = resolve(&root, shown)?;
        let recursive = p["recursive"].as_bool().unwrap_or(false);
        let content = || p["content"].as_str().ok_or_else(|| invalid(format!("'{operation}' needs 'content'")));
        match operation {
            "read" => Ok(json!({"path": shown, "content": read_limited(&path, shown)?})),
            "write" | "append" => {
                let content = content()?;
                let existing = if operation == "append" { path.metadata().map_or(0, |m| m.len()) } else { 0 };
                if existing + content.len() as u64 > MAX_FILE_BYTES {
                    return Err(invalid(format!("'{shown}' would exceed {MAX_FILE_BYTES} bytes")));
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(operation == "append")
                    .truncate(operation == "write")
                    .open(&path)
                    .map_err(|e| failed(operation, shown, e))?;
                file.write_all(content.as_bytes()).map_err(|e| failed(operation, shown, e))?;
                Ok(json!({"path": shown, "bytes_written": content.len()}))
            }
            "list" => {
                let mut entries = Vec::new();
                walk(&path, recursive, &mut entries).map_err(|e| failed("list", shown, e))?;
                let listed: Vec<Value> = entries.iter().map(|e| describe(&root, e)).collect();
                Ok(json!({"path": shown, "entries": listed, "truncated": entries.len() >= MAX_ENTRIES}))
            }
            "search" => {
                let pattern: Vec<char> = p["pattern"].as_str().unwrap_or("*").chars().collect();
                let needle = p["contains"].as_str();
                let mut entries = Vec::new();
                walk(&path, true, &mut entries).map_err(|e| failed("search", shown, e))?;
                let matches: Vec<Value> = entries
                    .iter()
                    .filter(|e| e.is_file())
                    .filter(|e| {
                        let name: Vec<char> =
                            e.file_name().map(|n| n.to_string_lossy().chars().collect()).unwrap_or_default();
                        glob_match(&pattern, &name)
                    })
                    .filter(|e| needle.is_none_or(|n| read_limited(e, "").is_ok_and(|text| text.contains(n))))
                    .map(|e| describe(&root, e))
                    .collect();
                Ok(json!({"path": shown, "matches": matches}))
            }
            "stat" => {
                path.symlink_metadata().map_err(|e| failed("stat", shown, e))?;
                Ok(describe(&root, &path))
            }
            "delete" => {
                if path == root {
                    return Err(invalid("the workspace itself cannot be deleted"));
                }
                let meta = path.symlink_metadata().map_err(|e| failed("delete", shown, e))?;
                let result = match (meta.is_dir(), recursive) {
                    (true, true) => std::fs::remove_dir_all(&path),
                    (true, false) => std::fs::remove_dir(&path),
                    (false, _) => std::fs::remove_file(&path),
                };
                result.map_err(|e| failed("delete", shown, e))?;
                Ok(json!({"path": shown, "deleted": true}))
            }
            "mkdir" => {
                std::fs::create_dir_all(&path).map_err(|e| failed("mkdir", shown, e))?;
                Ok(json!({"path": shown, "created": true}))
            }
            other => Err(invalid(format!("unknown operation {other:?}"))),
        }
    }
}

export_plugin!(FileOps);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path();
        assert!(resolve(root, "notes/today.txt").is_ok());
        assert!(matches!(resolve(root, "../etc/passwd"), Err(PluginError::InvalidInput(m)) if m.contains("'..'")));
        assert!(matches!(resolve(root, "/etc/passwd"), Err(PluginError::InvalidInput(m)) if m.contains("absolute")));
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        assert!(matches!(resolve(root, "link/passwd"), Err(PluginError::InvalidInput(m)) if m.contains("symlink")));
    }

    #[test]
    fn globs() {
        let m = |p: &str, n: &str| glob_match(&p.chars().collect::<Vec<_>>(), &n.chars().collect::<Vec<_>>());
        assert!(m("*.txt", "a.txt") && m("a?c", "abc") && m("*", "") && !m("*.txt", "a.md"));
    }
}
