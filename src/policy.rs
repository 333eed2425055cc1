//! Admin policy files (`policies/*.toml`). For now: which sandbox layers the host must enforce.
//! Parsing is strict, every error carries `file:line:col`, and a broken file never silently
//! becomes "no policy".
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::layers::{Layer, Requirements};
use crate::manifest::{ManifestError, parse_error};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to read the policies directory {0}")]
    ReadDir(PathBuf, #[source] std::io::Error),
    #[error("failed to read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Parse(ManifestError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    sandbox: SandboxPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxPolicy {
    /// Layers every execution must get; without them the daemon refuses to execute.
    #[serde(default)]
    require: Vec<Layer>,
    /// The oldest Landlock ABI accepted.
    landlock_min_abi: Option<u32>,
}

/// The merged policy set of a directory.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub files: Vec<PathBuf>,
    pub requirements: Requirements,
}

impl PolicySet {
    /// Reads every `*.toml` in `dir`, in name order. Requirements add up across files.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| PolicyError::ReadDir(dir.to_path_buf(), e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        files.sort();
        let mut set = PolicySet { files: files.clone(), requirements: Requirements::default() };
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| PolicyError::Read(file.clone(), e))?;
            let parsed: PolicyFile =
                toml::from_str(&text).map_err(|e| PolicyError::Parse(parse_error(file, &text, &e)))?;
            for layer in parsed.sandbox.require {
                if !set.requirements.layers.contains(&layer) {
                    set.requirements.layers.push(layer);
                }
            }
            set.requirements.landlock_min_abi = set.requirements.landlock_min_abi.max(parsed.sandbox.landlock_min_abi);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_merge_and_errors_have_positions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "[sandbox]\nrequire = [\"seccomp\"]\n").unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "[sandbox]\nrequire = [\"landlock\", \"seccomp\"]\nlandlock_min_abi = 3\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let set = PolicySet::load(dir.path()).unwrap();
        assert_eq!(set.requirements.layers, vec![Layer::Seccomp, Layer::Landlock]);
        assert_eq!(set.requirements.landlock_min_abi, Some(3));

        std::fs::write(dir.path().join("c.toml"), "[sandbox]\nrequire = [\"seccomp\", \"magic\"]\n").unwrap();
        let err = PolicySet::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("c.toml:2:"), "{err}");
        assert!(err.contains("magic"), "{err}");

        std::fs::write(dir.path().join("c.toml"), "[sandbox]\nrequires = []\n").unwrap();
        let err = PolicySet::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("c.toml:2:1") && err.contains("unknown field `requires`"), "{err}");
    }
}
