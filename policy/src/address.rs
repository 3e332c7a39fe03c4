//! Classification of destination addresses that a forward proxy must not reach by default:
//! the proxy host itself, its private networks and the cloud metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is protected. `None` from [`classify`] means a public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    Loopback,
    LinkLocal,
    Private,
    Unspecified,
    Multicast,
    /// Reserved, documentation, benchmarking and similar non-routable ranges.
    Reserved,
}

/// Maps IPv4-mapped and IPv4-compatible forms to IPv4 so that `::ffff:127.0.0.1` cannot
/// sneak past a check written for `127.0.0.0/8`.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

pub fn classify(addr: IpAddr) -> Option<Protected> {
    match canonical(addr) {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<Protected> {
    let o = a.octets();
    if a.is_loopback() {
        Some(Protected::Loopback)
    } else if a.is_link_local() {
        // 169.254.169.254 (cloud metadata) lives here.
        Some(Protected::LinkLocal)
    } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        // RFC 1918 and RFC 6598 shared address space (carrier-grade NAT).
        Some(Protected::Private)
    } else if a.is_unspecified() || o[0] == 0 {
        Some(Protected::Unspecified)
    } else if a.is_multicast() || a.is_broadcast() {
        Some(Protected::Multicast)
    } else if o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        Some(Protected::Reserved)
    } else {
        None
    }
}

fn classify_v6(a: Ipv6Addr) -> Option<Protected> {
    let seg = a.segments();
    if a.is_loopback() {
        Some(Protected::Loopback)
    } else if a.is_unspecified() {
        Some(Protected::Unspecified)
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        Some(Protected::LinkLocal)
    } else if (seg[0] & 0xfe00) == 0xfc00 || (seg[0] & 0xffc0) == 0xfec0 {
        // Unique local (includes AWS's fd00:ec2::254 metadata address) and old site-local.
        Some(Protected::Private)
    } else if a.is_multicast() {
        Some(Protected::Multicast)
    } else if seg[0] == 0 && seg[1] == 0 && seg[2] == 0 && seg[3] == 0 && seg[4] == 0 && seg[5] == 0
    {
        // Deprecated IPv4-compatible ::a.b.c.d: classify as the embedded IPv4 address.
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        classify_v4(v4).or(Some(Protected::Reserved))
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        // NAT64 well-known prefix: judge by the embedded IPv4 address.
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        classify_v4(v4)
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some(Protected::Reserved)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Protected> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn protected_ranges() {
        assert_eq!(c("127.0.0.1"), Some(Protected::Loopback));
        assert_eq!(c("127.255.0.9"), Some(Protected::Loopback));
        assert_eq!(c("::1"), Some(Protected::Loopback));
        assert_eq!(c("::ffff:127.0.0.1"), Some(Protected::Loopback));
        assert_eq!(c("169.254.169.254"), Some(Protected::LinkLocal));
        assert_eq!(c("fe80::1"), Some(Protected::LinkLocal));
        assert_eq!(c("fd00:ec2::254"), Some(Protected::Private));
        assert_eq!(c("10.1.2.3"), Some(Protected::Private));
        assert_eq!(c("172.16.0.1"), Some(Protected::Private));
        assert_eq!(c("192.168.1.1"), Some(Protected::Private));
        assert_eq!(c("100.64.0.1"), Some(Protected::Private));
        assert_eq!(c("0.0.0.0"), Some(Protected::Unspecified));
        assert_eq!(c("::"), Some(Protected::Unspecified));
        assert_eq!(c("224.0.0.1"), Some(Protected::Multicast));
        assert_eq!(c("255.255.255.255"), Some(Protected::Multicast));
        assert_eq!(c("64:ff9b::a00:1"), Some(Protected::Private));
        assert_eq!(c("::7f00:1"), Some(Protected::Loopback));
    }

    #[test]
    fn public_ranges() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(c(a), None, "{a}");
        }
    }
}
