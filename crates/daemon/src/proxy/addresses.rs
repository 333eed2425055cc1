//! The addresses a plugin never reaches through the proxy without an explicit grant: one table
//! of ranges (IANA's special-purpose registries, where a plugin has no business), and every
//! IPv6 form that carries an IPv4 address to its destination (IPv4-mapped, IPv4-compatible,
//! NAT64, 6to4, Teredo), checked against the IPv4 table.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv6Net};

/// Ranges and what they are; the first that contains an address names it.
const RANGES: &[(&str, &str)] = &[
    // Cloud metadata services first: they lie inside link-local and private ranges.
    ("169.254.169.254/32", "cloud metadata"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "private"),
    ("fc00::/7", "private"),
    ("fec0::/10", "private"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("0.0.0.0/8", "not a unicast address"),
    ("224.0.0.0/4", "not a unicast address"),
    ("240.0.0.0/4", "not a unicast address"),
    ("::/128", "not a unicast address"),
    ("ff00::/8", "not a unicast address"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("100::/64", "reserved"),
    ("2001:db8::/32", "reserved"),
];

static TABLE: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    RANGES.iter().map(|(net, kind)| (net.parse().expect("the table's ranges parse"), *kind)).collect()
});

fn net6(text: &str) -> Ipv6Net {
    text.parse().expect("a fixed prefix parses")
}

/// The IPv4 address an IPv6 address carries to its destination, if it is of a form that does.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    if net6("::ffff:0:0/96").contains(&v6) {
        return Some(low32);
    }
    // IPv4-compatible (deprecated): `::a.b.c.d`, but not `::` or `::1`.
    if net6("::/96").contains(&v6) && bits > 1 {
        return Some(low32);
    }
    // NAT64: the well-known prefix, and the local-use one (RFC 6052 layout for a /48: the
    // address in bits 48-63 and 72-87, around the reserved octet).
    if net6("64:ff9b::/96").contains(&v6) {
        return Some(low32);
    }
    if net6("64:ff9b:1::/48").contains(&v6) {
        let high = ((bits >> 64) & 0xffff) as u32;
        let low = ((bits >> 40) & 0xffff) as u32;
        return Some(Ipv4Addr::from((high << 16) | low));
    }
    // 6to4: `2002:aabb:ccdd::/48`.
    if net6("2002::/16").contains(&v6) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Teredo: `2001:0:server:flags:port:client`, the client's address inverted.
    if net6("2001::/32").contains(&v6) {
        return Some(Ipv4Addr::from(!(bits as u32)));
    }
    None
}

/// Why `ip` needs an explicit grant, if it does: the kind of its range, or of the IPv4 address
/// its IPv6 form carries.
pub fn restricted_kind(ip: IpAddr) -> Option<&'static str> {
    let direct = TABLE.iter().find(|(net, _)| net.contains(&ip)).map(|(_, kind)| *kind);
    direct.or_else(|| match ip {
        IpAddr::V6(v6) => embedded_v4(v6).and_then(|v4| restricted_kind(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    })
}

/// Every range of the table that an address of `kind` may lie in (for tests and reports).
#[cfg(test)]
fn ranges_of(kind: &str) -> Vec<IpNet> {
    TABLE.iter().filter(|(_, k)| *k == kind).map(|(net, _)| *net).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        restricted_kind(ip.parse().unwrap())
    }

    #[test]
    fn each_range_is_named() {
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("192.168.0.1", "private"),
            ("100.64.0.1", "private"),
            ("169.254.1.1", "link-local"),
            ("::1", "loopback"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "not a unicast address"),
            ("255.255.255.255", "not a unicast address"),
            ("ff02::1", "not a unicast address"),
            ("198.18.0.1", "reserved"),
        ] {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for public in ["93.184.215.14", "8.8.8.8", "172.32.0.1", "2606:2800::1", "2a00:1450::1"] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    /// Every restricted IPv4 range, at its first and last address, in each IPv6 form that
    /// carries it: all restricted, as the same kind.
    #[test]
    fn every_ipv6_form_of_a_restricted_ipv4_address_is_restricted() {
        let v4_kinds = ["cloud metadata", "loopback", "private", "link-local", "not a unicast address", "reserved"];
        for kind_name in v4_kinds {
            for net in ranges_of(kind_name) {
                let IpNet::V4(net) = net else { continue };
                for v4 in [net.network(), net.broadcast()] {
                    let a = u32::from(v4);
                    let want = restricted_kind(IpAddr::V4(v4));
                    let [b0, b1, b2, b3] = v4.octets();
                    let forms = [
                        format!("::ffff:{v4}"),
                        format!("::{v4}"),
                        format!("64:ff9b::{v4}"),
                        // RFC 6052, /48: the first two octets, the reserved octet, the last two.
                        format!("64:ff9b:1:{b0:02x}{b1:02x}:{b2:02x}:{b3:02x}00::"),
                        format!("2002:{:x}:{:x}::1", a >> 16, a & 0xffff),
                        format!("2001:0:4136:e378:8000:63bf:{:x}:{:x}", !a >> 16, !a & 0xffff),
                    ];
                    for form in forms {
                        let ip: IpAddr = form.parse().unwrap_or_else(|e| panic!("{form}: {e}"));
                        assert!(want.is_some(), "{v4} is restricted");
                        assert_eq!(restricted_kind(ip), want, "{form} carries {v4}");
                    }
                }
            }
        }
        // The same forms of a public address stay reachable.
        for form in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert_eq!(kind(form), None, "{form}");
        }
    }
}
