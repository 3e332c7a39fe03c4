//! Keeping each QUIC connection on the core that owns it.
//!
//! Every connection ID this proxy issues carries the owning shard in its first byte. The
//! shards' UDP sockets form one SO_REUSEPORT group, bound in shard order (so a socket's
//! index in the group is its shard), and a classic BPF program attached to the group reads
//! the destination connection ID of each datagram and picks the socket: a client that
//! migrates or is NAT-rebound keeps landing on the same core without any lookup shared
//! between cores. A client's first Initial carries a connection ID of its own choosing; the
//! same rule maps it to some shard, deterministically, so its retransmissions and 0-RTT
//! packets (same ID) follow, and the connection IDs that shard issues then keep it there.
//! Where the program cannot be attached, [`owner`] tells a shard which shard a datagram
//! belongs to, so that it can hand it over.

use std::io;
use std::os::fd::AsRawFd;

/// Length of the connection IDs this proxy issues: the shard byte plus 7 random bytes.
pub const CID_LEN: usize = 8;
/// Offset of the destination connection ID in a long-header packet: flags (1), version (4),
/// DCID length (1).
const LONG_DCID: u32 = 6;
/// Offset of the destination connection ID in a short-header packet: flags (1).
const SHORT_DCID: u32 = 1;

/// Most shards one group can steer to (the shard is one byte of the connection ID).
pub const MAX_SHARDS: usize = 256;

/// The shard a datagram's destination connection ID points at, as the BPF program decides
/// it. `None` for a datagram too short to carry one.
pub fn owner(datagram: &[u8], shards: usize) -> Option<usize> {
    let first = *datagram.first()?;
    let at = if first & 0x80 != 0 {
        LONG_DCID
    } else {
        SHORT_DCID
    };
    let byte = *datagram.get(at as usize)?;
    Some(usize::from(byte) % shards.max(1))
}

/// Whether a datagram may open a connection: a long-header Initial or 0-RTT packet (QUIC
/// v1 or v2), or a version this endpoint does not know (answered statelessly). Its
/// destination connection ID is the client's own choice, so it names no core; a core that
/// reads one keeps it, and the connection IDs it issues then point back at itself. Every
/// datagram of that client's address and port reaches the same socket or NIC queue.
pub fn opens_connection(datagram: &[u8]) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let Some(version) = datagram.get(1..5) else {
        return false;
    };
    let kind = (first >> 4) & 0x03;
    match u32::from_be_bytes([version[0], version[1], version[2], version[3]]) {
        // RFC 9000: Initial 0, 0-RTT 1.
        1 => kind <= 1,
        // RFC 9369: Initial 1, 0-RTT 2.
        0x6b33_43cf => kind == 1 || kind == 2,
        _ => true,
    }
}

/// The classic BPF program for SO_ATTACH_REUSEPORT_CBPF. The kernel runs it with the packet
/// data starting at the UDP payload and uses the returned value as the socket's index in the
/// group; a load past the end aborts the program, which then returns 0.
pub fn program(shards: usize) -> Vec<libc::sock_filter> {
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const MOD: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
    const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        // A = flags; long header (0x80 set)? fall through : skip one.
        op(LD_B_ABS, 0, 0, 0),
        op(JSET, 0, 2, 0x80),
        op(LD_B_ABS, 0, 0, LONG_DCID),
        op(libc::BPF_JMP as u16 | libc::BPF_JA as u16, 0, 0, 1),
        op(LD_B_ABS, 0, 0, SHORT_DCID),
        op(MOD, 0, 0, shards.clamp(1, MAX_SHARDS) as u32),
        op(RET_A, 0, 0, 0),
    ]
}

/// Attaches the steering program to the reuseport group `socket` belongs to.
pub fn attach(socket: &impl AsRawFd, shards: usize) -> io::Result<()> {
    let mut filter = program(shards);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_and_0rtt_open_connections_other_packets_do_not() {
        let long = |first: u8, version: u32| {
            let mut d = vec![first];
            d.extend_from_slice(&version.to_be_bytes());
            d.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
            d
        };
        assert!(opens_connection(&long(0xc0, 1)), "v1 Initial");
        assert!(opens_connection(&long(0xd0, 1)), "v1 0-RTT");
        assert!(!opens_connection(&long(0xe0, 1)), "v1 Handshake");
        assert!(!opens_connection(&long(0xf0, 1)), "v1 Retry");
        assert!(opens_connection(&long(0xd0, 0x6b33_43cf)), "v2 Initial");
        assert!(!opens_connection(&long(0xc0, 0x6b33_43cf)), "v2 Retry");
        assert!(
            opens_connection(&long(0xc0, 0x1a2a_3a4a)),
            "an unknown version"
        );
        assert!(!opens_connection(&[0x40, 0, 1, 2]), "short header");
        assert!(!opens_connection(&[0xc0, 0, 0]), "cut short");
        assert!(!opens_connection(&[]));
    }
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    fn group(n: usize) -> (Vec<UdpSocket>, SocketAddr) {
        let mut socks: Vec<UdpSocket> = Vec::new();
        let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for _ in 0..n {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            let s: UdpSocket = s.into();
            addr = s.local_addr().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            socks.push(s);
        }
        (socks, addr)
    }

    fn short(shard_byte: u8) -> Vec<u8> {
        let mut p = vec![0x40, shard_byte];
        p.extend_from_slice(&[0xee; 30]);
        p
    }

    fn long(shard_byte: u8) -> Vec<u8> {
        let mut p = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8, shard_byte];
        p.extend_from_slice(&[0xee; 30]);
        p
    }

    /// The kernel, running the program, delivers each datagram to the socket [`owner`] names,
    /// from any source port (a migrating client), for long and short headers.
    #[test]
    fn the_kernel_steers_by_connection_id_as_owner_says() {
        const SHARDS: usize = 3;
        let (socks, addr) = group(SHARDS);
        attach(&socks[0], SHARDS).unwrap();
        for source_port in 0..4 {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            for byte in [0u8, 1, 2, 3, 7, 200, 255] {
                for packet in [short(byte), long(byte)] {
                    let want = owner(&packet, SHARDS).unwrap();
                    assert_eq!(want, usize::from(byte) % SHARDS);
                    client.send_to(&packet, addr).unwrap();
                    let mut buf = [0u8; 64];
                    let (n, _) = socks[want].recv_from(&mut buf).unwrap_or_else(|e| {
                        panic!("shard {want} got nothing ({e}), port {source_port}")
                    });
                    assert_eq!(&buf[..n], &packet[..]);
                }
            }
        }
        for (i, s) in socks.iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            assert!(
                s.recv_from(&mut [0u8; 64]).is_err(),
                "socket {i} got a stray datagram"
            );
        }
    }

    #[test]
    fn datagrams_too_short_have_no_owner() {
        assert_eq!(owner(&[], 4), None);
        assert_eq!(owner(&[0x40], 4), None);
        assert_eq!(owner(&[0xc0, 0, 0, 0, 1, 8], 4), None);
        assert_eq!(owner(&[0x40, 6], 4), Some(2));
    }
}
