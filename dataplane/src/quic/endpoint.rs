//! A shard's QUIC endpoint: its packet IO (packet_io/: the UDP socket, or a kernel-bypass
//! backend) and the quinn-proto `Endpoint` that owns its connections. One task reads
//! datagrams and routes each to its connection or to a new one; each connection has its own
//! driver task (`conn`). Nothing here is shared with another core.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{
    ConnectionEvent, ConnectionHandle, DatagramEvent, EndpointConfig, EndpointEvent, IdleTimeout,
    ServerConfig, Transmit, TransportConfig, VarInt,
};

use super::cid::ShardCids;
use super::conn::{self, Conn};
use super::handover::{Handed, Handover};
use super::steer;
use crate::identity::Identity;
use crate::metrics::QuicMetrics;
use crate::packet_io::{Inbound, Outbound, PacketIo, Packets};
use crate::rt;

/// Reads handled before the receive loop lets the connections' tasks run.
const READS_PER_TURN: usize = 64;

/// What a client may hold open on one connection, and how long it may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    pub max_streams: u32,
    pub idle_timeout: Duration,
    /// Receive window of one stream.
    pub stream_window: u32,
    /// Receive window of a whole connection, and what it may have queued to send.
    pub connection_window: u32,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            max_streams: 256,
            idle_timeout: Duration::from_secs(30),
            stream_window: 1 << 20,
            connection_window: 16 << 20,
        }
    }
}

/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder
/// and decoder); the rest leaves room for extensions and grease.
const MAX_UNI_STREAMS: u32 = 16;

/// The QUIC server configuration every shard uses: the proxy's TLS identity offering
/// `alpn`, and the transport limits.
pub fn server_config(
    identity: &Arc<Identity>,
    alpn: &[&[u8]],
    limits: Transport,
) -> io::Result<Arc<ServerConfig>> {
    let tls = QuicServerConfig::try_from(identity.server_config(alpn))
        .map_err(|e| io::Error::other(format!("TLS configuration unusable for QUIC: {e}")))?;
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        // Beyond QUIC's limit (2^62 ms) means never; quinn then needs keep-alives from no one.
        .max_idle_timeout(IdleTimeout::try_from(limits.idle_timeout).ok())
        // quinn's defaults are ~1.25 MB per stream and no connection limit at all
        // (VarInt::MAX): 256 streams to upstreams that never read could hold ~320 MB.
        .stream_receive_window(VarInt::from_u32(limits.stream_window))
        .receive_window(VarInt::from_u32(limits.connection_window))
        .send_window(u64::from(limits.connection_window));
    let mut config = ServerConfig::with_crypto(Arc::new(tls));
    config.transport_config(Arc::new(transport));
    Ok(Arc::new(config))
}

pub struct Endpoint {
    io: Packets,
    proto: RefCell<quinn_proto::Endpoint>,
    conns: RefCell<HashMap<ConnectionHandle, Rc<Conn>>>,
    accepted: RefCell<VecDeque<Rc<Conn>>>,
    acceptor: RefCell<Option<Waker>>,
    handshake_timeout: Duration,
    retry_above: usize,
    /// Connections whose handshake is still running.
    handshaking: Cell<usize>,
    metrics: Arc<QuicMetrics>,
    shard: usize,
    shards: usize,
    handover: Option<Arc<Handover>>,
}

/// What an endpoint needs besides its packet IO.
pub struct EndpointOptions {
    pub shard: usize,
    pub server: Arc<ServerConfig>,
    /// A connection not established by then is closed (and counted as timed out).
    pub handshake_timeout: Duration,
    /// Handshakes in progress beyond which a client must first answer a Retry.
    pub retry_above: usize,
    pub metrics: Arc<QuicMetrics>,
    /// How many shards share the port number.
    pub shards: usize,
    /// Where datagrams of other shards' connections go when the kernel does not steer
    /// them (`None`: it does, or there is one shard).
    pub handover: Option<Arc<Handover>>,
}

impl Endpoint {
    /// Serves shard `options.shard`'s QUIC over `io`.
    pub fn new(io: Packets, options: EndpointOptions) -> Rc<Endpoint> {
        let EndpointOptions {
            shard,
            server,
            handshake_timeout,
            retry_above,
            metrics,
            shards,
            handover,
        } = options;
        let mut config = EndpointConfig::default();
        config.cid_generator(move || Box::new(ShardCids::new(shard)));
        let proto = quinn_proto::Endpoint::new(Arc::new(config), Some(server), true, None);
        Rc::new(Endpoint {
            io,
            proto: RefCell::new(proto),
            conns: RefCell::new(HashMap::new()),
            accepted: RefCell::new(VecDeque::new()),
            acceptor: RefCell::new(None),
            handshake_timeout,
            retry_above,
            handshaking: Cell::new(0),
            metrics,
            shard,
            shards,
            handover,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    pub fn open_connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Datagrams one transmit may carry (GSO, or a batch of frames).
    pub(super) fn max_segments(&self) -> usize {
        self.io.max_segments()
    }

    pub(super) fn handle_event(
        &self,
        handle: ConnectionHandle,
        event: EndpointEvent,
    ) -> Option<ConnectionEvent> {
        self.proto.borrow_mut().handle_event(handle, event)
    }

    /// A connection's handshake completed or failed.
    pub(super) fn handshake_ended(&self) {
        self.handshaking
            .set(self.handshaking.get().saturating_sub(1));
    }

    pub(super) fn forget(&self, handle: ConnectionHandle) {
        if self.conns.borrow_mut().remove(&handle).is_some() {
            self.metrics.connections_active.add(-1);
        }
    }

    /// The next connection a client opened.
    pub async fn accept(&self) -> Rc<Conn> {
        poll_fn(|cx| match self.accepted.borrow_mut().pop_front() {
            Some(c) => Poll::Ready(c),
            None => {
                *self.acceptor.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Sends a transmit (a train of datagrams when it has a segment size), waiting while
    /// the packet IO takes no more. A datagram it refuses is dropped: QUIC recovers it as
    /// a loss.
    pub(super) async fn send(&self, t: &Transmit, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            let out = Outbound {
                to: t.destination,
                from: t.src_ip,
                data: &data[at..],
                segment: t.segment_size,
            };
            match self.io.try_send(&out) {
                Ok(n) => {
                    let packets = n.div_ceil(out.segment_len());
                    self.metrics.packets_out.add(packets as u64);
                    self.metrics.bytes_out.add(n as u64);
                    at += n.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.io.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // That datagram is lost (QUIC recovers it); the rest of the train goes.
                    tracing::debug!(to = %t.destination, error = %e, "QUIC datagram not sent");
                    at += out.segment_len();
                }
            }
        }
    }

    /// Reads and routes datagrams for as long as the shard runs.
    pub async fn run(self: Rc<Self>) {
        let mut response = Vec::new();
        // One batch's datagrams, owned (quinn-proto takes each as a BytesMut), then routed.
        let mut batch: Vec<(Inbound<'static>, BytesMut)> = Vec::new();
        let mut reads = 0;
        loop {
            let read = self.io.try_recv(&mut |d| {
                let head = Inbound { data: &[], ..d };
                batch.push((head, BytesMut::from(d.data)));
            });
            match read {
                Ok(_) => {
                    let now = Instant::now();
                    for (d, datagram) in batch.drain(..) {
                        self.metrics.packets_in.inc();
                        self.metrics.bytes_in.add(datagram.len() as u64);
                        let Some(datagram) = self.hand_over(now, &d, datagram) else {
                            continue;
                        };
                        self.on_datagram(now, d.from, d.to, datagram, &mut response)
                            .await;
                    }
                    reads += 1;
                    if reads % READS_PER_TURN == 0 {
                        rt::yield_now().await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = self.io.readable().await;
                }
                // ICMP errors of earlier sends surface here (ECONNREFUSED, …); they concern
                // one peer, whose connection times out or migrates on its own.
                Err(e) => tracing::trace!(error = %e, "QUIC packet IO error"),
            }
        }
    }

    /// Passes `datagram` to the shard that owns its connection if that is another one and
    /// nothing steered it there (the kernel's reuseport program, or the NIC's queues for a
    /// bypass backend); gives it back when it is this shard's, or opens a connection (its
    /// connection ID names no core: this one takes it).
    fn hand_over(&self, now: Instant, d: &Inbound<'_>, datagram: BytesMut) -> Option<BytesMut> {
        let Some(handover) = &self.handover else {
            return Some(datagram);
        };
        if steer::opens_connection(&datagram) {
            return Some(datagram);
        }
        match steer::owner(&datagram, self.shards) {
            Some(owner) if owner != self.shard => {
                let handed = Handed {
                    from: d.from,
                    to: d.to,
                    hop: d.hop,
                    data: datagram,
                    received: now,
                };
                if handover.send(owner, handed) {
                    self.metrics.packets_handed_over.inc();
                } else {
                    self.metrics.packets_unroutable.inc();
                }
                None
            }
            _ => Some(datagram),
        }
    }

    /// Feeds this endpoint the datagrams other shards read for its connections, for as
    /// long as the shard runs.
    pub async fn run_handed(self: Rc<Self>) {
        let Some(handover) = self.handover.clone() else {
            return;
        };
        let waiter = match handover.waiter(self.shard) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "QUIC handover unavailable: packets other cores read for this one are lost");
                return;
            }
        };
        let mut response = Vec::new();
        loop {
            while let Some(h) = handover.take(self.shard) {
                self.metrics.packets_taken_over.inc();
                if let Some(hop) = h.hop {
                    self.io.learn(h.from.ip(), hop);
                }
                self.on_datagram(h.received, h.from, h.to, h.data, &mut response)
                    .await;
            }
            if waiter.wait().await.is_err() {
                return;
            }
        }
    }

    async fn on_datagram(
        self: &Rc<Self>,
        now: Instant,
        from: SocketAddr,
        to: Option<IpAddr>,
        datagram: BytesMut,
        response: &mut Vec<u8>,
    ) {
        response.clear();
        // The local address it came to: answers leave from it (a bypass backend serving
        // several addresses writes the IP header itself).
        let event = self
            .proto
            .borrow_mut()
            .handle(now, from, to, None, datagram, response);
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                let conn = self.conns.borrow().get(&handle).cloned();
                if let Some(conn) = conn {
                    conn.deliver(event);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                // Under a flood of Initials, state is kept only for clients that proved
                // they receive at their address (RFC 9000 §8.1.2).
                if self.handshaking.get() >= self.retry_above && incoming.may_retry() {
                    let retried = self.proto.borrow_mut().retry(incoming, response);
                    match retried {
                        Ok(t) => {
                            self.metrics.packets_stateless.inc();
                            self.send(&t, &response[..t.size]).await;
                        }
                        Err(e) => self.proto.borrow_mut().ignore(e.into_incoming()),
                    }
                    return;
                }
                let accepted = self
                    .proto
                    .borrow_mut()
                    .accept(incoming, now, response, None);
                match accepted {
                    Ok((handle, proto)) => {
                        let conn =
                            Conn::new(handle, proto, self.handshake_timeout, self.metrics.clone());
                        self.conns.borrow_mut().insert(handle, conn.clone());
                        self.metrics.connections_total.inc();
                        self.metrics.connections_active.add(1);
                        self.handshaking.set(self.handshaking.get() + 1);
                        rt::spawn(conn::drive(conn.clone(), self.clone()));
                        self.accepted.borrow_mut().push_back(conn);
                        if let Some(w) = self.acceptor.borrow_mut().take() {
                            w.wake();
                        }
                    }
                    Err(e) => {
                        // The first flight already failed (no common ALPN, a bad
                        // ClientHello): no connection to report it later.
                        if let Some(why) =
                            conn::handshake_failure(conn::Handshake::Running, &e.cause)
                        {
                            self.metrics.handshake_failed(why);
                        }
                        if let Some(t) = e.response {
                            self.metrics.packets_stateless.inc();
                            self.send(&t, &response[..t.size]).await;
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.metrics.packets_stateless.inc();
                self.send(&t, &response[..t.size]).await
            }
            None => self.metrics.packets_unroutable.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{client_thread, TestServer};
    use super::super::test_support::client_config;
    use super::*;
    use crate::config::IoDriver;

    /// quinn (a client this project did not write) opens 20 streams on one connection and
    /// gets back, byte for byte, 256 KiB sent on each; the shard serves them concurrently.
    #[test]
    fn a_quinn_client_echoes_through_the_shard_endpoint() {
        let mut server = TestServer::new("quic-ep", b"zc-test");
        let (addr, cert) = (server.addr, server.cert.clone());
        let client = client_thread(move || async move {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(client_config(&cert, b"zc-test"));
            let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
            let mut tasks = Vec::new();
            for i in 0..20u8 {
                let conn = conn.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut send, mut recv) = conn.open_bi().await.unwrap();
                    let data: Vec<u8> = (0..256 * 1024).map(|j| (j as u8) ^ i).collect();
                    let expect = data.clone();
                    let writer = tokio::spawn(async move {
                        send.write_all(&data).await.unwrap();
                        send.finish().unwrap();
                    });
                    let echoed = recv.read_to_end(1 << 20).await.unwrap();
                    writer.await.unwrap();
                    assert_eq!(echoed, expect, "stream {i}");
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        });

        let runtime = rt::build_runtime(IoDriver::Auto).unwrap();
        let endpoint = runtime.block_on(async { server.endpoint() });
        runtime.block_on(async move {
            let conn = endpoint.accept().await;
            while let Some(id) = conn.accept_bi().await {
                let conn = conn.clone();
                rt::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match conn.read(id, &mut buf).await {
                            Ok(0) => break conn.finish(id),
                            Ok(n) => conn.write_all(id, &buf[..n]).await.unwrap(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        client.join().unwrap();
        let m = &server.metrics;
        assert_eq!(m.connections_total.get(), 1);
        assert_eq!(m.handshakes_completed.get(), 1);
        assert_eq!(m.streams_bidi.get(), 20);
        assert!(m.packets_in.get() > 20 && m.packets_out.get() > 20);
        assert!(m.bytes_in.get() > 20 * 256 * 1024);
    }
}
