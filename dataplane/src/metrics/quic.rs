//! Per-shard QUIC counters: connections and why handshakes failed, streams, HTTP datagrams
//! and why some were dropped, UDP packets and where they went (steered to this core, handed
//! to another, answered without a connection, unroutable), migrations, and how often the
//! kernel's segmentation offloads carried more than one datagram.

use std::fmt::Write as _;

use super::datagrams::DatagramMetrics;
use super::{family, Counter, Gauge};

/// Why a QUIC connection ended before its handshake completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No handshake within the deadline (or the peer went silent).
    Timeout,
    /// A TLS alert: no common ALPN or cipher, a bad certificate, …
    Tls,
    /// Any other QUIC transport error, from either side.
    Protocol,
    /// The client closed or reset the connection.
    PeerClosed,
    /// The proxy refused it (the per-core connection cap).
    Refused,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Tls,
        HandshakeFailure::Protocol,
        HandshakeFailure::PeerClosed,
        HandshakeFailure::Refused,
    ];
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Tls => "tls",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::PeerClosed => "peer_closed",
            HandshakeFailure::Refused => "refused",
        }
    }
}

#[derive(Default)]
pub struct QuicMetrics {
    pub connections_total: Counter,
    pub connections_active: Gauge,
    pub handshakes_completed: Counter,
    pub handshake_failures: [Counter; HandshakeFailure::ALL.len()],
    /// Streams the clients opened: bidirectional (requests), unidirectional (control, QPACK).
    pub streams_bidi: Counter,
    pub streams_uni: Counter,
    /// HTTP datagrams of the CONNECT-UDP flows over HTTP/3 (QUIC DATAGRAM frames and
    /// DATAGRAM capsules).
    pub datagrams: DatagramMetrics,
    /// Times a flow waited because the connection's datagram send buffer was full.
    pub datagram_send_waits: Counter,
    pub packets_in: Counter,
    pub packets_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Packets the kernel delivered to another core's socket, passed on to their owner.
    pub packets_handed_over: Counter,
    /// Packets this core took from another core's socket for a connection it owns.
    pub packets_taken_over: Counter,
    /// Packets answered without a connection: version negotiation, stateless reset, refusal.
    pub packets_stateless: Counter,
    /// Packets dropped: no connection, not decodable.
    pub packets_unroutable: Counter,
    /// Packets the kernel dropped because the QUIC socket's receive buffer was full.
    pub packets_overflowed: Counter,
    pub migrations: Counter,
    /// HTTP/3 connections closed after no request for the idle timeout.
    pub idle_closes: Counter,
    /// Reads that returned datagrams of several peers at once (recvmmsg).
    pub batched_reads: Counter,
    /// Reads that returned more than one datagram (GRO), sends of more than one (GSO).
    pub gro_reads: Counter,
    pub gso_sends: Counter,
    pub gro: Gauge,
    pub gso: Gauge,
}

impl QuicMetrics {
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures[why as usize].inc();
    }
}

type Getter = fn(&QuicMetrics) -> f64;

/// Renders the QUIC families for every core.
pub(super) fn render<'a>(out: &mut String, cores: impl Iterator<Item = &'a QuicMetrics> + Clone) {
    let simple: [(&str, &str, &str, Getter); 18] = [
        (
            "zcproxy_quic_idle_closes_total",
            "counter",
            "HTTP/3 connections closed after no request for the idle timeout",
            |m| m.idle_closes.get() as f64,
        ),
        (
            "zcproxy_quic_connections_total",
            "counter",
            "QUIC connections accepted (handshakes started)",
            |m| m.connections_total.get() as f64,
        ),
        (
            "zcproxy_quic_connections_active",
            "gauge",
            "QUIC connections open",
            |m| m.connections_active.get() as f64,
        ),
        (
            "zcproxy_quic_handshakes_completed_total",
            "counter",
            "QUIC handshakes completed",
            |m| m.handshakes_completed.get() as f64,
        ),
        (
            "zcproxy_quic_datagram_send_waits_total",
            "counter",
            "Times a CONNECT-UDP flow waited for room in its connection's datagram send buffer",
            |m| m.datagram_send_waits.get() as f64,
        ),
        (
            "zcproxy_quic_packets_received_total",
            "counter",
            "UDP datagrams the QUIC endpoint read from its packet IO",
            |m| m.packets_in.get() as f64,
        ),
        (
            "zcproxy_quic_packets_sent_total",
            "counter",
            "UDP datagrams the QUIC endpoint handed to its packet IO (dropped below it: zcproxy_packet_io_drops_total)",
            |m| m.packets_out.get() as f64,
        ),
        (
            "zcproxy_quic_bytes_received_total",
            "counter",
            "UDP payload bytes read on the QUIC socket",
            |m| m.bytes_in.get() as f64,
        ),
        (
            "zcproxy_quic_bytes_sent_total",
            "counter",
            "UDP payload bytes sent on the QUIC socket",
            |m| m.bytes_out.get() as f64,
        ),
        (
            "zcproxy_quic_packets_handed_over_total",
            "counter",
            "Packets that reached this core's socket but belong to another core, passed on",
            |m| m.packets_handed_over.get() as f64,
        ),
        (
            "zcproxy_quic_packets_taken_over_total",
            "counter",
            "Packets for this core's connections that another core's socket received",
            |m| m.packets_taken_over.get() as f64,
        ),
        (
            "zcproxy_quic_packets_stateless_total",
            "counter",
            "Packets answered without a connection (version negotiation, stateless reset, refusal)",
            |m| m.packets_stateless.get() as f64,
        ),
        (
            "zcproxy_quic_packets_unroutable_total",
            "counter",
            "Packets dropped: no connection of theirs, or not decodable",
            |m| m.packets_unroutable.get() as f64,
        ),
        (
            "zcproxy_quic_packets_overflowed_total",
            "counter",
            "Packets the kernel dropped because the QUIC socket's receive buffer was full",
            |m| m.packets_overflowed.get() as f64,
        ),
        (
            "zcproxy_quic_migrations_total",
            "counter",
            "Connections whose client moved to a new address",
            |m| m.migrations.get() as f64,
        ),
        (
            "zcproxy_quic_batched_reads_total",
            "counter",
            "Reads that returned datagrams of several peers at once (recvmmsg)",
            |m| m.batched_reads.get() as f64,
        ),
        (
            "zcproxy_quic_gro_reads_total",
            "counter",
            "Reads that returned several datagrams at once (UDP GRO)",
            |m| m.gro_reads.get() as f64,
        ),
        (
            "zcproxy_quic_gso_sends_total",
            "counter",
            "Sends that carried several datagrams at once (UDP GSO)",
            |m| m.gso_sends.get() as f64,
        ),
    ];
    for (name, kind, help, get) in simple {
        family(out, name, kind, help);
        for (core, m) in cores.clone().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(m));
        }
    }
    family(
        out,
        "zcproxy_quic_handshake_failures_total",
        "counter",
        "QUIC connections that ended before their handshake completed, by reason",
    );
    for (core, m) in cores.clone().enumerate() {
        for why in HandshakeFailure::ALL {
            let _ = writeln!(
                out,
                "zcproxy_quic_handshake_failures_total{{core=\"{core}\",reason=\"{}\"}} {}",
                why.label(),
                m.handshake_failures[why as usize].get()
            );
        }
    }
    family(
        out,
        "zcproxy_quic_streams_total",
        "counter",
        "Streams opened by clients, by direction",
    );
    for (core, m) in cores.clone().enumerate() {
        let _ = writeln!(
            out,
            "zcproxy_quic_streams_total{{core=\"{core}\",dir=\"bidi\"}} {}\nzcproxy_quic_streams_total{{core=\"{core}\",dir=\"uni\"}} {}",
            m.streams_bidi.get(),
            m.streams_uni.get()
        );
    }
    super::datagrams::render(
        out,
        "zcproxy_quic",
        "HTTP/3",
        cores.clone().map(|m| &m.datagrams),
    );
    family(
        out,
        "zcproxy_quic_offload",
        "gauge",
        "1 while the core's QUIC socket uses the kernel offload (gso, gro)",
    );
    for (core, m) in cores.enumerate() {
        let _ = writeln!(
            out,
            "zcproxy_quic_offload{{core=\"{core}\",kind=\"gro\"}} {}\nzcproxy_quic_offload{{core=\"{core}\",kind=\"gso\"}} {}",
            m.gro.get(),
            m.gso.get()
        );
    }
}
