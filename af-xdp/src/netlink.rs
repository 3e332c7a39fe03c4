//! What rtnetlink says of an interface: its XDP program (RTM_GETLINK, IFLA_XDP), queues and
//! MAC address, and the kernel's neighbour table (RTM_GETNEIGH).
//!
//! The program is named when an attach is refused, and tests see that a dropped link
//! really detached: netlink reports programs attached either way (BPF link or the old
//! netlink attach), which the BPF link list alone would not. The MAC is a reply frame's
//! source; the neighbour table gives the destination MAC of a peer no frame came from.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_ADDRESS: u16 = 1;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states a frame may be sent on: reachable, stale, delay, probe, noarp,
/// permanent (not incomplete or failed).
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
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
    /// Its hardware address (IFLA_ADDRESS; zero where it has none, as loopback).
    pub mac: [u8; 6],
}

/// The XDP program attached to `ifindex` in this network namespace, if any.
pub fn xdp_attached(ifindex: u32) -> Result<Option<Attached>> {
    Ok(link(ifindex)?.xdp)
}

/// The interface `ifindex` of this thread's network namespace (unlike /sys/class/net,
/// which shows the namespace sysfs was mounted in).
pub fn link(ifindex: u32) -> Result<Link> {
    let sock = socket()?;
    send(&sock, &request(ifindex), "RTM_GETLINK")?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = recv(&sock, &mut buf, "RTM_GETLINK")?;
    parse(&buf[..n])
}

/// The kernel's usable neighbour entry (ARP or NDP) for `ip` on interface `ifindex`.
pub fn neighbour(ifindex: u32, ip: IpAddr) -> Result<Option<[u8; 6]>> {
    let family = match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    let sock = socket()?;
    let len = 16 + 12;
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[family as u8, 0, 0, 0]); // struct ndmsg: family, pad
    req.extend_from_slice(&[0u8; 8]); // ifindex, state, flags, type: all
    send(&sock, &req, "RTM_GETNEIGH")?;
    let mut buf = vec![0u8; 64 * 1024];
    // A dump ends with NLMSG_DONE; bounded in reads as in time (SO_RCVTIMEO).
    for _ in 0..1024 {
        let n = recv(&sock, &mut buf, "RTM_GETNEIGH")?;
        let (found, done) = find_neighbour(&buf[..n], ifindex, ip);
        if found.is_some() || done || n == 0 {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The MAC of `ip` on `ifindex` in one read of a neighbour dump, and whether the dump
/// ended in it.
fn find_neighbour(buf: &[u8], ifindex: u32, ip: IpAddr) -> (Option<[u8; 6]>, bool) {
    let want = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut rest = buf;
    while let (Some(len), Some(kind)) = (u32_at(rest, 0), u16_at(rest, 4)) {
        let len = len as usize;
        let Some(msg) = rest.get(..len).filter(|_| len >= 16) else {
            break;
        };
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        match kind {
            NLMSG_DONE | NLMSG_ERROR => return (None, true),
            RTM_NEWNEIGH => {}
            _ => continue,
        }
        // struct ndmsg (12 bytes) after the header: family, pad x3, ifindex, state (u16),
        // flags, type.
        let (Some(index), Some(state)) = (u32_at(msg, 20), u16_at(msg, 24)) else {
            continue;
        };
        if index != ifindex || state & NUD_USABLE == 0 {
            continue;
        }
        let (mut dst, mut mac) = (None, None);
        for (t, v) in attrs(msg.get(28..).unwrap_or_default()) {
            match t {
                NDA_DST => dst = Some(v),
                NDA_LLADDR => mac = <[u8; 6]>::try_from(v).ok(),
                _ => {}
            }
        }
        if dst == Some(&want[..]) && mac.is_some() {
            return (mac, false);
        }
    }
    (None, false)
}

/// An rtnetlink socket whose reads give up after 2 s.
fn socket() -> Result<OwnedFd> {
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
    Ok(sock)
}

/// Sends `req` to the kernel (a connectionless netlink send goes to the kernel).
fn send(sock: &OwnedFd, req: &[u8], what: &'static str) -> Result<()> {
    // SAFETY: `req` is a live buffer of the length given.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(Error::sys(what, io::Error::last_os_error()));
    }
    Ok(())
}

fn recv(sock: &OwnedFd, buf: &mut [u8], what: &'static str) -> Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(Error::sys(what, io::Error::last_os_error()));
    }
    Ok(n as usize)
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
        mac: [0; 6],
    };
    let mut xdp = None;
    for (t, v) in attrs(msg.get(32..).ok_or_else(bad)?) {
        match t {
            IFLA_XDP => xdp = Some(v),
            IFLA_NUM_RX_QUEUES => out.rx_queues = u32_at(v, 0).unwrap_or(1),
            IFLA_NUM_TX_QUEUES => out.tx_queues = u32_at(v, 0).unwrap_or(1),
            IFLA_ADDRESS => out.mac = <[u8; 6]>::try_from(v).unwrap_or([0; 6]),
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
                tx_queues: 1,
                mac: [0; 6],
            }
        );
        // The kernel answers a neighbour dump; loopback has no entries.
        assert_eq!(neighbour(1, "127.0.0.1".parse().unwrap()).unwrap(), None);
    }

    /// One RTM_NEWNEIGH message as the kernel lays it out.
    fn entry(ifindex: u32, state: u16, dst: &[u8], mac: &[u8]) -> Vec<u8> {
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        for (kind, value) in [(NDA_DST, dst), (NDA_LLADDR, mac)] {
            body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut msg = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn a_usable_entry_of_the_interface_is_found_and_no_other() {
        let mac = [2, 0, 0, 0, 0, 9];
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        let mut dump = entry(
            3,
            0x20, /* failed */
            &[198, 18, 0, 2],
            &[2, 0, 0, 0, 0, 1],
        );
        dump.extend(entry(4, 0x02, &[198, 18, 0, 2], &[2, 0, 0, 0, 0, 4]));
        dump.extend(entry(3, 0x04 /* stale */, &[198, 18, 0, 2], &mac));
        assert_eq!(find_neighbour(&dump, 3, ip), (Some(mac), false));
        assert_eq!(
            find_neighbour(&dump, 3, "198.18.0.3".parse().unwrap()),
            (None, false)
        );
        assert_eq!(find_neighbour(&dump, 5, ip), (None, false));
        let mut done = dump.clone();
        done.extend_from_slice(&16u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0u8; 10]);
        assert_eq!(find_neighbour(&done, 5, ip), (None, true));
        // Cut anywhere: no panic.
        for cut in 0..dump.len() {
            let _ = find_neighbour(&dump[..cut], 3, ip);
        }
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        let e = xdp_attached(0x7fff_fff0).unwrap_err();
        assert!(e.to_string().contains("RTM_GETLINK"), "{e}");
    }
}
