//! Counters of HTTP datagrams on CONNECT-UDP flows, kept apart for HTTP/3 and HTTP/2 (the
//! flow code is shared; the series are not).

use std::fmt::Write as _;

use super::{family, Counter};

/// Why an HTTP datagram was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramDrop {
    /// No CONNECT-UDP flow on the stream it names (not yet, or no longer).
    NoFlow,
    /// The flow's queue toward its upstream socket was full.
    QueueFull,
    /// Larger than the client's path or limits allow, or an oversized capsule.
    TooLarge,
    /// A context ID other than 0 (none is negotiated), or a malformed stream ID.
    Context,
    /// The upstream socket refused it (its buffer full, an ICMP error pending).
    UpstreamSend,
    /// From the target: the kernel dropped it, the flow's socket buffer full while the
    /// client's connection had no room (a client slower than its target).
    UpstreamBuffer,
}

impl DatagramDrop {
    pub const ALL: [DatagramDrop; 6] = [
        DatagramDrop::NoFlow,
        DatagramDrop::QueueFull,
        DatagramDrop::TooLarge,
        DatagramDrop::Context,
        DatagramDrop::UpstreamSend,
        DatagramDrop::UpstreamBuffer,
    ];
    pub fn label(self) -> &'static str {
        match self {
            DatagramDrop::NoFlow => "no_flow",
            DatagramDrop::QueueFull => "queue_full",
            DatagramDrop::TooLarge => "too_large",
            DatagramDrop::Context => "context",
            DatagramDrop::UpstreamSend => "upstream_send",
            DatagramDrop::UpstreamBuffer => "upstream_buffer",
        }
    }
}

#[derive(Default)]
pub struct DatagramMetrics {
    /// HTTP datagrams from clients.
    pub received: Counter,
    /// HTTP datagrams to clients.
    pub sent: Counter,
    dropped: [Counter; DatagramDrop::ALL.len()],
}

impl DatagramMetrics {
    pub fn dropped(&self, why: DatagramDrop) {
        self.dropped_by(why, 1);
    }
    pub fn dropped_by(&self, why: DatagramDrop, n: u64) {
        self.dropped[why as usize].add(n);
    }
}

/// Renders `{prefix}_datagrams_received_total`, `_sent_total` and `_dropped_total{reason}`
/// for every core.
pub(super) fn render<'a>(
    out: &mut String,
    prefix: &str,
    protocol: &str,
    cores: impl Iterator<Item = &'a DatagramMetrics> + Clone,
) {
    for (what, help, get) in [
        (
            "received",
            "received from clients",
            (|m| m.received.get()) as fn(&DatagramMetrics) -> u64,
        ),
        ("sent", "sent to clients", |m| m.sent.get()),
    ] {
        let name = format!("{prefix}_datagrams_{what}_total");
        family(
            out,
            &name,
            "counter",
            &format!("HTTP datagrams of CONNECT-UDP over {protocol} {help}"),
        );
        for (core, m) in cores.clone().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(m));
        }
    }
    let name = format!("{prefix}_datagrams_dropped_total");
    family(
        out,
        &name,
        "counter",
        &format!("HTTP datagrams of CONNECT-UDP over {protocol} not relayed, by reason"),
    );
    for (core, m) in cores.enumerate() {
        for why in DatagramDrop::ALL {
            let _ = writeln!(
                out,
                "{name}{{core=\"{core}\",reason=\"{}\"}} {}",
                why.label(),
                m.dropped[why as usize].get()
            );
        }
    }
}
