//! The UDP echo the datagram benchmarks send to.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// A UDP echo on loopback, one thread; stops after 30 s without a datagram.
pub fn udp_echo(port: u16) -> SocketAddr {
    let socket = UdpSocket::bind(("127.0.0.1", port)).expect("bind UDP echo");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}
