//! Counters of a shard's packet-IO backend (see packet_io/): frames and batches each way,
//! frames dropped below the QUIC endpoint by reason, ring events of the bypass backends,
//! and which backend runs (with a flag when it is the socket fallback of another).

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::{family, Counter, Gauge};

/// Why a received frame never reached the QUIC endpoint, or a datagram never left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The kernel dropped datagrams: the socket's receive buffer was full.
    Overflow,
    /// Frames the bypass backend got that are no UDP datagram for the proxy (cut short,
    /// bad lengths or header checksum, not UDP, another address or port).
    Malformed,
    /// IPv4 fragments: QUIC sets DF, a fragment is not ours to reassemble.
    Fragment,
    /// IPv6 packets with extension headers before UDP.
    ExtensionHeader,
    /// A datagram to send found no free frame, or one too small (it is lost; QUIC
    /// recovers it).
    NoFrame,
    /// No MAC address is known for the destination (no frame ever came from it and the
    /// kernel's neighbour table has none).
    NoRoute,
}

impl Drop {
    pub const ALL: [Drop; 6] = [
        Drop::Overflow,
        Drop::Malformed,
        Drop::Fragment,
        Drop::ExtensionHeader,
        Drop::NoFrame,
        Drop::NoRoute,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Drop::Overflow => "overflow",
            Drop::Malformed => "malformed",
            Drop::Fragment => "fragment",
            Drop::ExtensionHeader => "extension_header",
            Drop::NoFrame => "no_frame",
            Drop::NoRoute => "no_route",
        }
    }
}

/// What the rings of a bypass backend did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingEvent {
    /// The fill ring had no frames for the kernel to receive into (frames all in use).
    FillStarved,
    /// A send found every send frame in flight (none back from the completion ring yet)
    /// and waited.
    TxFull,
    /// Frames the kernel reported sent (completion ring).
    TxCompleted,
    /// Calls into the kernel to start transmission or receive (need_wakeup set).
    Wakeups,
}

impl RingEvent {
    pub const ALL: [RingEvent; 4] = [
        RingEvent::FillStarved,
        RingEvent::TxFull,
        RingEvent::TxCompleted,
        RingEvent::Wakeups,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RingEvent::FillStarved => "fill_starved",
            RingEvent::TxFull => "tx_full",
            RingEvent::TxCompleted => "tx_completed",
            RingEvent::Wakeups => "wakeups",
        }
    }
}

#[derive(Default)]
pub struct PacketIoMetrics {
    /// The backend running (its label: `socket`, `af_xdp`, `pfring_zc`), set at start.
    backend: OnceLock<&'static str>,
    /// 1 when the socket backend runs because the configured one could not start.
    pub fallback: Gauge,
    frames_rx: Counter,
    frames_tx: Counter,
    batches_rx: Counter,
    batches_tx: Counter,
    drops: [Counter; Drop::ALL.len()],
    events: [Counter; RingEvent::ALL.len()],
}

impl PacketIoMetrics {
    /// Names the backend (packet_io::Backend::label); the first call wins.
    pub fn set_backend(&self, label: &'static str) {
        let _ = self.backend.set(label);
    }

    pub fn backend(&self) -> &'static str {
        self.backend.get().copied().unwrap_or("socket")
    }

    /// A receive batch of `frames` (counted when not empty).
    pub fn batch_received(&self, frames: u64) {
        if frames > 0 {
            self.batches_rx.inc();
        }
    }

    pub fn received(&self, frames: u64) {
        self.frames_rx.add(frames);
    }

    /// One send call that put `frames` frames on the wire (or the ring).
    pub fn sent(&self, frames: u64) {
        self.frames_tx.add(frames);
        self.batches_tx.inc();
    }

    pub fn dropped(&self, why: Drop) {
        self.dropped_by(why, 1);
    }

    pub fn dropped_by(&self, why: Drop, n: u64) {
        self.drops[why as usize].add(n);
    }

    pub fn event(&self, what: RingEvent, n: u64) {
        self.events[what as usize].add(n);
    }

    #[cfg(test)]
    pub fn frames(&self) -> (u64, u64) {
        (self.frames_rx.get(), self.frames_tx.get())
    }
}

/// Renders `zcproxy_packet_io_*` for every core.
pub(super) fn render<'a>(
    out: &mut String,
    cores: impl Iterator<Item = &'a PacketIoMetrics> + Clone,
) {
    let series =
        |m: &PacketIoMetrics, core: usize| format!("core=\"{core}\",backend=\"{}\"", m.backend());
    family(
        out,
        "zcproxy_packet_io_backend",
        "gauge",
        "The packet-IO backend under the core's QUIC endpoint (1), and whether it is the socket fallback of another",
    );
    for (core, m) in cores.clone().enumerate() {
        let _ = writeln!(
            out,
            "zcproxy_packet_io_backend{{{},fallback=\"{}\"}} 1",
            series(m, core),
            m.fallback.get() != 0
        );
    }
    for (name, help, rx, tx) in [
        (
            "zcproxy_packet_io_frames_total",
            "Datagrams (frames on a bypass backend) the packet IO received and sent",
            (|m| m.frames_rx.get()) as fn(&PacketIoMetrics) -> u64,
            (|m| m.frames_tx.get()) as fn(&PacketIoMetrics) -> u64,
        ),
        (
            "zcproxy_packet_io_batches_total",
            "Receive batches that brought frames, and send calls",
            |m| m.batches_rx.get(),
            |m| m.batches_tx.get(),
        ),
    ] {
        family(out, name, "counter", help);
        for (core, m) in cores.clone().enumerate() {
            let s = series(m, core);
            let _ = writeln!(out, "{name}{{{s},direction=\"rx\"}} {}", rx(m));
            let _ = writeln!(out, "{name}{{{s},direction=\"tx\"}} {}", tx(m));
        }
    }
    let name = "zcproxy_packet_io_drops_total";
    family(
        out,
        name,
        "counter",
        "Frames dropped below the QUIC endpoint, by reason",
    );
    for (core, m) in cores.clone().enumerate() {
        let s = series(m, core);
        for why in Drop::ALL {
            let n = m.drops[why as usize].get();
            let _ = writeln!(out, "{name}{{{s},reason=\"{}\"}} {n}", why.label());
        }
    }
    let name = "zcproxy_packet_io_ring_events_total";
    family(
        out,
        name,
        "counter",
        "Ring events of a bypass backend: fill ring starved, TX ring full, TX completions, wakeups",
    );
    for (core, m) in cores.enumerate() {
        let s = series(m, core);
        for what in RingEvent::ALL {
            let n = m.events[what as usize].get();
            let _ = writeln!(out, "{name}{{{s},event=\"{}\"}} {n}", what.label());
        }
    }
}
