//! The stream seam: what drivers read from and write to.
//!
//! [`Stream`] owns a connected TCP socket of the shard's runtime (private: drivers never reach
//! the socket itself) and knows the connection's revoke handle, so that a revoked connection's
//! sockets close with a reset. [`BufStream`] puts the bytes read but not yet parsed in front of
//! a stream. Every wait is bounded by the session's [`Deadlines`]: the handshake deadline
//! while one runs, else the idle timeout (one clock for both streams of a tunnel).

mod buffered;
mod byte_queue;
pub mod deadline;
pub mod ktls;
pub mod tls;
pub mod tokio_io;

pub use buffered::{BufStream, ReadError};
pub use deadline::{Deadlines, Expired};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use crate::revoke::RevokeHandle;
use crate::rt::{self, TcpStream};
use crate::sys;

pub struct Stream {
    socket: TcpStream,
    layer: Layer,
    revoke: Option<RevokeHandle>,
    deadlines: Deadlines,
}

/// What reads and writes go through on their way to the socket.
enum Layer {
    Plain,
    /// TLS terminated by rustls in user space.
    Tls(Box<tls::Tls>),
    /// TLS whose record layer the kernel runs.
    Kernel(Box<ktls::Ktls>),
}

impl Stream {
    /// Wraps a connected socket: non-blocking (the relay and reads issue syscalls directly
    /// after io_uring readiness) and without Nagle's delay (a proxy must not add latency to
    /// small writes).
    pub fn new(socket: TcpStream, deadlines: Deadlines) -> Stream {
        let _ = sys::set_nonblocking(socket.as_raw_fd());
        let _ = socket.set_nodelay(true);
        Stream {
            socket,
            layer: Layer::Plain,
            revoke: None,
            deadlines,
        }
    }

    /// Runs a TLS handshake on this (plain) stream, `early` being the bytes already read
    /// from it, and returns the stream with TLS terminated, within the session's handshake
    /// deadline.
    pub async fn accept_tls(
        mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
        early: &[u8],
    ) -> Result<Stream, tls::HandshakeError> {
        let session = tls::Tls::start(config, early)?;
        let fd = self.raw_fd();
        loop {
            match session.handshake_step(fd) {
                Ok(()) => break,
                Err(tls::HandshakeError::Io(e)) if sys::would_block(&e) => {
                    self.ready(session.has_pending_output()).await?;
                }
                Err(e) => return Err(e),
            }
        }
        self.layer = Layer::Tls(Box::new(session));
        Ok(self)
    }

    /// Hands this stream's TLS session to the kernel (see ktls.rs), so that what follows is
    /// spliced. The stream comes back unless the session was lost on the way (it is then
    /// closed with a reset); unchanged if the hand-over did not happen.
    pub fn into_kernel_tls(mut self) -> (Option<Stream>, Result<(), ktls::HandOverError>) {
        let Layer::Tls(session) = std::mem::replace(&mut self.layer, Layer::Plain) else {
            return (Some(self), Err(ktls::HandOverError::Buffered));
        };
        match ktls::hand_over(self.raw_fd(), session) {
            Ok(kernel) => {
                self.layer = Layer::Kernel(Box::new(kernel));
                (Some(self), Ok(()))
            }
            Err((Some(session), why)) => {
                self.layer = Layer::Tls(session);
                (Some(self), Err(why))
            }
            Err((None, why)) => {
                self.reset_on_close();
                (None, Err(why))
            }
        }
    }

    /// What the TLS handshake agreed on, for a TLS stream.
    pub fn tls_info(&self) -> Option<tls::SessionInfo> {
        match &self.layer {
            Layer::Plain => None,
            Layer::Tls(t) => Some(t.info()),
            Layer::Kernel(k) => Some(k.info()),
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self.layer, Layer::Plain)
    }

    /// Whether the kernel runs this stream's TLS.
    pub(crate) fn is_kernel_tls(&self) -> bool {
        matches!(self.layer, Layer::Kernel(_))
    }

    /// Counts bytes spliced into this stream (kernel TLS keys have a limit).
    pub(crate) fn spliced_in(&self, n: usize) {
        if let Layer::Kernel(k) = &self.layer {
            k.sent(n);
        }
    }

    /// Closes with a reset instead of a FIN if `handle` fires before the stream is dropped.
    pub fn reset_on_revoke(mut self, handle: &RevokeHandle) -> Stream {
        self.revoke = Some(handle.clone());
        self
    }

    /// Belongs to another session from now on (a kept-alive upstream serving its next
    /// request): resets on its handle, waits on its clock.
    pub(crate) fn rebind(&mut self, handle: &RevokeHandle, deadlines: &Deadlines) {
        self.revoke = Some(handle.clone());
        self.deadlines = deadlines.clone();
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The descriptor splice(2) may move this stream's bytes on: `Some` for a plain socket.
    /// Stream kinds that are not one (TLS without kTLS, h2 and QUIC streams) answer `None`
    /// and the relay copies through [`Stream::try_read`] and [`Stream::try_write`].
    pub(crate) fn splice_fd(&self) -> Option<RawFd> {
        match &self.layer {
            Layer::Plain => Some(self.raw_fd()),
            Layer::Kernel(k) if k.writes_direct() => Some(self.raw_fd()),
            Layer::Kernel(_) | Layer::Tls(_) => None,
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The session's clock, which bounds every wait of this stream.
    pub(crate) fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Waits until the stream is readable (or writable), until the session's clock says
    /// it has expired (`TimedOut`). The relay waits so: one clock for both directions.
    pub(crate) async fn readiness(&self, write: bool) -> io::Result<()> {
        self.deadlines.within(self.raw_readiness(write)).await?
    }

    /// As [`Stream::readiness`], and for at most the idle timeout on its own: a peer that
    /// takes nothing must not hold a busy connection (and its streams) forever.
    pub(crate) async fn readiness_op(&self, write: bool) -> io::Result<()> {
        self.deadlines.within_op(self.raw_readiness(write)).await?
    }

    async fn raw_readiness(&self, write: bool) -> io::Result<()> {
        match &self.layer {
            // Plaintext rustls already holds needs no socket; room for plaintext exists
            // unless ciphertext is pending.
            Layer::Tls(t) if (!write && t.has_readable()) || (write && !t.has_pending_output()) => {
                return Ok(())
            }
            _ => {}
        }
        if write {
            rt::writable(&self.socket).await
        } else {
            rt::readable(&self.socket).await
        }
    }

    /// Reads what is there without waiting (`WouldBlock`: nothing yet; 0: end of stream).
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.layer {
            Layer::Plain => sys::recv(self.raw_fd(), buf),
            Layer::Tls(t) => t.try_read(self.raw_fd(), buf),
            Layer::Kernel(k) => k.try_read(self.raw_fd(), buf),
        }
    }

    /// Writes what the stream takes now without waiting (`WouldBlock`: nothing).
    pub(crate) fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match &self.layer {
            Layer::Plain => sys::send(self.raw_fd(), data),
            Layer::Tls(t) => t.try_write(self.raw_fd(), data),
            Layer::Kernel(k) => k.try_write(self.raw_fd(), data),
        }
    }

    /// Whether written bytes are still waiting (as TLS records) for the socket to take them.
    pub(crate) fn has_pending_output(&self) -> bool {
        match &self.layer {
            Layer::Plain => false,
            Layer::Tls(t) => t.has_pending_output(),
            Layer::Kernel(k) => k.has_pending_output(),
        }
    }

    /// Sends what is pending without waiting (`WouldBlock`: some is left).
    pub(crate) fn try_flush(&self) -> io::Result<()> {
        match &self.layer {
            Layer::Plain => Ok(()),
            Layer::Tls(t) => t.flush(self.raw_fd()),
            Layer::Kernel(k) => k.flush(self.raw_fd()),
        }
    }

    /// Passes an end of stream on (a FIN); reading goes on. Over TLS a close_notify goes
    /// first (flushed by [`Stream::flush`] waiting as needed).
    pub(crate) async fn shutdown_write(&self) {
        let tls = match &self.layer {
            Layer::Plain => false,
            Layer::Tls(t) => {
                t.close_notify();
                true
            }
            Layer::Kernel(k) => {
                k.close_notify();
                true
            }
        };
        if tls {
            // Boxed: every tunnel's relay holds this future's state while idle, and only
            // TLS streams need the wait.
            if Box::pin(self.flush()).await.is_err() {
                return;
            }
        }
        sys::shutdown_write(self.raw_fd());
    }

    /// Waits until everything written has gone to the socket (a no-op for a plain one).
    pub async fn flush(&self) -> io::Result<()> {
        while self.has_pending_output() {
            match self.try_flush() {
                Ok(()) => {}
                Err(e) if sys::would_block(&e) => self.ready(true).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Closes with a reset instead of a FIN when dropped (the other side of its tunnel broke).
    pub(crate) fn reset_on_close(&self) {
        sys::abort_on_close(self.raw_fd());
    }

    async fn ready(&self, write: bool) -> io::Result<()> {
        loop {
            let ready = if write {
                self.readiness_op(true).await
            } else {
                self.readiness(false).await
            };
            match ready {
                Err(e) if sys::is_spurious(&e) => continue,
                other => return other,
            }
        }
    }

    /// Reads what has arrived into `buf` (0: end of stream), waiting at most the idle timeout.
    pub async fn read_into(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if self.is_tls() {
            // TLS layers read into initialised memory.
            buf.fill(MaybeUninit::new(0));
            // SAFETY: every byte was just initialised.
            let buf = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
            return self.read_plain(buf).await;
        }
        loop {
            match sys::recv_uninit(self.raw_fd(), buf) {
                Err(e) if sys::would_block(&e) => self.ready(false).await?,
                other => return self.moved(other),
            }
        }
    }

    /// Something moved (or the stream ended): the session is not idle.
    fn moved<T>(&self, outcome: io::Result<T>) -> io::Result<T> {
        if outcome.is_ok() {
            self.deadlines.touch();
        }
        outcome
    }

    async fn read_plain(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.try_read(buf) {
                Err(e) if sys::would_block(&e) => self.ready(false).await?,
                other => return self.moved(other),
            }
        }
    }

    /// Writes all of `data` (and, over TLS, waits until it has left); a peer that takes
    /// nothing for the idle timeout is given up on.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        while sent < data.len() {
            match self.try_write(&data[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    sent += n;
                    self.deadlines.touch();
                }
                Err(e) if sys::would_block(&e) => self.ready(true).await?,
                Err(e) => return Err(e),
            }
        }
        if self.is_tls() {
            // Boxed as in `shutdown_write`: plain streams never wait here.
            Box::pin(self.flush()).await?;
        }
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.revoke.as_ref().is_some_and(RevokeHandle::is_revoked) {
            // A reset, not a FIN: a peer must not take a cut-off transfer for a complete one.
            self.reset_on_close();
        }
    }
}
