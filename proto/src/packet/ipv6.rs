//! IPv6 headers (RFC 8200). Only UDP directly after the fixed header is accepted: any
//! extension header (IANA's "IPv6 Extension Header Types") is refused and named, so the
//! driver counts what it dropped; the kernel path remains for such packets if they matter.
//! Addresses that are IPv4-mapped are refused as Linux does (RFC 4291 §2.5.5.2: they never
//! appear on the wire), which also keeps the builder's mapped-means-IPv4 rule reversible.

use std::net::Ipv6Addr;

use super::{IpHeader, PacketError, PROTO_UDP};

/// The fixed header.
pub const HEADER_LEN: usize = 40;

/// Next-header values that are extension headers: hop-by-hop options, routing, fragment,
/// ESP, AH, destination options, mobility, HIP, shim6, and the two experimental values.
pub const EXTENSION_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(b);
    Ipv6Addr::from(octets)
}

/// Parses the header at the start of `packet` (everything after the Ethernet header;
/// bytes after the declared payload length are ignored).
pub(super) fn parse(packet: &[u8]) -> Result<IpHeader, PacketError> {
    let h = packet
        .first_chunk::<HEADER_LEN>()
        .ok_or(PacketError::Truncated)?;
    let version = h[0] >> 4;
    if version != 6 {
        return Err(PacketError::BadVersion(version));
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if HEADER_LEN + payload_len > packet.len() {
        return Err(PacketError::Truncated);
    }
    let next = h[6];
    if next != PROTO_UDP {
        return Err(if EXTENSION_HEADERS.contains(&next) {
            PacketError::ExtensionHeader(next)
        } else {
            PacketError::NotUdp(next)
        });
    }
    let (src, dst) = (addr(&h[8..24]), addr(&h[24..40]));
    if src.to_ipv4_mapped().is_some() || dst.to_ipv4_mapped().is_some() {
        return Err(PacketError::MappedAddress);
    }
    Ok(IpHeader {
        src: src.into(),
        dst: dst.into(),
        tos: (h[0] << 4) | (h[1] >> 4),
        hop_limit: h[7],
        header_len: HEADER_LEN,
        payload_len,
    })
}

/// What goes into a header the proxy sends.
pub(super) struct Fields {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub traffic_class: u8,
    pub hop_limit: u8,
    /// The UDP datagram's length, already checked to fit.
    pub payload_len: u16,
}

/// Writes the fixed header; the flow label is 0 (RFC 6437 allows it).
pub(super) fn write(out: &mut [u8; HEADER_LEN], f: &Fields) {
    out[0] = 0x60 | (f.traffic_class >> 4);
    out[1] = f.traffic_class << 4;
    out[2..4].fill(0);
    out[4..6].copy_from_slice(&f.payload_len.to_be_bytes());
    out[6] = PROTO_UDP;
    out[7] = f.hop_limit;
    out[8..24].copy_from_slice(&f.src.octets());
    out[24..40].copy_from_slice(&f.dst.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload_len: u16) -> Vec<u8> {
        let mut h = [0; HEADER_LEN];
        write(
            &mut h,
            &Fields {
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8:1::2".parse().unwrap(),
                traffic_class: 0xa7,
                hop_limit: 255,
                payload_len,
            },
        );
        let mut p = h.to_vec();
        p.resize(HEADER_LEN + usize::from(payload_len), 0);
        p
    }

    #[test]
    fn a_written_header_reads_back() {
        let p = packet(9);
        let ip = parse(&p).unwrap();
        assert_eq!(ip.src, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst, "2001:db8:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!((ip.tos, ip.hop_limit), (0xa7, 255));
        assert_eq!((ip.header_len, ip.payload_len), (40, 9));
        assert_eq!(
            &p[..4],
            &[0x6a, 0x70, 0, 0],
            "traffic class split over a nibble"
        );
        for cut in 0..p.len() {
            assert_eq!(parse(&p[..cut]), Err(PacketError::Truncated), "{cut}");
        }
        // Bytes past the payload length (Ethernet padding) are ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xee; 11]);
        assert_eq!(parse(&padded).unwrap().payload_len, 9);
    }

    #[test]
    fn every_extension_header_is_named() {
        for next in EXTENSION_HEADERS {
            let mut p = packet(16);
            p[6] = next;
            assert_eq!(parse(&p), Err(PacketError::ExtensionHeader(next)));
        }
        // TCP, ICMPv6, No Next Header: not extension headers, not UDP.
        for next in [6, 58, 59] {
            let mut p = packet(16);
            p[6] = next;
            assert_eq!(parse(&p), Err(PacketError::NotUdp(next)));
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let mut p = packet(8);
        p[0] = 0x40;
        assert_eq!(parse(&p), Err(PacketError::BadVersion(4)));
        for at in [8, 24] {
            let mut p = packet(8);
            let mapped = "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets();
            p[at..at + 16].copy_from_slice(&mapped);
            assert_eq!(parse(&p), Err(PacketError::MappedAddress));
        }
    }
}
