//! The kernel's UDP socket as a shard's packet IO (the default backend): one socket of the
//! SO_REUSEPORT group on the proxy's port, read with recvmmsg (each read possibly a GRO train
//! of one peer's datagrams), written with GSO trains where the kernel segments them.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::{Backend, Inbound, Outbound, PacketIo, WriteWait};
use crate::metrics::packet_io::PacketIoMetrics;
use crate::metrics::QuicMetrics;
use crate::rt;
use crate::udp::{self, Offloads, MAX_GSO_SEGMENTS};

pub struct SocketIo {
    socket: rt::UdpSocket,
    batch: RefCell<udp::RecvBatch>,
    overflows: RefCell<udp::Overflows>,
    gso: Cell<bool>,
    write_wait: WriteWait,
    quic: Arc<QuicMetrics>,
    metrics: Arc<PacketIoMetrics>,
}

impl SocketIo {
    /// Takes `socket` (bound by [`udp::bind`], which found `offloads`).
    pub fn new(
        socket: socket2::Socket,
        offloads: Offloads,
        quic: Arc<QuicMetrics>,
        metrics: Arc<PacketIoMetrics>,
    ) -> io::Result<SocketIo> {
        quic.gro.set(offloads.gro as i64);
        quic.gso.set(offloads.gso as i64);
        Ok(SocketIo {
            socket: rt::UdpSocket::new(socket)?,
            // Up to BATCH datagrams from any peers per call, each possibly a GRO train.
            batch: RefCell::new(udp::RecvBatch::default()),
            overflows: RefCell::default(),
            gso: Cell::new(offloads.gso),
            write_wait: WriteWait::default(),
            quic,
            metrics,
        })
    }

    fn send_counted(&self, out: &Outbound<'_>, train: &[u8], gso: Option<usize>) -> io::Result<()> {
        udp::send(self.socket.as_raw_fd(), out.to, train, gso)?;
        let frames = gso.map_or(1, |size| train.len().div_ceil(size));
        self.metrics.sent(frames as u64);
        if frames > 1 {
            self.quic.gso_sends.inc();
        }
        Ok(())
    }
}

impl PacketIo for SocketIo {
    fn backend(&self) -> Backend {
        Backend::Socket
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn max_segments(&self) -> usize {
        if self.gso.get() {
            MAX_GSO_SEGMENTS
        } else {
            1
        }
    }

    fn try_recv(&self, each: &mut dyn FnMut(Inbound<'_>)) -> io::Result<usize> {
        let mut batch = self.batch.borrow_mut();
        let n = batch.recv(self.socket.as_raw_fd())?;
        self.metrics.batch_received(n as u64);
        if n > 1 {
            self.quic.batched_reads.inc();
        }
        let mut datagrams = 0;
        for i in 0..n {
            let Some((r, data)) = batch.get(i) else { break };
            let new = self.overflows.borrow_mut().new_since(&r);
            self.quic.packets_overflowed.add(new);
            self.metrics
                .dropped_by(crate::metrics::packet_io::Drop::Overflow, new);
            if r.len > r.stride {
                self.quic.gro_reads.inc();
            }
            for datagram in data.chunks(r.stride.max(1)) {
                datagrams += 1;
                each(Inbound {
                    from: r.from,
                    hop: None,
                    to: None,
                    data: datagram,
                });
            }
        }
        self.metrics.received(datagrams as u64);
        Ok(datagrams)
    }

    fn try_send(&self, out: &Outbound<'_>) -> io::Result<usize> {
        let segment = out.segment_len();
        let gso = (segment < out.data.len() && self.gso.get()).then_some(segment);
        // Without GSO each datagram of a train goes on its own.
        let train = if gso.is_some() {
            out.data
        } else {
            &out.data[..segment]
        };
        match self.send_counted(out, train, gso) {
            Ok(()) => Ok(train.len()),
            Err(e) if gso.is_some() && e.raw_os_error() == Some(libc::EIO) => {
                // The route cannot segment: one datagram at a time from now on.
                self.gso.set(false);
                self.quic.gso.set(0);
                self.send_counted(out, &out.data[..segment], None)
                    .map(|()| segment)
            }
            Err(e) => Err(e),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    async fn writable(&self) -> io::Result<()> {
        self.write_wait.wait(self.socket.writable()).await
    }
}
