//! A SOCKS5 UDP ASSOCIATE client written out by hand, for what real clients cannot do (bad
//! input, foreign sources, the reply's address).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use super::{socks5, Dest, Proxy};

pub const UDP_ASSOCIATE: u8 = 3;

/// Opens an association by hand: the control connection and the relay address replied.
pub fn associate(
    proxy: &Proxy,
    creds: Option<(&str, &str)>,
    requested: SocketAddr,
) -> (TcpStream, SocketAddr) {
    socks5(proxy.addr, Dest::Addr(requested), creds, UDP_ASSOCIATE).expect("UDP ASSOCIATE granted")
}

/// A client UDP socket on loopback that gives up waiting after `ms`.
pub fn client_socket(ms: u64) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
    s
}

/// A SOCKS UDP datagram to `dest`, written out by hand.
pub fn wrap(dest: Dest<'_>, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, 0];
    match dest {
        Dest::Addr(SocketAddr::V4(a)) => {
            d.push(1);
            d.extend_from_slice(&a.ip().octets());
            d.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Addr(SocketAddr::V6(a)) => {
            d.push(4);
            d.extend_from_slice(&a.ip().octets());
            d.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Name(h, p) => {
            d.push(3);
            d.push(h.len() as u8);
            d.extend_from_slice(h.as_bytes());
            d.extend_from_slice(&p.to_be_bytes());
        }
    }
    d.extend_from_slice(payload);
    d
}

/// The source a reply names and its payload.
pub fn unwrap(d: &[u8]) -> (SocketAddr, Vec<u8>) {
    assert_eq!(&d[..3], &[0, 0, 0], "reserved and fragment bytes");
    match d[3] {
        1 => {
            let ip: [u8; 4] = d[4..8].try_into().unwrap();
            let port = u16::from_be_bytes([d[8], d[9]]);
            (SocketAddr::from((ip, port)), d[10..].to_vec())
        }
        4 => {
            let ip: [u8; 16] = d[4..20].try_into().unwrap();
            let port = u16::from_be_bytes([d[20], d[21]]);
            (SocketAddr::from((ip, port)), d[22..].to_vec())
        }
        t => panic!("reply with address type {t}"),
    }
}

/// Sends `payload` to `dest` through the relay and returns the echo, if one comes.
pub fn round_trip(
    s: &UdpSocket,
    relay: SocketAddr,
    dest: Dest<'_>,
    payload: &[u8],
) -> Option<(SocketAddr, Vec<u8>)> {
    s.send_to(&wrap(dest, payload), relay).unwrap();
    let mut buf = vec![0u8; 70_000];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            assert_eq!(from, relay, "replies come from the relay");
            Some(unwrap(&buf[..n]))
        }
        Err(_) => None,
    }
}
