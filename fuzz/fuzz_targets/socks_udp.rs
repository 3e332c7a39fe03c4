//! SOCKS5 UDP datagrams from clients: any bytes either parse into a header that lies inside
//! the datagram and encodes back to the same destination, or fail with a named error; a
//! reply header built for any source address parses back to that address.
#![no_main]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use proto::socks5::udp::{self, REPLY_ROOM};
use proto::TargetAddr;

fn canonical(t: &TargetAddr) -> TargetAddr {
    match t {
        TargetAddr::Ip(a) => match a.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => TargetAddr::Ip(SocketAddr::new(v4.into(), a.port())),
                None => t.clone(),
            },
            IpAddr::V4(_) => t.clone(),
        },
        TargetAddr::Domain(..) => t.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = udp::parse(data) {
        assert!(h.len <= data.len() && h.len <= udp::MAX_HEADER);
        assert_ne!(h.target.port(), 0);
        let mut again = Vec::new();
        udp::encode(&h.target, &mut again).expect("a parsed target encodes");
        again.extend_from_slice(&data[h.len..]);
        let back = udp::parse(&again).expect("re-encoded header parses");
        // IPv4-mapped IPv6 addresses are written as IPv4: the same destination.
        assert_eq!(canonical(&back.target), canonical(&h.target));
        assert_eq!(&again[back.len..], &data[h.len..]);
    }
    if let Some(bytes) = data.get(..18) {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&bytes[..16]);
        let ip = Ipv6Addr::from(octets);
        let port = u16::from_be_bytes([bytes[16], bytes[17]]);
        for from in [
            SocketAddr::new(IpAddr::V6(ip), port),
            SocketAddr::new(IpAddr::V4([bytes[0], bytes[1], bytes[2], bytes[3]].into()), port),
        ] {
            let mut room = [0u8; REPLY_ROOM];
            let start = udp::prepend_reply_header(from, &mut room);
            assert_eq!(REPLY_ROOM - start, udp::reply_header_len(from));
            if port != 0 {
                let h = udp::parse(&room[start..]).expect("reply header parses");
                let expect = match ip.to_ipv4_mapped() {
                    Some(v4) if from.is_ipv6() => SocketAddr::new(v4.into(), port),
                    _ => from,
                };
                assert_eq!(h.target, TargetAddr::Ip(expect));
                assert_eq!(h.len, REPLY_ROOM - start);
            }
        }
    }
});
