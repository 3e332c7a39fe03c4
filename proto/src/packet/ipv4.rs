//! IPv4 headers (RFC 791). Options are allowed and skipped; the header checksum is always
//! verified (the kernel computes it in software even when it leaves the UDP checksum to
//! offload) and always written. Fragments are refused: the proxy does not reassemble,
//! and a QUIC sender sets DF and sizes its datagrams to the path.

use std::net::Ipv4Addr;

use super::checksum;
use super::{IpHeader, PacketError, PROTO_UDP};

/// A header without options.
pub const HEADER_LEN: usize = 20;
/// Don't Fragment.
const FLAG_DF: u16 = 0x4000;
/// More Fragments, and the fragment offset below it.
const FRAGMENT_BITS: u16 = 0x3fff;

/// Parses the header at the start of `packet` (everything after the Ethernet header;
/// Ethernet padding after the declared total length is ignored).
pub(super) fn parse(packet: &[u8]) -> Result<IpHeader, PacketError> {
    let h = packet
        .first_chunk::<HEADER_LEN>()
        .ok_or(PacketError::Truncated)?;
    let version = h[0] >> 4;
    if version != 4 {
        return Err(PacketError::BadVersion(version));
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < HEADER_LEN {
        return Err(PacketError::BadHeaderLength);
    }
    let header = packet.get(..header_len).ok_or(PacketError::Truncated)?;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total < header_len {
        return Err(PacketError::BadLength);
    }
    if total > packet.len() {
        return Err(PacketError::Truncated);
    }
    if !checksum::verifies(header) {
        return Err(PacketError::BadHeaderChecksum);
    }
    if u16::from_be_bytes([h[6], h[7]]) & FRAGMENT_BITS != 0 {
        return Err(PacketError::Fragment);
    }
    if h[9] != PROTO_UDP {
        return Err(PacketError::NotUdp(h[9]));
    }
    Ok(IpHeader {
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]).into(),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]).into(),
        tos: h[1],
        hop_limit: h[8],
        header_len,
        payload_len: total - header_len,
    })
}

/// What goes into a header the proxy sends.
pub(super) struct Fields {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ttl: u8,
    /// Header plus payload, already checked to fit.
    pub total_len: u16,
}

/// Writes a header without options: DF set, identification 0 (RFC 6864 §4.1: an atomic
/// datagram's ID has no meaning), protocol UDP, checksum computed.
pub(super) fn write(out: &mut [u8; HEADER_LEN], f: &Fields) {
    out[0] = 0x45;
    out[1] = f.tos;
    out[2..4].copy_from_slice(&f.total_len.to_be_bytes());
    out[4..6].fill(0);
    out[6..8].copy_from_slice(&FLAG_DF.to_be_bytes());
    out[8] = f.ttl;
    out[9] = PROTO_UDP;
    out[10..12].fill(0);
    out[12..16].copy_from_slice(&f.src.octets());
    out[16..20].copy_from_slice(&f.dst.octets());
    let sum = checksum::checksum(out);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: u16) -> [u8; HEADER_LEN] {
        let mut h = [0; HEADER_LEN];
        write(
            &mut h,
            &Fields {
                src: Ipv4Addr::new(192, 0, 2, 1),
                dst: Ipv4Addr::new(198, 51, 100, 2),
                tos: 0xb9,
                ttl: 3,
                total_len: HEADER_LEN as u16 + payload_len,
            },
        );
        h
    }

    /// `h` with its checksum made right again after an edit.
    fn resum(h: &mut [u8]) {
        h[10..12].fill(0);
        let sum = checksum::checksum(h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn a_written_header_reads_back() {
        let mut p = header(8).to_vec();
        p.extend_from_slice(&[0; 8]);
        let ip = parse(&p).unwrap();
        assert_eq!(ip.src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(ip.dst, Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!((ip.tos, ip.hop_limit), (0xb9, 3));
        assert_eq!((ip.header_len, ip.payload_len), (20, 8));
        assert_eq!(&p[6..8], &[0x40, 0], "DF, offset 0");
        // The payload is cut short: the packet is truncated, never read past.
        for cut in 0..p.len() {
            assert_eq!(parse(&p[..cut]), Err(PacketError::Truncated), "{cut}");
        }
    }

    #[test]
    fn options_are_skipped() {
        let mut p = header(8).to_vec();
        p[0] = 0x47; // two option words: NOPs then End of Options
        p[2..4].copy_from_slice(&36u16.to_be_bytes());
        p.splice(20..20, [1, 1, 1, 1, 1, 1, 1, 0]);
        p.extend_from_slice(&[0; 8]);
        resum(&mut p[..28]);
        let ip = parse(&p).unwrap();
        assert_eq!((ip.header_len, ip.payload_len), (28, 8));
        assert_eq!(parse(&p[..27]), Err(PacketError::Truncated));
    }

    #[test]
    fn fragments_are_refused() {
        for flags in [0x2000u16, 0x0001, 0x1fff, 0x6000, 0x4001, 0x20b9] {
            let mut p = header(8).to_vec();
            p.extend_from_slice(&[0; 8]);
            p[6..8].copy_from_slice(&flags.to_be_bytes());
            resum(&mut p[..20]);
            assert_eq!(parse(&p), Err(PacketError::Fragment), "{flags:#x}");
        }
        // DF alone, or the reserved bit, is no fragment.
        for flags in [0x4000u16, 0x8000, 0x0000] {
            let mut p = header(8).to_vec();
            p.extend_from_slice(&[0; 8]);
            p[6..8].copy_from_slice(&flags.to_be_bytes());
            resum(&mut p[..20]);
            assert!(parse(&p).is_ok(), "{flags:#x}");
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let mut ok = header(8).to_vec();
        ok.extend_from_slice(&[0; 8]);
        let edit = |f: &dyn Fn(&mut Vec<u8>), fix: bool| {
            let mut p = ok.clone();
            f(&mut p);
            if fix {
                resum(&mut p[..20]);
            }
            parse(&p)
        };
        assert_eq!(
            edit(&|p| p[0] = 0x65, true),
            Err(PacketError::BadVersion(6))
        );
        assert_eq!(
            edit(&|p| p[0] = 0x44, true),
            Err(PacketError::BadHeaderLength)
        );
        assert_eq!(
            edit(&|p| p[2..4].copy_from_slice(&19u16.to_be_bytes()), true),
            Err(PacketError::BadLength)
        );
        assert_eq!(
            edit(&|p| p[2..4].copy_from_slice(&29u16.to_be_bytes()), true),
            Err(PacketError::Truncated)
        );
        assert_eq!(edit(&|p| p[9] = 6, true), Err(PacketError::NotUdp(6)));
        for byte in [1, 8, 11, 12, 19] {
            assert_eq!(
                edit(&|p| p[byte] ^= 0x10, false),
                Err(PacketError::BadHeaderChecksum),
                "{byte}"
            );
        }
        // A TTL decremented with its checksum updated incrementally (RFC 1624) verifies.
        let mut p = ok.clone();
        let old = u16::from_be_bytes([p[10], p[11]]);
        let word = u16::from_be_bytes([p[8], p[9]]);
        p[8] -= 1;
        let new = u16::from_be_bytes([p[8], p[9]]);
        p[10..12].copy_from_slice(&checksum::update(old, word, new).to_be_bytes());
        assert_eq!(parse(&p).unwrap().hop_limit, 2);
    }
}
