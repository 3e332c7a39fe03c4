//! A tiny frame builder: Ethernet (with VLAN tags), IPv4 (options, fragment bits), IPv6
//! (extension headers), UDP and TCP with correct checksums, ARP. Enough to feed the XDP
//! program every case it must judge and to build replies sent from an XSK.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb2];

/// Ethernet header (with one tag per `tags` entry: TPID, VLAN id = index + 10) + payload.
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    tags: &[u16],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(10 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One's-complement sum of 16-bit words, folded.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// IPv4 header (options padded to 4 bytes, `frag` = flags and offset field) + payload.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let hlen = 20 + opt_len;
    let mut h = vec![0u8; hlen];
    h[0] = 0x40 | (hlen / 4) as u8;
    h[2..4].copy_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h[20..20 + options.len()].copy_from_slice(options);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 header + payload (`next` = the first next-header value).
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

fn l4(pseudo: &[u8], proto: u8, mut seg: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let mut acc = sum(0, pseudo);
    acc += u32::from(proto) + seg.len() as u32;
    let mut c = fold(sum(acc, &seg));
    if c == 0 && proto == PROTO_UDP {
        c = 0xffff;
    }
    seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    seg
}

fn udp_bare(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// UDP header + payload with the IPv4 pseudo-header checksum.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let pseudo = [src.octets(), dst.octets()].concat();
    l4(&pseudo, PROTO_UDP, udp_bare(sport, dport, payload), 6)
}

/// UDP header + payload with the IPv6 pseudo-header checksum.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let pseudo = [src.octets(), dst.octets()].concat();
    l4(&pseudo, PROTO_UDP, udp_bare(sport, dport, payload), 6)
}

/// A TCP SYN header (20 bytes) to `dport`, checksum over the IPv4 pseudo-header.
pub fn tcp4_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let pseudo = [src.octets(), dst.octets()].concat();
    l4(&pseudo, PROTO_TCP, t, 16)
}

/// An ARP request (Ethernet/IPv4) asking for `target`.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// The whole IPv4/UDP frame.
pub fn udp4_frame(
    tags: &[u16],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ip = ipv4(
        src,
        dst,
        PROTO_UDP,
        0,
        &[],
        &udp4(src, dst, sport, dport, payload),
    );
    ethernet(MAC_A, MAC_B, tags, ETH_IPV4, &ip)
}

/// The whole IPv6/UDP frame.
pub fn udp6_frame(
    tags: &[u16],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ip = ipv6(src, dst, PROTO_UDP, &udp6(src, dst, sport, dport, payload));
    ethernet(MAC_A, MAC_B, tags, ETH_IPV6, &ip)
}

/// Parsed IPv4/UDP frame: (src mac, dst mac, src, dst, sport, dport, payload), or None
/// when `f` is not an untagged IPv4/UDP frame with valid IP and UDP checksums.
pub struct Udp4<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

pub fn parse_udp4(f: &[u8]) -> Option<Udp4<'_>> {
    if f.len() < 42 || u16::from_be_bytes([f[12], f[13]]) != ETH_IPV4 {
        return None;
    }
    let ip = &f[14..];
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != PROTO_UDP || checksum(&ip[..hlen]) != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp = ip.get(hlen..total)?;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let pseudo = [src.octets(), dst.octets()].concat();
    let acc = sum(
        sum(0, &pseudo) + u32::from(PROTO_UDP) + udp.len() as u32,
        udp,
    );
    if fold(acc) != 0 {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    Some(Udp4 {
        src_mac: f[6..12].try_into().ok()?,
        dst_mac: f[0..6].try_into().ok()?,
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..ulen)?,
    })
}

#[test]
fn checksums_verify() {
    let a = Ipv4Addr::new(198, 18, 0, 2);
    let b = Ipv4Addr::new(198, 18, 0, 1);
    let f = udp4_frame(&[], a, b, 1000, 4433, b"hello");
    let p = parse_udp4(&f).unwrap();
    assert_eq!(
        (p.src, p.dst, p.sport, p.dport, p.payload),
        (a, b, 1000, 4433, &b"hello"[..])
    );
    // RFC 1071's example: the checksum of a header with its checksum field is 0.
    assert_eq!(checksum(&f[14..34]), 0);
}
