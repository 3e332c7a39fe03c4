//! One QUIC connection on its shard: the quinn-proto state machine, the task that drives it
//! (timers, packets in and out, events), and the stream operations request handlers use.
//! Single-threaded: the state is a `RefCell` never borrowed across an await.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{
    ConnectionError, ConnectionEvent, ConnectionHandle, Dir, EndpointEvent, Event, ReadError,
    SendDatagramError, StreamEvent, StreamId, VarInt, WriteError,
};

use super::endpoint::Endpoint;
use crate::metrics::quic::{HandshakeFailure, QuicMetrics};
use crate::rt;
use crate::udp::MAX_GSO_SEGMENTS;

pub struct Conn {
    handle: ConnectionHandle,
    state: RefCell<State>,
    metrics: Arc<QuicMetrics>,
}

/// Where the handshake stands, for the deadline and for counting how it ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Handshake {
    Running,
    /// Ended before completing (counted once, when it ended).
    Failed,
    Done,
}

/// How long after the handshake deadline a connection that failed its handshake may take
/// to close before it is dropped regardless: quinn sets no close timer when a client's
/// very first packet closes the connection, which would otherwise be held until the idle
/// timeout.
const ABANDON_AFTER: Duration = Duration::from_secs(3);

struct State {
    conn: quinn_proto::Connection,
    /// Events the endpoint routed here, not yet handed to `conn`.
    inbox: VecDeque<ConnectionEvent>,
    /// The driver task, parked until there is work.
    driver: Option<Waker>,
    dirty: bool,
    readable: HashMap<StreamId, Waker>,
    writable: HashMap<StreamId, Waker>,
    /// Waiting for the peer to open a stream, per direction (bidi, uni).
    accepting: [Option<Waker>; 2],
    /// Waiting for the peer to allow another stream of ours, per direction.
    opening: [Option<Waker>; 2],
    datagram: Option<Waker>,
    /// Flows waiting for room in the datagram send buffer.
    datagram_room: Vec<Waker>,
    lost: Option<ConnectionError>,
    handshake: Handshake,
    handshake_deadline: Instant,
}

fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// Why a stream operation could not go on.
#[derive(Debug, Clone)]
pub enum StreamError {
    /// The whole connection is gone.
    Connection(ConnectionError),
    /// The peer reset the stream (reading) or asked us to stop sending (writing).
    Reset(u64),
    /// The stream is already finished or reset on our side.
    Closed,
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        match e {
            StreamError::Connection(c) => closed(&c),
            StreamError::Reset(code) => io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("stream reset by the peer (code {code:#x})"),
            ),
            StreamError::Closed => io::ErrorKind::NotConnected.into(),
        }
    }
}

fn closed(e: &ConnectionError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
}

impl Conn {
    pub(super) fn new(
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        handshake_timeout: Duration,
        metrics: Arc<QuicMetrics>,
    ) -> Rc<Conn> {
        Rc::new(Conn {
            handle,
            metrics,
            state: RefCell::new(State {
                conn,
                inbox: VecDeque::new(),
                driver: None,
                dirty: true,
                readable: HashMap::new(),
                writable: HashMap::new(),
                accepting: [None, None],
                opening: [None, None],
                datagram: None,
                datagram_room: Vec::new(),
                lost: None,
                handshake: Handshake::Running,
                handshake_deadline: Instant::now() + handshake_timeout,
            }),
        })
    }

    /// Where the client is now (it may migrate).
    pub fn remote_address(&self) -> std::net::SocketAddr {
        self.state.borrow().conn.remote_address()
    }

    /// Hands over an event the endpoint routed to this connection.
    pub(super) fn deliver(&self, event: ConnectionEvent) {
        self.state.borrow_mut().inbox.push_back(event);
        self.wake_driver();
    }

    fn wake_driver(&self) {
        let mut st = self.state.borrow_mut();
        st.dirty = true;
        if let Some(w) = st.driver.take() {
            w.wake();
        }
    }

    /// The next stream of `dir` the peer opens.
    pub fn poll_accept(
        &self,
        dir: Dir,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamId, ConnectionError>> {
        let mut st = self.state.borrow_mut();
        if let Some(id) = st.conn.streams().accept(dir) {
            drop(st);
            match dir {
                Dir::Bi => self.metrics.streams_bidi.inc(),
                Dir::Uni => self.metrics.streams_uni.inc(),
            }
            // Accepting may raise the peer's stream limit: let the driver say so.
            self.wake_driver();
            return Poll::Ready(Ok(id));
        }
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(e.clone()));
        }
        st.accepting[dir_index(dir)] = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Opens a stream of `dir`, waiting while the peer's limit allows none.
    pub fn poll_open(
        &self,
        dir: Dir,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamId, ConnectionError>> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(e.clone()));
        }
        if let Some(id) = st.conn.streams().open(dir) {
            return Poll::Ready(Ok(id));
        }
        st.opening[dir_index(dir)] = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The next piece of stream `id` (at most `max` bytes); `None` at its end.
    pub fn poll_read(
        &self,
        id: StreamId,
        max: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        let mut st = self.state.borrow_mut();
        let mut recv = st.conn.recv_stream(id);
        let mut chunks = match recv.read(true) {
            Ok(c) => c,
            Err(_) => return Poll::Ready(Err(StreamError::Closed)),
        };
        let got = chunks.next(max);
        let transmit = chunks.finalize().should_transmit();
        let out = match got {
            Ok(Some(chunk)) => Poll::Ready(Ok(Some(chunk.bytes))),
            Ok(None) => Poll::Ready(Ok(None)),
            Err(ReadError::Blocked) => match &st.lost {
                Some(e) => Poll::Ready(Err(StreamError::Connection(e.clone()))),
                None => {
                    st.readable.insert(id, cx.waker().clone());
                    Poll::Pending
                }
            },
            Err(ReadError::Reset(code)) => Poll::Ready(Err(StreamError::Reset(code.into_inner()))),
        };
        drop(st);
        if transmit {
            // Reading opened the flow-control window: the peer should hear of it.
            self.wake_driver();
        }
        out
    }

    /// Writes as much of `data` as stream `id` takes now (at least one byte, or waits).
    pub fn poll_write(
        &self,
        id: StreamId,
        data: &[u8],
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, StreamError>> {
        let mut st = self.state.borrow_mut();
        let out = match st.conn.send_stream(id).write(data) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(WriteError::Blocked) => match &st.lost {
                Some(e) => Poll::Ready(Err(StreamError::Connection(e.clone()))),
                None => {
                    st.writable.insert(id, cx.waker().clone());
                    Poll::Pending
                }
            },
            Err(WriteError::Stopped(code)) => {
                Poll::Ready(Err(StreamError::Reset(code.into_inner())))
            }
            Err(WriteError::ClosedStream) => Poll::Ready(Err(StreamError::Closed)),
        };
        drop(st);
        if matches!(out, Poll::Ready(Ok(_))) {
            self.wake_driver();
        }
        out
    }

    /// Sends an unreliable datagram (QUIC DATAGRAM frame) without waiting: when the send
    /// buffer is full the oldest queued datagrams make room.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), SendDatagramError> {
        let result = self.state.borrow_mut().conn.datagrams().send(data, true);
        self.wake_driver();
        result
    }

    /// Queues an unreliable datagram (QUIC DATAGRAM frame), waiting while the connection's
    /// datagram send buffer is full: the sender then stops reading its source, whose own
    /// buffer absorbs the burst, rather than the oldest queued datagrams being thrown away
    /// unseen.
    pub fn poll_send_datagram(
        &self,
        data: &Bytes,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendDatagramError>> {
        let mut st = self.state.borrow_mut();
        let out = match st.conn.datagrams().send(data.clone(), false) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(SendDatagramError::Blocked(_)) if st.lost.is_none() => {
                self.metrics.datagram_send_waits.inc();
                // Once per waiting flow, however often it is polled meanwhile.
                if !st.datagram_room.iter().any(|w| w.will_wake(cx.waker())) {
                    st.datagram_room.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            // The connection is gone: no room will come.
            Err(SendDatagramError::Blocked(_)) => Poll::Ready(Err(SendDatagramError::Disabled)),
            Err(e) => Poll::Ready(Err(e)),
        };
        drop(st);
        self.wake_driver();
        out
    }

    /// Flows waiting for room in the datagram send buffer.
    #[cfg(test)]
    fn datagram_waiters(&self) -> usize {
        self.state.borrow().datagram_room.len()
    }

    /// The largest datagram the path and the peer take now (`None`: datagrams not allowed).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.state.borrow_mut().conn.datagrams().max_size()
    }

    /// The next datagram the peer sent.
    pub fn poll_datagram(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ConnectionError>> {
        let mut st = self.state.borrow_mut();
        if let Some(d) = st.conn.datagrams().recv() {
            return Poll::Ready(Ok(d));
        }
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(e.clone()));
        }
        st.datagram = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The next bidirectional stream the peer opens; `None` once the connection is gone.
    pub async fn accept_bi(&self) -> Option<StreamId> {
        poll_fn(|cx| self.poll_accept(Dir::Bi, cx)).await.ok()
    }

    /// Reads what has arrived on stream `id` into `buf`; 0 at the end of the stream.
    pub async fn read(&self, id: StreamId, buf: &mut [u8]) -> io::Result<usize> {
        match poll_fn(|cx| self.poll_read(id, buf.len(), cx)).await? {
            Some(chunk) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(chunk.len())
            }
            None => Ok(0),
        }
    }

    /// Writes all of `data` to stream `id`, waiting while flow control holds it back.
    pub async fn write_all(&self, id: StreamId, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write(id, data, cx)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends stream `id` (a FIN); what was written is still delivered.
    pub fn finish(&self, id: StreamId) {
        {
            let mut st = self.state.borrow_mut();
            let mut send = st.conn.send_stream(id);
            // Stopped by the peer: a FIN would never close the stream; a reset does.
            if let Err(quinn_proto::FinishError::Stopped(code)) = send.finish() {
                let _ = send.reset(code);
            }
        }
        self.wake_driver();
    }

    /// Abandons sending on stream `id` with `code` (RESET_STREAM).
    pub fn reset(&self, id: StreamId, code: u64) {
        let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
        let _ = self.state.borrow_mut().conn.send_stream(id).reset(code);
        self.wake_driver();
    }

    /// Asks the peer to stop sending on stream `id` (STOP_SENDING).
    pub fn stop(&self, id: StreamId, code: u64) {
        let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
        let _ = self.state.borrow_mut().conn.recv_stream(id).stop(code);
        self.wake_driver();
    }

    /// Refuses a connection whose handshake has not completed (the per-core cap).
    pub fn refuse(&self, code: u64, reason: &[u8]) {
        {
            let mut st = self.state.borrow_mut();
            if st.handshake == Handshake::Running {
                st.handshake = Handshake::Failed;
                self.metrics.handshake_failed(HandshakeFailure::Refused);
            }
        }
        self.close(code, reason);
    }

    /// Closes the whole connection with an application error `code`.
    pub fn close(&self, code: u64, reason: &[u8]) {
        let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
        let reason = reason.to_vec().into();
        self.state
            .borrow_mut()
            .conn
            .close(Instant::now(), code, reason);
        self.wake_driver();
    }

    /// Passes application events to whoever waits for them.
    fn dispatch(st: &mut State, metrics: &QuicMetrics) {
        while let Some(event) = st.conn.poll() {
            let waker = match event {
                Event::Connected => {
                    st.handshake = Handshake::Done;
                    metrics.handshakes_completed.inc();
                    None
                }
                Event::DatagramsUnblocked => {
                    st.datagram_room.drain(..).for_each(Waker::wake);
                    None
                }
                Event::Stream(StreamEvent::Readable { id }) => st.readable.remove(&id),
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    // RFC 9000 §3.5: STOP_SENDING is answered with RESET_STREAM. Until then
                    // the stream is not closed and keeps its share of the peer's stream
                    // limit: a client ending each tunnel this way ran out after ~256.
                    let _ = st.conn.send_stream(id).reset(error_code);
                    st.dirty = true;
                    st.writable.remove(&id)
                }
                Event::Stream(StreamEvent::Writable { id } | StreamEvent::Finished { id }) => {
                    st.writable.remove(&id)
                }
                Event::Stream(StreamEvent::Opened { dir }) => st.accepting[dir_index(dir)].take(),
                Event::Stream(StreamEvent::Available { dir }) => st.opening[dir_index(dir)].take(),
                Event::DatagramReceived => st.datagram.take(),
                Event::ConnectionLost { reason } => {
                    if let Some(why) = handshake_failure(st.handshake, &reason) {
                        tracing::debug!(%reason, ?why, "QUIC handshake failed");
                        metrics.handshake_failed(why);
                        st.handshake = Handshake::Failed;
                    }
                    st.lost = Some(reason);
                    st.datagram_room.drain(..).for_each(Waker::wake);
                    st.readable.drain().for_each(|(_, w)| w.wake());
                    st.writable.drain().for_each(|(_, w)| w.wake());
                    let waiting = st.accepting.iter_mut().chain(st.opening.iter_mut());
                    waiting.filter_map(Option::take).for_each(Waker::wake);
                    st.datagram.take()
                }
                _ => None,
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// Why a connection lost in handshake state `at` failed, if that was not counted yet.
pub(super) fn handshake_failure(
    at: Handshake,
    reason: &ConnectionError,
) -> Option<HandshakeFailure> {
    use HandshakeFailure::*;
    let tls_or = |code: u64, other| {
        // 0x100-0x1ff carry a TLS alert (RFC 9001 §4.8).
        if (0x100..0x200).contains(&code) {
            Tls
        } else {
            other
        }
    };
    Some(match at {
        Handshake::Done | Handshake::Failed => return None,
        Handshake::Running => match reason {
            ConnectionError::TimedOut => Timeout,
            ConnectionError::TransportError(e) => tls_or(u64::from(e.code), Protocol),
            // NO_ERROR, or APPLICATION_ERROR (an application close sent during the
            // handshake, RFC 9000 §10.2.3): the client gave up. Other codes blame a fault.
            ConnectionError::ConnectionClosed(c) => {
                let code = u64::from(c.error_code);
                tls_or(
                    code,
                    if code == 0 || code == 0xc {
                        PeerClosed
                    } else {
                        Protocol
                    },
                )
            }
            ConnectionError::ApplicationClosed(_) | ConnectionError::Reset => PeerClosed,
            ConnectionError::VersionMismatch
            | ConnectionError::CidsExhausted
            | ConnectionError::LocallyClosed => Protocol,
        },
    })
}

/// Drives `conn` until it is drained: feeds it what the endpoint routed, fires its timers,
/// sends what it has to send (GSO trains), and wakes the stream operations its events
/// concern.
pub(super) async fn drive(conn: Rc<Conn>, endpoint: Rc<Endpoint>) {
    let mut buf = Vec::with_capacity(MAX_GSO_SEGMENTS * 1500);
    let segments = endpoint.max_segments();
    let mut remote = conn.remote_address();
    let mut handshaking = true;
    // Once quinn says drained it does not say it again: remembered across the sends that
    // may still follow in the same turn.
    let mut drained = false;
    loop {
        let now = Instant::now();
        let (transmit, deadline) = {
            let mut st = conn.state.borrow_mut();
            st.dirty = false;
            while let Some(event) = st.inbox.pop_front() {
                st.conn.handle_event(event);
            }
            if st.conn.poll_timeout().is_some_and(|t| t <= now) {
                st.conn.handle_timeout(now);
            }
            if st.handshake == Handshake::Running && st.handshake_deadline <= now {
                // quinn reports no loss for a close of ours: counted here.
                st.handshake = Handshake::Failed;
                conn.metrics.handshake_failed(HandshakeFailure::Timeout);
                // CONNECTION_REFUSED: the client may try again later.
                st.conn
                    .close(now, VarInt::from_u32(0x2), "handshake deadline".into());
            }
            if st.conn.remote_address() != remote {
                remote = st.conn.remote_address();
                conn.metrics.migrations.inc();
            }
            while let Some(event) = st.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(back) = endpoint.handle_event(conn.handle, event) {
                    st.conn.handle_event(back);
                }
            }
            Conn::dispatch(&mut st, &conn.metrics);
            if handshaking && st.handshake != Handshake::Running {
                handshaking = false;
                endpoint.handshake_ended();
            }
            let abandon_at = st.handshake_deadline + ABANDON_AFTER;
            if st.handshake == Handshake::Failed && abandon_at <= now && !drained {
                tracing::debug!(handle = ?conn.handle, "QUIC connection abandoned after a failed handshake");
                let _ = endpoint.handle_event(conn.handle, EndpointEvent::drained());
                drained = true;
            }
            buf.clear();
            let transmit = st.conn.poll_transmit(now, segments, &mut buf);
            let mut deadline = st.conn.poll_timeout();
            let ours = match st.handshake {
                Handshake::Running => Some(st.handshake_deadline),
                Handshake::Failed => Some(abandon_at),
                Handshake::Done => None,
            };
            if let Some(end) = ours {
                deadline = Some(deadline.map_or(end, |t| t.min(end)));
            }
            (transmit, deadline)
        };
        if let Some(t) = transmit {
            endpoint.send(&t, &buf[..t.size]).await;
            continue;
        }
        if drained {
            if handshaking {
                endpoint.handshake_ended();
            }
            endpoint.forget(conn.handle);
            return;
        }
        let woken = poll_fn(|cx| {
            let mut st = conn.state.borrow_mut();
            if st.dirty {
                Poll::Ready(())
            } else {
                st.driver = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        match deadline {
            Some(at) => {
                let _ = rt::timeout(at.saturating_duration_since(now), woken).await;
            }
            None => woken.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::{TransportError, TransportErrorCode};

    struct Flow;
    impl std::task::Wake for Flow {
        fn wake(self: Arc<Self>) {}
    }

    /// A flow polled again and again while the datagram send buffer is full is remembered
    /// once, not once per poll.
    #[test]
    fn a_blocked_flow_waits_for_datagram_room_once() {
        use super::super::test_server::{client_thread, TestServer};
        use super::super::test_support::client_config;
        let mut server = TestServer::new("dgram-room", b"test");
        let (addr, cert) = (server.addr, server.cert.clone());
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let client = client_thread(move || async move {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(client_config(&cert, b"test"));
            let _conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
            // Holds the connection open until the server side is done.
            let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
        });
        let runtime = rt::build_runtime(crate::config::IoDriver::Auto).unwrap();
        let endpoint = runtime.block_on(async { server.endpoint() });
        runtime.block_on(async move {
            let conn = endpoint.accept().await;
            poll_fn(|cx| {
                if conn.max_datagram_size().is_some() {
                    Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
            let data = Bytes::from(vec![0u8; 1000]);
            let (one, two) = (Waker::from(Arc::new(Flow)), Waker::from(Arc::new(Flow)));
            let mut cx = Context::from_waker(&one);
            // Fill the send buffer without yielding (nothing is sent meanwhile).
            let mut sent = 0;
            while conn.poll_send_datagram(&data, &mut cx).is_ready() {
                sent += 1;
                assert!(sent < 100_000, "the send buffer never filled");
            }
            for _ in 0..100 {
                assert!(conn.poll_send_datagram(&data, &mut cx).is_pending());
            }
            assert_eq!(conn.datagram_waiters(), 1);
            let mut other = Context::from_waker(&two);
            assert!(conn.poll_send_datagram(&data, &mut other).is_pending());
            assert_eq!(conn.datagram_waiters(), 2);
        });
        let _ = done_tx.send(());
        client.join().unwrap();
    }

    #[test]
    fn handshake_failures_are_told_apart() {
        let running = Handshake::Running;
        let transport = |code| {
            ConnectionError::TransportError(TransportError {
                code,
                frame: None,
                reason: String::new(),
            })
        };
        let cases = [
            (
                running,
                ConnectionError::TimedOut,
                Some(HandshakeFailure::Timeout),
            ),
            // no_application_protocol (alert 120) raised here.
            (
                running,
                transport(TransportErrorCode::crypto(120)),
                Some(HandshakeFailure::Tls),
            ),
            (
                running,
                transport(TransportErrorCode::PROTOCOL_VIOLATION),
                Some(HandshakeFailure::Protocol),
            ),
            (
                running,
                ConnectionError::Reset,
                Some(HandshakeFailure::PeerClosed),
            ),
            // Counted when the proxy closed it (deadline, refusal): not again.
            (Handshake::Failed, ConnectionError::LocallyClosed, None),
            (Handshake::Done, ConnectionError::TimedOut, None),
        ];
        for (at, reason, want) in cases {
            assert_eq!(handshake_failure(at, &reason), want, "{reason:?}");
        }
    }
}
