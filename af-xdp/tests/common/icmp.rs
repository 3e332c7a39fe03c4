//! Echo requests over raw sockets (no ping(8) on the machine): does the kernel behind the
//! XDP program still answer ICMP?

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::frame::checksum;

/// Sends one echo request to `dst` and waits up to `timeout` for its reply.
pub fn ping(dst: IpAddr, timeout: Duration) -> bool {
    let (domain, proto, request, reply) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    // SAFETY: plain socket(2), checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let id = (std::process::id() as u16).to_be_bytes();
    let mut msg = vec![request, 0, 0, 0, id[0], id[1], 0, 1];
    msg.extend_from_slice(b"zcproxy af-xdp ping");
    if request == 8 {
        let c = checksum(&msg); // ICMPv6's is filled in by the kernel
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let to = socket2_addr(SocketAddr::new(dst, 0));
    // SAFETY: msg and the address are live for the call.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            to.0.as_ptr().cast(),
            to.1,
        )
    };
    assert!(rc >= 0, "sendto: {}", std::io::Error::last_os_error());
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        if unsafe { libc::poll(&mut p, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: buf is writable.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let b = &buf[..n as usize];
        // IPv4 raw sockets deliver the IP header too; ICMPv6 ones do not.
        let icmp = if request == 8 {
            &b[usize::from(b[0] & 0x0f) * 4..]
        } else {
            b
        };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id {
            return true;
        }
    }
    false
}

/// A sockaddr for `a`, as (bytes, length).
fn socket2_addr(a: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = libc::AF_INET as u16;
            s.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            let len = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: reading the struct's bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts((&s as *const libc::sockaddr_in).cast::<u8>(), len)
            };
            (bytes.to_vec(), len as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as u16;
            s.sin6_addr.s6_addr = v6.ip().octets();
            let len = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: reading the struct's bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts((&s as *const libc::sockaddr_in6).cast::<u8>(), len)
            };
            (bytes.to_vec(), len as libc::socklen_t)
        }
    }
}
