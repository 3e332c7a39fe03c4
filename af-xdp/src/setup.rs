//! Creating an XSK socket, in the kernel's order: socket, UMEM registration, ring sizes,
//! mmap offsets, ring mappings, bind; and the errno of each step mapped to what an
//! operator needs to read (locked memory, a busy queue, no zero-copy, no such queue).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::attach::Interface;
use crate::error::{Error, Result, NEEDS_NET_RAW};
use crate::ring::{CompletionRing, FillRing, Ring, RxRing, TxRing};
use crate::socket::Rings;
use crate::umem::Umem;

/// Copy or zero-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XskMode {
    /// Zero-copy where the driver can, else copy.
    #[default]
    Auto,
    /// Copy (works with every driver, including veth and generic XDP).
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// The mode the socket got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundMode {
    /// The kernel copies frames between its buffers and the UMEM.
    Copy,
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
}

/// Ring sizes (powers of two) and the queue to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// The interface's queue.
    pub queue: u32,
    /// Copy or zero-copy.
    pub mode: XskMode,
    /// RX ring entries.
    pub rx_size: u32,
    /// TX ring entries.
    pub tx_size: u32,
    /// Fill ring entries.
    pub fill_size: u32,
    /// Completion ring entries.
    pub completion_size: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            queue: 0,
            mode: XskMode::Auto,
            rx_size: 2048,
            tx_size: 2048,
            fill_size: 2048,
            completion_size: 2048,
        }
    }
}

fn setopt<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size given; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads option `name` into a T; returns the length the kernel wrote.
fn getopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &mut T) -> io::Result<usize> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; the kernel writes at most that many.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *mut T).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The soft RLIMIT_MEMLOCK in bytes (None: unlimited).
fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Maps ring `off` of `fd` at page offset `pgoff` with `size` entries of `T`.
fn map_ring<T: Copy>(
    fd: &OwnedFd,
    pgoff: u64,
    off: &libc::xdp_ring_offset,
    size: u32,
) -> Result<Ring<T>> {
    let len = off.desc as usize + size as usize * size_of::<T>();
    // SAFETY: a shared mapping of the socket's ring at the kernel's page offset; the
    // result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            pgoff as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::sys(
            "mmap of an XSK ring",
            io::Error::last_os_error(),
        ));
    }
    let area =
        NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::Invalid("mmap gave NULL".into()))?;
    // SAFETY: the mapping is this ring's, `len` bytes, at the kernel's offsets.
    Ok(unsafe { Ring::new(area, len, off, size) })
}

/// Opens the socket, registers `umem`, maps the rings and binds.
pub(crate) fn open(
    umem: &Umem,
    interface: &Interface,
    config: &XskConfig,
) -> Result<(OwnedFd, Rings, BoundMode)> {
    for (name, n) in [
        ("rx_size", config.rx_size),
        ("tx_size", config.tx_size),
        ("fill_size", config.fill_size),
        ("completion_size", config.completion_size),
    ] {
        if !n.is_power_of_two() {
            return Err(Error::Invalid(format!("{name} {n} is not a power of two")));
        }
    }
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::NotPermitted {
                op: "socket(AF_XDP)",
                needs: NEEDS_NET_RAW,
            },
            _ => Error::sys("socket(AF_XDP)", e),
        });
    }
    // SAFETY: a new descriptor, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let reg = libc::xdp_umem_reg {
        addr: umem.base() as u64,
        len: umem.len() as u64,
        chunk_size: umem.frame_size(),
        headroom: umem.headroom(),
        flags: 0,
        tx_metadata_len: 0,
    };
    if let Err(e) = setopt(&fd, libc::XDP_UMEM_REG, &reg) {
        return Err(match e.raw_os_error() {
            // The pinned pages are charged to RLIMIT_MEMLOCK unless CAP_IPC_LOCK.
            Some(libc::ENOBUFS) | Some(libc::ENOMEM) | Some(libc::EPERM) => Error::LockedMemory {
                bytes: umem.len(),
                limit: memlock_limit(),
            },
            _ => Error::sys("setsockopt(XDP_UMEM_REG)", e),
        });
    }
    for (name, n, op) in [
        (
            libc::XDP_UMEM_FILL_RING,
            config.fill_size,
            "setsockopt(XDP_UMEM_FILL_RING)",
        ),
        (
            libc::XDP_UMEM_COMPLETION_RING,
            config.completion_size,
            "setsockopt(XDP_UMEM_COMPLETION_RING)",
        ),
        (libc::XDP_RX_RING, config.rx_size, "setsockopt(XDP_RX_RING)"),
        (libc::XDP_TX_RING, config.tx_size, "setsockopt(XDP_TX_RING)"),
    ] {
        setopt(&fd, name, &n).map_err(|e| Error::sys(op, e))?;
    }
    // SAFETY: plain-old-data, all zero is valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let len = getopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS, &mut off)
        .map_err(|e| Error::sys("getsockopt(XDP_MMAP_OFFSETS)", e))?;
    if len != size_of::<libc::xdp_mmap_offsets>() {
        return Err(Error::Unsupported {
            what: "the ring flags word (XDP_MMAP_OFFSETS v2, kernel >= 5.4)",
            source: io::ErrorKind::Unsupported.into(),
        });
    }
    let rings = Rings {
        fill: FillRing(map_ring(
            &fd,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            &off.fr,
            config.fill_size,
        )?),
        completion: CompletionRing(map_ring(
            &fd,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            &off.cr,
            config.completion_size,
        )?),
        rx: RxRing(map_ring(
            &fd,
            libc::XDP_PGOFF_RX_RING as u64,
            &off.rx,
            config.rx_size,
        )?),
        tx: TxRing(map_ring(
            &fd,
            libc::XDP_PGOFF_TX_RING as u64,
            &off.tx,
            config.tx_size,
        )?),
    };

    let mode_flag = match config.mode {
        XskMode::Auto => 0,
        XskMode::Copy => libc::XDP_COPY,
        XskMode::ZeroCopy => libc::XDP_ZEROCOPY,
    };
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: libc::XDP_USE_NEED_WAKEUP | mode_flag,
        sxdp_ifindex: interface.index,
        sxdp_queue_id: config.queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `addr` is a sockaddr_xdp of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(bind_error(io::Error::last_os_error(), interface, config));
    }
    let mut opts = libc::xdp_options { flags: 0 };
    getopt(fd.as_fd(), libc::XDP_OPTIONS, &mut opts)
        .map_err(|e| Error::sys("getsockopt(XDP_OPTIONS)", e))?;
    let mode = if opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        BoundMode::ZeroCopy
    } else {
        BoundMode::Copy
    };
    Ok((fd, rings, mode))
}

/// XDP_STATISTICS.
pub(crate) fn statistics(fd: BorrowedFd<'_>) -> Result<libc::xdp_statistics> {
    // SAFETY: plain-old-data, all zero is valid.
    let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    getopt(fd, libc::XDP_STATISTICS, &mut s)
        .map_err(|e| Error::sys("getsockopt(XDP_STATISTICS)", e))?;
    Ok(s)
}

fn bind_error(e: io::Error, interface: &Interface, config: &XskConfig) -> Error {
    let ifname = interface.name.clone();
    let queue = config.queue;
    match e.raw_os_error() {
        Some(libc::EBUSY) => Error::QueueBusy { ifname, queue },
        Some(libc::EINVAL) => match interface.rx_queues() {
            Ok(queues) if queue >= queues => Error::NoSuchQueue {
                ifname,
                queue,
                queues,
            },
            _ => Error::sys("bind(AF_XDP)", e),
        },
        Some(libc::EOPNOTSUPP) if config.mode == XskMode::ZeroCopy => Error::ZeroCopyRefused {
            ifname,
            queue,
            source: e,
        },
        Some(libc::ENODEV) => Error::NoSuchInterface(ifname),
        _ => Error::sys("bind(AF_XDP)", e),
    }
}
