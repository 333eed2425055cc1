//! The TLS trust plugins see: the host's system bundle, plus the certificate authorities an
//! admin adds (`runner.ca_certificates`, for a private CA or a test upstream). The proxy only
//! tunnels (CONNECT), so TLS runs end to end between the plugin and its upstream, and the
//! plugin's runtime checks the upstream against this trust.
//!
//! With extra authorities, the daemon writes the bundle they make with the host's into its
//! state directory at start-up, and every runner binds it read-only over the sandbox's
//! [`CA_BUNDLE`]: OpenSSL (Python's `ssl`, curl), rustls-native-certs (the SDK's client),
//! Go and Node all read it there or through the variables of [`BUNDLE_VARIABLES`].
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::SectionKind;

use crate::files::{unless_missing, write_atomically};

pub use ironclaw_protocol::CA_BUNDLE;

/// Where runtimes that do not read the system bundle by default are told to find it:
/// OpenSSL and rustls-native-certs, Python's `requests` (which bundles its own), curl, Node.
pub const BUNDLE_VARIABLES: &[&str] = &["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"];
/// The composed bundle, in the state directory.
const BUNDLE_FILE: &str = "ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("failed to read the certificate authority file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the certificate authority file {0} is not valid PEM: {1}")]
    Pem(PathBuf, String),
    #[error("the certificate authority file {0} holds no certificate")]
    Empty(PathBuf),
    #[error("the certificate authority file {0} holds a {1:?} section: only certificates belong in a trust bundle")]
    NotACertificate(PathBuf, SectionKind),
    #[error("certificate {index} of {path} cannot be a trust anchor: {reason}")]
    NotAnAnchor { path: PathBuf, index: usize, reason: String },
    #[error(
        "extra certificate authorities need the host's system bundle {CA_BUNDLE} (Debian's ca-certificates) to add to"
    )]
    NoSystemBundle(#[source] std::io::Error),
    #[error("failed to write the sandbox's trust bundle {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// What the sandbox trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The composed bundle (host path) runners bind over [`CA_BUNDLE`]; `None`: the
    /// host's bundle, as the root already binds it.
    pub bundle: Option<PathBuf>,
    /// Whether the sandbox has a bundle at [`CA_BUNDLE`] at all.
    pub present: bool,
}

impl Trust {
    /// Composes the sandbox's trust from the host's bundle and the `extra` PEM files, writing
    /// the bundle into `state_dir` when there are extras. Every extra file must hold
    /// certificates only, each usable as a trust anchor.
    pub fn compose(extra: &[PathBuf], state_dir: &Path) -> Result<Trust, TrustError> {
        Self::compose_onto(Path::new(CA_BUNDLE), extra, state_dir)
    }

    fn compose_onto(system: &Path, extra: &[PathBuf], state_dir: &Path) -> Result<Trust, TrustError> {
        let target = state_dir.join(BUNDLE_FILE);
        if extra.is_empty() {
            // A bundle left by an earlier configuration must not linger as if it were trusted.
            unless_missing(std::fs::remove_file(&target)).map_err(|e| TrustError::Write(target, e))?;
            return Ok(Trust { bundle: None, present: system.is_file() });
        }
        let mut bundle = std::fs::read(system).map_err(TrustError::NoSystemBundle)?;
        if !bundle.ends_with(b"\n") && !bundle.is_empty() {
            bundle.push(b'\n');
        }
        for path in extra {
            let certificates = read_authorities(path)?;
            writeln!(bundle, "# {} (runner.ca_certificates)", path.display()).expect("writing to memory");
            for der in certificates {
                bundle.extend_from_slice(&pem_certificate(&der));
            }
        }
        write_atomically(&target, &bundle, 0o644).map_err(|e| TrustError::Write(target.clone(), e))?;
        Ok(Trust { bundle: Some(target), present: true })
    }
}

/// The certificates of one admin-supplied PEM file, each checked as a trust anchor.
fn read_authorities(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let text = std::fs::read(path).map_err(|e| TrustError::Read(path.to_path_buf(), e))?;
    let mut reader = std::io::BufReader::new(text.as_slice());
    let mut certificates = Vec::new();
    loop {
        match rustls_pki_types::pem::from_buf(&mut reader) {
            Ok(None) => break,
            Ok(Some((SectionKind::Certificate, der))) => certificates.push(CertificateDer::from(der)),
            Ok(Some((kind, _))) => return Err(TrustError::NotACertificate(path.to_path_buf(), kind)),
            Err(e) => return Err(TrustError::Pem(path.to_path_buf(), e.to_string())),
        }
    }
    if certificates.is_empty() {
        return Err(TrustError::Empty(path.to_path_buf()));
    }
    for (index, der) in certificates.iter().enumerate() {
        webpki::anchor_from_trusted_cert(der).map_err(|e| TrustError::NotAnAnchor {
            path: path.to_path_buf(),
            index: index + 1,
            reason: format!("{e:?}"),
        })?;
    }
    Ok(certificates)
}

/// One certificate in PEM, re-encoded from its DER: nothing of the file but the certificate
/// reaches the bundle.
fn pem_certificate(der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for line in body.as_bytes().chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (`openssl req -x509`, P-256), as a PEM file would hold it.
    const TEST_CA: &str = include_str!("../tests/fixtures/test_ca.pem");

    fn system_bundle(dir: &Path) -> PathBuf {
        let path = dir.join("system.crt");
        std::fs::write(&path, "# the host's bundle\n").unwrap();
        path
    }

    #[test]
    fn extra_authorities_are_appended_to_the_hosts_bundle_as_bare_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, format!("Subject: a comment that must not be copied\n{TEST_CA}")).unwrap();
        let trust = Trust::compose_onto(&system_bundle(dir.path()), std::slice::from_ref(&ca), dir.path()).unwrap();
        let bundle = std::fs::read_to_string(trust.bundle.unwrap()).unwrap();
        assert!(bundle.starts_with("# the host's bundle\n# "), "{bundle}");
        assert!(!bundle.contains("must not be copied"), "{bundle}");
        let expected: Vec<&str> = TEST_CA.lines().filter(|l| !l.is_empty()).collect();
        let written: Vec<&str> = bundle.lines().skip(2).collect();
        assert_eq!(written, expected);

        // Without extras, the composed bundle goes away and the host's is used.
        let trust = Trust::compose_onto(&system_bundle(dir.path()), &[], dir.path()).unwrap();
        assert!(trust.bundle.is_none() && trust.present);
        assert!(!dir.path().join(BUNDLE_FILE).exists());
    }

    #[test]
    fn anything_but_certificates_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let system = system_bundle(dir.path());
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let key =
            write("key.pem", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n");
        let empty = write("empty.pem", "no PEM here\n");
        let garbage = write("garbage.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let broken = write("broken.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        for (path, expected) in [
            (&key, "holds a PrivateKey section: only certificates belong"),
            (&empty, "holds no certificate"),
            (&garbage, "certificate 1 of"),
            (&broken, "is not valid PEM"),
        ] {
            let err = Trust::compose_onto(&system, std::slice::from_ref(path), dir.path()).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains(path.to_str().unwrap()), "{err}");
        }
        let missing = dir.path().join("missing.pem");
        let err = Trust::compose_onto(&system, &[missing], dir.path()).unwrap_err().to_string();
        assert!(err.contains("failed to read the certificate authority file"), "{err}");
        let ca = write("ca.pem", TEST_CA);
        let err = Trust::compose_onto(&dir.path().join("none"), &[ca], dir.path()).unwrap_err().to_string();
        assert!(err.contains("need the host's system bundle"), "{err}");
        assert!(!dir.path().join(BUNDLE_FILE).exists(), "nothing is written on a refusal");
    }
}
