//! Per-shard counters of TLS to the proxy over TCP: handshakes by outcome, by protocol
//! version and ALPN, resumptions, and the handshake latency.

use std::fmt::Write as _;
use std::time::Duration;

use super::{family, Counter, Histogram};
use crate::stream::ktls::{HandOverError, OUTCOMES as HANDOVERS};
use crate::stream::tls::{HandshakeError, SessionInfo};

/// How a handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client broke TLS, or offered nothing the proxy accepts (an alert was sent).
    TlsError,
    /// The client closed during the handshake.
    Eof,
    /// The handshake deadline passed.
    Timeout,
    Io,
    /// The first bytes were no ClientHello (refused before any TLS library saw them).
    NotClientHello,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::TlsError,
        Outcome::Eof,
        Outcome::Timeout,
        Outcome::Io,
        Outcome::NotClientHello,
    ];
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::TlsError => "tls_error",
            Outcome::Eof => "eof",
            Outcome::Timeout => "timeout",
            Outcome::Io => "io",
            Outcome::NotClientHello => "not_client_hello",
        }
    }
}

const VERSIONS: [&str; 2] = ["1.2", "1.3"];
const ALPNS: [&str; 3] = ["none", "http/1.1", "h2"];

#[derive(Default)]
pub struct TlsMetrics {
    pub outcomes: [Counter; Outcome::ALL.len()],
    /// Completed handshakes by version (row) and ALPN (column).
    pub negotiated: [[Counter; ALPNS.len()]; VERSIONS.len()],
    pub resumed: Counter,
    pub handshake_seconds: Histogram,
    pub handovers: [Counter; HANDOVERS.len()],
}

impl TlsMetrics {
    pub fn handshake_done(&self, info: &SessionInfo, took: Duration) {
        self.outcomes[Outcome::Ok as usize].inc();
        let v = usize::from(info.tls13);
        let a = match info.alpn.as_deref() {
            Some(b"http/1.1") => 1,
            Some(b"h2") => 2,
            _ => 0,
        };
        self.negotiated[v][a].inc();
        if info.resumed {
            self.resumed.inc();
        }
        self.handshake_seconds.observe(took);
    }

    pub fn handshake_failed(&self, e: &HandshakeError) {
        let outcome = match e {
            HandshakeError::Tls(_) => Outcome::TlsError,
            HandshakeError::Eof => Outcome::Eof,
            HandshakeError::Io(_) => Outcome::Io,
        };
        self.outcomes[outcome as usize].inc();
    }

    pub fn not_client_hello(&self) {
        self.outcomes[Outcome::NotClientHello as usize].inc();
    }

    /// Counts a kernel-TLS hand-over: done, or why not.
    pub fn handover(&self, result: Result<(), &HandOverError>) {
        self.handovers[result.map_or_else(HandOverError::outcome, |()| 0)].inc();
    }

    pub fn handshake_timed_out(&self) {
        self.outcomes[Outcome::Timeout as usize].inc();
    }
}

/// Renders the TLS families for every core (the latency histogram is rendered with the
/// others).
pub(super) fn render<'a>(out: &mut String, cores: impl Iterator<Item = &'a TlsMetrics> + Clone) {
    family(
        out,
        "zcproxy_tls_handshakes_total",
        "counter",
        "TLS handshakes on the TCP port, by outcome",
    );
    for (core, m) in cores.clone().enumerate() {
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "zcproxy_tls_handshakes_total{{core=\"{core}\",result=\"{}\"}} {}",
                o.label(),
                m.outcomes[o as usize].get()
            );
        }
    }
    family(
        out,
        "zcproxy_tls_sessions_total",
        "counter",
        "Completed TLS handshakes by protocol version and ALPN",
    );
    for (core, m) in cores.clone().enumerate() {
        for (v, version) in VERSIONS.iter().enumerate() {
            for (a, alpn) in ALPNS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "zcproxy_tls_sessions_total{{core=\"{core}\",version=\"{version}\",alpn=\"{alpn}\"}} {}",
                    m.negotiated[v][a].get()
                );
            }
        }
    }
    family(
        out,
        "zcproxy_tls_resumed_total",
        "counter",
        "TLS handshakes that resumed an earlier session",
    );
    for (core, m) in cores.clone().enumerate() {
        let _ = writeln!(
            out,
            "zcproxy_tls_resumed_total{{core=\"{core}\"}} {}",
            m.resumed.get()
        );
    }
    family(
        out,
        "zcproxy_ktls_handovers_total",
        "counter",
        "Tunnels inside TLS offered to kernel TLS, by outcome (done, or why not)",
    );
    for (core, m) in cores.enumerate() {
        for (i, label) in HANDOVERS.iter().enumerate() {
            let _ = writeln!(
                out,
                "zcproxy_ktls_handovers_total{{core=\"{core}\",result=\"{label}\"}} {}",
                m.handovers[i].get()
            );
        }
    }
}
