//! A tiny frame builder: Ethernet (with VLAN tags), IPv4 (options, fragment bits), IPv6
//! (extension headers), UDP and TCP with correct checksums, ARP. Enough to feed the XDP
//! program every case it must judge and to build replies sent from an XSK.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// The state of a received UDP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// Complete and correct.
    Full,
    /// Only the pseudo-header sum, as a sender with checksum offload (CHECKSUM_PARTIAL)
    /// leaves it for the NIC: what frames from a veth peer carry.
    Partial,
}

/// An untagged IPv4 or IPv6 UDP frame, parsed, its checksums verified.
pub struct Udp<'a> {
    pub csum: Csum,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

/// Parses `f`; None when it is not an untagged IPv4/IPv6 UDP frame with a valid IPv4
/// header checksum and a UDP checksum either complete or partial (see [`Csum`]).
pub fn parse_udp(f: &[u8]) -> Option<Udp<'_>> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let ip = f.get(14..)?;
    let (src, dst, udp, pseudo) = match ethertype {
        ETH_IPV4 => {
            let hlen = usize::from(ip.first()? & 0x0f) * 4;
            if ip[0] >> 4 != 4 || *ip.get(9)? != PROTO_UDP || checksum(ip.get(..hlen)?) != 0 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let s: [u8; 4] = ip[12..16].try_into().ok()?;
            let d: [u8; 4] = ip[16..20].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ip.get(hlen..total)?,
                [&ip[12..16], &ip[16..20]].concat(),
            )
        }
        ETH_IPV6 => {
            if ip.first()? >> 4 != 6 || *ip.get(6)? != PROTO_UDP {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ip.get(40..40 + plen)?,
                ip[8..40].to_vec(),
            )
        }
        _ => return None,
    };
    let pseudo_sum = sum(0, &pseudo) + u32::from(PROTO_UDP) + udp.len() as u32;
    let field = u16::from_be_bytes([*udp.get(6)?, *udp.get(7)?]);
    let csum = if fold(sum(pseudo_sum, udp)) == 0 {
        Csum::Full
    } else if field == !fold(pseudo_sum) {
        Csum::Partial
    } else {
        return None;
    };
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    Some(Udp {
        csum,
        src_mac: f[6..12].try_into().ok()?,
        dst_mac: f[0..6].try_into().ok()?,
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..ulen)?,
    })
}

/// The answer to `req`: MACs, addresses and ports swapped, with `payload`.
pub fn udp_reply(req: &Udp<'_>, payload: &[u8]) -> Vec<u8> {
    match (req.dst, req.src) {
        (IpAddr::V4(us), IpAddr::V4(them)) => {
            let ip = ipv4(
                us,
                them,
                PROTO_UDP,
                0,
                &[],
                &udp4(us, them, req.dport, req.sport, payload),
            );
            ethernet(req.src_mac, req.dst_mac, &[], ETH_IPV4, &ip)
        }
        (IpAddr::V6(us), IpAddr::V6(them)) => {
            let ip = ipv6(
                us,
                them,
                PROTO_UDP,
                &udp6(us, them, req.dport, req.sport, payload),
            );
            ethernet(req.src_mac, req.dst_mac, &[], ETH_IPV6, &ip)
        }
        _ => unreachable!("one family per packet"),
    }
}

#[test]
fn checksums_verify() {
    let a = Ipv4Addr::new(198, 18, 0, 2);
    let b = Ipv4Addr::new(198, 18, 0, 1);
    let f = udp4_frame(&[], a, b, 1000, 4433, b"hello");
    let p = parse_udp(&f).unwrap();
    assert_eq!(p.csum, Csum::Full);
    assert_eq!(
        (p.src, p.dst, p.sport, p.dport, p.payload),
        (IpAddr::V4(a), IpAddr::V4(b), 1000, 4433, &b"hello"[..])
    );
    // RFC 1071's example: the checksum of a header with its checksum field is 0.
    assert_eq!(checksum(&f[14..34]), 0);
    let r = udp_reply(&p, b"back");
    let q = parse_udp(&r).unwrap();
    assert_eq!(
        (q.src, q.sport, q.dport, q.payload),
        (IpAddr::V4(b), 4433, 1000, &b"back"[..])
    );
    let a6 = "2001:db8::2".parse().unwrap();
    let b6 = "2001:db8::1".parse().unwrap();
    let f = udp6_frame(&[], a6, b6, 1000, 4433, b"six");
    let p = parse_udp(&f).unwrap();
    assert_eq!((p.dst, p.payload), (IpAddr::V6(b6), &b"six"[..]));
    let mut bad = f.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(
        parse_udp(&bad).is_none(),
        "a corrupted payload fails the checksum"
    );
}
