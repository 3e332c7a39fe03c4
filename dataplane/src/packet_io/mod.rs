//! The packet-IO seam under each shard's QUIC endpoint: receive and send batches of UDP
//! datagrams, whatever carries them. Backends: the kernel's UDP socket (`socket`, the
//! default: recvmmsg with GRO, GSO trains) and AF_XDP (`af_xdp`: whole frames from the NIC's
//! queue into user space through an XDP program; the Ethernet/IP/UDP layer is
//! `proto::packet`). The endpoint, connection-ID steering, the hand-over between cores and
//! every HTTP/3 and CONNECT-UDP path above it do not know which one runs.

pub mod af_xdp;
pub mod socket;
mod write_wait;

use std::io;
use std::net::{IpAddr, SocketAddr};

pub use write_wait::WriteWait;

/// Which backend moves a shard's packets (a metrics label too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Socket,
    AfXdp,
    PfRingZc,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Socket, Backend::AfXdp, Backend::PfRingZc];

    pub fn label(self) -> &'static str {
        match self {
            Backend::Socket => "socket",
            Backend::AfXdp => "af_xdp",
            Backend::PfRingZc => "pfring_zc",
        }
    }
}

/// The link-layer way back to a peer, for a backend that writes whole frames: the MAC
/// address its frames came from (the next hop) and their VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub mac: [u8; 6],
    pub vlan: proto::packet::Vlan,
}

/// One datagram received.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub from: SocketAddr,
    /// How it came, where the backend sees frames: a core the datagram is handed to
    /// learns from it how to answer.
    pub hop: Option<Hop>,
    /// The local address it was sent to, where the backend sees it (a bypass backend reads
    /// it from the IP header; the socket backend is bound to one address).
    pub to: Option<IpAddr>,
    pub data: &'a [u8],
}

/// What to send: `data` to `to`, as datagrams of `segment` bytes (the last may be shorter)
/// when set, else as one datagram.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub to: SocketAddr,
    /// The source address to send from, when the endpoint answers on one of several.
    pub from: Option<IpAddr>,
    pub data: &'a [u8],
    pub segment: Option<usize>,
}

impl Outbound<'_> {
    /// The size of each datagram of the train.
    pub fn segment_len(&self) -> usize {
        self.segment
            .filter(|s| *s > 0 && *s < self.data.len())
            .unwrap_or(self.data.len())
            .max(1)
    }
}

/// What every backend does for a shard's endpoint. Calls never block: `WouldBlock` says
/// to wait for [`PacketIo::readable`] or [`PacketIo::writable`].
// The shards' runtime is single-threaded: no future here needs to be Send.
#[allow(async_fn_in_trait)]
pub trait PacketIo {
    fn backend(&self) -> Backend;

    /// The address (and port) the proxy serves QUIC on through this backend.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// How many datagrams one [`Outbound`] may carry (1: no segmentation).
    fn max_segments(&self) -> usize;

    /// Reads what is queued, up to one batch, and calls `each` for every datagram (trains
    /// split at their segment size); how many. `WouldBlock`: nothing was queued.
    fn try_recv(&self, each: &mut dyn FnMut(Inbound<'_>)) -> io::Result<usize>;

    /// Sends the first datagrams of `out` the backend takes now; how many bytes of
    /// `out.data` went (whole datagrams). `WouldBlock`: none.
    fn try_send(&self, out: &Outbound<'_>) -> io::Result<usize>;

    /// Notes how frames from `peer` arrive (a datagram another core read and handed over).
    fn learn(&self, _peer: IpAddr, _hop: Hop) {}

    /// Resolves once datagrams may be queued.
    async fn readable(&self) -> io::Result<()>;

    /// Resolves once a send may succeed.
    async fn writable(&self) -> io::Result<()>;
}

/// A shard's backend, whichever was configured (one type for the endpoint to hold: no
/// dynamic dispatch per packet).
// One per shard: the variants' sizes do not matter, a pointer chase per packet would.
#[allow(clippy::large_enum_variant)]
pub enum Packets {
    Socket(socket::SocketIo),
    AfXdp(af_xdp::XdpIo),
}

impl PacketIo for Packets {
    fn backend(&self) -> Backend {
        match self {
            Packets::Socket(s) => s.backend(),
            Packets::AfXdp(x) => x.backend(),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Packets::Socket(s) => s.local_addr(),
            Packets::AfXdp(x) => x.local_addr(),
        }
    }

    fn max_segments(&self) -> usize {
        match self {
            Packets::Socket(s) => s.max_segments(),
            Packets::AfXdp(x) => x.max_segments(),
        }
    }

    fn try_recv(&self, each: &mut dyn FnMut(Inbound<'_>)) -> io::Result<usize> {
        match self {
            Packets::Socket(s) => s.try_recv(each),
            Packets::AfXdp(x) => x.try_recv(each),
        }
    }

    fn try_send(&self, out: &Outbound<'_>) -> io::Result<usize> {
        match self {
            Packets::Socket(s) => s.try_send(out),
            Packets::AfXdp(x) => x.try_send(out),
        }
    }

    fn learn(&self, peer: IpAddr, hop: Hop) {
        match self {
            Packets::Socket(s) => s.learn(peer, hop),
            Packets::AfXdp(x) => x.learn(peer, hop),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Packets::Socket(s) => s.readable().await,
            Packets::AfXdp(x) => x.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Packets::Socket(s) => s.writable().await,
            Packets::AfXdp(x) => x.writable().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_is_cut_at_its_segment_size_and_a_single_datagram_is_whole() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let data = [0u8; 2500];
        let out = |segment| Outbound {
            to,
            from: None,
            data: &data,
            segment,
        };
        assert_eq!(out(Some(1200)).segment_len(), 1200);
        assert_eq!(out(None).segment_len(), 2500);
        assert_eq!(out(Some(2500)).segment_len(), 2500);
        assert_eq!(out(Some(0)).segment_len(), 2500);
    }
}
