//! The XSK (AF_XDP) socket of one shard: bound to one queue of one interface, with its own
//! UMEM and its four rings.
//!
//! Set-up (setup.rs) follows the kernel's order. Binding asks for XDP_USE_NEED_WAKEUP, so
//! the kernel is only called (`sendto`, `recvfrom`, `poll`) when a ring's flag asks. In
//! [`XskMode::Auto`] no copy/zero-copy flag is given, which makes the kernel try
//! zero-copy and fall back to copy by itself; XDP_OPTIONS then says which one it took.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::attach::Interface;
use crate::error::{Error, Result};
use crate::maps::XskMap;
use crate::ring::{CompletionRing, Desc, FillRing, RxRing, TxRing};
use crate::setup;
pub use crate::setup::{BoundMode, XskConfig, XskMode};
use crate::umem::Umem;

/// The socket's four rings.
#[derive(Debug)]
pub struct Rings {
    /// Frames for the kernel to receive into.
    pub fill: FillRing,
    /// Frames received.
    pub rx: RxRing,
    /// Frames to send.
    pub tx: TxRing,
    /// Frames sent.
    pub completion: CompletionRing,
}

/// The kernel's counters for the socket (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Frames dropped for reasons other than a full RX ring or an empty fill ring.
    pub rx_dropped: u64,
    /// Invalid fill-ring descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty (fill-ring starvation).
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was found empty by the kernel.
    pub tx_ring_empty_descs: u64,
}

/// Ring counters for metrics, kept by this side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames taken from the RX ring.
    pub rx_frames: u64,
    /// RX polls that found the ring empty.
    pub rx_empty: u64,
    /// Frames given to the fill ring.
    pub fill_frames: u64,
    /// Fill pushes that found the ring full.
    pub fill_full: u64,
    /// Fill pushes that found the kernel had used up every frame (starvation risk).
    pub fill_starved: u64,
    /// Frames queued on the TX ring.
    pub tx_frames: u64,
    /// TX pushes that found the ring full.
    pub tx_full: u64,
    /// TX completions taken.
    pub tx_completions: u64,
    /// `sendto` calls made to wake TX.
    pub tx_wakeups: u64,
}

/// An AF_XDP socket bound to (interface, queue), owning its UMEM and rings.
#[derive(Debug)]
pub struct XskSocket {
    // Field order is drop order: the rings are unmapped, then the socket closed, then
    // the UMEM (pinned by the socket until then) unmapped.
    rings: Rings,
    fd: OwnedFd,
    umem: Umem,
    interface: Interface,
    queue: u32,
    mode: BoundMode,
    tx_wakeups: u64,
}

impl XskSocket {
    /// Creates the socket, registers `umem`, maps the rings and binds to
    /// (`interface`, `config.queue`).
    pub fn new(umem: Umem, interface: &Interface, config: &XskConfig) -> Result<Self> {
        let (fd, rings, mode) = setup::open(&umem, interface, config)?;
        Ok(XskSocket {
            rings,
            fd,
            umem,
            interface: interface.clone(),
            queue: config.queue,
            mode,
            tx_wakeups: 0,
        })
    }

    /// The UMEM.
    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    /// The rings.
    pub fn rings(&mut self) -> &mut Rings {
        &mut self.rings
    }

    /// The UMEM and the rings at once (to read received frames while releasing them).
    pub fn parts(&mut self) -> (&Umem, &mut Rings) {
        (&self.umem, &mut self.rings)
    }

    /// Copy or zero-copy, as bound.
    pub fn mode(&self) -> BoundMode {
        self.mode
    }

    /// The queue bound.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The interface bound.
    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    /// Puts this socket in `map`'s slot for its queue, so the program redirects the
    /// queue's frames to it.
    pub fn register(&self, map: &XskMap) -> Result<()> {
        map.insert(self.queue, self.fd.as_fd())
    }

    /// Kicks the kernel to send what the TX ring holds, when the ring asks for it
    /// (always in copy mode). In copy mode one `sendto` sends at most 32 frames (the
    /// kernel's TX batch), so this calls again while the kernel keeps taking frames, at
    /// most once per 32 queued. Returns the number of `sendto` calls. Transient refusals
    /// (EAGAIN, EBUSY, ENOBUFS, ENETDOWN) end the round: the frames stay queued for the
    /// next call.
    pub fn wake_tx(&mut self) -> Result<u32> {
        let mut calls = 0;
        let mut left = self.rings.tx.outstanding();
        let most = left / 32 + 1;
        while left > 0 && calls < most && self.rings.tx.needs_wakeup() {
            calls += 1;
            self.tx_wakeups += 1;
            // SAFETY: a zero-length sendto on our socket; no buffer is read.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if !wake_result(rc, "sendto(AF_XDP) to wake TX")? {
                break;
            }
            let now = self.rings.tx.outstanding();
            if now >= left {
                break;
            }
            left = now;
        }
        Ok(calls)
    }

    /// Kicks the kernel to take frames from the fill ring, when the ring asks for it.
    pub fn wake_rx(&mut self) -> Result<bool> {
        if !self.rings.fill.needs_wakeup() {
            return Ok(false);
        }
        self.poll_rx()
    }

    /// Calls into the socket's receive path whether the ring asks or not: with
    /// SO_BUSY_POLL set, the kernel polls the queue's driver inside this call.
    pub fn poll_rx(&mut self) -> Result<bool> {
        // SAFETY: a zero-length recvfrom on our socket; no buffer is written.
        let rc = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        wake_result(rc, "recvfrom(AF_XDP) to wake RX").map(|_| true)
    }

    /// Waits up to `timeout` for the RX ring to hold frames (POLLIN), for callers without
    /// a runtime; the data plane waits on [`AsFd::as_fd`] with its own readiness.
    pub fn poll_readable(&self, timeout: Duration) -> Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(Error::sys("poll(AF_XDP)", e));
        }
        Ok(p.revents & libc::POLLIN != 0)
    }

    /// The kernel's counters (XDP_STATISTICS).
    pub fn statistics(&self) -> Result<Statistics> {
        let s = setup::statistics(self.fd.as_fd())?;
        Ok(Statistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// This side's ring counters.
    pub fn counters(&self) -> Counters {
        let (rx, fill) = (self.rings.rx.stats(), self.rings.fill.stats());
        let (tx, comp) = (self.rings.tx.stats(), self.rings.completion.stats());
        Counters {
            rx_frames: rx.entries,
            rx_empty: rx.full_or_empty,
            fill_frames: fill.entries,
            fill_full: fill.full_or_empty,
            fill_starved: fill.starved,
            tx_frames: tx.entries,
            tx_full: tx.full_or_empty,
            tx_completions: comp.entries,
            tx_wakeups: self.tx_wakeups,
        }
    }

    /// Copies `frame` into the UMEM frame at `addr` (past the kernel's headroom is not
    /// needed for TX) and queues it. `Ok(false)` when the TX ring is full.
    ///
    /// # Safety
    /// The caller must own the frame at `addr` (not in any ring).
    pub unsafe fn send_copy(&mut self, addr: u64, frame: &[u8]) -> Result<bool> {
        // SAFETY: the caller owns the frame.
        let dst = unsafe { self.umem.frame_mut(addr, frame.len()) }.ok_or_else(|| {
            Error::Invalid(format!("{} bytes at {addr} leave the frame", frame.len()))
        })?;
        dst.copy_from_slice(frame);
        let desc = Desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        };
        Ok(self.rings.tx.push_slice(&[desc]) == 1)
    }
}

impl AsFd for XskSocket {
    /// The socket, for readiness (POLLIN: RX ring not empty) and the XSKMAP.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `Ok(true)`: the call went through; `Ok(false)`: a transient refusal (try later).
fn wake_result(rc: isize, op: &'static str) -> Result<bool> {
    if rc >= 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::ENETDOWN)
        | Some(libc::EINTR) => Ok(false),
        _ => Err(Error::sys(op, e)),
    }
}
