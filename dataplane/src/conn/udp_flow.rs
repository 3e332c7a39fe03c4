//! What a MASQUE CONNECT-UDP flow (RFC 9298) is whatever HTTP version carries it: the
//! request admitted (template, user, ACL, a UDP socket connected to the target), payloads
//! sent to the target, datagrams read from it, and DATAGRAM capsules (RFC 9297 §3.5) read
//! from a request stream. The HTTP/3 driver adds QUIC datagrams; the HTTP/2 one has
//! capsules only.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use http::{HeaderMap, Response};
use policy::Protocol;
use proto::capsule::{self, Skipped, Step};
use proto::{http_datagram, masque, Failure, FailureKind};

use super::proxy_request::identify;
use crate::admission;
use crate::live::TunnelPermit;
use crate::metrics::datagrams::{DatagramDrop, DatagramMetrics};
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::Deadlines;
use crate::sys;
use crate::udp;

/// Receive buffer of a flow's upstream socket: what a target may send ahead of a client
/// that is slower (the kernel charges only what is queued).
const FLOW_RECV_BUFFER: usize = 1 << 20;
/// Largest UDP payload relayed (the IPv4 maximum).
pub(super) const MAX_UDP: usize = 65_507;

/// Why a CONNECT-UDP request is not served.
pub(super) enum Refused {
    /// The path is not an expansion of this proxy's URI template: no such resource.
    NotFound,
    Failure(Failure),
}

/// An admitted flow: its socket, connected to the target, and the user's tunnel slot.
pub(super) struct Target {
    pub socket: rt::UdpSocket,
    pub permit: Option<TunnelPermit>,
}

/// Admits a CONNECT-UDP request for `path` and opens its socket.
pub(super) async fn admit(
    shard: &Shard,
    session: &Session,
    path: &str,
    headers: &HeaderMap,
) -> Result<Target, Refused> {
    let target = match shard.shared.udp_template.target(path) {
        Ok(t) => t,
        Err(masque::TargetError::NoMatch) => return Err(Refused::NotFound),
        Err(e) => {
            return Err(Refused::Failure(Failure::new(
                FailureKind::Malformed,
                e.to_string(),
            )))
        }
    };
    let principal = identify(shard, session, headers)
        .await
        .map_err(Refused::Failure)?;
    let authorized =
        admission::authorize(shard, session, &principal, Protocol::ConnectUdp, &target)
            .await
            .map_err(Refused::Failure)?;
    let Some(&peer) = authorized.addrs.first() else {
        let f = Failure::new(FailureKind::Internal, "no address to send to");
        return Err(Refused::Failure(f));
    };
    let socket = connected(peer).map_err(|e| {
        Refused::Failure(Failure::new(
            FailureKind::Internal,
            format!("UDP socket: {e}"),
        ))
    })?;
    admission::record_grant(session, &principal, Protocol::ConnectUdp, &target, peer);
    Ok(Target {
        socket,
        permit: authorized.permit,
    })
}

fn connected(peer: SocketAddr) -> std::io::Result<rt::UdpSocket> {
    rt::UdpSocket::new(udp::connected(peer, FLOW_RECV_BUFFER)?)
}

/// The response that opens a flow.
pub(super) fn opened() -> Response<()> {
    Response::builder()
        .header("capsule-protocol", "?1")
        .body(())
        .unwrap_or_default()
}

/// The target side of a flow: what the client sends goes to the socket, what the target
/// sends is read from it.
pub(super) struct TargetSide<'a> {
    shard: &'a Shard,
    datagrams: &'a DatagramMetrics,
    fd: RawFd,
    socket: &'a rt::UdpSocket,
    clock: &'a Deadlines,
    overflows: std::cell::RefCell<udp::Overflows>,
}

impl<'a> TargetSide<'a> {
    /// The target side of a flow whose datagrams are counted in `datagrams`.
    pub fn new(
        shard: &'a Shard,
        datagrams: &'a DatagramMetrics,
        socket: &'a rt::UdpSocket,
        clock: &'a Deadlines,
    ) -> Self {
        TargetSide {
            shard,
            datagrams,
            fd: socket.as_raw_fd(),
            socket,
            clock,
            overflows: Default::default(),
        }
    }

    fn metrics(&self) -> &DatagramMetrics {
        self.datagrams
    }

    /// Sends an HTTP datagram's payload to the target: context 0 carries UDP payloads,
    /// others were not negotiated (RFC 9298 §4) and are dropped.
    pub fn send(&self, payload: &[u8]) {
        let Some(data) = http_datagram::udp_payload(payload) else {
            return self.metrics().dropped(DatagramDrop::Context);
        };
        match sys::send(self.fd, data) {
            Ok(_) => {
                self.shard
                    .metrics()
                    .bytes_client_to_upstream
                    .add(data.len() as u64);
                self.clock.touch();
            }
            Err(_) => self.metrics().dropped(DatagramDrop::UpstreamSend),
        }
    }

    /// Waits for the target's next datagram and writes it to `buf` (at least [`MAX_UDP`]
    /// bytes); its length.
    pub async fn recv(&self, buf: &mut [u8]) -> usize {
        loop {
            match udp::recv(self.fd, buf) {
                Ok(r) => {
                    let new = self.overflows.borrow_mut().new_since(&r);
                    self.metrics().dropped_by(DatagramDrop::UpstreamBuffer, new);
                    self.clock.touch();
                    self.shard
                        .metrics()
                        .bytes_upstream_to_client
                        .add(r.len as u64);
                    return r.len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = self.socket.readable().await;
                }
                // ICMP errors (port unreachable, …) surface here; the flow goes on.
                Err(_) => {}
            }
        }
    }

    /// Waits for the target's next datagram and writes it into `payload` as an HTTP
    /// datagram payload (context ID 0, RFC 9298 §5); `buf` (at least [`MAX_UDP`] bytes) is
    /// where it is read.
    pub async fn next_payload(&self, buf: &mut [u8], payload: &mut Vec<u8>) {
        let n = self.recv(buf).await;
        payload.clear();
        http_datagram::encode_udp(&buf[..n], payload);
    }

    /// Counts the drops after the last datagram read (no read reports them).
    pub fn finish(&self) {
        if let Some(total) = udp::drops(self.fd) {
            let new = self.overflows.borrow_mut().catch_up(total);
            self.metrics().dropped_by(DatagramDrop::UpstreamBuffer, new);
        }
    }
}

/// DATAGRAM capsules arriving in pieces on a request stream.
pub(super) struct Capsules {
    decoder: capsule::Decoder,
    buf: Vec<u8>,
}

impl Capsules {
    pub fn new() -> Capsules {
        Capsules {
            decoder: capsule::Decoder::new(MAX_UDP + 8),
            buf: Vec::new(),
        }
    }

    /// Takes the next piece of the stream and hands every whole DATAGRAM capsule's payload
    /// to `datagram`; other capsules are skipped, oversized ones counted as dropped.
    pub fn feed(
        &mut self,
        piece: &[u8],
        metrics: &DatagramMetrics,
        mut datagram: impl FnMut(&[u8]),
    ) {
        self.buf.extend_from_slice(piece);
        // Step through every whole capsule, then drop what they took at once.
        let mut at = 0;
        loop {
            match self.decoder.next(&self.buf[at..]) {
                Step::NeedMore => break,
                Step::Datagram { payload, consumed } => {
                    metrics.received.inc();
                    datagram(payload);
                    at += consumed;
                }
                Step::Skip { consumed, started } => {
                    if let Some(Skipped::Oversized { .. }) = started {
                        metrics.dropped(DatagramDrop::TooLarge);
                    }
                    at += consumed;
                }
            }
        }
        self.buf.drain(..at);
    }
}
