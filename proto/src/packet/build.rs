//! Frames the proxy sends. For zero-copy transmission the caller puts the UDP payload at
//! [`header_len`] in the frame buffer (a UMEM chunk) and [`write_headers`] fills in every
//! header in front of it. Replies go back the way requests came: [`UdpFrame::reply_header`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use super::ether::{self, Mac, Vlan};
use super::{ipv4, ipv6, udp, UdpFrame};

/// The hop limit of replies: Linux's default (`net.ipv4.ip_default_ttl`).
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// Everything the headers of a frame say besides lengths and checksums.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4 peers)
/// are IPv4: such a frame is sent as IPv4, since mapped addresses never go on the wire.
/// Both addresses must then be of one family. An IPv6 address's flow info and scope are
/// not used (the flow label sent is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub src_mac: Mac,
    /// The next hop's MAC.
    pub dst_mac: Mac,
    pub vlan: Vlan,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TOS or IPv6 traffic class: DSCP in the high 6 bits, ECN in the low 2.
    pub tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
}

/// How the UDP checksum field is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Computed in software over the pseudo-header, header and payload.
    Full,
    /// Only the pseudo-header sum (folded, not complemented), for a NIC with TX checksum
    /// offload to complete from [`checksum_offload`]'s start to the end of the frame, as
    /// Linux's CHECKSUM_PARTIAL and AF_XDP's TX metadata expect.
    Offload,
    /// 0, "no checksum": IPv4 only. IPv6 requires a checksum (RFC 8200 §8.1), so asking
    /// for none there is a [`BuildError::ChecksumRequired`], not silently Full: the caller
    /// chose this mode to save the work and should know it cannot.
    None,
}

/// What a NIC with TX checksum offload needs (AF_XDP's `xsk_tx_metadata` `csum_start`
/// and `csum_offset`, or a virtio-net header's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumOffload {
    /// Where summing starts: the UDP header, from the start of the frame.
    pub csum_start: u16,
    /// Where the result goes, from `csum_start`: the UDP checksum field.
    pub csum_offset: u16,
}

/// Why a frame cannot be built. Each is the caller's bug, not the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum BuildError {
    #[error("source and destination are of different address families")]
    FamilyMismatch,
    #[error("payload too long for an IP packet")]
    PayloadTooLong,
    #[error("buffer shorter than the headers and payload")]
    BufferTooSmall,
    #[error("IPv6 requires a UDP checksum")]
    ChecksumRequired,
}

/// The addresses of a frame, in the family it is sent in.
#[derive(Debug, Clone, Copy)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn addrs(h: &FrameHeader) -> Result<Addrs, BuildError> {
    match (h.src.ip().to_canonical(), h.dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(Addrs::V4(s, d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(Addrs::V6(s, d)),
        _ => Err(BuildError::FamilyMismatch),
    }
}

/// Where the payload starts: Ethernet (14, plus 4 per VLAN tag), IP (20 or 40, by the
/// destination's family, a mapped address counting as IPv4) and UDP (8) headers.
pub fn header_len(h: &FrameHeader) -> usize {
    let ip = if h.dst.ip().to_canonical().is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    };
    ether::HEADER_LEN + h.vlan.tags_len() + ip + udp::HEADER_LEN
}

/// Offsets for completing an [`UdpChecksum::Offload`] frame in the NIC.
pub fn checksum_offload(h: &FrameHeader) -> ChecksumOffload {
    // At most 22 + 40 + 8 bytes: always fits.
    ChecksumOffload {
        csum_start: (header_len(h) - udp::HEADER_LEN) as u16,
        csum_offset: udp::CHECKSUM_OFFSET as u16,
    }
}

/// Writes the Ethernet, IP and UDP headers into `buf[..header_len(h)]`, in front of the
/// `payload_len` bytes of payload already at `buf[header_len(h)..]`, and returns the
/// frame's length. IPv4 goes with DF set, ID 0 and its header checksum; a computed UDP
/// checksum of 0 is sent as 0xffff (0 would mean none). Nothing is written on error.
pub fn write_headers(
    buf: &mut [u8],
    h: &FrameHeader,
    payload_len: usize,
    checksum: UdpChecksum,
) -> Result<usize, BuildError> {
    let addrs = addrs(h)?;
    let udp_len = payload_len
        .checked_add(udp::HEADER_LEN)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(BuildError::PayloadTooLong)?;
    let (ethertype, ip_len) = match addrs {
        Addrs::V4(..) => (ether::ETHERTYPE_IPV4, ipv4::HEADER_LEN),
        Addrs::V6(..) => (ether::ETHERTYPE_IPV6, ipv6::HEADER_LEN),
    };
    let total_len = u16::try_from(usize::from(udp_len) + ip_len);
    if matches!(addrs, Addrs::V4(..)) && total_len.is_err() {
        return Err(BuildError::PayloadTooLong);
    }
    if matches!((addrs, checksum), (Addrs::V6(..), UdpChecksum::None)) {
        return Err(BuildError::ChecksumRequired);
    }
    let eth_len = ether::HEADER_LEN + h.vlan.tags_len();
    let frame_len = eth_len + ip_len + usize::from(udp_len);
    let frame = buf.get_mut(..frame_len).ok_or(BuildError::BufferTooSmall)?;

    let (eth, rest) = frame.split_at_mut(eth_len);
    ether::write(eth, &h.dst_mac, &h.src_mac, h.vlan, ethertype);
    let (ip, rest) = rest.split_at_mut(ip_len);
    let (src_ip, dst_ip) = match addrs {
        Addrs::V4(src, dst) => {
            let fields = ipv4::Fields {
                src,
                dst,
                tos: h.tos,
                ttl: h.hop_limit,
                total_len: total_len.unwrap_or(u16::MAX),
            };
            if let Some(out) = ip.first_chunk_mut() {
                ipv4::write(out, &fields);
            }
            (IpAddr::V4(src), IpAddr::V4(dst))
        }
        Addrs::V6(src, dst) => {
            let fields = ipv6::Fields {
                src,
                dst,
                traffic_class: h.tos,
                hop_limit: h.hop_limit,
                payload_len: udp_len,
            };
            if let Some(out) = ip.first_chunk_mut() {
                ipv6::write(out, &fields);
            }
            (IpAddr::V6(src), IpAddr::V6(dst))
        }
    };
    let Some((udp_header, payload)) = rest.split_first_chunk_mut::<{ udp::HEADER_LEN }>() else {
        return Err(BuildError::BufferTooSmall);
    };
    let (sport, dport) = (h.src.port(), h.dst.port());
    let pseudo = udp::pseudo_header_sum(src_ip, dst_ip, udp_len);
    let check = match checksum {
        UdpChecksum::None => 0,
        UdpChecksum::Offload => pseudo.fold(),
        UdpChecksum::Full => {
            let sum = udp::header_sum(pseudo, sport, dport, udp_len).add_bytes(payload);
            match sum.finish() {
                0 => 0xffff,
                c => c,
            }
        }
    };
    udp::write(udp_header, sport, dport, udp_len, check);
    Ok(frame_len)
}

impl UdpFrame {
    /// The frame's own addressing, as a header that would build a frame like it.
    pub fn header(&self) -> FrameHeader {
        FrameHeader {
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            vlan: self.vlan,
            src: self.src,
            dst: self.dst,
            tos: self.tos,
            hop_limit: self.hop_limit,
        }
    }

    /// The header of a reply: MACs swapped, so the reply goes to the MAC the request came
    /// from (the next hop toward the client, usually a router, and the right one for this
    /// path without any lookup); addresses and ports swapped; the same VLAN tags. The hop
    /// limit is [`DEFAULT_HOP_LIMIT`] and the TOS 0: the caller sets the ECN codepoint its
    /// QUIC stack asks for. A request sent to a broadcast or multicast MAC would make the
    /// reply's source a group address: the driver puts its interface's MAC there instead.
    ///
    /// A destination the proxy has never heard from (a new path, an upstream) has no
    /// request to take the MAC from: its next hop's MAC comes from the kernel's neighbour
    /// table (route, then ARP/NDP entry), which the IO driver looks up, not this crate.
    pub fn reply_header(&self) -> FrameHeader {
        FrameHeader {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            vlan: self.vlan,
            src: self.dst,
            dst: self.src,
            tos: 0,
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;

    fn header(src: &str, dst: &str) -> FrameHeader {
        FrameHeader {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlan: Vlan::Untagged,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            tos: 0,
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }

    #[test]
    fn header_lengths() {
        let mut h = header("192.0.2.1:1", "192.0.2.2:2");
        assert_eq!(header_len(&h), 42);
        h.vlan = Vlan::Tagged(1);
        assert_eq!(header_len(&h), 46);
        h.vlan = Vlan::QinQ { outer: 1, inner: 2 };
        assert_eq!(header_len(&h), 50);
        assert_eq!(
            checksum_offload(&h),
            ChecksumOffload {
                csum_start: 42,
                csum_offset: 6
            }
        );
        let h = header("[2001:db8::1]:1", "[2001:db8::2]:2");
        assert_eq!(header_len(&h), 62);
        assert_eq!(checksum_offload(&h).csum_start, 54);
    }

    #[test]
    fn mapped_addresses_are_sent_as_ipv4() {
        let h = header("[::ffff:192.0.2.1]:443", "198.51.100.7:5000");
        assert_eq!(header_len(&h), 42);
        let mut buf = [0u8; 42];
        assert_eq!(write_headers(&mut buf, &h, 0, UdpChecksum::Full), Ok(42));
        let p = parse(&buf).unwrap();
        assert_eq!(p.src, "192.0.2.1:443".parse().unwrap());
        let h = header("198.51.100.7:5000", "[::ffff:192.0.2.1]:443");
        assert_eq!(header_len(&h), 42);
        assert!(write_headers(&mut buf, &h, 0, UdpChecksum::None).is_ok());
        assert_eq!(parse(&buf).unwrap().dst, "192.0.2.1:443".parse().unwrap());
    }

    #[test]
    fn caller_bugs_are_errors_and_write_nothing() {
        let mut buf = vec![0xee; 70_000];
        let before = buf.clone();
        let mut check = |h: &FrameHeader, n: usize, mode: UdpChecksum, e: BuildError| {
            assert_eq!(write_headers(&mut buf, h, n, mode), Err(e), "{h:?} {n}");
            assert!(buf == before);
        };
        for (src, dst) in [
            ("192.0.2.1:1", "[2001:db8::2]:2"),
            ("[2001:db8::2]:2", "192.0.2.1:1"),
            ("[::ffff:192.0.2.1]:1", "[2001:db8::2]:2"),
        ] {
            check(
                &header(src, dst),
                1,
                UdpChecksum::Full,
                BuildError::FamilyMismatch,
            );
        }
        let v4 = header("192.0.2.1:1", "192.0.2.2:2");
        let v6 = header("[2001:db8::1]:1", "[2001:db8::2]:2");
        // IPv4: total length 20 + 8 + payload; IPv6: payload length 8 + payload.
        check(&v4, 65_508, UdpChecksum::Full, BuildError::PayloadTooLong);
        check(&v6, 65_528, UdpChecksum::Full, BuildError::PayloadTooLong);
        check(
            &v4,
            usize::MAX,
            UdpChecksum::Full,
            BuildError::PayloadTooLong,
        );
        check(&v6, 0, UdpChecksum::None, BuildError::ChecksumRequired);
        let mut small = [0u8; 45];
        assert_eq!(
            write_headers(&mut small, &v4, 4, UdpChecksum::Full),
            Err(BuildError::BufferTooSmall)
        );
        assert_eq!(small, [0; 45]);
        // The largest payloads fit.
        assert_eq!(
            write_headers(&mut buf, &v4, 65_507, UdpChecksum::Full),
            Ok(42 + 65_507)
        );
        assert_eq!(parse(&buf[..42 + 65_507]).unwrap().payload_len, 65_507);
        assert_eq!(
            write_headers(&mut buf, &v6, 65_527, UdpChecksum::Full),
            Ok(62 + 65_527)
        );
        assert_eq!(parse(&buf[..62 + 65_527]).unwrap().payload_len, 65_527);
    }
}
