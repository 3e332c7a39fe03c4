//! The SOCKS5 UDP request header (RFC 1928 §7): every datagram between a client and its UDP
//! relay starts with `RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT`. Toward the relay it names the
//! destination; back to the client it names the source of the reply.
//!
//! Replies are built in place: the relay reads a payload [`REPLY_ROOM`] bytes into its
//! buffer and [`prepend_reply_header`] writes the header right in front of it, so the
//! datagram leaves with one send and no copy.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::addr;
use super::Socks5Error;
use crate::target::TargetAddr;

/// RSV and FRAG.
const PREFIX: usize = 3;
/// The largest header of a reply from an IP source (IPv6: 3 + 1 + 16 + 2).
pub const REPLY_ROOM: usize = 22;
/// The largest header a client can send (a 255-byte host name).
pub const MAX_HEADER: usize = PREFIX + 1 + 1 + 255 + 2;

/// Why a datagram from a client is not relayed. Every variant is the client's fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UdpHeaderError {
    #[error("datagram shorter than its SOCKS UDP header")]
    Truncated,
    #[error("non-zero reserved bytes in the SOCKS UDP header")]
    Reserved,
    /// Fragment reassembly is optional (RFC 1928 §7) and not done: such datagrams are
    /// dropped, as the RFC allows.
    #[error("fragment {0} of a fragmented datagram (fragmentation is not supported)")]
    Fragment(u8),
    #[error("unknown address type {0}")]
    AddressType(u8),
    #[error("invalid destination host name")]
    HostName,
    #[error("destination port 0")]
    PortZero,
}

/// A parsed header: where the payload goes and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub target: TargetAddr,
    /// The header's length: the payload is `datagram[len..]`.
    pub len: usize,
}

/// Parses the header at the start of a whole datagram.
pub fn parse(datagram: &[u8]) -> Result<UdpHeader, UdpHeaderError> {
    let Some(prefix) = datagram.get(..PREFIX) else {
        return Err(UdpHeaderError::Truncated);
    };
    if prefix[..2] != [0, 0] {
        return Err(UdpHeaderError::Reserved);
    }
    if prefix[2] != 0 {
        return Err(UdpHeaderError::Fragment(prefix[2]));
    }
    let (target, n) = match addr::parse(&datagram[PREFIX..]) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(UdpHeaderError::Truncated),
        Err(Socks5Error::AddressType(t)) => return Err(UdpHeaderError::AddressType(t)),
        Err(_) => return Err(UdpHeaderError::HostName),
    };
    if target.port() == 0 {
        return Err(UdpHeaderError::PortZero);
    }
    Ok(UdpHeader {
        target,
        len: PREFIX + n,
    })
}

/// Appends a header naming `target` (what a client sends; also used by tests and tools).
pub fn encode(target: &TargetAddr, out: &mut Vec<u8>) -> Result<(), Socks5Error> {
    out.extend_from_slice(&[0, 0, 0]);
    addr::encode(target, out)
}

/// `from` as the client expects it: IPv4 sources that a dual-stack socket reports as
/// mapped IPv6 addresses are IPv4.
pub fn canonical(from: SocketAddr) -> SocketAddr {
    match from.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), from.port()),
            None => from,
        },
        IpAddr::V4(_) => from,
    }
}

/// The header length of a reply from `from`.
pub fn reply_header_len(from: SocketAddr) -> usize {
    match canonical(from) {
        SocketAddr::V4(_) => PREFIX + 1 + 4 + 2,
        SocketAddr::V6(_) => REPLY_ROOM,
    }
}

/// Writes the header of a reply from `from` at the end of `room` (the bytes in front of a
/// payload) and returns where it starts: the datagram is `room[start..]` + payload. No
/// allocation: this runs once per relayed datagram.
pub fn prepend_reply_header(from: SocketAddr, room: &mut [u8; REPLY_ROOM]) -> usize {
    let from = canonical(from);
    let start = REPLY_ROOM - reply_header_len(from);
    let mut ip = [0u8; 16];
    let (atyp, ip) = match &from {
        SocketAddr::V4(a) => {
            ip[..4].copy_from_slice(&a.ip().octets());
            (addr::ATYP_IPV4, &ip[..4])
        }
        SocketAddr::V6(a) => {
            ip.copy_from_slice(&a.ip().octets());
            (addr::ATYP_IPV6, &ip[..])
        }
    };
    let header = &mut room[start..];
    header[..PREFIX].fill(0);
    header[PREFIX] = atyp;
    header[PREFIX + 1..PREFIX + 1 + ip.len()].copy_from_slice(ip);
    header[PREFIX + 1 + ip.len()..].copy_from_slice(&from.port().to_be_bytes());
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(target: &TargetAddr, payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        encode(target, &mut d).unwrap();
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn every_family_parses_back_with_its_payload() {
        for target in [
            TargetAddr::Ip("192.0.2.7:53".parse().unwrap()),
            TargetAddr::Ip("[2001:db8::9]:4433".parse().unwrap()),
            TargetAddr::Domain("echo.example".into(), 7),
        ] {
            let d = datagram(&target, b"hello");
            let h = parse(&d).unwrap();
            assert_eq!(h.target, target);
            assert_eq!(&d[h.len..], b"hello");
            // An empty payload is a valid datagram.
            let d = datagram(&target, b"");
            assert_eq!(parse(&d).unwrap().len, d.len());
            for cut in 0..d.len() {
                assert_eq!(parse(&d[..cut]), Err(UdpHeaderError::Truncated), "{cut}");
            }
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let ok = datagram(&TargetAddr::Ip("192.0.2.7:53".parse().unwrap()), b"x");
        let mut rsv = ok.clone();
        rsv[1] = 1;
        assert_eq!(parse(&rsv), Err(UdpHeaderError::Reserved));
        let mut frag = ok.clone();
        frag[2] = 1;
        assert_eq!(parse(&frag), Err(UdpHeaderError::Fragment(1)));
        let mut atyp = ok.clone();
        atyp[3] = 9;
        assert_eq!(parse(&atyp), Err(UdpHeaderError::AddressType(9)));
        assert_eq!(
            parse(&[0, 0, 0, 3, 3, b'a', b' ', b'b', 0, 53]),
            Err(UdpHeaderError::HostName)
        );
        let zero = datagram(&TargetAddr::Ip("192.0.2.7:0".parse().unwrap()), b"x");
        assert_eq!(parse(&zero), Err(UdpHeaderError::PortZero));
    }

    #[test]
    fn reply_headers_are_built_in_front_of_the_payload() {
        for (from, len) in [
            ("198.51.100.1:53", 10),
            ("[2001:db8::1]:53", 22),
            // A dual-stack socket reports IPv4 sources as mapped addresses: sent as IPv4.
            ("[::ffff:198.51.100.1]:53", 10),
        ] {
            let from: SocketAddr = from.parse().unwrap();
            let mut buf = [0xaau8; REPLY_ROOM + 3];
            buf[REPLY_ROOM..].copy_from_slice(b"abc");
            let room: &mut [u8; REPLY_ROOM] = (&mut buf[..REPLY_ROOM]).try_into().unwrap();
            let start = prepend_reply_header(from, room);
            assert_eq!(REPLY_ROOM - start, len);
            assert_eq!(reply_header_len(from), len);
            let h = parse(&buf[start..]).unwrap();
            assert_eq!(h.target, TargetAddr::Ip(canonical(from)));
            assert_eq!(&buf[start + h.len..], b"abc");
        }
    }
}
