//! One QUIC connection on its shard: the quinn-proto state machine, the task that drives it
//! (timers, packets in and out, events), and the stream operations request handlers use.
//! Single-threaded: the state is a `RefCell` never borrowed across an await.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use quinn_proto::{
    ConnectionError, ConnectionEvent, ConnectionHandle, Dir, Event, ReadError, StreamEvent,
    StreamId, VarInt, WriteError,
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
    accepting: Option<Waker>,
    lost: Option<ConnectionError>,
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
                accepting: None,
                lost: None,
            }),
        })
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

    /// The next bidirectional stream the peer opens; `None` once the connection is gone.
    pub async fn accept_bi(&self) -> Option<StreamId> {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if let Some(id) = st.conn.streams().accept(Dir::Bi) {
                return Poll::Ready(Some(id));
            }
            if st.lost.is_some() {
                return Poll::Ready(None);
            }
            st.accepting = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Reads what has arrived on stream `id` into `buf`; 0 at the end of the stream.
    pub async fn read(&self, id: StreamId, buf: &mut [u8]) -> io::Result<usize> {
        let result = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let mut recv = st.conn.recv_stream(id);
            let mut chunks = match recv.read(true) {
                Ok(c) => c,
                Err(_) => return Poll::Ready(Ok(0)),
            };
            let got = chunks.next(buf.len());
            let transmit = chunks.finalize().should_transmit();
            let out = match got {
                Ok(Some(chunk)) => {
                    buf[..chunk.bytes.len()].copy_from_slice(&chunk.bytes);
                    Poll::Ready(Ok(chunk.bytes.len()))
                }
                Ok(None) => Poll::Ready(Ok(0)),
                Err(ReadError::Blocked) => match &st.lost {
                    Some(e) => Poll::Ready(Err(closed(e))),
                    None => {
                        st.readable.insert(id, cx.waker().clone());
                        Poll::Pending
                    }
                },
                Err(ReadError::Reset(code)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("stream reset by the peer (code {code})"),
                ))),
            };
            drop(st);
            if transmit {
                self.wake_driver();
            }
            out
        })
        .await;
        result
    }

    /// Writes all of `data` to stream `id`, waiting while flow control holds it back.
    pub async fn write_all(&self, id: StreamId, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| {
                let mut st = self.state.borrow_mut();
                match st.conn.send_stream(id).write(data) {
                    Ok(n) => Poll::Ready(Ok(n)),
                    Err(WriteError::Blocked) => match &st.lost {
                        Some(e) => Poll::Ready(Err(closed(e))),
                        None => {
                            st.writable.insert(id, cx.waker().clone());
                            Poll::Pending
                        }
                    },
                    Err(WriteError::Stopped(code)) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!("the peer stopped the stream (code {code})"),
                    ))),
                    Err(WriteError::ClosedStream) => {
                        Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
                    }
                }
            })
            .await?;
            data = &data[n..];
            self.wake_driver();
        }
        Ok(())
    }

    /// Ends stream `id` (a FIN); what was written is still delivered.
    pub fn finish(&self, id: StreamId) {
        let _ = self.state.borrow_mut().conn.send_stream(id).finish();
        self.wake_driver();
    }

    /// Abandons stream `id` both ways with `code` (RESET_STREAM and STOP_SENDING).
    pub fn reset(&self, id: StreamId, code: u32) {
        {
            let mut st = self.state.borrow_mut();
            let _ = st.conn.send_stream(id).reset(VarInt::from_u32(code));
            let _ = st.conn.recv_stream(id).stop(VarInt::from_u32(code));
        }
        self.wake_driver();
    }

    /// Closes the whole connection with an application error `code`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.state.borrow_mut().conn.close(
            Instant::now(),
            VarInt::from_u32(code),
            reason.to_vec().into(),
        );
        self.wake_driver();
    }

    /// Passes application events to whoever waits for them.
    fn dispatch(st: &mut State) {
        while let Some(event) = st.conn.poll() {
            match event {
                Event::Stream(StreamEvent::Readable { id }) => {
                    if let Some(w) = st.readable.remove(&id) {
                        w.wake();
                    }
                }
                Event::Stream(StreamEvent::Writable { id } | StreamEvent::Stopped { id, .. }) => {
                    if let Some(w) = st.writable.remove(&id) {
                        w.wake();
                    }
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    if let Some(w) = st.accepting.take() {
                        w.wake();
                    }
                }
                Event::ConnectionLost { reason } => {
                    st.lost = Some(reason);
                    st.readable.drain().for_each(|(_, w)| w.wake());
                    st.writable.drain().for_each(|(_, w)| w.wake());
                    if let Some(w) = st.accepting.take() {
                        w.wake();
                    }
                }
                _ => {}
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
