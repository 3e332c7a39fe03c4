//! One QUIC connection on its shard: the quinn-proto state machine, the task that drives it
//! (timers, packets in and out, events), and the stream operations request handlers use.
//! Single-threaded: the state is a `RefCell` never borrowed across an await.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{
    ConnectionError, ConnectionEvent, ConnectionHandle, Dir, Event, ReadError, SendDatagramError,
    StreamEvent, StreamId, VarInt, WriteError,
};

use super::endpoint::Endpoint;
use super::udp::MAX_GSO_SEGMENTS;
use crate::rt;

pub struct Conn {
    handle: ConnectionHandle,
    state: RefCell<State>,
}

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
    lost: Option<ConnectionError>,
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
    pub(super) fn new(handle: ConnectionHandle, conn: quinn_proto::Connection) -> Rc<Conn> {
        Rc::new(Conn {
            handle,
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
                lost: None,
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

    /// Sends an unreliable datagram (QUIC DATAGRAM frame).
    pub fn send_datagram(&self, data: Bytes) -> Result<(), SendDatagramError> {
        let result = self.state.borrow_mut().conn.datagrams().send(data, true);
        self.wake_driver();
        result
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
        let _ = self.state.borrow_mut().conn.send_stream(id).finish();
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
    fn dispatch(st: &mut State) {
        while let Some(event) = st.conn.poll() {
            let waker = match event {
                Event::Stream(StreamEvent::Readable { id }) => st.readable.remove(&id),
                Event::Stream(
                    StreamEvent::Writable { id }
                    | StreamEvent::Stopped { id, .. }
                    | StreamEvent::Finished { id },
                ) => st.writable.remove(&id),
                Event::Stream(StreamEvent::Opened { dir }) => st.accepting[dir_index(dir)].take(),
                Event::Stream(StreamEvent::Available { dir }) => st.opening[dir_index(dir)].take(),
                Event::DatagramReceived => st.datagram.take(),
                Event::ConnectionLost { reason } => {
                    st.lost = Some(reason);
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

/// Drives `conn` until it is drained: feeds it what the endpoint routed, fires its timers,
/// sends what it has to send (GSO trains), and wakes the stream operations its events
/// concern.
pub(super) async fn drive(conn: Rc<Conn>, endpoint: Rc<Endpoint>) {
    let mut buf = Vec::with_capacity(MAX_GSO_SEGMENTS * 1500);
    let segments = if endpoint.gso() { MAX_GSO_SEGMENTS } else { 1 };
    loop {
        let now = Instant::now();
        let (transmit, deadline, drained) = {
            let mut st = conn.state.borrow_mut();
            st.dirty = false;
            while let Some(event) = st.inbox.pop_front() {
                st.conn.handle_event(event);
            }
            if st.conn.poll_timeout().is_some_and(|t| t <= now) {
                st.conn.handle_timeout(now);
            }
            let mut drained = false;
            while let Some(event) = st.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(back) = endpoint.handle_event(conn.handle, event) {
                    st.conn.handle_event(back);
                }
            }
            Conn::dispatch(&mut st);
            buf.clear();
            let transmit = st.conn.poll_transmit(now, segments, &mut buf);
            (transmit, st.conn.poll_timeout(), drained)
        };
        if let Some(t) = transmit {
            endpoint.send(&t, &buf[..t.size]).await;
            continue;
        }
        if drained {
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
