//! The SOCKS5 address field (RFC 1928 §5): ATYP, address, port. Shared by requests, replies
//! and the UDP ASSOCIATE datagram header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Socks5Error;
use crate::target::{valid_host_name, TargetAddr};

pub const ATYP_IPV4: u8 = 1;
pub const ATYP_DOMAIN: u8 = 3;
pub const ATYP_IPV6: u8 = 4;

/// Parses an address field at the start of `buf`: `Ok(None)` when it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, Socks5Error> {
    let Some(&atyp) = buf.first() else {
        return Ok(None);
    };
    let port_at = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    match atyp {
        ATYP_IPV4 => {
            let Some(b) = buf.get(1..7) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some((
                TargetAddr::Ip(SocketAddr::new(ip.into(), port_at(b, 4))),
                7,
            )))
        }
        ATYP_IPV6 => {
            let Some(b) = buf.get(1..19) else {
                return Ok(None);
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some((
                TargetAddr::Ip(SocketAddr::new(ip.into(), port_at(b, 16))),
                19,
            )))
        }
        ATYP_DOMAIN => {
            let Some(&len) = buf.get(1) else {
                return Ok(None);
            };
            let end = 2 + len as usize + 2;
            let Some(b) = buf.get(2..end) else {
                return Ok(None);
            };
            let (host, port) = b.split_at(len as usize);
            if !valid_host_name(host) {
                return Err(Socks5Error::HostName);
            }
            let host = std::str::from_utf8(host).map_err(|_| Socks5Error::HostName)?;
            Ok(Some((
                TargetAddr::from_host(host, u16::from_be_bytes([port[0], port[1]])),
                end,
            )))
        }
        other => Err(Socks5Error::AddressType(other)),
    }
}

/// Appends a socket address; IPv4-mapped IPv6 addresses are written as IPv4 (clients expect
/// the family they asked with).
pub fn encode_socket(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&v4.octets());
            }
            None => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&v6.octets());
            }
        },
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Appends any target; a host name longer than 255 bytes cannot be encoded (the parsers
/// never produce one).
pub fn encode(target: &TargetAddr, out: &mut Vec<u8>) -> Result<(), Socks5Error> {
    match target {
        TargetAddr::Ip(a) => encode_socket(*a, out),
        TargetAddr::Domain(host, port) => {
            let len = u8::try_from(host.len()).map_err(|_| Socks5Error::HostName)?;
            out.push(ATYP_DOMAIN);
            out.push(len);
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_round_trips_and_truncations_ask_for_more() {
        for target in [
            TargetAddr::Ip("10.1.2.3:80".parse().unwrap()),
            TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()),
            TargetAddr::Domain("example.com".into(), 53),
        ] {
            let mut wire = Vec::new();
            encode(&target, &mut wire).unwrap();
            for cut in 0..wire.len() {
                assert_eq!(parse(&wire[..cut]), Ok(None), "{target} cut at {cut}");
            }
            wire.extend_from_slice(b"payload");
            let (back, n) = parse(&wire).unwrap().unwrap();
            assert_eq!((back, n), (target, wire.len() - 7));
        }
    }

    #[test]
    fn bad_fields_are_client_errors() {
        assert_eq!(parse(&[9, 0]), Err(Socks5Error::AddressType(9)));
        assert_eq!(
            parse(&[3, 3, b'a', b' ', b'b', 0, 80]),
            Err(Socks5Error::HostName)
        );
        assert_eq!(parse(&[3, 0, 0, 80]), Err(Socks5Error::HostName));
        let long = TargetAddr::Domain("a".repeat(256), 1);
        assert_eq!(encode(&long, &mut Vec::new()), Err(Socks5Error::HostName));
        let mut mapped = Vec::new();
        encode_socket("[::ffff:1.2.3.4]:5".parse().unwrap(), &mut mapped);
        assert_eq!(mapped, [1, 1, 2, 3, 4, 0, 5]);
    }
}
