//! UDP sockets of the shards. The QUIC socket is one of the SO_REUSEPORT group on the proxy's port,
//! with socket buffers sized for bulk, generic receive offload (the kernel hands over several
//! datagrams of one flow in one read, `UDP_GRO`) and segmentation offload on send (one
//! `sendmsg` carries a train of equal-sized datagrams, `UDP_SEGMENT`). Reads and writes are
//! direct non-blocking syscalls after the runtime reports readiness.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use crate::sys;

mod batch;
pub use batch::{RecvBatch, SendBatch, BATCH};

/// Bytes asked for each socket buffer; the kernel caps them at net.core.{r,w}mem_max.
const SOCKET_BUFFER: usize = 4 << 20;
/// The largest UDP payload of either family that the relays carry (IPv6 can carry a
/// little more than IPv4's 65,507 bytes on loopback; nothing real sends that much).
pub const MAX_PAYLOAD: usize = 65_527;
/// Datagrams one GSO send may carry (the kernel allows up to 64 on this path).
pub const MAX_GSO_SEGMENTS: usize = 32;

/// What the kernel offers this socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    pub gro: bool,
    pub gso: bool,
}

/// Binds one UDP socket of the reuseport group on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<(Socket, Offloads)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_buffers(&socket, SOCKET_BUFFER, SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    let fd = socket.as_raw_fd();
    count_overflows(fd);
    let offloads = Offloads {
        gro: set_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok(),
        gso: get_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok(),
    };
    Ok((socket, offloads))
}

/// A UDP socket connected to `peer` (a CONNECT-UDP flow's upstream side), with a receive
/// buffer of `recv_buffer` bytes that holds a burst while the client is slower, and the
/// kernel's drop count reported on each read.
pub fn connected(peer: SocketAddr, recv_buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))?;
    set_buffers(&socket, recv_buffer, 0);
    count_overflows(socket.as_raw_fd());
    socket.connect(&peer.into())?;
    Ok(socket)
}

/// The client-facing socket of a SOCKS5 UDP association: bound to `ip` (the address the
/// client reached the proxy on) and a port of `ports` (any when `None`), with both buffers of
/// `buffer` bytes and the kernel's drop count on each read.
pub fn relay(ip: IpAddr, ports: Option<(u16, u16)>, buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address((ip, 0).into()),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if ip.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_buffers(&socket, buffer, buffer);
    count_overflows(socket.as_raw_fd());
    let Some((low, high)) = ports else {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
        return Ok(socket);
    };
    // Start at a random port of the range so that associations spread over it, then take
    // the first free one.
    let span = u32::from(high - low) + 1;
    let mut seed = [0u8; 4];
    let _ = getrandom::getrandom(&mut seed);
    let first = u32::from_le_bytes(seed) % span;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    for k in 0..span {
        let port = low + ((first + k) % span) as u16;
        match socket.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => return Ok(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// An unconnected socket toward any destination of both families: IPv6 with IPv4 mapped
/// (one descriptor per association), or IPv4 only where the host has no IPv6.
pub fn any_destination(recv_buffer: usize) -> io::Result<Socket> {
    let dual = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|s| {
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())?;
        Ok(s)
    });
    let socket = match dual {
        Ok(s) => s,
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)).into())?;
            s
        }
    };
    set_buffers(&socket, recv_buffer, 0);
    count_overflows(socket.as_raw_fd());
    Ok(socket)
}

/// Sizes the socket buffers (0: the kernel's default). The FORCE options pass
/// net.core.{r,w}mem_max for a process with CAP_NET_ADMIN; without it the plain options
/// give what the sysctls allow.
fn set_buffers(socket: &Socket, recv: usize, send: usize) {
    let fd = socket.as_raw_fd();
    let clamp = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    if recv > 0 && set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, clamp(recv)).is_err() {
        let _ = socket.set_recv_buffer_size(recv);
    }
    if send > 0 && set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, clamp(send)).is_err() {
        let _ = socket.set_send_buffer_size(send);
    }
}

/// Asks for the count of datagrams the kernel dropped on this socket (SO_RXQ_OVFL) with
/// every read; a kernel without it just reports none.
fn count_overflows(fd: RawFd) {
    let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
}

fn set_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a plain int option on our own descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value = 0i32;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for the kernel to write.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One read: `len` bytes from `from`, made of datagrams of `stride` bytes each (the last
/// may be shorter) when GRO coalesced several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub from: SocketAddr,
    pub len: usize,
    pub stride: usize,
    /// Datagrams the kernel had dropped on this socket (its buffer full) when this one was
    /// queued, if any: a running count that wraps at 2^32.
    pub overflows: Option<u32>,
    /// The datagram was larger than the buffer: `len` is what the buffer holds, only its
    /// start (recvmsg is not asked for the whole size).
    pub truncated: bool,
}

/// Follows a socket's running drop count and yields what is new since the last read.
#[derive(Debug, Default)]
pub struct Overflows(Option<u32>);

impl Overflows {
    pub fn new_since(&mut self, r: &Received) -> u64 {
        r.overflows.map_or(0, |now| self.catch_up(now))
    }

    /// Takes `total` (the socket's running count, from [`drops`]) and yields what is new.
    pub fn catch_up(&mut self, total: u32) -> u64 {
        let before = self.0.replace(total).unwrap_or(0);
        u64::from(total.wrapping_sub(before))
    }
}

/// Datagrams the kernel has dropped on this socket so far (`SO_MEMINFO`). A read reports
/// drops only on the next datagram queued after them; this also sees those at the end.
pub fn drops(fd: RawFd) -> Option<u32> {
    // SK_MEMINFO_VARS: the kernel's count of fields (libc does not name it).
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for the kernel to write, `len` is their size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| info[libc::SK_MEMINFO_DROPS as usize])
}

/// Control-message space for one int-sized message.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Reads what is queued into `buf` without waiting (`WouldBlock`: nothing).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut addr = SockAddrStorage::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: msghdr is a plain C struct; zero is a valid start.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut SockAddrStorage).cast();
    msg.msg_namelen = addr.size_of();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    // SAFETY: every pointer in `msg` refers to a live local buffer of the stated size.
    let n = sys::check(unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) })?;
    // SAFETY: the kernel filled `msg` (name, control) for a datagram of `n` bytes.
    unsafe { received(&msg, &addr, n) }
}

/// What the kernel said of one datagram: its source, length and GRO stride, and the
/// socket's drop count.
///
/// # Safety
/// `msg` must be a `msghdr` the kernel has just filled, whose name points at `addr`.
unsafe fn received(msg: &libc::msghdr, addr: &SockAddrStorage, len: usize) -> io::Result<Received> {
    let mut stride = len;
    let mut overflows = None;
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                overflows = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
                if size > 0 {
                    stride = size as usize;
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    // SAFETY: the kernel filled `addr` with `msg_namelen` bytes of a socket address; the
    // storage is plain bytes, so reading a copy of it is sound.
    let from = unsafe { SockAddr::new(std::ptr::read(addr), msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
    Ok(Received {
        from,
        len,
        stride,
        overflows,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// Sends `data` to `to` without waiting; with `segment` set, as datagrams of that size (GSO).
pub fn send(fd: RawFd, to: SocketAddr, data: &[u8], segment: Option<usize>) -> io::Result<usize> {
    let to = SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = to.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(size) = segment.filter(|s| *s < data.len()) {
        let value = size as u16;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE of a u16 fits in the 64-byte buffer; the header and data are
        // written through the libc macros over that buffer.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), value);
        }
    }
    // SAFETY: every pointer in `msg` refers to live memory of the stated size.
    sys::check(unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn recv_blocking(fd: RawFd, buf: &mut [u8]) -> Received {
        let start = Instant::now();
        loop {
            match recv(fd, buf) {
                Ok(r) => return r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < Duration::from_secs(5), "nothing arrived");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A GSO train of 10 datagrams leaves as 10 datagrams; a GRO receiver gets them back
    /// in one or more reads whose strides split them at the original boundaries.
    #[test]
    fn gso_trains_arrive_as_datagrams_and_gro_reads_split_right() {
        let (rx, offloads) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(
            offloads.gro && offloads.gso,
            "this kernel has both: {offloads:?}"
        );
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let data: Vec<u8> = (0..10 * 1200).map(|i| (i / 1200) as u8).collect();
        assert_eq!(
            send(tx.as_raw_fd(), to, &data, Some(1200)).unwrap(),
            data.len()
        );
        send(tx.as_raw_fd(), to, b"tail", None).unwrap();

        let mut buf = vec![0u8; 65536];
        let mut datagrams = Vec::new();
        while datagrams.len() < 11 {
            let r = recv_blocking(rx.as_raw_fd(), &mut buf);
            assert_eq!(r.from, tx.local_addr().unwrap().as_socket().unwrap());
            datagrams.extend(buf[..r.len].chunks(r.stride).map(<[u8]>::to_vec));
        }
        for (i, d) in datagrams[..10].iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1200]);
        }
        assert_eq!(datagrams[10], b"tail");
    }

    #[test]
    fn overflow_counts_yield_what_is_new_across_the_wrap() {
        let read = |overflows| Received {
            from: "127.0.0.1:1".parse().unwrap(),
            len: 1,
            stride: 1,
            overflows,
            truncated: false,
        };
        let mut o = Overflows::default();
        assert_eq!(o.new_since(&read(None)), 0);
        assert_eq!(o.new_since(&read(Some(5))), 5);
        assert_eq!(o.new_since(&read(None)), 0);
        assert_eq!(o.new_since(&read(Some(7))), 2);
        let mut o = Overflows(Some(u32::MAX - 1));
        assert_eq!(o.new_since(&read(Some(1))), 3);
    }

    /// A socket whose buffer overflows reports the drops on its next read.
    #[test]
    fn a_full_receive_buffer_reports_its_drops() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        rx.set_recv_buffer_size(4096).unwrap();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 1000], to).unwrap();
        }
        let mut buf = vec![0u8; 65536];
        // Each datagram carries the count as it was when it was queued: the ones queued
        // before the drops say nothing, the next one after them says how many.
        while recv(rx.as_raw_fd(), &mut buf).is_ok() {}
        tx.send_to(b"after", to).unwrap();
        let r = recv_blocking(rx.as_raw_fd(), &mut buf);
        let mut o = Overflows::default();
        let seen = o.new_since(&r);
        assert!(seen > 100, "{r:?}");
        assert_eq!(drops(rx.as_raw_fd()).map(|d| o.catch_up(d)), Some(0));
        assert_eq!(u64::from(drops(rx.as_raw_fd()).unwrap()), seen);
    }
}
