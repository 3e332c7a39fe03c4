//! TLS on a stream's socket: a rustls server connection driven over the non-blocking socket
//! by the stream's own reads and writes. The relay and the drivers see plaintext through
//! the same `try_read`/`try_write`/`readiness` as for a plain socket.
//!
//! rustls' *unbuffered* API: ciphertext both ways sits in queues of ours, never inside
//! rustls, so at every moment it is known which bytes were taken from the socket and not
//! yet processed. Handing the session to kernel TLS (stream/ktls.rs) is only safe when there
//! are none — the buffered API cannot say. Written plaintext may sit as ciphertext until the
//! socket takes it, so writers flush ([`Tls::flush`]) before they wait on anything else.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ExtractedSecrets, ServerConfig, SupportedCipherSuite};

use super::byte_queue::{self, ByteQueue};
use crate::sys;

/// The largest TLS record on the wire: header, 2^14 bytes of plaintext and the most
/// expansion TLS 1.2 allows (RFC 5246 §6.2.3).
const MAX_RECORD: usize = 5 + (1 << 14) + 2048;
/// Plaintext encrypted per write: what fits in one pooled buffer sealed.
const MAX_WRITE: usize = byte_queue::SIZE - record_overhead(byte_queue::SIZE);

/// The most `len` bytes of plaintext grow by when sealed into records of 2^14 bytes: each
/// record's header, explicit nonce, tag and content type, at most 32 bytes here.
const fn record_overhead(len: usize) -> usize {
    32 * (len / (1 << 14) + 1)
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client broke TLS (or spoke something else); it was sent an alert.
    #[error("client TLS error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client closed during the TLS handshake")]
    Eof,
    #[error("socket error during the TLS handshake: {0}")]
    Io(#[from] io::Error),
}

/// What the caller wants of a round of processing.
enum Want<'a> {
    Handshake,
    /// Plaintext, into this buffer.
    Read(&'a mut [u8]),
    /// This plaintext encrypted (as much as fits).
    Write(&'a [u8]),
    CloseNotify,
}

/// Where a round of processing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Bytes read into the buffer or taken for writing (a close_notify: 0).
    Done(usize),
    /// Every whole record held is processed: more are needed from the socket.
    NeedBytes,
    /// The handshake is complete (for [`Want::Handshake`]).
    Established,
    /// The peer's close_notify was read: no more plaintext will come.
    PeerClosed,
}

/// The connection with its three queues: `incoming` ciphertext read from the socket and
/// not yet processed, `outgoing` ciphertext not yet sent, `plaintext` decrypted but not
/// yet read (only when a record did not fit in the reader's buffer, or a writer had to
/// get past it).
struct Engine {
    conn: UnbufferedServerConnection,
    incoming: ByteQueue,
    outgoing: ByteQueue,
    plaintext: ByteQueue,
}

impl Engine {
    /// Processes the records held until what `want` asks for is done or needs the socket.
    fn run(&mut self, mut want: Want<'_>) -> Result<Progress, rustls::Error> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(self.incoming.bytes_mut());
            let mut extra_discard = 0;
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.incoming.consume(discard);
                    self.queue_alert();
                    return Err(e);
                }
            };
            let progress = match state {
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut self.outgoing, |out| data.encode(out));
                    None
                }
                // Our queue carries the bytes, in order, until the socket takes them.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::ReadTraffic(mut records) => {
                    let mut read = 0;
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        extra_discard += record.discard;
                        let mut payload = record.payload;
                        if let Want::Read(dst) = &mut want {
                            // Straight into the reader's buffer unless older bytes wait.
                            if self.plaintext.is_empty() {
                                let n = payload.len().min(dst.len() - read);
                                dst[read..read + n].copy_from_slice(&payload[..n]);
                                read += n;
                                payload = &payload[n..];
                            }
                        }
                        if !payload.is_empty() {
                            self.plaintext.push(payload);
                        }
                    }
                    (read > 0).then_some(Progress::Done(read))
                }
                ConnectionState::WriteTraffic(mut traffic) => match &want {
                    Want::Handshake => Some(Progress::Established),
                    Want::Read(_) => Some(Progress::NeedBytes),
                    Want::Write(data) => {
                        let n = data.len().min(MAX_WRITE);
                        encrypt(&mut self.outgoing, n, |out| {
                            traffic.encrypt(&data[..n], out)
                        })?;
                        Some(Progress::Done(n))
                    }
                    Want::CloseNotify => {
                        encrypt(&mut self.outgoing, 0, |out| traffic.queue_close_notify(out))?;
                        Some(Progress::Done(0))
                    }
                },
                ConnectionState::BlockedHandshake => Some(Progress::NeedBytes),
                // Edge-triggered: a writer goes on, the peer may still read.
                ConnectionState::PeerClosed => match want {
                    Want::Write(_) | Want::CloseNotify => None,
                    Want::Handshake | Want::Read(_) => Some(Progress::PeerClosed),
                },
                // Both close_notify sent: terminal.
                ConnectionState::Closed => match want {
                    Want::Write(_) => return Err(rustls::Error::General("TLS closed".into())),
                    Want::CloseNotify => Some(Progress::Done(0)),
                    Want::Handshake | Want::Read(_) => Some(Progress::PeerClosed),
                },
                // Early data is never accepted (the config allows none).
                ConnectionState::ReadEarlyData(_) => {
                    return Err(rustls::Error::General("unexpected early data".into()))
                }
                _ => return Err(rustls::Error::General("unexpected TLS state".into())),
            };
            self.incoming.consume(discard + extra_discard);
            match progress {
                // TLS 1.3 lets the server write before the client's Finished (and its
                // certificate) is in: the handshake is complete only when rustls says so.
                Some(Progress::Established) if self.conn.is_handshaking() => {
                    return Ok(Progress::NeedBytes)
                }
                Some(p) => return Ok(p),
                None => {}
            }
        }
    }

    /// After an error rustls may have queued an alert: encoded so that it is worth a try.
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(self.incoming.bytes_mut());
            let more = match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut self.outgoing, |out| data.encode(out));
                    true
                }
                _ => false,
            };
            self.incoming.consume(discard);
            if !more {
                return;
            }
        }
    }

    /// Sends queued ciphertext without waiting; `WouldBlock` when some is left.
    fn send(&mut self, fd: RawFd) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            let n = sys::send(fd, self.outgoing.bytes())?;
            self.outgoing.consume(n);
        }
        Ok(())
    }

    /// Reads what the socket has (at least room for a whole record); 0 at end of stream.
    fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let read = sys::recv(fd, self.incoming.spare(MAX_RECORD));
        // Committing nothing to an empty queue gives its buffer back.
        self.incoming.commit(*read.as_ref().unwrap_or(&0));
        read
    }

    /// Whether a whole record waits in `incoming` (processing it may yield plaintext
    /// without the socket).
    fn holds_whole_record(&self) -> bool {
        let held = self.incoming.bytes();
        held.len() >= 5 && held.len() >= 5 + usize::from(u16::from_be_bytes([held[3], held[4]]))
    }
}

/// Encodes a handshake record (or alert) into `out`, growing it as rustls asks.
fn encode(out: &mut ByteQueue, mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let mut need = 4096;
    loop {
        match f(out.spare(need)) {
            Ok(n) => return out.commit(n),
            Err(EncodeError::InsufficientSize(e)) if e.required_size > need => {
                need = e.required_size
            }
            // Nothing written: an empty queue gives its buffer back.
            Err(_) => return out.commit(0),
        }
    }
}

/// Encrypts `len` bytes of plaintext into `out`, growing it as rustls asks.
fn encrypt(
    out: &mut ByteQueue,
    len: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let mut need = len + record_overhead(len);
    loop {
        match f(out.spare(need)) {
            Ok(n) => {
                out.commit(n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(e)) if e.required_size > need => {
                need = e.required_size
            }
            Err(_) => {
                out.commit(0);
                return Err(rustls::Error::EncryptError);
            }
        }
    }
}

/// What a completed handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub tls13: bool,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
    /// The common name of the client certificate the handshake verified, if one was sent.
    pub client_name: Option<String>,
}

/// A TLS session on a stream's socket: handshaking, then established.
pub struct Tls {
    engine: RefCell<Engine>,
    /// The configuration lets the secrets out (for kernel TLS).
    extractable: bool,
    /// The peer sent its close_notify: reads return end of stream.
    closed: Cell<bool>,
}

impl Tls {
    /// A server connection in progress, given the bytes read before TLS was recognised
    /// (the first [`Tls::handshake_step`] processes them, and may answer with an alert).
    pub fn start(config: Arc<ServerConfig>, early: &[u8]) -> Result<Tls, HandshakeError> {
        let mut incoming = ByteQueue::default();
        if !early.is_empty() {
            incoming.push(early);
        }
        Ok(Tls {
            extractable: config.enable_secret_extraction,
            engine: RefCell::new(Engine {
                conn: UnbufferedServerConnection::new(config)?,
                incoming,
                outgoing: ByteQueue::default(),
                plaintext: ByteQueue::default(),
            }),
            closed: Cell::new(false),
        })
    }

    /// Moves the handshake on without waiting: processes what was read (a broken handshake
    /// is answered with rustls' alert), sends what is queued, reads what the socket has.
    /// `Ok` once complete and its last flight sent; `WouldBlock` when the socket must be
    /// waited on (writable if [`Tls::has_pending_output`], else readable).
    pub fn handshake_step(&self, fd: RawFd) -> Result<(), HandshakeError> {
        let mut engine = self.engine.borrow_mut();
        loop {
            match engine.run(Want::Handshake) {
                Err(e) => {
                    // The alert is worth one try; the connection ends either way.
                    let _ = engine.send(fd);
                    return Err(e.into());
                }
                Ok(Progress::Established) => return Ok(engine.send(fd)?),
                Ok(Progress::PeerClosed) => return Err(HandshakeError::Eof),
                Ok(_) => {
                    engine.send(fd)?;
                    if engine.receive(fd)? == 0 {
                        return Err(HandshakeError::Eof);
                    }
                }
            }
        }
    }

    pub fn info(&self) -> SessionInfo {
        let engine = self.engine.borrow();
        let conn = &engine.conn;
        SessionInfo {
            tls13: conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            client_name: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::identity::leaf_common_name(leaf.as_ref())),
        }
    }

    /// Whether a read would return something without waiting for the socket.
    pub fn has_readable(&self) -> bool {
        let engine = self.engine.borrow();
        self.closed.get() || !engine.plaintext.is_empty() || engine.holds_whole_record()
    }

    /// Whether ciphertext is waiting for the socket.
    pub fn has_pending_output(&self) -> bool {
        !self.engine.borrow().outgoing.is_empty()
    }

    /// Sends pending ciphertext without waiting; `WouldBlock` when some is left.
    pub fn flush(&self, fd: RawFd) -> io::Result<()> {
        self.engine.borrow_mut().send(fd)
    }

    /// Reads plaintext without waiting for the socket (`WouldBlock`: nothing yet; 0: end of
    /// stream, a close_notify). A TCP FIN without a close_notify is an error
    /// (`UnexpectedEof`): the peer may have been cut off, and passing it on as a clean end
    /// would make a truncated upload look complete (RFC 8446 §6.1).
    pub fn try_read(&self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let mut engine = self.engine.borrow_mut();
        if !engine.plaintext.is_empty() {
            return Ok(engine.plaintext.pop_into(buf));
        }
        if self.closed.get() || buf.is_empty() {
            return Ok(0);
        }
        loop {
            match engine.run(Want::Read(&mut *buf)).map_err(invalid_data)? {
                Progress::Done(n) => return Ok(n),
                Progress::PeerClosed => {
                    self.closed.set(true);
                    return Ok(0);
                }
                Progress::NeedBytes | Progress::Established => {
                    // Post-handshake messages (tickets, a key update's answer) may wait.
                    match engine.send(fd) {
                        Err(e) if !sys::would_block(&e) => return Err(e),
                        _ => {}
                    }
                    if engine.receive(fd)? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TCP FIN without a TLS close_notify",
                        ));
                    }
                }
            }
        }
    }

    /// Takes plaintext without waiting: first sends what is pending (`WouldBlock` while
    /// some is left), then encrypts (part of) `data` and sends what the socket takes now.
    /// Accepted bytes may still be pending as ciphertext: see [`Tls::flush`].
    pub fn try_write(&self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        let mut engine = self.engine.borrow_mut();
        engine.send(fd)?;
        if data.is_empty() {
            return Ok(0);
        }
        let n = match engine.run(Want::Write(data)).map_err(invalid_data)? {
            Progress::Done(n) => n,
            _ => return Err(io::ErrorKind::WouldBlock.into()),
        };
        match engine.send(fd) {
            Err(e) if !sys::would_block(&e) => Err(e),
            _ => Ok(n),
        }
    }

    /// Queues a close_notify: the peer will read end of stream once it is flushed.
    pub fn close_notify(&self) {
        let _ = self.engine.borrow_mut().run(Want::CloseNotify);
    }

    /// Bytes held in user space: ciphertext read and not processed, or not yet sent, and
    /// plaintext not yet read. A session can leave rustls only when there are none.
    pub fn held_bytes(&self) -> usize {
        let engine = self.engine.borrow();
        engine.incoming.len() + engine.outgoing.len() + engine.plaintext.len()
    }

    /// Whether the configuration lets the secrets out.
    pub fn extractable(&self) -> bool {
        self.extractable
    }

    pub fn cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.engine.borrow().conn.negotiated_cipher_suite()
    }

    /// Takes the session out of rustls: its traffic secrets and sequence numbers, and what
    /// computes the next keys. Ends the session here whatever the outcome.
    pub fn into_kernel(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<ServerConnectionData>), rustls::Error> {
        self.engine
            .into_inner()
            .conn
            .dangerous_into_kernel_connection()
    }
}

fn invalid_data(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Driving a session over a non-blocking socket by waiting on it, for tests.
#[cfg(test)]
pub(crate) mod blocking {
    use super::*;

    pub fn handshake(tls: &Tls, fd: RawFd) {
        loop {
            match tls.handshake_step(fd) {
                Ok(()) => return,
                Err(HandshakeError::Io(e)) if sys::would_block(&e) => {
                    sys::wait_ready(fd, tls.has_pending_output())
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Until every queued record has gone to the socket.
    pub fn flush(tls: &Tls, fd: RawFd) {
        while tls.has_pending_output() {
            match tls.flush(fd) {
                Err(e) if sys::would_block(&e) => sys::wait_ready(fd, true),
                other => other.unwrap(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use crate::identity::test_support;

    /// A deterministic sequence of sizes.
    struct Sizes(u64);
    impl Sizes {
        fn next(&mut self, max: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            1 + (self.0 % max as u64) as usize
        }
    }

    /// The server side: a handshake, then everything read is echoed back, read and written
    /// in uneven pieces, until the client's close_notify; then ours.
    fn echo_server(socket: TcpStream, config: Arc<ServerConfig>, seed: u64) -> (u64, SessionInfo) {
        socket.set_nonblocking(true).unwrap();
        let fd = socket.as_raw_fd();
        let tls = Tls::start(config, &[]).unwrap();
        blocking::handshake(&tls, fd);
        let info = tls.info();
        let mut sizes = Sizes(seed);
        let mut buf = vec![0; 40_000];
        let mut echoed = 0u64;
        loop {
            let want = sizes.next(buf.len());
            let n = match tls.try_read(fd, &mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if sys::would_block(&e) => {
                    sys::wait_ready(fd, false);
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            let mut sent = 0;
            while sent < n {
                let piece = sizes.next(n - sent);
                match tls.try_write(fd, &buf[sent..sent + piece]) {
                    Ok(m) => sent += m,
                    Err(e) if sys::would_block(&e) => sys::wait_ready(fd, true),
                    Err(e) => panic!("{e}"),
                }
            }
            echoed += n as u64;
        }
        tls.close_notify();
        blocking::flush(&tls, fd);
        (echoed, info)
    }

    /// Bytes through the server side arrive whole and in order both ways, with reads and
    /// writes of every size against records of every size, two chunks in flight so that
    /// records arrive while the server writes (and are decrypted by the writer).
    #[test]
    fn bytes_cross_in_order_through_uneven_reads_and_writes() {
        let (identity, pem) = test_support::identity("stream-tls");
        // HTTP/1.1 without h2 on offer, and h2 chosen where it is.
        for (seed, alpn, h2) in [(7u64, &b"http/1.1"[..], false), (99, b"h2", true)] {
            let config = Arc::new(identity.tcp_server_config(h2, None, false));
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (socket, _) = listener.accept().unwrap();
                echo_server(socket, config, seed)
            });
            let client = rustls::ClientConnection::new(
                Arc::new(test_support::trusting(&pem, alpn)),
                "localhost".try_into().unwrap(),
            )
            .unwrap();
            let mut tls = rustls::StreamOwned::new(client, TcpStream::connect(addr).unwrap());
            let data: Vec<u8> = (0..6_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut sizes = Sizes(seed + 1);
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = sizes.next(48 * 1024).min(data.len() - at);
                chunks.push(at..at + n);
                at += n;
            }
            let mut back = vec![0; data.len()];
            for (i, chunk) in chunks.iter().enumerate() {
                tls.write_all(&data[chunk.clone()]).unwrap();
                if i > 0 {
                    let prev = chunks[i - 1].clone();
                    tls.read_exact(&mut back[prev]).unwrap();
                }
            }
            let last = chunks.last().unwrap().clone();
            tls.read_exact(&mut back[last]).unwrap();
            assert!(back == data, "echo differs (seed {seed})");
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            let (echoed, info) = server.join().unwrap();
            assert_eq!(echoed, data.len() as u64);
            assert_eq!(info.alpn.as_deref(), Some(alpn), "seed {seed}");
            assert_eq!(tls.conn.alpn_protocol(), Some(alpn));
        }
    }
}
