//! Attaching the program to an interface, through a BPF link.
//!
//! **Crash safety.** The program is attached with BPF_LINK_CREATE (kernel ≥ 5.9), not with
//! the older netlink attach. A link lives as long as a descriptor refers to it (it is never
//! pinned here): dropping [`XdpLink`] closes it, and when the process exits or crashes the
//! kernel closes every descriptor it held, so the program detaches by itself and a
//! restarted proxy finds the interface free. A netlink attach would stay on the interface
//! after a crash, feeding an XSKMAP nobody reads. A link also cannot be replaced by someone
//! else's netlink attach, and our attach never replaces a program already there: that is
//! refused with [`Error::AlreadyAttached`] naming it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::bpf;
use crate::error::{Error, Result};
use crate::netlink;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, on the skb path; works on any interface.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, in the driver before an skb exists.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The mode a program runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver.
    Native,
    /// Generic (SKB) mode: after the skb is built, slower, works everywhere.
    Generic,
}

impl XdpMode {
    /// "native" or "generic".
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }

    fn flags(self) -> u32 {
        match self {
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// Which mode to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native, and generic where the driver refuses native.
    #[default]
    Auto,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// An interface resolved in this thread's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
}

impl Interface {
    /// Resolves `name` with if_nametoindex.
    pub fn by_name(name: &str) -> Result<Self> {
        let c = CString::new(name)
            .ok()
            .filter(|c| !c.as_bytes().is_empty() && c.as_bytes().len() < libc::IFNAMSIZ)
            .ok_or_else(|| Error::BadInterfaceName(name.into()))?;
        // SAFETY: `c` is a NUL-terminated string alive for the call.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(Error::NoSuchInterface(name.into()));
        }
        Ok(Interface {
            name: name.into(),
            index,
        })
    }

    /// Number of RX queues the interface has, asked over rtnetlink in this thread's
    /// network namespace: the XSKMAP's size.
    pub fn rx_queues(&self) -> Result<u32> {
        Ok(netlink::link(self.index)?.rx_queues)
    }
}

/// The program attached to an interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    interface: Interface,
    mode: XdpMode,
}

impl XdpLink {
    /// The mode that took.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface.
    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    /// The link's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The link's kernel id (`bpftool link`).
    pub fn id(&self) -> Result<u32> {
        Ok(bpf::link_ids(self.fd.as_fd())?.0)
    }
}

/// Attaches `prog` to the interface named `ifname`. In [`AttachMode::Auto`], native mode
/// is tried first and generic mode where native is refused; [`XdpLink::mode`] says which
/// took. An interface that already has an XDP program is left alone:
/// [`Error::AlreadyAttached`].
pub fn attach(prog: BorrowedFd<'_>, ifname: &str, mode: AttachMode) -> Result<XdpLink> {
    let interface = Interface::by_name(ifname)?;
    attach_to(prog, interface, mode)
}

/// [`attach`] for an interface already resolved.
pub fn attach_to(prog: BorrowedFd<'_>, interface: Interface, mode: AttachMode) -> Result<XdpLink> {
    let tries: &[XdpMode] = match mode {
        AttachMode::Auto => &[XdpMode::Native, XdpMode::Generic],
        AttachMode::Native => &[XdpMode::Native],
        AttachMode::Generic => &[XdpMode::Generic],
    };
    let mut refused: Option<(XdpMode, io::Error)> = None;
    for &m in tries {
        match bpf::link_create_xdp(prog, interface.index, m.flags()) {
            Ok(fd) => {
                return Ok(XdpLink {
                    fd,
                    interface,
                    mode: m,
                })
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => {
                    let prog_id = netlink::xdp_attached(interface.index)
                        .ok()
                        .flatten()
                        .map(|a| a.prog_id)
                        .filter(|&id| id != 0);
                    return Err(Error::AlreadyAttached {
                        ifname: interface.name,
                        prog_id,
                    });
                }
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    return Err(Error::NotPermitted {
                        op: "bpf(2) BPF_LINK_CREATE",
                        needs: crate::error::NEEDS_BPF,
                    })
                }
                Some(libc::ENODEV) => return Err(Error::NoSuchInterface(interface.name)),
                // Keep the first refusal: native's errno says more about the driver.
                _ => {
                    refused.get_or_insert((m, e));
                }
            },
        }
    }
    let (m, source) = refused.unwrap_or_else(|| (XdpMode::Native, io::ErrorKind::Other.into()));
    Err(Error::XdpRefused {
        ifname: interface.name,
        mode: if tries.len() > 1 {
            "native (then generic)"
        } else {
            m.as_str()
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_named() {
        let e = Interface::by_name("eth9zz").unwrap_err();
        assert_eq!(e.to_string(), "interface eth9zz does not exist");
        assert!(matches!(
            Interface::by_name("a-name-far-too-long-for-linux"),
            Err(Error::BadInterfaceName(_))
        ));
        assert_eq!(Interface::by_name("lo").unwrap().index, 1);
    }
}
