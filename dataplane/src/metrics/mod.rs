//! Per-shard metrics. Each shard is the only writer of its own block, so counters are plain
//! load+store on an atomic (no locked read-modify-write, no shared cache line); the admin
//! thread reads every block at scrape time and labels the series with `core`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use policy::Protocol;
use proto::FailureKind;

pub mod datagrams;
pub mod h2;
pub mod packet_io;
pub mod quic;
pub mod socks_udp;
pub mod tls;

pub use quic::QuicMetrics;
pub use socks_udp::Socks5UdpMetrics;

/// A counter with a single writer thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge with a single writer thread.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
    /// Counts one more until the returned guard is dropped: a task dropped unfinished (its
    /// connection closed under it) takes its count with it.
    pub fn hold(&self) -> GaugeHold<'_> {
        self.add(1);
        GaugeHold(self)
    }
}

/// One unit of a [`Gauge`], given back when dropped.
pub struct GaugeHold<'a>(&'a Gauge);

impl Drop for GaugeHold<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// Upper bounds in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS.len()],
    count: Counter,
    sum_nanos: Counter,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_nanos.add(d.as_nanos() as u64);
    }
}

/// Why a connection ended badly. The label values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client broke its protocol (bad handshake, garbage, oversized head).
    ClientProtocol,
    HandshakeTimeout,
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamProtocol,
    Resolve,
    Accept,
    ConnectionLimit,
    UserLimit,
    IdleTimeout,
    RelayReset,
    /// A policy change revoked the user or the destination of a live connection.
    PolicyRevoked,
    /// The proxy could not do its part (a worker pool full, no local port left).
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::ClientProtocol,
        ErrorKind::HandshakeTimeout,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamProtocol,
        ErrorKind::Resolve,
        ErrorKind::Accept,
        ErrorKind::ConnectionLimit,
        ErrorKind::UserLimit,
        ErrorKind::IdleTimeout,
        ErrorKind::RelayReset,
        ErrorKind::PolicyRevoked,
        ErrorKind::Internal,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::ClientProtocol => "client_protocol",
            ErrorKind::HandshakeTimeout => "handshake_timeout",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::Resolve => "resolve",
            ErrorKind::Accept => "accept",
            ErrorKind::ConnectionLimit => "connection_limit",
            ErrorKind::UserLimit => "user_limit",
            ErrorKind::IdleTimeout => "idle_timeout",
            ErrorKind::RelayReset => "relay_reset",
            ErrorKind::PolicyRevoked => "policy_revoked",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    pub accepted: Counter,
    pub connections_total: [Counter; Protocol::COUNT],
    pub connections_active: [Gauge; Protocol::COUNT],
    pub bytes_client_to_upstream: Counter,
    pub bytes_upstream_to_client: Counter,
    pub splice_bytes: Counter,
    /// Bytes spliced through a kernel TLS socket (not in `splice_bytes`).
    pub ktls_bytes: Counter,
    pub copy_bytes: Counter,
    pub pipes_in_use: Gauge,
    pub pipes_pooled: Gauge,
    pub handshake_seconds: Histogram,
    pub connect_seconds: Histogram,
    pub auth_failures: Counter,
    pub acl_denies: Counter,
    pub credential_cache_hits: Counter,
    /// Argon2id runs (a shared or cached check runs none; a check abandoned before its
    /// job started runs none either). Written by the password pool's threads.
    pub password_verifications: std::sync::Arc<AtomicU64>,
    /// Checks answered by a run another handshake had started.
    pub credential_checks_shared: Counter,
    pub errors: [Counter; ErrorKind::ALL.len()],
    pub policy_revision: Gauge,
    pub sessions_revoked: Counter,
    /// Bytes HTTP/2 and HTTP/3 tunnel streams have committed of the core's buffer budget.
    pub tunnel_buffer_committed: std::sync::Arc<Gauge>,
    /// Streams refused because the core's buffer budget had no room for them.
    pub tunnel_buffer_refusals: Counter,
    /// 1 while the core runs on io_uring, 0 on epoll.
    pub io_uring: Gauge,
    /// Shared with the core's QUIC endpoint, which outlives no shard but is built apart.
    pub quic: std::sync::Arc<QuicMetrics>,
    /// Likewise shared with the backend under the endpoint.
    pub packet_io: std::sync::Arc<packet_io::PacketIoMetrics>,
    pub socks5_udp: Socks5UdpMetrics,
    pub tls: tls::TlsMetrics,
    pub h2: h2::H2Metrics,
}

impl ShardMetrics {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }
    /// Counts a failed request under the metric its kind belongs to.
    pub fn failure(&self, kind: FailureKind) {
        use FailureKind::*;
        match kind {
            Denied => self.acl_denies.inc(),
            AuthRequired | AuthFailed | Revoked => self.auth_failures.inc(),
            UserLimit => self.error(ErrorKind::UserLimit),
            Malformed | Unsupported | AddressType => self.error(ErrorKind::ClientProtocol),
            HandshakeTimeout => self.error(ErrorKind::HandshakeTimeout),
            Dns => self.error(ErrorKind::Resolve),
            ConnectTimeout | ResponseTimeout => self.error(ErrorKind::UpstreamTimeout),
            ConnectionRefused | NetworkUnreachable | HostUnreachable => {
                self.error(ErrorKind::UpstreamConnect)
            }
            Internal => self.error(ErrorKind::Internal),
            UpstreamClosed | UpstreamProtocol => self.error(ErrorKind::UpstreamProtocol),
        }
    }

    pub fn protocol_opened(&self, p: Protocol) {
        self.connections_total[p.index()].inc();
        self.connections_active[p.index()].add(1);
    }
    pub fn protocol_closed(&self, p: Protocol) {
        self.connections_active[p.index()].add(-1);
    }
}

type Getter = fn(&ShardMetrics) -> f64;

/// The HELP and TYPE lines that open a metric family.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every shard's block in the Prometheus text format (version 0.0.4).
pub fn render(shards: &[ShardMetrics], extra: &[(&str, &str, f64)]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let simple: [(&str, &str, &str, Getter); 18] = [
        (
            "zcproxy_accepted_connections_total",
            "counter",
            "TCP connections accepted",
            |m| m.accepted.get() as f64,
        ),
        (
            "zcproxy_bytes_client_to_upstream_total",
            "counter",
            "Tunnel bytes sent upstream",
            |m| m.bytes_client_to_upstream.get() as f64,
        ),
        (
            "zcproxy_bytes_upstream_to_client_total",
            "counter",
            "Tunnel bytes sent to clients",
            |m| m.bytes_upstream_to_client.get() as f64,
        ),
        (
            "zcproxy_splice_bytes_total",
            "counter",
            "Bytes relayed with splice(2) between plain sockets",
            |m| m.splice_bytes.get() as f64,
        ),
        (
            "zcproxy_ktls_bytes_total",
            "counter",
            "Bytes relayed with splice(2) through kernel TLS",
            |m| m.ktls_bytes.get() as f64,
        ),
        (
            "zcproxy_copy_bytes_total",
            "counter",
            "Bytes relayed through user space",
            |m| m.copy_bytes.get() as f64,
        ),
        (
            "zcproxy_pipes_in_use",
            "gauge",
            "Pipes holding in-flight bytes",
            |m| m.pipes_in_use.get() as f64,
        ),
        (
            "zcproxy_pipes_pooled",
            "gauge",
            "Idle pipes kept for reuse",
            |m| m.pipes_pooled.get() as f64,
        ),
        (
            "zcproxy_auth_failures_total",
            "counter",
            "Rejected credentials",
            |m| m.auth_failures.get() as f64,
        ),
        (
            "zcproxy_acl_denies_total",
            "counter",
            "Requests denied by policy",
            |m| m.acl_denies.get() as f64,
        ),
        (
            "zcproxy_credential_cache_hits_total",
            "counter",
            "Credential checks served from the per-core cache",
            |m| m.credential_cache_hits.get() as f64,
        ),
        (
            "zcproxy_password_verifications_total",
            "counter",
            "Argon2id password verifications run for this core's handshakes",
            |m| m.password_verifications.load(Relaxed) as f64,
        ),
        (
            "zcproxy_credential_checks_shared_total",
            "counter",
            "Credential checks answered by a verification another handshake had started",
            |m| m.credential_checks_shared.get() as f64,
        ),
        (
            "zcproxy_policy_revision",
            "gauge",
            "Policy revision in force on each core",
            |m| m.policy_revision.get() as f64,
        ),
        (
            "zcproxy_sessions_revoked_total",
            "counter",
            "Live connections closed because a policy change no longer allowed them",
            |m| m.sessions_revoked.get() as f64,
        ),
        (
            "zcproxy_tunnel_buffer_committed_bytes",
            "gauge",
            "Bytes HTTP/2 and HTTP/3 tunnel streams may make this core hold (their windows)",
            |m| m.tunnel_buffer_committed.get() as f64,
        ),
        (
            "zcproxy_tunnel_buffer_refusals_total",
            "counter",
            "HTTP/2 and HTTP/3 streams refused because the core's tunnel buffer budget was spent",
            |m| m.tunnel_buffer_refusals.get() as f64,
        ),
        (
            "zcproxy_io_uring",
            "gauge",
            "1 if the core's runtime waits on io_uring, 0 if on epoll",
            |m| m.io_uring.get() as f64,
        ),
    ];
    for (name, kind, help, get) in simple {
        family(&mut out, name, kind, help);
        for (core, m) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(m));
        }
    }
    family(
        &mut out,
        "zcproxy_connections_total",
        "counter",
        "Connections by protocol",
    );
    family(
        &mut out,
        "zcproxy_connections_active",
        "gauge",
        "Open connections by protocol",
    );
    for (core, m) in shards.iter().enumerate() {
        for &p in Protocol::ALL {
            let _ = writeln!(
                out,
                "zcproxy_connections_total{{core=\"{core}\",protocol=\"{}\"}} {}\nzcproxy_connections_active{{core=\"{core}\",protocol=\"{}\"}} {}",
                p.as_str(),
                m.connections_total[p.index()].get(),
                p.as_str(),
                m.connections_active[p.index()].get()
            );
        }
    }
    family(
        &mut out,
        "zcproxy_errors_total",
        "counter",
        "Connections that ended in an error, by kind",
    );
    for (core, m) in shards.iter().enumerate() {
        for k in ErrorKind::ALL {
            let _ = writeln!(
                out,
                "zcproxy_errors_total{{core=\"{core}\",kind=\"{}\"}} {}",
                k.label(),
                m.errors[k as usize].get()
            );
        }
    }
    for (name, help, get) in [
        (
            "zcproxy_handshake_duration_seconds",
            "First byte to tunnel established",
            (|m| &m.handshake_seconds) as fn(&ShardMetrics) -> &Histogram,
        ),
        (
            "zcproxy_upstream_connect_duration_seconds",
            "Resolve plus TCP connect to the upstream",
            |m| &m.connect_seconds,
        ),
        (
            "zcproxy_tls_handshake_duration_seconds",
            "TLS handshakes on the TCP port, ClientHello to finished",
            |m| &m.tls.handshake_seconds,
        ),
    ] {
        family(&mut out, name, "histogram", help);
        for (core, m) in shards.iter().enumerate() {
            let h = get(m);
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].get();
                let _ = writeln!(
                    out,
                    "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = h.count.get();
            let _ = writeln!(
                out,
                "{name}_bucket{{core=\"{core}\",le=\"+Inf\"}} {count}\n{name}_sum{{core=\"{core}\"}} {}\n{name}_count{{core=\"{core}\"}} {count}",
                h.sum_nanos.get() as f64 / 1e9
            );
        }
    }
    quic::render(&mut out, shards.iter().map(|m| &*m.quic));
    packet_io::render(&mut out, shards.iter().map(|m| &*m.packet_io));
    socks_udp::render(&mut out, shards.iter().map(|m| &m.socks5_udp));
    tls::render(&mut out, shards.iter().map(|m| &m.tls));
    h2::render(&mut out, shards.iter().map(|m| &m.h2));
    for (name, help, value) in extra {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_core_series() {
        let shards: Vec<ShardMetrics> = (0..2).map(|_| ShardMetrics::default()).collect();
        shards[1].accepted.add(3);
        shards[0].protocol_opened(Protocol::Connect);
        shards[0]
            .handshake_seconds
            .observe(Duration::from_micros(300));
        shards[1].error(ErrorKind::HandshakeTimeout);
        let text = render(&shards, &[("zcproxy_ready", "Ready", 1.0)]);
        assert!(text.contains("zcproxy_accepted_connections_total{core=\"1\"} 3\n"));
        assert!(text.contains("zcproxy_connections_active{core=\"0\",protocol=\"connect\"} 1\n"));
        assert!(text
            .contains("zcproxy_handshake_duration_seconds_bucket{core=\"0\",le=\"0.0005\"} 1\n"));
        assert!(text
            .contains("zcproxy_handshake_duration_seconds_bucket{core=\"0\",le=\"0.00025\"} 0\n"));
        assert!(text.contains("zcproxy_errors_total{core=\"1\",kind=\"handshake_timeout\"} 1\n"));
        assert!(text.contains("zcproxy_ready 1\n"));
        shards[1]
            .quic
            .datagrams
            .dropped(datagrams::DatagramDrop::QueueFull);
        shards[0].h2.datagrams.sent.inc();
        let text = render(&shards, &[]);
        assert!(text.contains(
            "zcproxy_quic_datagrams_dropped_total{core=\"1\",reason=\"queue_full\"} 1\n"
        ));
        assert!(text.contains("zcproxy_h2_datagrams_sent_total{core=\"0\"} 1\n"));
        assert!(text.contains("zcproxy_quic_datagrams_sent_total{core=\"0\"} 0\n"));
        assert!(text.contains("zcproxy_quic_connections_active{core=\"0\"} 0\n"));
    }
}
