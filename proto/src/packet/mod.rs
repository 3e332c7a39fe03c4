//! Whole Ethernet frames carrying UDP, for the kernel-bypass packet path (AF_XDP, PF_RING
//! ZC): [`parse`] reads Ethernet II (with one 802.1Q tag or 802.1ad QinQ), IPv4 or IPv6,
//! and UDP down to the payload; [`write_headers`] writes every header in front of a
//! payload already in the frame buffer, for zero-copy transmission. Sans-IO, no
//! allocation: both work on the caller's buffer and keep offsets, not borrows.
//!
//! What is dropped, each with its own [`PacketError`] (and metrics label): IPv4 fragments
//! (the proxy does not reassemble; QUIC sets DF), IPv6 extension headers, non-UDP
//! protocols, inconsistent lengths, bad IPv4 header checksums.
//!
//! The UDP checksum is not verified on receive. A sender using checksum offload, such as
//! a veth peer, hands over CHECKSUM_PARTIAL frames whose UDP checksum field holds only the
//! pseudo-header sum, to be completed by a NIC that XDP runs before; dropping those would
//! drop every packet from a container. QUIC's AEAD rejects corrupted payloads anyway.
//! Callers whose NIC reports the checksum status (or who want to check) use
//! [`udp_checksum_valid`].

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use thiserror::Error;

mod build;
pub mod checksum;
mod ether;
mod ipv4;
mod ipv6;
mod udp;

pub use build::{
    checksum_offload, header_len, write_headers, BuildError, ChecksumOffload, FrameHeader,
    UdpChecksum, DEFAULT_HOP_LIMIT,
};
pub use ether::{Mac, Vlan};
pub use ipv6::EXTENSION_HEADERS;

/// IP protocol number of UDP.
const PROTO_UDP: u8 = 17;

/// Why a frame is not a UDP datagram this path takes. Each variant has a stable
/// [`label`](PacketError::label) for the drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum PacketError {
    /// The frame ends inside a header, or before the length its IP header declares.
    #[error("frame truncated")]
    Truncated,
    #[error("ethertype {0:#06x} is neither IPv4 nor IPv6")]
    NotIp(u16),
    /// Tags other than one 802.1Q tag or an 802.1ad tag over an 802.1Q tag.
    #[error("unsupported VLAN tag stack")]
    BadVlan,
    #[error("IP version {0} does not match the ethertype")]
    BadVersion(u8),
    #[error("IPv4 header length below 20 bytes")]
    BadHeaderLength,
    #[error("IPv4 header checksum mismatch")]
    BadHeaderChecksum,
    /// MF set or a non-zero fragment offset: not reassembled.
    #[error("IPv4 fragment")]
    Fragment,
    #[error("IPv6 extension header {0}")]
    ExtensionHeader(u8),
    #[error("IP protocol {0} is not UDP")]
    NotUdp(u8),
    /// A length field disagrees with another: IPv4 total length below the header length,
    /// an IP payload too short for a UDP header, a UDP length below 8 or past the payload.
    #[error("inconsistent IP or UDP length")]
    BadLength,
    #[error("IPv4-mapped address in an IPv6 header")]
    MappedAddress,
}

impl PacketError {
    /// Every label, in [`index`](PacketError::index) order: counters can be an array.
    pub const LABELS: [&'static str; 11] = [
        "truncated",
        "not_ip",
        "bad_vlan",
        "bad_version",
        "bad_header_length",
        "bad_header_checksum",
        "fragment",
        "extension_header",
        "not_udp",
        "bad_length",
        "mapped_address",
    ];

    /// A dense index per variant (values carried by a variant do not matter).
    pub const fn index(self) -> usize {
        match self {
            PacketError::Truncated => 0,
            PacketError::NotIp(_) => 1,
            PacketError::BadVlan => 2,
            PacketError::BadVersion(_) => 3,
            PacketError::BadHeaderLength => 4,
            PacketError::BadHeaderChecksum => 5,
            PacketError::Fragment => 6,
            PacketError::ExtensionHeader(_) => 7,
            PacketError::NotUdp(_) => 8,
            PacketError::BadLength => 9,
            PacketError::MappedAddress => 10,
        }
    }

    /// The drop reason as a metrics label.
    pub const fn label(self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// The IP header fields the frame needs, from either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpHeader {
    src: IpAddr,
    dst: IpAddr,
    tos: u8,
    hop_limit: u8,
    header_len: usize,
    /// Bytes after the IP header that belong to the packet.
    payload_len: usize,
}

/// A parsed frame: addressing and where the UDP payload lies. It keeps offsets into the
/// frame rather than borrowing it, so it can be held while the buffer is reused for the
/// reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    pub dst_mac: Mac,
    /// The MAC the frame came from: the next hop toward the sender, not the sender itself.
    pub src_mac: Mac,
    pub vlan: Vlan,
    /// Source and destination; an IPv6 address's flow info and scope are 0.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TOS or IPv6 traffic class: DSCP in the high 6 bits, ECN in the low 2.
    pub tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// Where the IP header starts (after the Ethernet header and tags).
    pub ip_offset: usize,
    /// Where the UDP header starts.
    pub udp_offset: usize,
    pub payload_offset: usize,
    pub payload_len: usize,
}

impl UdpFrame {
    /// The ECN codepoint (RFC 3168: 0 not ECT, 1 ECT(1), 2 ECT(0), 3 CE).
    pub const fn ecn(&self) -> u8 {
        self.tos & 0b11
    }

    pub const fn payload_range(&self) -> Range<usize> {
        self.payload_offset..self.payload_offset.saturating_add(self.payload_len)
    }

    /// The payload within `frame` (the frame this was parsed from); `None` for another
    /// frame too short to hold it.
    pub fn payload<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        frame.get(self.payload_offset..self.payload_offset.checked_add(self.payload_len)?)
    }
}

/// Parses a whole Ethernet frame down to its UDP payload. Never panics, never allocates.
/// The UDP checksum is not verified (see the module documentation).
pub fn parse(frame: &[u8]) -> Result<UdpFrame, PacketError> {
    let eth = ether::parse(frame)?;
    let packet = frame.get(eth.len..).ok_or(PacketError::Truncated)?;
    let ip = match eth.ethertype {
        ether::ETHERTYPE_IPV4 => ipv4::parse(packet)?,
        ether::ETHERTYPE_IPV6 => ipv6::parse(packet)?,
        other => return Err(PacketError::NotIp(other)),
    };
    let datagram = packet
        .get(ip.header_len..ip.header_len + ip.payload_len)
        .ok_or(PacketError::Truncated)?;
    let u = udp::parse(datagram)?;
    let udp_offset = eth.len + ip.header_len;
    Ok(UdpFrame {
        dst_mac: eth.dst,
        src_mac: eth.src,
        vlan: eth.vlan,
        src: SocketAddr::new(ip.src, u.src_port),
        dst: SocketAddr::new(ip.dst, u.dst_port),
        tos: ip.tos,
        hop_limit: ip.hop_limit,
        ip_offset: eth.len,
        udp_offset,
        payload_offset: udp_offset + udp::HEADER_LEN,
        payload_len: u.len - udp::HEADER_LEN,
    })
}

/// Whether the UDP checksum of a parsed frame is right. Only for callers that want the
/// check: a CHECKSUM_PARTIAL frame (field = pseudo-header sum, from a veth peer or any
/// sender relying on offload) fails it while being perfectly good. An IPv4 checksum of 0
/// means "none sent" and passes; an IPv6 one of 0 is not allowed (RFC 8200 §8.1) and fails.
pub fn udp_checksum_valid(frame: &[u8], f: &UdpFrame) -> bool {
    if f.udp_offset.checked_add(udp::HEADER_LEN) != Some(f.payload_offset) {
        return false;
    }
    let Some(datagram) = f
        .payload_offset
        .checked_add(f.payload_len)
        .and_then(|end| frame.get(f.udp_offset..end))
    else {
        return false;
    };
    let (Ok(len), Some(field)) = (
        u16::try_from(datagram.len()),
        datagram.get(udp::CHECKSUM_OFFSET..udp::CHECKSUM_OFFSET + 2),
    ) else {
        return false;
    };
    if field == [0, 0] {
        return f.src.is_ipv4();
    }
    udp::pseudo_header_sum(f.src.ip(), f.dst.ip(), len)
        .add_bytes(datagram)
        .fold()
        == 0xffff
}

#[cfg(test)]
mod tests;
