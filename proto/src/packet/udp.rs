//! UDP headers (RFC 768) and the pseudo-headers their checksum covers (RFC 768 for IPv4,
//! RFC 8200 §8.1 for IPv6).

use std::net::IpAddr;

use super::checksum::Sum;
use super::{PacketError, PROTO_UDP};

pub const HEADER_LEN: usize = 8;
/// Where the checksum field sits in the header (what a NIC's `csum_offset` names).
pub const CHECKSUM_OFFSET: usize = 6;

/// A parsed UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub src_port: u16,
    pub dst_port: u16,
    /// The UDP length field: header plus payload, at least 8, within the IP payload.
    pub len: usize,
}

/// Parses the header of `datagram`: the IP payload, exactly as long as the IP header says.
/// A UDP length shorter than the IP payload is accepted (the rest is ignored, as Linux
/// trims it); longer, or shorter than the header itself, is refused.
pub(super) fn parse(datagram: &[u8]) -> Result<Header, PacketError> {
    let h = datagram
        .first_chunk::<HEADER_LEN>()
        .ok_or(PacketError::BadLength)?;
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if len < HEADER_LEN || len > datagram.len() {
        return Err(PacketError::BadLength);
    }
    Ok(Header {
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        len,
    })
}

/// The sum of the pseudo-header for a datagram of `udp_len` bytes between `src` and `dst`
/// (both of one family; mixed ones are the caller's bug and sum the IPv6 way).
pub(super) fn pseudo_header_sum(src: IpAddr, dst: IpAddr, udp_len: u16) -> Sum {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Sum::new()
            .add_bytes(&s.octets())
            .add_bytes(&d.octets())
            .add_u16(u16::from(PROTO_UDP))
            .add_u16(udp_len),
        (s, d) => Sum::new()
            .add_bytes(&v6_octets(s))
            .add_bytes(&v6_octets(d))
            .add_u32(u32::from(udp_len))
            .add_u32(u32::from(PROTO_UDP)),
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Sums the header fields other than the checksum (which counts as 0).
pub(super) fn header_sum(sum: Sum, src_port: u16, dst_port: u16, len: u16) -> Sum {
    sum.add_u16(src_port).add_u16(dst_port).add_u16(len)
}

pub(super) fn write(
    out: &mut [u8; HEADER_LEN],
    src_port: u16,
    dst_port: u16,
    len: u16,
    check: u16,
) {
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out[6..8].copy_from_slice(&check.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_must_fit_the_ip_payload() {
        let mut d = [0u8; 12];
        write((&mut d[..8]).try_into().unwrap(), 4433, 53, 12, 0xabcd);
        let h = parse(&d).unwrap();
        assert_eq!((h.src_port, h.dst_port, h.len), (4433, 53, 12));
        // A shorter UDP length is fine: the IP payload's tail is not the datagram's.
        d[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(parse(&d).unwrap().len, 8);
        for bad in [0u16, 7, 13, 0xffff] {
            d[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(parse(&d), Err(PacketError::BadLength), "{bad}");
        }
        // An IP payload too short for a UDP header is as inconsistent.
        for cut in 0..8 {
            assert_eq!(parse(&d[..cut]), Err(PacketError::BadLength), "{cut}");
        }
    }

    #[test]
    fn pseudo_headers_sum_their_fields() {
        let v4 = pseudo_header_sum(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
            20,
        );
        let words = [0xc000u16, 0x0201, 0xc633, 0x6402, 17, 20];
        let expect = words.iter().fold(Sum::new(), |s, w| s.add_u16(*w)).fold();
        assert_eq!(v4.fold(), expect);
        let v6 = pseudo_header_sum(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            20,
        );
        let expect = [0x2001u16, 0x0db8, 1, 0x2001, 0x0db8, 2, 20, 17]
            .iter()
            .fold(Sum::new(), |s, w| s.add_u16(*w))
            .fold();
        assert_eq!(v6.fold(), expect);
    }
}
