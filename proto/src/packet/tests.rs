//! Whole frames: built, parsed back, cut, corrupted and checked against an independent
//! checksum.

use super::*;

const CLIENT_MAC: Mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const PROXY_MAC: Mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

const VLANS: [Vlan; 3] = [
    Vlan::Untagged,
    Vlan::Tagged(0x2064),
    Vlan::QinQ {
        outer: 0x0bad,
        inner: 0xf00d,
    },
];

const PAIRS: [(&str, &str); 2] = [
    ("192.0.2.10:51000", "198.51.100.1:443"),
    ("[2001:db8::10]:51000", "[2001:db8:ffff::1]:443"),
];

fn header(src: &str, dst: &str, vlan: Vlan) -> FrameHeader {
    FrameHeader {
        src_mac: CLIENT_MAC,
        dst_mac: PROXY_MAC,
        vlan,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        tos: 0xb9,
        hop_limit: 57,
    }
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// A frame as the TX path builds one: payload first, then the headers in front of it.
fn frame(h: &FrameHeader, payload: &[u8], mode: UdpChecksum) -> Vec<u8> {
    let at = header_len(h);
    let mut buf = vec![0xcc; at + payload.len() + 9];
    buf[at..at + payload.len()].copy_from_slice(payload);
    let n = write_headers(&mut buf, h, payload.len(), mode).unwrap();
    assert_eq!(n, at + payload.len());
    buf.truncate(n);
    buf
}

/// The UDP checksum the textbook way, from nothing but the frame's bytes: the
/// pseudo-header as a byte string, the UDP segment with its checksum zeroed, 16-bit words
/// summed into a u32, carries folded, complemented, 0 sent as 0xffff.
fn independent_udp_checksum(frame: &[u8], ip: usize) -> u16 {
    let v4 = frame[ip] >> 4 == 4;
    let mut bytes = Vec::new();
    let udp = if v4 {
        let ihl = usize::from(frame[ip] & 15) * 4;
        bytes.extend_from_slice(&frame[ip + 12..ip + 20]);
        bytes.extend_from_slice(&[0, 17]);
        ip + ihl
    } else {
        bytes.extend_from_slice(&frame[ip + 8..ip + 40]);
        ip + 40
    };
    let len = usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]]));
    if v4 {
        bytes.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 17]);
    }
    let mut segment = frame[udp..udp + len].to_vec();
    segment[6..8].fill(0);
    bytes.extend_from_slice(&segment);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = 0;
    for w in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

fn udp_field(frame: &[u8], f: &UdpFrame) -> u16 {
    u16::from_be_bytes([frame[f.udp_offset + 6], frame[f.udp_offset + 7]])
}

#[test]
fn built_frames_parse_back() {
    for (src, dst) in PAIRS {
        for vlan in VLANS {
            for n in [0, 1, 2, 7, 8, 9, 1199, 1200, 1472] {
                let h = header(src, dst, vlan);
                let data = payload(n);
                let modes: &[UdpChecksum] = if h.src.is_ipv4() {
                    &[UdpChecksum::Full, UdpChecksum::Offload, UdpChecksum::None]
                } else {
                    &[UdpChecksum::Full, UdpChecksum::Offload]
                };
                for &mode in modes {
                    let f = frame(&h, &data, mode);
                    let p = parse(&f).unwrap();
                    assert_eq!(p.header(), h, "{src} {vlan:?} {n} {mode:?}");
                    assert_eq!(p.payload(&f), Some(&data[..]));
                    assert_eq!(p.payload_offset, header_len(&h));
                    assert_eq!(p.ip_offset, 14 + vlan.tags_len());
                    assert_eq!(p.udp_offset, p.payload_offset - 8);
                    assert_eq!(p.ecn(), 1);
                    if mode == UdpChecksum::Full {
                        assert!(udp_checksum_valid(&f, &p));
                        assert_eq!(udp_field(&f, &p), independent_udp_checksum(&f, p.ip_offset));
                    }
                }
            }
        }
    }
}

#[test]
fn a_known_ipv4_udp_frame() {
    // DNS query for example.com, 10.0.0.2:40000 → 10.0.0.1:53, odd length (29 bytes).
    let query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let h = header("10.0.0.2:40000", "10.0.0.1:53", Vlan::Untagged);
    let f = frame(&h, query, UdpChecksum::Full);
    let p = parse(&f).unwrap();
    assert_eq!(p.payload_len, 29);
    assert_eq!(udp_field(&f, &p), independent_udp_checksum(&f, 14));
    assert_eq!(
        &f[14..34],
        &[0x45, 0xb9, 0, 57, 0, 0, 0x40, 0, 57, 17, 0x2c, 0xf9, 10, 0, 0, 2, 10, 0, 0, 1],
        "IPv4 header, its checksum computed by hand"
    );
}

#[test]
fn every_truncation_is_an_error() {
    for (src, dst) in PAIRS {
        for vlan in VLANS {
            let f = frame(&header(src, dst, vlan), b"hello", UdpChecksum::Full);
            for cut in 0..f.len() {
                assert_eq!(
                    parse(&f[..cut]),
                    Err(PacketError::Truncated),
                    "{src} {vlan:?} {cut}"
                );
            }
        }
    }
}

#[test]
fn corrupted_frames_never_panic() {
    for (src, dst) in PAIRS {
        let f = frame(&header(src, dst, VLANS[2]), &payload(33), UdpChecksum::Full);
        for at in 0..f.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut g = f.clone();
                g[at] = v;
                if let Ok(p) = parse(&g) {
                    assert!(p.payload(&g).is_some());
                    let _ = udp_checksum_valid(&g, &p);
                }
            }
        }
    }
}

#[test]
fn ethernet_padding_is_ignored() {
    for (src, dst) in PAIRS {
        let mut f = frame(&header(src, dst, Vlan::Untagged), b"ab", UdpChecksum::Full);
        let len = f.len();
        f.resize(len.max(60) + 4, 0x5a);
        let p = parse(&f).unwrap();
        assert_eq!(p.payload(&f), Some(&b"ab"[..]));
        assert!(udp_checksum_valid(&f, &p));
    }
}

#[test]
fn a_udp_length_shorter_than_the_ip_payload_bounds_the_payload() {
    let mut f = frame(
        &header(PAIRS[0].0, PAIRS[0].1, Vlan::Untagged),
        b"abcdef",
        UdpChecksum::Full,
    );
    f[38..40].copy_from_slice(&11u16.to_be_bytes());
    assert_eq!(parse(&f).unwrap().payload(&f), Some(&b"abc"[..]));
    f[38..40].copy_from_slice(&15u16.to_be_bytes());
    assert_eq!(parse(&f), Err(PacketError::BadLength));
    f[38..40].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(parse(&f), Err(PacketError::BadLength));
}

#[test]
fn whole_frames_name_what_is_wrong() {
    let v4 = frame(
        &header(PAIRS[0].0, PAIRS[0].1, Vlan::Tagged(5)),
        b"x",
        UdpChecksum::Full,
    );
    let v6 = frame(
        &header(PAIRS[1].0, PAIRS[1].1, Vlan::Untagged),
        b"x",
        UdpChecksum::Full,
    );
    let mut arp = v4.clone();
    arp[16..18].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(parse(&arp), Err(PacketError::NotIp(0x0806)));
    // IPv6 bytes behind an IPv4 ethertype.
    let mut mixed = v6.clone();
    mixed[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse(&mixed), Err(PacketError::BadVersion(6)));
    let mut frag = v4.clone();
    frag[24] |= 0x20; // MF
    let old = u16::from_be_bytes([v4[24], v4[25]]);
    let new = u16::from_be_bytes([frag[24], frag[25]]);
    let sum = checksum::update(u16::from_be_bytes([v4[28], v4[29]]), old, new);
    frag[28..30].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(parse(&frag), Err(PacketError::Fragment));
    let mut hop_by_hop = v6.clone();
    hop_by_hop[20] = 0;
    assert_eq!(parse(&hop_by_hop), Err(PacketError::ExtensionHeader(0)));
}

#[test]
fn checksum_partial_frames_parse_and_offload_completes_to_full() {
    for (src, dst) in PAIRS {
        for n in [0, 1, 100, 1251] {
            let h = header(src, dst, Vlan::Tagged(7));
            let data = payload(n);
            let full = frame(&h, &data, UdpChecksum::Full);
            let partial = frame(&h, &data, UdpChecksum::Offload);
            // What a veth peer hands XDP: the field holds the pseudo-header sum only.
            let p = parse(&partial).unwrap();
            assert_eq!(p, parse(&full).unwrap());
            assert!(!udp_checksum_valid(&partial, &p), "{src} {n}");
            assert!(udp_checksum_valid(&full, &p));
            // The NIC's part: sum from csum_start to the end, complement, store.
            let o = checksum_offload(&h);
            let start = usize::from(o.csum_start);
            assert_eq!(start, p.udp_offset);
            let field = start + usize::from(o.csum_offset);
            let pseudo = udp::pseudo_header_sum(p.src.ip(), p.dst.ip(), (n + 8) as u16);
            assert_eq!(udp_field(&partial, &p), pseudo.fold());
            let mut completed = partial.clone();
            let c = checksum::Sum::new().add_bytes(&partial[start..]).finish();
            completed[field..field + 2]
                .copy_from_slice(&if c == 0 { 0xffff } else { c }.to_be_bytes());
            assert_eq!(completed, full);
        }
    }
}

#[test]
fn zero_udp_checksums() {
    let h = header(PAIRS[0].0, PAIRS[0].1, Vlan::Untagged);
    let f = frame(&h, b"abc", UdpChecksum::None);
    let p = parse(&f).unwrap();
    assert_eq!(udp_field(&f, &p), 0);
    assert!(
        udp_checksum_valid(&f, &p),
        "IPv4: none sent, nothing to check"
    );
    let mut f = frame(
        &header(PAIRS[1].0, PAIRS[1].1, Vlan::Untagged),
        b"abc",
        UdpChecksum::Full,
    );
    let p = parse(&f).unwrap();
    f[p.udp_offset + 6..p.udp_offset + 8].fill(0);
    assert_eq!(parse(&f), Ok(p));
    assert!(!udp_checksum_valid(&f, &p), "IPv6 forbids a zero checksum");
    // A corrupted payload fails; a parsed frame checked against another buffer fails.
    let mut f = frame(&h, b"abc", UdpChecksum::Full);
    f[42] ^= 1;
    assert!(!udp_checksum_valid(&f, &parse(&f).unwrap()));
    assert!(!udp_checksum_valid(&f[..20], &parse(&f).unwrap()));
}

#[test]
fn replies_go_back_to_the_next_hop() {
    for (src, dst) in PAIRS {
        for vlan in VLANS {
            let req = frame(&header(src, dst, vlan), b"ping", UdpChecksum::Full);
            let p = parse(&req).unwrap();
            let r = p.reply_header();
            assert_eq!((r.src_mac, r.dst_mac), (PROXY_MAC, CLIENT_MAC));
            assert_eq!((r.src, r.dst), (p.dst, p.src));
            assert_eq!((r.vlan, r.tos, r.hop_limit), (vlan, 0, DEFAULT_HOP_LIMIT));
            let reply = frame(&r, b"pong", UdpChecksum::Full);
            let back = parse(&reply).unwrap();
            assert_eq!(back.header(), r);
            assert_eq!(back.reply_header().dst, p.dst);
        }
    }
}

#[test]
fn labels_are_stable_and_distinct() {
    use PacketError::*;
    let all = [
        Truncated,
        NotIp(0x0806),
        BadVlan,
        BadVersion(5),
        BadHeaderLength,
        BadHeaderChecksum,
        Fragment,
        ExtensionHeader(44),
        NotUdp(6),
        BadLength,
        MappedAddress,
    ];
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert_eq!(e.label(), PacketError::LABELS[i]);
    }
    let mut labels = PacketError::LABELS.to_vec();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), all.len());
    assert_eq!(ExtensionHeader(0).label(), "extension_header");
    assert_eq!(Fragment.label(), "fragment");
    assert_eq!(Truncated.label(), "truncated");
}

#[test]
fn payload_accessors_refuse_other_buffers() {
    let f = frame(
        &header(PAIRS[0].0, PAIRS[0].1, Vlan::Untagged),
        b"abc",
        UdpChecksum::Full,
    );
    let p = parse(&f).unwrap();
    assert_eq!(p.payload_range(), 42..45);
    assert_eq!(p.payload(&f[..44]), None);
}
