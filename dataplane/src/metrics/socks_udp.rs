//! Per-shard SOCKS5 UDP ASSOCIATE counters: datagrams and bytes each way, why datagrams were
//! dropped, and what happened to destinations (flows). Associations open and in total are
//! `zcproxy_connections_{active,total}{protocol="socks5_udp"}`.

use std::fmt::Write as _;

use super::{family, Counter};

/// Why a datagram of an association was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpDrop {
    /// From an address other than the association's client.
    ForeignSource,
    /// FRAG ≠ 0: fragments are not reassembled (RFC 1928 §7 makes it optional).
    Fragment,
    /// A header that does not parse: truncated, reserved bytes set, unknown address type,
    /// bad host name, port 0.
    Malformed,
    /// Too large for the buffer, or for the next hop once wrapped or unwrapped.
    TooLarge,
    /// The ACL does not allow the destination.
    Denied,
    /// The destination's name did not resolve.
    Resolve,
    /// A new destination beyond the association's limit.
    DestinationLimit,
    /// Too many datagrams already waiting for names being resolved.
    ResolvePending,
    /// From an address the client has not sent to (or whose flow expired).
    Unsolicited,
    /// The upstream socket refused it (buffer full, an ICMP error pending, …).
    UpstreamSend,
    /// The client's socket refused it.
    ClientSend,
    /// The kernel dropped it: the relay socket's receive buffer was full.
    ClientBuffer,
    /// The kernel dropped it: the upstream socket's receive buffer was full.
    UpstreamBuffer,
}

impl UdpDrop {
    pub const ALL: [UdpDrop; 13] = [
        UdpDrop::ForeignSource,
        UdpDrop::Fragment,
        UdpDrop::Malformed,
        UdpDrop::TooLarge,
        UdpDrop::Denied,
        UdpDrop::Resolve,
        UdpDrop::DestinationLimit,
        UdpDrop::ResolvePending,
        UdpDrop::Unsolicited,
        UdpDrop::UpstreamSend,
        UdpDrop::ClientSend,
        UdpDrop::ClientBuffer,
        UdpDrop::UpstreamBuffer,
    ];
    pub fn label(self) -> &'static str {
        match self {
            UdpDrop::ForeignSource => "foreign_source",
            UdpDrop::Fragment => "fragment",
            UdpDrop::Malformed => "malformed",
            UdpDrop::TooLarge => "too_large",
            UdpDrop::Denied => "denied",
            UdpDrop::Resolve => "resolve",
            UdpDrop::DestinationLimit => "destination_limit",
            UdpDrop::ResolvePending => "resolve_pending",
            UdpDrop::Unsolicited => "unsolicited",
            UdpDrop::UpstreamSend => "upstream_send",
            UdpDrop::ClientSend => "client_send",
            UdpDrop::ClientBuffer => "client_buffer",
            UdpDrop::UpstreamBuffer => "upstream_buffer",
        }
    }
}

#[derive(Default)]
pub struct Socks5UdpMetrics {
    /// Associations refused: the core's or the user's limit.
    pub refused: Counter,
    pub datagrams_to_upstream: Counter,
    pub datagrams_to_client: Counter,
    /// Payload bytes (without the SOCKS header).
    pub bytes_to_upstream: Counter,
    pub bytes_to_client: Counter,
    pub dropped: [Counter; UdpDrop::ALL.len()],
    /// Destinations an association started sending to.
    pub flows_opened: Counter,
    /// Destinations forgotten after `flow_idle_secs` without traffic.
    pub flows_expired: Counter,
    /// Destinations a policy change no longer allows.
    pub flows_revoked: Counter,
    /// Name lookups started; the rest were answered from the association's cache.
    pub resolutions: Counter,
    /// Calls that moved several datagrams at once (recvmmsg, sendmmsg).
    pub batched_calls: Counter,
}

impl Socks5UdpMetrics {
    pub fn drop(&self, why: UdpDrop) {
        self.drop_n(why, 1);
    }
    pub fn drop_n(&self, why: UdpDrop, n: u64) {
        self.dropped[why as usize].add(n);
    }
}

type Getter = fn(&Socks5UdpMetrics) -> u64;

/// Renders the SOCKS5 UDP families for every core.
pub(super) fn render<'a>(
    out: &mut String,
    cores: impl Iterator<Item = &'a Socks5UdpMetrics> + Clone,
) {
    let simple: [(&str, &str, Getter); 6] = [
        (
            "zcproxy_socks5_udp_refused_total",
            "UDP ASSOCIATE requests refused by the core's or the user's association limit",
            |m| m.refused.get(),
        ),
        (
            "zcproxy_socks5_udp_flows_opened_total",
            "Destinations associations started sending to",
            |m| m.flows_opened.get(),
        ),
        (
            "zcproxy_socks5_udp_flows_expired_total",
            "Destinations forgotten after socks5_udp.flow_idle_secs without traffic",
            |m| m.flows_expired.get(),
        ),
        (
            "zcproxy_socks5_udp_flows_revoked_total",
            "Destinations dropped because a policy change no longer allows them",
            |m| m.flows_revoked.get(),
        ),
        (
            "zcproxy_socks5_udp_resolutions_total",
            "Destination names looked up (the rest came from the association's cache)",
            |m| m.resolutions.get(),
        ),
        (
            "zcproxy_socks5_udp_batched_calls_total",
            "Reads and sends that moved several datagrams in one call",
            |m| m.batched_calls.get(),
        ),
    ];
    for (name, help, get) in simple {
        family(out, name, "counter", help);
        for (core, m) in cores.clone().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(m));
        }
    }
    for (name, help, to_upstream, to_client) in [
        (
            "zcproxy_socks5_udp_datagrams_total",
            "Datagrams relayed, by direction",
            (|m| m.datagrams_to_upstream.get()) as Getter,
            (|m| m.datagrams_to_client.get()) as Getter,
        ),
        (
            "zcproxy_socks5_udp_bytes_total",
            "Payload bytes relayed (without SOCKS headers), by direction",
            |m| m.bytes_to_upstream.get(),
            |m| m.bytes_to_client.get(),
        ),
    ] {
        family(out, name, "counter", help);
        for (core, m) in cores.clone().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{core=\"{core}\",direction=\"client_to_upstream\"}} {}\n{name}{{core=\"{core}\",direction=\"upstream_to_client\"}} {}",
                to_upstream(m),
                to_client(m)
            );
        }
    }
    family(
        out,
        "zcproxy_socks5_udp_dropped_total",
        "counter",
        "Datagrams not relayed, by reason",
    );
    for (core, m) in cores.enumerate() {
        for why in UdpDrop::ALL {
            let _ = writeln!(
                out,
                "zcproxy_socks5_udp_dropped_total{{core=\"{core}\",reason=\"{}\"}} {}",
                why.label(),
                m.dropped[why as usize].get()
            );
        }
    }
}
