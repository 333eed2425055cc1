//! Secret values for plugins: from a root-only TOML file (`NAME = "value"`) and from systemd
//! credentials (`$CREDENTIALS_DIRECTORY`, one file per secret, from `LoadCredential=`).
//!
//! Values never appear in logs, API output or error messages: `Debug` is redacted, parse errors
//! give only a position, and results are scrubbed of the values their plugin received.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::catalog::permissions::SecretName;

const MAX_SECRET_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("failed to read the secrets file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error(
        "the secrets file {0} must be owned by root (or the daemon's user) and not accessible to group or others (mode {1:04o}, owner {2}); run: chown root {0:?} && chmod 600 {0:?}"
    )]
    Exposed(PathBuf, u32, u32),
    #[error("{file}:{line}:{column}: malformed file of secrets (see the README for its format)")]
    Parse { file: PathBuf, line: usize, column: usize },
    #[error("{0}: secret name {1:?} must be an upper-case environment name")]
    Name(PathBuf, String),
    #[error("failed to read the credentials directory {0}")]
    Credentials(PathBuf, #[source] std::io::Error),
}

/// A secret value; its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretValue {
    pub value: String,
    /// Where it came from: the secrets file or a credential.
    pub source: String,
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted> from {})", self.source)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, SecretValue>,
}

impl Secrets {
    /// Reads the secrets file (if any), then the credentials directory (if any), whose values
    /// take precedence.
    pub fn load(file: Option<&Path>, credentials_dir: Option<&Path>) -> Result<Self, SecretsError> {
        let mut secrets = Secrets::default();
        if let Some(file) = file {
            secrets.read_file(file)?;
        }
        if let Some(dir) = credentials_dir {
            secrets.read_credentials(dir)?;
        }
        Ok(secrets)
    }

    fn read_file(&mut self, file: &Path) -> Result<(), SecretsError> {
        let table: BTreeMap<String, String> = read_private_toml(file)?;
        for (name, value) in table {
            if name.parse::<SecretName>().is_err() {
                return Err(SecretsError::Name(file.to_path_buf(), name));
            }
            self.values.insert(name, SecretValue { value, source: file.display().to_string() });
        }
        Ok(())
    }

    fn read_credentials(&mut self, dir: &Path) -> Result<(), SecretsError> {
        let entries = std::fs::read_dir(dir).map_err(|e| SecretsError::Credentials(dir.to_path_buf(), e))?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<SecretName>().is_err() {
                tracing::warn!(credential = %name, "ignoring a credential whose name is not an upper-case environment name");
                continue;
            }
            let path = entry.path();
            let too_big = entry.metadata().map_or(true, |m| m.len() > MAX_SECRET_BYTES);
            let value = match std::fs::read_to_string(&path) {
                Ok(v) if !too_big => v.trim_end_matches(['\n', '\r']).to_string(),
                _ => return Err(SecretsError::Credentials(path, std::io::Error::other("unreadable or too large"))),
            };
            self.values.insert(name, SecretValue { value, source: format!("credential {}", path.display()) });
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.values.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.values.keys().map(String::as_str).collect()
    }
}

/// The directory systemd puts this service's credentials in (`LoadCredential=`), if any.
pub fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

/// Reads a TOML file of secret values (plugin secrets, API tokens): it must be owned by root
/// (or the daemon's user) and closed to group and others; a parse error gives only a position,
/// for TOML's messages may quote a value.
pub fn read_private_toml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, SecretsError> {
    let meta = std::fs::metadata(file).map_err(|e| SecretsError::Read(file.to_path_buf(), e))?;
    let owner_ok = meta.uid() == 0 || meta.uid() == nix::unistd::geteuid().as_raw();
    if !owner_ok || meta.mode() & 0o077 != 0 {
        return Err(SecretsError::Exposed(file.to_path_buf(), meta.mode() & 0o7777, meta.uid()));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(SecretsError::Read(file.to_path_buf(), std::io::Error::other("larger than 64 KiB")));
    }
    let text = std::fs::read_to_string(file).map_err(|e| SecretsError::Read(file.to_path_buf(), e))?;
    toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| crate::catalog::manifest::line_col(&text, s.start));
        SecretsError::Parse { file: file.to_path_buf(), line, column }
    })
}

/// The secrets one execution receives, as environment variables; `Debug` shows names only.
#[derive(Clone, Default)]
pub struct SecretEnv(pub Vec<(String, String)>);

impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| format!("{name}=<redacted>"))).finish()
    }
}

/// Replaces every occurrence of a secret's value with `[REDACTED:NAME]`.
pub fn redact(text: &str, secrets: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in secrets.iter().filter(|(_, v)| v.len() >= 4) {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("[REDACTED:{name}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn file_must_be_private_and_errors_hide_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "API_KEY = \"hunter2-value\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secrets::load(Some(&file), None).unwrap_err().to_string();
        assert!(err.contains("mode 0644") && err.contains("chmod 600"), "{err}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secrets = Secrets::load(Some(&file), None).unwrap();
        assert_eq!(secrets.get("API_KEY").unwrap().value, "hunter2-value");
        assert!(!format!("{secrets:?}").contains("hunter2"));

        std::fs::write(&file, "API_KEY = \"hunter2-value\"\nOTHER = 12345678\n").unwrap();
        let err = Secrets::load(Some(&file), None).unwrap_err().to_string();
        assert!(err.contains("secrets.toml:2:") && !err.contains("12345678"), "{err}");
    }

    #[test]
    fn credentials_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "API_KEY = \"from-file\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("API_KEY"), "from-credential\n").unwrap();
        std::fs::write(creds.join("not-a-name"), "x").unwrap();
        let secrets = Secrets::load(Some(&file), Some(&creds)).unwrap();
        assert_eq!(secrets.get("API_KEY").unwrap().value, "from-credential");
        assert!(secrets.get("not-a-name").is_none());
    }

    #[test]
    fn redaction() {
        let s = vec![("KEY".to_string(), "s3cr3t-value".to_string())];
        assert_eq!(redact("got s3cr3t-value twice: s3cr3t-value", &s), "got [REDACTED:KEY] twice: [REDACTED:KEY]");
    }
}
