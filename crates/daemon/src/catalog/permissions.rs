//! The typed values of permissions, shared by manifests (what a plugin declares) and policy
//! files (what an admin grants or denies): host patterns, address ranges, host paths and secret
//! names. Each parses strictly when read, so a bad value is reported at its `file:line:col`.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The ports a host pattern without an explicit port stands for: HTTP and HTTPS.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// `host`, `host:port`, `*.domain` or `*.domain:port`. Without a port, only 80 and 443.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPattern {
    /// `*.domain`: any name strictly below `domain`.
    pub wildcard: bool,
    pub domain: String,
    pub port: Option<u16>,
}

impl HostPattern {
    fn host_matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.domain.len() + 1
                && host.ends_with(&self.domain)
                && host.as_bytes()[host.len() - self.domain.len() - 1] == b'.'
        } else {
            host == self.domain
        }
    }

    /// Whether a request to `host:port` falls under this pattern. `host` is lower-case.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok && self.host_matches(host)
    }

    /// Whether every request `other` allows is also allowed by `self` (a grant covering a
    /// declaration).
    pub fn covers(&self, other: &HostPattern) -> bool {
        let ports_ok = match (self.port, other.port) {
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
            (None, Some(b)) => DEFAULT_PORTS.contains(&b),
            (None, None) => true,
        };
        let hosts_ok = match (self.wildcard, other.wildcard) {
            (false, false) => self.domain == other.domain,
            (false, true) => false,
            (true, false) => self.host_matches(&other.domain),
            (true, true) => self.domain == other.domain || self.host_matches(&other.domain),
        };
        ports_ok && hosts_ok
    }

    /// Whether a deny rule blocks `host:port`: a deny pattern without a port blocks every port.
    pub fn denies(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.host_matches(host)
    }

    /// Whether a deny rule blocks everything `declared` allows.
    pub fn denies_all_of(&self, declared: &HostPattern) -> bool {
        let ports_ok = self.port.is_none() || self.port == declared.port;
        let hosts_ok =
            HostPattern { port: None, ..self.clone() }.covers(&HostPattern { port: None, ..declared.clone() });
        ports_ok && hosts_ok
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let bad = || format!("{entry:?} is not host[:port] or *.domain[:port] (lower-case)");
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?)),
            None => (entry, None),
        };
        let (wildcard, domain) = match host.strip_prefix("*.") {
            Some(d) => (true, d),
            None => (false, host),
        };
        let labels_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !labels_ok {
            return Err(bad());
        }
        Ok(HostPattern { wildcard, domain: domain.to_string(), port })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// An address or an address range (`10.0.0.0/8`, `::1`), which the egress proxy may reach
/// although it is loopback, private, link-local or the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl AddressRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)) << 96, u128::from(u32::from(b)) << 96, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let prefix = u32::from(self.prefix.min(bits));
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        a & mask == b & mask
    }

    pub fn covers(&self, other: &AddressRange) -> bool {
        self.prefix <= other.prefix && self.contains(other.addr)
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or a range such as \"10.0.0.0/8\"");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(bad)?,
            None => bits,
        };
        Ok(AddressRange { addr, prefix })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == bits { write!(f, "{}", self.addr) } else { write!(f, "{}/{}", self.addr, self.prefix) }
    }
}

/// An absolute, normalised host path (no `.` or `..` components).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPath(pub PathBuf);

impl HostPath {
    /// Whether `other` is this path or lies beneath it.
    pub fn covers(&self, other: &HostPath) -> bool {
        other.0.starts_with(&self.0)
    }
}

impl FromStr for HostPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let path = Path::new(s);
        let normal = path.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
        if !path.is_absolute() || !normal || s.contains('\0') {
            return Err(format!(
                "{s:?} must be an absolute path without '.' or '..' (plugins write to their workspace)"
            ));
        }
        Ok(HostPath(path.components().collect()))
    }
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// An environment-style secret name: `OPENWEATHER_API_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(pub String);

impl FromStr for SecretName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok = s.len() <= 128
            && s.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if ok { Ok(SecretName(s.to_string())) } else { Err(format!("{s:?} must be an upper-case environment name")) }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serde for the string-typed values above: parsed on the way in, so errors carry positions.
macro_rules! string_serde {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
string_serde!(HostPattern, AddressRange, HostPath, SecretName);

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn host_patterns() {
        assert!(host("api.example.com").matches("api.example.com", 443));
        assert!(!host("api.example.com").matches("api.example.com", 8443));
        assert!(host("api.example.com:8443").matches("api.example.com", 8443));
        assert!(host("*.example.com").matches("a.b.example.com", 80));
        assert!(!host("*.example.com").matches("example.com", 80));
        assert!(!host("*.example.com").matches("badexample.com", 80));
        assert!("HTTP://x".parse::<HostPattern>().is_err());
        assert!("x:0".parse::<HostPattern>().is_err());
        assert!("*.".parse::<HostPattern>().is_err());
    }

    #[test]
    fn grants_cover_declarations() {
        assert!(host("*.example.com").covers(&host("api.example.com")));
        assert!(host("*.example.com").covers(&host("*.api.example.com")));
        assert!(!host("api.example.com").covers(&host("*.example.com")));
        assert!(host("api.example.com").covers(&host("api.example.com:443")));
        assert!(!host("api.example.com").covers(&host("api.example.com:8080")));
        assert!(!host("api.example.com:443").covers(&host("api.example.com")), "a narrower port grant");
        assert!(host("*.example.com").denies_all_of(&host("x.example.com:8080")));
        assert!(host("x.example.com").denies("x.example.com", 22));
    }

    #[test]
    fn address_ranges() {
        let r: AddressRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.0.0.1".parse().unwrap()), "v4-mapped addresses count");
        let one: AddressRange = "127.0.0.1".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!(r.covers(&"10.9.0.0/16".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<AddressRange>().is_err());
    }

    #[test]
    fn host_paths_and_secret_names() {
        assert!("/srv/data".parse::<HostPath>().is_ok());
        assert!("/srv/../etc".parse::<HostPath>().is_err());
        assert!("data".parse::<HostPath>().is_err());
        let srv: HostPath = "/srv".parse().unwrap();
        assert!(srv.covers(&"/srv/data".parse().unwrap()));
        assert!(!srv.covers(&"/srvdata".parse().unwrap()));
        assert!("API_KEY".parse::<SecretName>().is_ok());
        assert!("api key".parse::<SecretName>().is_err());
    }
}
