//! Ethernet frames from the wire: any bytes either parse into a UDP frame whose payload
//! lies inside them or fail with a named error; a parsed frame's header and payload,
//! built again in every checksum mode, parse back the same, with a valid UDP checksum
//! when it is computed in full; the checksum sums the same however the bytes are split.
//! Each input is also tried with its IP and UDP lengths and IPv4 header checksum made
//! right, so the fuzzer reaches whole frames without having to solve those.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::packet::{self, checksum, checksum::Sum, header_len, write_headers, UdpChecksum};

/// Makes the length fields agree with the bytes present (IPv4 total length, IPv6 payload
/// length, UDP length) and the IPv4 header checksum right, where the frame's first
/// ethertype says the IP header is; returns whether anything changed.
fn fix_up(frame: &mut [u8]) -> bool {
    let at = match frame.get(12..14) {
        Some([0x81, 0x00]) => 18,
        Some([0x88, 0xa8]) => 22,
        _ => 14,
    };
    let before = frame.to_vec();
    let Some(&first) = frame.get(at) else {
        return false;
    };
    let ip_len = frame.len().saturating_sub(at).min(0xffff);
    let put = |frame: &mut [u8], i: usize, v: usize| {
        if let Some(b) = frame.get_mut(i..i + 2) {
            b.copy_from_slice(&(v as u16).to_be_bytes());
        }
    };
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || ip_len < ihl {
                return false;
            }
            put(frame, at + 2, ip_len);
            put(frame, at + ihl + 4, ip_len - ihl);
            if let Some(h) = frame.get_mut(at..at + ihl) {
                h[10..12].fill(0);
                let sum = checksum::checksum(h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
            }
        }
        6 if ip_len >= 40 => {
            put(frame, at + 4, ip_len - 40);
            put(frame, at + 44, ip_len - 40);
        }
        _ => return false,
    }
    frame != &before[..]
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    if fix_up(&mut fixed) {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let p = match packet::parse(data) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.label().is_empty());
            return;
        }
    };
    let payload = p.payload(data).expect("the payload lies inside the frame");
    assert!(p.ip_offset < p.udp_offset && p.udp_offset + 8 == p.payload_offset);
    let _ = packet::udp_checksum_valid(data, &p);

    let h = p.header();
    let at = header_len(&h);
    let mut buf = vec![0u8; at + payload.len()];
    for mode in [UdpChecksum::Full, UdpChecksum::Offload, UdpChecksum::None] {
        buf[at..].copy_from_slice(payload);
        let n = match write_headers(&mut buf, &h, payload.len(), mode) {
            Ok(n) => n,
            Err(e) => {
                assert!(mode == UdpChecksum::None && p.src.is_ipv6(), "{e}");
                continue;
            }
        };
        assert_eq!(n, buf.len());
        let again = packet::parse(&buf).expect("a built frame parses");
        assert_eq!(again.header(), h);
        assert_eq!(again.payload(&buf), Some(payload));
        if mode == UdpChecksum::Full {
            assert!(packet::udp_checksum_valid(&buf, &again));
        }
    }

    let reply = p.reply_header();
    buf[at..].copy_from_slice(payload);
    assert_eq!(header_len(&reply), at);
    write_headers(&mut buf, &reply, payload.len(), UdpChecksum::Full).expect("a reply builds");
    let back = packet::parse(&buf).expect("a reply parses");
    assert_eq!(
        (back.src, back.dst, back.src_mac),
        (p.dst, p.src, p.dst_mac)
    );

    let split = payload.len() / 2 * 2;
    let whole = Sum::new().add_bytes(payload).fold();
    let (a, b) = payload.split_at(split);
    assert_eq!(Sum::new().add_bytes(a).add_bytes(b).fold(), whole);
}
