//! TLS on a stream's socket: a rustls server connection driven over the non-blocking socket
//! by the stream's own reads and writes. The relay and the drivers see plaintext through
//! the same `try_read`/`try_write`/`readiness` as for a plain socket; what differs is that
//! written plaintext may sit as ciphertext in rustls' buffer until the socket takes it, so
//! writers flush ([`Tls::flush`]) before they wait on anything else.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::sys;

/// Ciphertext rustls may hold for the socket before writers are told to wait.
const SEND_BUFFER: usize = 64 * 1024;

/// The socket as rustls reads and writes it: non-blocking, `WouldBlock` when there is
/// nothing to read or no room.
struct Socket(RawFd);

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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

/// A server connection in progress, fed the bytes read before TLS was recognised (they are
/// processed by the first [`handshake_step`], which can answer them with an alert).
pub fn start(config: Arc<ServerConfig>, early: &[u8]) -> Result<ServerConnection, HandshakeError> {
    let mut conn = ServerConnection::new(config)?;
    conn.set_buffer_limit(Some(SEND_BUFFER));
    let mut early = early;
    while !early.is_empty() {
        if conn.read_tls(&mut early)? == 0 {
            break;
        }
    }
    Ok(conn)
}

/// One handshake step without waiting: processes what was read (answering a broken
/// handshake with rustls' alert), sends what rustls has, reads what the socket has.
/// `Ok(true)` when the handshake is done and its last flight sent; `WouldBlock` when the
/// socket must be waited on (writable if `conn.wants_write()`, else readable).
pub fn handshake_step(conn: &mut ServerConnection, fd: RawFd) -> Result<bool, HandshakeError> {
    if let Err(e) = conn.process_new_packets() {
        // The alert rustls queued is worth one try; the connection ends either way.
        let _ = conn.write_tls(&mut Socket(fd));
        return Err(e.into());
    }
    while conn.wants_write() {
        conn.write_tls(&mut Socket(fd))?;
    }
    if !conn.is_handshaking() {
        return Ok(true);
    }
    match conn.read_tls(&mut Socket(fd)) {
        Ok(0) => Err(HandshakeError::Eof),
        Ok(_) => Ok(false),
        Err(e) => Err(e.into()),
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

/// An established TLS session on a stream's socket.
pub struct Tls {
    conn: RefCell<ServerConnection>,
    /// Plaintext rustls holds for reading (as of the last processing).
    readable: Cell<usize>,
    /// The peer closed (close_notify, or its TCP FIN): reads return end of stream.
    closed: Cell<bool>,
}

impl Tls {
    pub fn new(conn: ServerConnection) -> Tls {
        Tls {
            conn: RefCell::new(conn),
            readable: Cell::new(0),
            closed: Cell::new(false),
        }
    }

    pub fn info(&self) -> SessionInfo {
        let conn = self.conn.borrow();
        SessionInfo {
            tls13: conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            client_name: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::leaf_common_name(leaf.as_ref())),
        }
    }

    /// Whether a read would return something without waiting for the socket.
    pub fn has_readable(&self) -> bool {
        self.readable.get() > 0 || self.closed.get()
    }

    /// Whether ciphertext is waiting for the socket.
    pub fn has_pending_output(&self) -> bool {
        self.conn.borrow().wants_write()
    }

    /// Sends pending ciphertext without waiting; `WouldBlock` when some is left.
    pub fn flush(&self, fd: RawFd) -> io::Result<()> {
        let mut conn = self.conn.borrow_mut();
        while conn.wants_write() {
            conn.write_tls(&mut Socket(fd))?;
        }
        Ok(())
    }

    /// Reads plaintext without waiting for the socket (`WouldBlock`: nothing yet; 0: end of
    /// stream — a close_notify, or a TCP FIN, which many clients send without one).
    pub fn try_read(&self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.conn.borrow_mut();
        loop {
            match conn.reader().read(buf) {
                Ok(n) => {
                    self.readable.set(self.readable.get().saturating_sub(n));
                    if n == 0 {
                        self.closed.set(true);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.closed.set(true);
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
            if self.closed.get() {
                return Ok(0);
            }
            if conn.read_tls(&mut Socket(fd))? == 0 {
                self.closed.set(true);
                return Ok(0);
            }
            let state = conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.readable.set(state.plaintext_bytes_to_read());
            if state.peer_has_closed() && state.plaintext_bytes_to_read() == 0 {
                self.closed.set(true);
            }
            // Post-handshake messages (session tickets, key updates) may want to go out.
            while conn.wants_write() {
                if conn.write_tls(&mut Socket(fd)).is_err() {
                    break;
                }
            }
        }
    }

    /// Takes plaintext without waiting: first sends what is pending (`WouldBlock` while
    /// some is left), then encrypts `data` and sends what the socket takes now. Accepted
    /// bytes may still be pending as ciphertext: see [`Tls::flush`].
    pub fn try_write(&self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        self.flush(fd)?;
        let mut conn = self.conn.borrow_mut();
        let n = conn.writer().write(data)?;
        while conn.wants_write() {
            match conn.write_tls(&mut Socket(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Queues a close_notify: the peer will read end of stream once it is flushed.
    pub fn close_notify(&self) {
        self.conn.borrow_mut().send_close_notify();
    }
}
