//! AF_XDP as a shard's packet IO: whole frames from one queue of the NIC into the shard's
//! UMEM (the XDP program redirects UDP to the proxy's port there), parsed and built by
//! `proto::packet`. Half of the UMEM's frames receive (kept on the fill ring), half send
//! (a free list, back from the completion ring). Nothing is allocated per packet; a
//! received frame returns to the fill ring once its datagram was handed on.

mod peers;
pub mod plane;

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use af_xdp::{Desc, FramePool, Statistics, XskSocket};
use proto::packet::{self, FrameHeader, PacketError, UdpChecksum};

use super::{Backend, Hop, Inbound, Outbound, PacketIo, WriteWait};
use crate::metrics::packet_io::{Drop, PacketIoMetrics, RingEvent};
use crate::rt;
use peers::Peers;
pub use plane::XdpPlane;

/// Frames taken from the RX ring per receive.
pub(super) const RX_BATCH: u32 = 64;
/// Datagrams one send may carry (frames queued on the TX ring in one pass).
const TX_BATCH: usize = 32;
/// How often the kernel's socket counters are read into the metrics.
const STATS_EVERY: Duration = Duration::from_secs(1);

pub struct XdpIo {
    plane: Arc<XdpPlane>,
    /// Before `inner`: its duplicate of the socket closes first (fields drop in order).
    ready: rt::FdReady,
    inner: RefCell<Inner>,
    /// Reads busy-poll the queue (`quic.af_xdp.busy_poll`).
    busy_poll: bool,
    write_wait: WriteWait,
    metrics: Arc<PacketIoMetrics>,
}

struct Inner {
    xsk: XskSocket,
    /// Frames free to send from.
    free: FramePool,
    /// Received frames to give back to the fill ring.
    refill: Vec<u64>,
    /// Descriptors being queued on the TX ring.
    queued: Vec<Desc>,
    peers: Peers,
    stats: Seen,
}

/// The kernel's and the rings' running counts last put into the metrics.
struct Seen {
    at: Instant,
    kernel: Statistics,
    counters: af_xdp::Counters,
}

impl XdpIo {
    /// Shard's backend on `xsk` (made by [`XdpPlane::socket`]): the receive half of the
    /// UMEM goes on the fill ring.
    pub fn new(
        plane: Arc<XdpPlane>,
        mut xsk: XskSocket,
        busy_poll: bool,
        metrics: Arc<PacketIoMetrics>,
    ) -> io::Result<XdpIo> {
        let frames: Vec<u64> = xsk.umem().frame_addrs().collect();
        let (rx, tx) = frames.split_at(frames.len() / 2);
        let pushed = xsk.rings().fill.push_slice(rx);
        let mut free = FramePool::new(xsk.umem());
        // The pool starts with every frame: keep only the send half (the upper addresses).
        let first_tx = tx.first().copied().unwrap_or(u64::MAX);
        let mut kept = Vec::with_capacity(tx.len());
        while let Some(addr) = free.take() {
            if addr >= first_tx {
                kept.push(addr);
            }
        }
        kept.into_iter().for_each(|a| free.give(a));
        let mut refill = Vec::with_capacity(rx.len());
        refill.extend_from_slice(&rx[pushed..]);
        let ready = rt::FdReady::new(xsk.as_fd())?;
        let _ = xsk.wake_rx();
        let stats = Seen {
            at: Instant::now(),
            kernel: xsk.statistics().unwrap_or_default(),
            counters: xsk.counters(),
        };
        Ok(XdpIo {
            plane,
            inner: RefCell::new(Inner {
                xsk,
                free,
                refill,
                queued: Vec::with_capacity(TX_BATCH),
                peers: Peers::default(),
                stats,
            }),
            ready,
            busy_poll,
            write_wait: WriteWait::default(),
            metrics,
        })
    }

    /// The hop toward `ip`, learned or from the kernel's neighbour table.
    fn hop(&self, inner: &mut Inner, ip: IpAddr) -> Option<Hop> {
        let ifindex = self.plane.interface.index;
        inner.peers.hop(ip, || {
            af_xdp::netlink::neighbour(ifindex, ip).ok().flatten()
        })
    }
}

impl Inner {
    /// Frames the kernel sent are free again.
    fn reclaim(&mut self) {
        let Inner { xsk, free, .. } = self;
        let (umem, rings) = xsk.parts();
        for addr in rings.completion.recv(u32::MAX) {
            free.give(umem.frame_of(addr));
        }
    }

    /// Gives received frames back for the kernel to receive into.
    fn refill(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let n = self.xsk.rings().fill.push_slice(&self.refill);
        self.refill.drain(..n);
        let _ = self.xsk.wake_rx();
    }

    /// Puts the kernel's and the rings' counts into the metrics, once a second.
    fn account(&mut self, metrics: &PacketIoMetrics) {
        let now = Instant::now();
        if now < self.stats.at + STATS_EVERY {
            return;
        }
        let kernel = self.xsk.statistics().unwrap_or(self.stats.kernel);
        let counters = self.xsk.counters();
        let (k0, c0) = (&self.stats.kernel, &self.stats.counters);
        let d = |now: u64, before: u64| now.saturating_sub(before);
        metrics.dropped_by(
            Drop::Overflow,
            d(kernel.rx_ring_full, k0.rx_ring_full) + d(kernel.rx_dropped, k0.rx_dropped),
        );
        metrics.event(
            RingEvent::FillStarved,
            d(kernel.rx_fill_ring_empty_descs, k0.rx_fill_ring_empty_descs),
        );
        metrics.event(
            RingEvent::TxCompleted,
            d(counters.tx_completions, c0.tx_completions),
        );
        metrics.event(RingEvent::Wakeups, d(counters.tx_wakeups, c0.tx_wakeups));
        self.stats = Seen {
            at: now,
            kernel,
            counters,
        };
    }
}

/// What a frame that is no datagram for the proxy is counted as.
fn drop_reason(e: &PacketError) -> Drop {
    match e {
        PacketError::Fragment => Drop::Fragment,
        PacketError::ExtensionHeader(_) => Drop::ExtensionHeader,
        _ => Drop::Malformed,
    }
}

impl PacketIo for XdpIo {
    fn backend(&self) -> Backend {
        Backend::AfXdp
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.plane.local)
    }

    fn max_segments(&self) -> usize {
        TX_BATCH
    }

    fn try_recv(&self, each: &mut dyn FnMut(Inbound<'_>)) -> io::Result<usize> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        inner.account(&self.metrics);
        let port = self.plane.local.port();
        let mut datagrams = 0;
        let mut frames = 0;
        {
            let Inner {
                xsk, refill, peers, ..
            } = inner;
            let (umem, rings) = xsk.parts();
            for desc in rings.rx.recv(RX_BATCH) {
                frames += 1;
                // SAFETY: the descriptor came off the RX ring: the frame is ours until it
                // goes back on the fill ring below.
                let frame = unsafe { umem.frame(desc.addr, desc.len as usize) };
                refill.push(umem.frame_of(desc.addr));
                let Some(frame) = frame else {
                    self.metrics.dropped(Drop::Malformed);
                    continue;
                };
                match packet::parse(frame) {
                    Ok(f) if f.dst.port() == port => {
                        let Some(payload) = f.payload(frame) else {
                            self.metrics.dropped(Drop::Malformed);
                            continue;
                        };
                        let hop = Hop {
                            mac: f.src_mac,
                            vlan: f.vlan,
                        };
                        peers.learn(f.src.ip(), hop);
                        datagrams += 1;
                        each(Inbound {
                            from: f.src,
                            hop: Some(hop),
                            to: Some(f.dst.ip()),
                            data: payload,
                        });
                    }
                    Ok(_) => self.metrics.dropped(Drop::Malformed),
                    Err(e) => self.metrics.dropped(drop_reason(&e)),
                }
            }
        }
        inner.refill();
        if frames == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.metrics.batch_received(frames);
        self.metrics.received(datagrams);
        Ok(datagrams as usize)
    }

    fn try_send(&self, out: &Outbound<'_>) -> io::Result<usize> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        inner.reclaim();
        let segment = out.segment_len();
        let Some(src_ip) = out
            .from
            .or(Some(self.plane.local.ip()))
            .filter(|ip| !ip.is_unspecified())
        else {
            // Served on any address, and quinn-proto gave no source: nothing to send from.
            self.metrics.dropped(Drop::NoRoute);
            return Ok(out.data.len());
        };
        let Some(hop) = self.hop(inner, out.to.ip()) else {
            self.metrics.dropped(Drop::NoRoute);
            return Ok(out.data.len());
        };
        let header = FrameHeader {
            src_mac: self.plane.mac,
            dst_mac: hop.mac,
            vlan: hop.vlan,
            src: SocketAddr::new(src_ip, self.plane.local.port()),
            dst: out.to,
            tos: 0,
            hop_limit: packet::DEFAULT_HOP_LIMIT,
        };
        let head = packet::header_len(&header);
        let Inner {
            xsk, free, queued, ..
        } = inner;
        queued.clear();
        let mut bytes = 0;
        for datagram in out.data.chunks(segment).take(TX_BATCH) {
            let Some(addr) = free.take() else {
                // Every send frame is in flight: the rest waits for completions.
                self.metrics.event(RingEvent::TxFull, 1);
                break;
            };
            let len = head + datagram.len();
            // SAFETY: `addr` came from the free list: no ring holds it, no other
            // reference to it is alive.
            let Some(frame) = (unsafe { xsk.umem().frame_mut(addr, len) }) else {
                free.give(addr);
                self.metrics.dropped(Drop::NoFrame);
                bytes += datagram.len();
                continue;
            };
            frame[head..].copy_from_slice(datagram);
            match packet::write_headers(frame, &header, datagram.len(), UdpChecksum::Full) {
                Ok(len) => queued.push(Desc {
                    addr,
                    len: len as u32,
                    options: 0,
                }),
                Err(_) => {
                    free.give(addr);
                    self.metrics.dropped(Drop::NoFrame);
                }
            }
            bytes += datagram.len();
        }
        let pushed = xsk.rings().tx.push_slice(queued);
        for d in &queued[pushed..] {
            free.give(d.addr);
        }
        if pushed > 0 {
            let _ = xsk.wake_tx();
            self.metrics.sent(pushed as u64);
        }
        if pushed < queued.len() {
            // Bytes of the datagrams that did not fit on the ring are not sent yet.
            let unsent: usize = queued[pushed..].iter().map(|d| d.len as usize - head).sum();
            bytes -= unsent;
        }
        if bytes == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(bytes)
    }

    fn learn(&self, peer: IpAddr, hop: Hop) {
        self.inner.borrow_mut().peers.learn(peer, hop);
    }

    async fn readable(&self) -> io::Result<()> {
        {
            let mut inner = self.inner.borrow_mut();
            // Before the wait: the kernel's counts must not go stale while no frame comes.
            inner.account(&self.metrics);
            inner.refill();
            // Frames a transient refusal left on the TX ring go now, not with the next send.
            let _ = inner.xsk.wake_tx();
            if self.busy_poll {
                // The socket busy-polls the queue inside this call (SO_BUSY_POLL).
                let _ = inner.xsk.poll_rx();
            }
        }
        self.ready.readable().await
    }

    async fn writable(&self) -> io::Result<()> {
        self.write_wait
            .wait(async {
                // Copy mode completes frames during the wake-up call; a zero-copy driver
                // later, when its DMA is done: look again, backing off to 1 ms, until a
                // frame is free (a link down holds sends here, not in a spin).
                let mut pause = Duration::from_micros(20);
                loop {
                    {
                        let mut inner = self.inner.borrow_mut();
                        inner.reclaim();
                        if !inner.free.is_empty() {
                            return Ok(());
                        }
                        let _ = inner.xsk.wake_tx();
                    }
                    rt::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(1));
                }
            })
            .await
    }
}
