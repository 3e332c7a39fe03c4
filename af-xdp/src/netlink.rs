//! Which XDP program an interface has, asked over rtnetlink (RTM_GETLINK, IFLA_XDP).
//!
//! Used to name the program holding an interface when an attach is refused, and by tests
//! to see that a dropped link really detached. Netlink reports programs attached either
//! way (BPF link or the old netlink attach), which the BPF link list alone would not.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// How a program is attached (IFLA_XDP_ATTACHED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// In the driver (native).
    Driver,
    /// Generic, on the skb path.
    Generic,
    /// Offloaded to the NIC.
    Hardware,
    /// Several at once (then `prog_id` is 0).
    Multiple,
}

/// The XDP program an interface has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The program's id (0 when several are attached).
    pub prog_id: u32,
    /// How.
    pub mode: AttachedMode,
}

/// What rtnetlink says of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its XDP program, if any.
    pub xdp: Option<Attached>,
    /// RX queues (IFLA_NUM_RX_QUEUES).
    pub rx_queues: u32,
    /// TX queues (IFLA_NUM_TX_QUEUES).
    pub tx_queues: u32,
}

/// The XDP program attached to `ifindex` in this network namespace, if any.
pub fn xdp_attached(ifindex: u32) -> Result<Option<Attached>> {
    Ok(link(ifindex)?.xdp)
}

/// The interface `ifindex` of this thread's network namespace (unlike /sys/class/net,
/// which shows the namespace sysfs was mounted in).
pub fn link(ifindex: u32) -> Result<Link> {
    let sys = |op| move |e| Error::sys(op, e);
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(sys("socket(AF_NETLINK)")(io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor, owned from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: `timeout` is a timeval of the size given; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(sys("setsockopt(SO_RCVTIMEO)")(io::Error::last_os_error()));
    }

    let req = request(ifindex);
    // SAFETY: `req` is a live buffer of the length given; to the kernel (netlink default
    // destination of a connectionless send is the kernel).
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(sys("send(RTM_GETLINK)")(io::Error::last_os_error()));
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(sys("recv(RTM_GETLINK)")(io::Error::last_os_error()));
    }
    parse(&buf[..n as usize])
}

/// RTM_GETLINK for one interface, without statistics.
fn request(ifindex: u32) -> Vec<u8> {
    let len = 16 + 16 + 8;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]); // flags, change
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
    m.extend_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Netlink attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((kind, payload))
    })
}

fn parse(reply: &[u8]) -> Result<Link> {
    let bad = || Error::Invalid("malformed RTM_NEWLINK reply".into());
    let len = u32_at(reply, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(reply, 4).ok_or_else(bad)?;
    let msg = reply.get(..len).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(msg, 16).ok_or_else(bad)? as i32;
        let e = io::Error::from_raw_os_error(-errno);
        return Err(Error::sys("RTM_GETLINK", e));
    }
    if kind != RTM_NEWLINK {
        return Err(bad());
    }
    let mut out = Link {
        xdp: None,
        rx_queues: 1,
        tx_queues: 1,
    };
    let mut xdp = None;
    for (t, v) in attrs(msg.get(32..).ok_or_else(bad)?) {
        match t {
            IFLA_XDP => xdp = Some(v),
            IFLA_NUM_RX_QUEUES => out.rx_queues = u32_at(v, 0).unwrap_or(1),
            IFLA_NUM_TX_QUEUES => out.tx_queues = u32_at(v, 0).unwrap_or(1),
            _ => {}
        }
    }
    let Some(xdp) = xdp else {
        return Ok(out);
    };
    let mut mode = None;
    let mut prog_id = 0;
    for (t, v) in attrs(xdp) {
        match t {
            IFLA_XDP_ATTACHED => {
                mode = match v.first() {
                    Some(1) => Some(AttachedMode::Driver),
                    Some(2) => Some(AttachedMode::Generic),
                    Some(3) => Some(AttachedMode::Hardware),
                    Some(4) => Some(AttachedMode::Multiple),
                    _ => None,
                }
            }
            IFLA_XDP_PROG_ID => prog_id = u32_at(v, 0).unwrap_or(0),
            _ => {}
        }
    }
    out.xdp = mode.map(|mode| Attached { prog_id, mode });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_program_and_one_queue() {
        assert_eq!(
            link(1).unwrap(),
            Link {
                xdp: None,
                rx_queues: 1,
                tx_queues: 1
            }
        );
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        let e = xdp_attached(0x7fff_fff0).unwrap_err();
        assert!(e.to_string().contains("RTM_GETLINK"), "{e}");
    }
}
