//! The `h3` crate's QUIC traits (and `h3-datagram`'s) over the shard's own connections, so
//! that HTTP/3 (frames, SETTINGS, QPACK, GOAWAY) comes from a well-kept library while the
//! packets stay on the shard's endpoint. Every call is a poll on [`Conn`].

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, WriteBuf};
use h3_datagram::datagram::EncodedDatagram;
use h3_datagram::quic_traits::{
    DatagramConnectionExt, RecvDatagram, SendDatagram, SendDatagramErrorIncoming,
};
use quinn_proto::{ConnectionError, Dir, SendDatagramError, StreamId};

use super::conn::{Conn, StreamError};

fn connection_error(e: ConnectionError) -> ConnectionErrorIncoming {
    match e {
        ConnectionError::ApplicationClosed(c) => ConnectionErrorIncoming::ApplicationClose {
            error_code: c.error_code.into_inner(),
        },
        ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_error(e: StreamError) -> StreamErrorIncoming {
    match e {
        StreamError::Connection(c) => StreamErrorIncoming::ConnectionErrorIncoming {
            connection_error: connection_error(c),
        },
        StreamError::Reset(error_code) => StreamErrorIncoming::StreamTerminated { error_code },
        StreamError::Closed => {
            StreamErrorIncoming::Unknown(Box::new(io::Error::from(io::ErrorKind::NotConnected)))
        }
    }
}

fn h3_id(id: StreamId) -> quic::StreamId {
    // quinn's stream IDs are QUIC varints, which is what h3 accepts.
    quic::StreamId::try_from(u64::from(id)).unwrap_or_else(|_| unreachable!("a QUIC varint"))
}

/// An HTTP/3 connection's view of a shard connection.
pub struct H3Conn(pub Rc<Conn>);

impl<B: Buf> quic::Connection<B> for H3Conn {
    type RecvStream = RecvStream;
    type OpenStreams = H3Conn;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionErrorIncoming>> {
        let id = ready!(self.0.poll_accept(Dir::Uni, cx)).map_err(connection_error)?;
        Poll::Ready(Ok(RecvStream::new(&self.0, id)))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream<B>, ConnectionErrorIncoming>> {
        let id = ready!(self.0.poll_accept(Dir::Bi, cx)).map_err(connection_error)?;
        Poll::Ready(Ok(BidiStream::new(&self.0, id)))
    }

    fn opener(&self) -> H3Conn {
        H3Conn(self.0.clone())
    }
}

impl<B: Buf> quic::OpenStreams<B> for H3Conn {
    type BidiStream = BidiStream<B>;
    type SendStream = SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream<B>, StreamErrorIncoming>> {
        let id = ready!(self.0.poll_open(Dir::Bi, cx))
            .map_err(|e| stream_error(StreamError::Connection(e)))?;
        Poll::Ready(Ok(BidiStream::new(&self.0, id)))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream<B>, StreamErrorIncoming>> {
        let id = ready!(self.0.poll_open(Dir::Uni, cx))
            .map_err(|e| stream_error(StreamError::Connection(e)))?;
        Poll::Ready(Ok(SendStream::new(&self.0, id)))
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.0.close(code.value(), reason);
    }
}

/// A stream no longer read because its answer is complete (RFC 9114 §4.1.1).
const H3_NO_ERROR: u64 = h3::error::Code::H3_NO_ERROR.value();
/// A stream abandoned before it was finished (RFC 9114 §8.1).
const H3_REQUEST_CANCELLED: u64 = h3::error::Code::H3_REQUEST_CANCELLED.value();

/// The sending half of a stream: one buffer h3 handed over, written as flow control allows.
/// Dropped before it was finished (a request cut short, e.g. revoked by a policy change), it
/// resets the stream rather than leaving the peer waiting.
pub struct SendStream<B: Buf> {
    conn: Rc<Conn>,
    id: StreamId,
    pending: Option<WriteBuf<B>>,
    done: bool,
}

impl<B: Buf> Drop for SendStream<B> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.reset(self.id, H3_REQUEST_CANCELLED);
        }
    }
}

impl<B: Buf> SendStream<B> {
    fn new(conn: &Rc<Conn>, id: StreamId) -> Self {
        SendStream {
            conn: conn.clone(),
            id,
            pending: None,
            done: false,
        }
    }
}

impl<B: Buf> quic::SendStream<B> for SendStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        while let Some(buf) = self.pending.as_mut() {
            if !buf.has_remaining() {
                self.pending = None;
                break;
            }
            let n = ready!(self.conn.poll_write(self.id, buf.chunk(), cx)).map_err(stream_error)?;
            buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.pending.as_ref().is_some_and(Buf::has_remaining) {
            // h3 waits for poll_ready before handing over more; this is its bug, not the peer's.
            return Err(StreamErrorIncoming::Unknown(Box::new(io::Error::other(
                "send_data before the previous buffer was written",
            ))));
        }
        self.pending = Some(data.into());
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        ready!(quic::SendStream::<B>::poll_ready(self, cx))?;
        self.conn.finish(self.id);
        self.done = true;
        Poll::Ready(Ok(()))
    }

    fn reset(&mut self, reset_code: u64) {
        self.pending = None;
        self.done = true;
        self.conn.reset(self.id, reset_code);
    }

    fn send_id(&self) -> quic::StreamId {
        h3_id(self.id)
    }
}

/// The receiving half of a stream. Dropped before its end, it asks the peer to stop sending.
pub struct RecvStream {
    conn: Rc<Conn>,
    id: StreamId,
    done: bool,
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            self.conn.stop(self.id, H3_NO_ERROR);
        }
    }
}

impl RecvStream {
    fn new(conn: &Rc<Conn>, id: StreamId) -> Self {
        RecvStream {
            conn: conn.clone(),
            id,
            done: false,
        }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let polled = ready!(self.conn.poll_read(self.id, usize::MAX, cx));
        if !matches!(polled, Ok(Some(_))) {
            self.done = true;
        }
        Poll::Ready(polled.map_err(stream_error))
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.done = true;
        self.conn.stop(self.id, error_code);
    }

    fn recv_id(&self) -> quic::StreamId {
        h3_id(self.id)
    }
}

pub struct BidiStream<B: Buf> {
    send: SendStream<B>,
    recv: RecvStream,
}

impl<B: Buf> BidiStream<B> {
    fn new(conn: &Rc<Conn>, id: StreamId) -> Self {
        BidiStream {
            send: SendStream::new(conn, id),
            recv: RecvStream::new(conn, id),
        }
    }
}

impl<B: Buf> quic::BidiStream<B> for BidiStream<B> {
    type SendStream = SendStream<B>;
    type RecvStream = RecvStream;

    fn split(self) -> (SendStream<B>, RecvStream) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }
    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }
    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }
    fn send_id(&self) -> quic::StreamId {
        self.send.send_id()
    }
}

impl<B: Buf> quic::RecvStream for BidiStream<B> {
    type Buf = Bytes;
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }
    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }
    fn recv_id(&self) -> quic::StreamId {
        self.recv.recv_id()
    }
}

/// HTTP datagrams in QUIC DATAGRAM frames (RFC 9297 §2.1).
pub struct Datagrams(Rc<Conn>);

impl<B: Buf> DatagramConnectionExt<B> for H3Conn {
    type SendDatagramHandler = Datagrams;
    type RecvDatagramHandler = Datagrams;

    fn send_datagram_handler(&self) -> Datagrams {
        Datagrams(self.0.clone())
    }

    fn recv_datagram_handler(&self) -> Datagrams {
        Datagrams(self.0.clone())
    }
}

impl<B: Buf> SendDatagram<B> for Datagrams {
    fn send_datagram<T: Into<EncodedDatagram<B>>>(
        &mut self,
        data: T,
    ) -> Result<(), SendDatagramErrorIncoming> {
        let mut encoded: EncodedDatagram<B> = data.into();
        let bytes = encoded.copy_to_bytes(encoded.remaining());
        match self.0.send_datagram(bytes) {
            // Datagrams may be lost; one that finds the queue full is.
            Ok(()) | Err(SendDatagramError::Blocked(_)) => Ok(()),
            Err(SendDatagramError::UnsupportedByPeer | SendDatagramError::Disabled) => {
                Err(SendDatagramErrorIncoming::NotAvailable)
            }
            Err(SendDatagramError::TooLarge) => Err(SendDatagramErrorIncoming::TooLarge),
        }
    }
}

impl RecvDatagram for Datagrams {
    type Buffer = Bytes;

    fn poll_incoming_datagram(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, ConnectionErrorIncoming>> {
        self.0.poll_datagram(cx).map_err(connection_error)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use bytes::Buf;

    use super::super::test_server::{client_thread, TestServer};
    use super::super::test_support::client_config;
    use super::*;
    use crate::config::IoDriver;
    use crate::rt;

    /// The Rust h3 client (over quinn) sends POSTs on one connection; the shard, running the
    /// h3 crate over its own connections, answers each with its body reversed. SETTINGS,
    /// QPACK, DATA frames and stream ends all cross the glue both ways.
    #[test]
    fn the_h3_client_talks_to_h3_on_the_shard_endpoint() {
        let mut server = TestServer::new("h3-glue", b"h3");
        let (addr, cert) = (server.addr, server.cert.clone());
        let client = client_thread(move || async move {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(client_config(&cert, b"h3"));
            let quic = ep.connect(addr, "localhost").unwrap().await.unwrap();
            let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(quic))
                .await
                .unwrap();
            let drive = tokio::spawn(async move { poll_fn(|cx| driver.poll_close(cx)).await });
            for i in 0..10u8 {
                let req = http::Request::post("https://localhost/echo")
                    .body(())
                    .unwrap();
                let mut stream = send.send_request(req).await.unwrap();
                let body: Vec<u8> = (0..20_000u32).map(|j| (j as u8).wrapping_add(i)).collect();
                stream.send_data(Bytes::from(body.clone())).await.unwrap();
                stream.finish().await.unwrap();
                let resp = stream.recv_response().await.unwrap();
                assert_eq!(resp.status(), 200);
                let mut got = Vec::new();
                while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                    got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                }
                let mut want = body;
                want.reverse();
                assert_eq!(got, want, "request {i}");
            }
            drop(send);
            drive.abort();
            ep.close(0u32.into(), b"done");
            ep.wait_idle().await;
        });

        let runtime = rt::build_runtime(IoDriver::Auto).unwrap();
        let endpoint = runtime.block_on(async { server.endpoint() });
        runtime.block_on(async move {
            let conn = endpoint.accept().await;
            let mut h3 = h3::server::builder()
                .enable_extended_connect(true)
                .enable_datagram(true)
                .build::<_, Bytes>(H3Conn(conn))
                .await
                .unwrap();
            let mut served = 0;
            while let Ok(Some(resolver)) = h3.accept().await {
                let (req, mut stream) = resolver.resolve_request().await.unwrap();
                assert_eq!(req.uri().path(), "/echo");
                let mut body = Vec::new();
                while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                    body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                }
                body.reverse();
                stream.send_response(http::Response::new(())).await.unwrap();
                stream.send_data(Bytes::from(body)).await.unwrap();
                stream.finish().await.unwrap();
                served += 1;
            }
            assert_eq!(served, 10);
        });
        client.join().unwrap();
    }
}
