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
        classify_v4(embedded_v4(seg[6], seg[7])).or(Some(Protected::Reserved))
    } else if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 0x0001 {
        // NAT64 local-use prefix (RFC 8215): a translator of the operator's own.
        Some(Protected::Private)
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        // NAT64 well-known prefix: judge by the embedded IPv4 address.
        classify_v4(embedded_v4(seg[6], seg[7]))
    } else if seg[0] == 0x2002 {
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 reaches IPv4 AA.BB.CC.DD through a relay.
        classify_v4(embedded_v4(seg[1], seg[2]))
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo (RFC 4380): the server's IPv4 address in bits 32-63, the client's
        // (inverted) in the last 32; either may lead inside.
        let server = embedded_v4(seg[2], seg[3]);
        let client = embedded_v4(!seg[6], !seg[7]);
        classify_v4(client).or_else(|| classify_v4(server))
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some(Protected::Reserved)
    } else {
        None
    }
}

/// The IPv4 address two 16-bit groups of an IPv6 address carry.
fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
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
        assert_eq!(c("64:ff9b:1::a00:1"), Some(Protected::Private));
        // 6to4 of 127.0.0.1, 10.0.0.1 and 169.254.169.254.
        assert_eq!(c("2002:7f00:1::1"), Some(Protected::Loopback));
        assert_eq!(c("2002:a00:1:5::9"), Some(Protected::Private));
        assert_eq!(c("2002:a9fe:a9fe::"), Some(Protected::LinkLocal));
        // Teredo: client 127.0.0.1 (inverted: 80ff:fffe) behind a public server; and a
        // server inside with a public client.
        assert_eq!(
            c("2001:0:808:808:0:f227:80ff:fffe"),
            Some(Protected::Loopback)
        );
        assert_eq!(c("2001:0:a00:1::f7f7:f7f7"), Some(Protected::Private));
    }

    #[test]
    fn public_ranges() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            // 6to4 and Teredo of public addresses stay public.
            "2002:808:808::1",
            "2001:0:808:808:0:f227:f7f7:f7f7",
        ] {
            assert_eq!(c(a), None, "{a}");
        }
    }
}
