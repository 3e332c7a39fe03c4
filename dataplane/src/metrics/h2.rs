//! Per-shard counters of HTTP/2 to the proxy: connections, streams by what they asked for,
//! resets by the side that sent them, and connections ended for abuse or protocol errors.

use std::fmt::Write as _;

use super::datagrams::DatagramMetrics;
use super::{family, Counter, Gauge};

/// What a stream asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Connect,
    ConnectUdp,
    /// A plain-HTTP request (`:scheme http`) forwarded upstream as HTTP/1.1.
    Forward,
    /// Anything else: answered with an error status.
    Other,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Connect,
        StreamKind::ConnectUdp,
        StreamKind::Forward,
        StreamKind::Other,
    ];
    fn label(self) -> &'static str {
        match self {
            StreamKind::Connect => "connect",
            StreamKind::ConnectUdp => "connect_udp",
            StreamKind::Forward => "forward",
            StreamKind::Other => "other",
        }
    }
}

/// Who reset a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetBy {
    Client,
    /// The proxy: the upstream broke, the tunnel went idle, or a policy change revoked it.
    Proxy,
}

/// Why a connection ended other than by a clean close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEnd {
    /// The client broke HTTP/2 (bad preface, bad frames, flow-control violations, floods
    /// h2 refuses).
    ProtocolError,
    /// Too many streams reset right after opening (the "rapid reset" pattern).
    RapidReset,
    /// One of h2's own abuse limits (reset streams not yet accepted, CONTINUATION or
    /// small-DATA floods, oversized header lists): ENHANCE_YOUR_CALM.
    Flood,
    /// The socket failed.
    Io,
    /// Idle with no stream open, and the GOAWAY sent for it not acknowledged within
    /// another idle period.
    Idle,
}

impl ConnEnd {
    pub const ALL: [ConnEnd; 5] = [
        ConnEnd::ProtocolError,
        ConnEnd::RapidReset,
        ConnEnd::Flood,
        ConnEnd::Io,
        ConnEnd::Idle,
    ];
    fn label(self) -> &'static str {
        match self {
            ConnEnd::ProtocolError => "protocol_error",
            ConnEnd::RapidReset => "rapid_reset",
            ConnEnd::Flood => "flood",
            ConnEnd::Io => "io",
            ConnEnd::Idle => "idle",
        }
    }
}

#[derive(Default)]
pub struct H2Metrics {
    pub connections: Counter,
    pub connections_active: Gauge,
    pub streams: [Counter; StreamKind::ALL.len()],
    pub streams_active: Gauge,
    pub resets_by_client: Counter,
    pub resets_by_proxy: Counter,
    pub ended: [Counter; ConnEnd::ALL.len()],
    /// HTTP datagrams of the CONNECT-UDP flows over HTTP/2 (DATAGRAM capsules).
    pub datagrams: DatagramMetrics,
}

impl H2Metrics {
    pub fn stream(&self, kind: StreamKind) {
        self.streams[kind as usize].inc();
    }
    pub fn reset(&self, by: ResetBy) {
        match by {
            ResetBy::Client => self.resets_by_client.inc(),
            ResetBy::Proxy => self.resets_by_proxy.inc(),
        }
    }
    pub fn connection_ended(&self, why: ConnEnd) {
        self.ended[why as usize].inc();
    }
}

/// Renders the HTTP/2 families for every core.
pub(super) fn render<'a>(out: &mut String, cores: impl Iterator<Item = &'a H2Metrics> + Clone) {
    family(
        out,
        "zcproxy_h2_connections_total",
        "counter",
        "HTTP/2 connections to the proxy",
    );
    for (core, m) in cores.clone().enumerate() {
        let _ = writeln!(
            out,
            "zcproxy_h2_connections_total{{core=\"{core}\"}} {}",
            m.connections.get()
        );
    }
    for (name, help, get) in [
        (
            "zcproxy_h2_connections_active",
            "HTTP/2 connections open",
            (|m| m.connections_active.get()) as fn(&H2Metrics) -> i64,
        ),
        (
            "zcproxy_h2_streams_active",
            "HTTP/2 streams being served",
            |m| m.streams_active.get(),
        ),
    ] {
        family(out, name, "gauge", help);
        for (core, m) in cores.clone().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(m));
        }
    }
    family(
        out,
        "zcproxy_h2_streams_total",
        "counter",
        "HTTP/2 streams, by what they asked for",
    );
    for (core, m) in cores.clone().enumerate() {
        for kind in StreamKind::ALL {
            let _ = writeln!(
                out,
                "zcproxy_h2_streams_total{{core=\"{core}\",kind=\"{}\"}} {}",
                kind.label(),
                m.streams[kind as usize].get()
            );
        }
    }
    family(
        out,
        "zcproxy_h2_resets_total",
        "counter",
        "HTTP/2 streams reset before their end, by the side that reset them",
    );
    for (core, m) in cores.clone().enumerate() {
        let _ = writeln!(
            out,
            "zcproxy_h2_resets_total{{core=\"{core}\",by=\"client\"}} {}\nzcproxy_h2_resets_total{{core=\"{core}\",by=\"proxy\"}} {}",
            m.resets_by_client.get(),
            m.resets_by_proxy.get()
        );
    }
    family(
        out,
        "zcproxy_h2_connections_ended_total",
        "counter",
        "HTTP/2 connections ended by an error, by reason",
    );
    for (core, m) in cores.clone().enumerate() {
        for why in ConnEnd::ALL {
            let _ = writeln!(
                out,
                "zcproxy_h2_connections_ended_total{{core=\"{core}\",reason=\"{}\"}} {}",
                why.label(),
                m.ended[why as usize].get()
            );
        }
    }
    super::datagrams::render(out, "zcproxy_h2", "HTTP/2", cores.map(|m| &m.datagrams));
}
