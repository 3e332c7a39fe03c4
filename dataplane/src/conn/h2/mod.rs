//! HTTP/2 to the proxy (RFC 9113): one connection (TLS with ALPN `h2`, or plaintext opening
//! with the HTTP/2 preface) carrying many CONNECT tunnels and CONNECT-UDP flows as streams.
//! The `h2` crate keeps the framing, HPACK and flow control; this driver polls the
//! connection and every stream's task together in the connection's own task, so a stream
//! borrows the shard like any TCP session does. Each stream is its own session: its own
//! user, ACL decision and revoke handle.

mod forward;
mod stream;
mod tunnel;
mod udp;
mod upstreams;

use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::Reason;

use super::{CLOSE_FLUSH, CLOSE_MARGIN};
use crate::buffer_budget::ConnShare;
use crate::config::H2;
use crate::metrics::h2::ConnEnd;
use crate::metrics::ErrorKind;
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::tokio_io::TokioIo;
use crate::stream::{BufStream, Expired, Stream};
use upstreams::Upstreams;

/// The connection preface every HTTP/2 client opens with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a closed connection's late bytes are read and dropped.
const LINGER: Duration = Duration::from_secs(1);

/// Serves an HTTP/2 connection whose first bytes (the preface, or part of it) are buffered
/// in `client`, until it closes, breaks, idles or the shard has drained. The connection is
/// `session`: its handshake deadline bounds the preface and SETTINGS, then it is busy while
/// streams are open and idle otherwise (each stream is a session with its own clock).
pub async fn serve(shard: &Shard, session: &Session, client: BufStream) {
    let (stream, early) = client.into_parts();
    let stream = Rc::new(stream);
    let h2 = &shard.shared.config.h2;
    let conn = Conn {
        peer: session.client,
        certified: session.certified(),
        upstreams: Upstreams::default(),
        buffers: shard
            .buffers
            .connection(2 * u64::from(h2.connection_window)),
        stream_charge: u64::from(h2.stream_window) + tunnel::CHUNK as u64,
    };
    run(shard, session, &conn, TokioIo::new(stream.clone(), early)).await;
    linger(&stream).await;
}

/// Closes a connection the proxy ends without losing its last words: a client still
/// sending would otherwise get a TCP reset (unread bytes at close) that can discard the
/// GOAWAY before it reads it. Sends the end, then reads and drops what still comes for a
/// moment (as nginx's lingering close does).
async fn linger(stream: &Stream) {
    stream.shutdown_write().await;
    let mut sink = [MaybeUninit::<u8>::uninit(); 4096];
    let reading = async {
        while let Ok(n) = stream.read_into(&mut sink).await {
            if n == 0 {
                return;
            }
        }
    };
    let _ = rt::timeout(LINGER, reading).await;
}

/// What every stream of a connection inherits from it.
pub(super) struct Conn {
    pub peer: SocketAddr,
    /// The user the connection's TLS client certificate names.
    pub certified: Option<Rc<str>>,
    /// Upstream connections idle between forwarded requests.
    pub upstreams: Upstreams,
    /// The connection's part of the core's tunnel buffer budget.
    pub buffers: ConnShare,
    /// What one stream may make the proxy hold: its receive window and a read buffer.
    pub stream_charge: u64,
}

async fn run(shard: &Shard, session: &Session, conn_info: &Conn, io: TokioIo) {
    let peer = conn_info.peer;
    let cfg = &shard.shared.config.h2;
    let metrics = &shard.metrics().h2;
    let received = io.received();
    let deadlines = session.deadlines();
    let handshake = builder(cfg).handshake::<_, Bytes>(io);
    let mut conn = match session.within(handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) if e.get_io().and_then(Expired::of).is_some() => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
        // Closed before sending a byte (Chromium opens a spare TLS connection with ALPN h2
        // and closes it unused on every page load): an ordinary end.
        Ok(Err(e)) if !received.get() => {
            tracing::debug!(%peer, error = %e, "HTTP/2 connection closed before its preface");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 preface or settings refused");
            metrics.connection_ended(ConnEnd::ProtocolError);
            shard.metrics().error(ErrorKind::ClientProtocol);
            return;
        }
        Err(_) => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
    };
    deadlines.handshake_over();
    metrics.connections.inc();
    let _active = metrics.connections_active.hold();

    let resets = ResetWatch::new(cfg.max_premature_resets);
    let mut tasks = FuturesUnordered::new();
    // Held while streams are open: the connection is not idle then, whatever the client
    // sends or does not send on it (its PINGs touch nothing).
    let mut busy = None;
    let mut drain = pin!(shard.draining());
    let mut phase = Phase::Open;
    // Open: the session's idle expiry. Draining: the shard's drain deadline.
    let mut timer: Timer<'_> = Box::pin(async {
        deadlines.expired().await;
    });
    loop {
        let event = poll_fn(|cx| {
            if phase != Phase::Draining && drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Drain);
            }
            if let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {
                return Poll::Ready(Event::StreamEnded);
            }
            // Before the connection: its reads wait on the same clock, and the idle close
            // must be this driver's (a GOAWAY first), not a read's timeout. The read's own
            // timer may fire first: the clock is asked, not only this timer.
            let expired = phase != Phase::Draining && deadlines.expired_now().is_some();
            if expired || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            if let Poll::Ready(accepted) = conn.poll_accept(cx) {
                return Poll::Ready(Event::Accepted(accepted.map(|r| r.map(Box::new))));
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Accepted(Some(Ok(opened))) => {
                let (req, respond) = *opened;
                busy.get_or_insert_with(|| deadlines.busy());
                tasks.push(stream::serve(shard, conn_info, req, respond, &resets));
            }
            Event::Accepted(None) => return,
            Event::Accepted(Some(Err(e))) => {
                let why = if e.is_io() {
                    ConnEnd::Io
                } else if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
                    shard.metrics().error(ErrorKind::ClientProtocol);
                    ConnEnd::Flood
                } else {
                    shard.metrics().error(ErrorKind::ClientProtocol);
                    ConnEnd::ProtocolError
                };
                tracing::debug!(%peer, error = %e, "HTTP/2 connection ended");
                metrics.connection_ended(why);
                return;
            }
            Event::StreamEnded => {
                if resets.exceeded() {
                    tracing::debug!(%peer, "HTTP/2 client resets most streams it opens: closed");
                    metrics.connection_ended(ConnEnd::RapidReset);
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    break;
                }
                if tasks.is_empty() {
                    // The idle period starts now.
                    busy = None;
                }
            }
            Event::Drain => {
                // GOAWAY: new streams go elsewhere; the open ones may finish until shortly
                // before the shard's drain deadline.
                conn.graceful_shutdown();
                phase = Phase::Draining;
                let drain = shard.shared.config.timeouts.drain();
                timer = Box::pin(rt::sleep(drain.saturating_sub(CLOSE_MARGIN)));
            }
            // Idle without streams: a GOAWAY, and the close once the client acknowledged
            // it; a client that never answers the PING h2 sends with it is cut after
            // another idle period.
            Event::Timer if phase == Phase::Open => {
                conn.graceful_shutdown();
                phase = Phase::IdleGoaway;
                deadlines.touch();
                timer = Box::pin(async {
                    deadlines.expired().await;
                });
            }
            Event::Timer => {
                if phase == Phase::IdleGoaway {
                    tracing::debug!(%peer, "idle HTTP/2 connection did not acknowledge its GOAWAY: closed");
                    metrics.connection_ended(ConnEnd::Idle);
                }
                conn.abrupt_shutdown(Reason::NO_ERROR);
                break;
            }
        }
    }
    // Streams still open are cut; the GOAWAY gets a moment to leave.
    drop(tasks);
    let _ = rt::timeout(CLOSE_FLUSH, poll_fn(|cx| conn.poll_closed(cx))).await;
}

type Timer<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

/// A stream the client opened: its request and the handle to answer it.
type Opened = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
);

/// Where a connection stands in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Idle: GOAWAY sent, waiting for the client to acknowledge it.
    IdleGoaway,
    /// The shard drains: open streams may finish until its deadline.
    Draining,
}

enum Event {
    Accepted(Option<Result<Box<Opened>, h2::Error>>),
    StreamEnded,
    Drain,
    Timer,
}

fn builder(cfg: &H2) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(cfg.max_header_list_size)
        // What a stream's writer may have queued beyond the client's window: the tunnels
        // send only what the window allows, so this bounds nothing they do.
        .max_send_buffer_size(tunnel::CHUNK * 2)
        .enable_connect_protocol();
    b
}

/// Counts streams the client reset soon after opening them. Legitimate clients cancel a
/// few; a connection where they are most of the streams is the "rapid reset" attack, where
/// each stream costs the proxy an authentication and a dial and the client nothing.
pub(super) struct ResetWatch {
    max: u32,
    streams: std::cell::Cell<u32>,
    premature: std::cell::Cell<u32>,
}

/// A stream reset by its client within this long of opening counts as premature.
const PREMATURE: Duration = Duration::from_secs(1);

impl ResetWatch {
    fn new(max: u32) -> ResetWatch {
        ResetWatch {
            max,
            streams: Default::default(),
            premature: Default::default(),
        }
    }

    pub(super) fn stream_ended(&self, opened: Instant, reset_by_client: bool) {
        self.streams.set(self.streams.get().saturating_add(1));
        if reset_by_client && opened.elapsed() < PREMATURE {
            self.premature.set(self.premature.get().saturating_add(1));
        }
    }

    fn exceeded(&self) -> bool {
        let premature = self.premature.get();
        premature > self.max && u64::from(premature) * 2 > u64::from(self.streams.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_cancelled_streams_are_tolerated_a_flood_is_not() {
        let watch = ResetWatch::new(10);
        let now = Instant::now();
        for i in 0..100 {
            watch.stream_ended(now, i % 5 == 0);
        }
        assert!(!watch.exceeded(), "20 of 100 reset");
        let flood = ResetWatch::new(10);
        for _ in 0..10 {
            flood.stream_ended(now, true);
        }
        assert!(!flood.exceeded(), "at the limit, not past it");
        flood.stream_ended(now, true);
        assert!(flood.exceeded());
        let late = ResetWatch::new(0);
        late.stream_ended(now - PREMATURE * 2, true);
        assert!(
            !late.exceeded(),
            "a reset after a long life is not premature"
        );
    }
}
