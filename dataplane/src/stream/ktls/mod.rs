//! Kernel TLS: a TLS session whose record layer the kernel runs, so that the tunnel inside
//! it is spliced like a plain one.
//!
//! At start [`probe`] asks whether this kernel has the `tls` upper-layer protocol. After an
//! HTTP/1.1 CONNECT (or SOCKS CONNECT) inside TLS, [`hand_over`] moves an established
//! session out of rustls — only when no byte of it is held in user space, since the kernel
//! reads the socket from where rustls stopped — and installs its keys and sequence numbers
//! (`TCP_ULP "tls"`, `TLS_TX`, `TLS_RX`). [`Ktls`] is then the stream's layer: data records
//! are the kernel's; alerts and key updates come up as control records (see control.rs)
//! and are answered here, with rustls' `KernelConnection` computing the next keys.

pub mod control;
pub mod crypto_info;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{CipherSuite, SupportedCipherSuite};

use super::tls::{SessionInfo, Tls};
use control::{Outbox, Record};
pub use crypto_info::{CryptoInfo, UnsupportedCipher};

/// `Ok` when the `tls` upper-layer protocol can be attached to a TCP socket here; the
/// error says why not (ENOENT: the `tls` module is not available).
pub fn probe() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    attach_ulp(client.as_raw_fd())
}

/// Why a session was not handed to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// Bytes of the session are in user space (the client sent past its CONNECT before the
    /// answer, or records wait to be sent): the kernel would miss them. The session goes on
    /// in rustls.
    #[error("TLS bytes held in user space")]
    Buffered,
    #[error("{0}")]
    Cipher(#[from] UnsupportedCipher),
    #[error("the TLS configuration does not let secrets out")]
    NotExtractable,
    /// The kernel refused the `tls` ULP; the session goes on in rustls.
    #[error("kernel refused the tls ULP: {0}")]
    Ulp(io::Error),
    /// Failed after the secrets left rustls: the session cannot go on.
    #[error("kernel TLS set-up failed, session lost: {0}")]
    Lost(String),
}

/// Hand-over outcomes as metric labels: `done`, then the reasons of [`HandOverError`] in
/// the order of [`HandOverError::outcome`].
pub const OUTCOMES: [&str; 6] = [
    "done",
    "buffered",
    "cipher",
    "not_extractable",
    "ulp_refused",
    "lost",
];

impl HandOverError {
    /// The outcome's index in [`OUTCOMES`].
    pub fn outcome(&self) -> usize {
        match self {
            HandOverError::Buffered => 1,
            HandOverError::Cipher(_) => 2,
            HandOverError::NotExtractable => 3,
            HandOverError::Ulp(_) => 4,
            HandOverError::Lost(_) => 5,
        }
    }

    /// Whether the session survived (still usable in rustls).
    pub fn kept(&self) -> bool {
        !matches!(self, HandOverError::Lost(_))
    }
}

/// Moves an established session on `fd` from rustls to the kernel. On an error that
/// [`HandOverError::kept`] the session is given back unchanged.
pub fn hand_over(fd: RawFd, tls: Box<Tls>) -> Result<Ktls, (Option<Box<Tls>>, HandOverError)> {
    if !tls.extractable() {
        return Err((Some(tls), HandOverError::NotExtractable));
    }
    if tls.held_bytes() > 0 {
        return Err((Some(tls), HandOverError::Buffered));
    }
    let Some(suite) = tls.cipher_suite().filter(kernel_cipher) else {
        return Err((Some(tls), UnsupportedCipher.into()));
    };
    // Attached without keys the socket still passes bytes through unchanged, so a refusal
    // here leaves the session to rustls.
    if let Err(e) = attach_ulp(fd) {
        return Err((Some(tls), HandOverError::Ulp(e)));
    }
    let info = tls.info();
    let lost = |e: String| (None, HandOverError::Lost(e));
    let (secrets, kernel) = tls.into_kernel().map_err(|e| lost(e.to_string()))?;
    let tls13 = info.tls13;
    for (direction, (seq, secret)) in [(libc::TLS_TX, &secrets.tx), (libc::TLS_RX, &secrets.rx)] {
        let crypto = CryptoInfo::new(tls13, *seq, secret).map_err(|e| lost(e.to_string()))?;
        install(fd, direction, &crypto).map_err(|e| lost(e.to_string()))?;
    }
    Ok(Ktls {
        kernel: RefCell::new(kernel),
        tls13,
        info,
        limit: confidentiality_limit(suite),
        control: RefCell::new(Outbox::default()),
        records: Cell::new(0),
        exhausted: Cell::new(false),
        closed: Cell::new(false),
    })
}

/// The AEADs the kernel takes (all that rustls' ring provider offers, as it happens).
fn kernel_cipher(suite: &SupportedCipherSuite) -> bool {
    matches!(
        suite.suite(),
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// Records one key may protect (rustls refreshes its own keys before this; the kernel
/// does not, so [`Ktls`] counts and does).
fn confidentiality_limit(suite: SupportedCipherSuite) -> u64 {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
        SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
    }
}

/// A TLS session the kernel runs on the stream's socket.
pub struct Ktls {
    kernel: RefCell<KernelConnection<ServerConnectionData>>,
    tls13: bool,
    info: SessionInfo,
    limit: u64,
    /// Control records that must go out before any more data: the answer to a key update,
    /// our own key update, a close_notify.
    control: RefCell<Outbox>,
    /// Records sent under the current key, counted high: each write as its full records
    /// plus one.
    records: Cell<u64>,
    /// A TLS 1.2 key at its limit: no more may be sent under it.
    exhausted: Cell<bool>,
    closed: Cell<bool>,
}

impl Ktls {
    pub fn info(&self) -> SessionInfo {
        self.info.clone()
    }

    /// Whether data may go straight to the socket (splice): nothing must precede it.
    pub fn writes_direct(&self) -> bool {
        self.control.borrow().is_empty() && !self.exhausted.get()
    }

    pub fn has_pending_output(&self) -> bool {
        !self.control.borrow().is_empty()
    }

    /// Sends the pending control records in order; sending keys move on after a KeyUpdate.
    pub fn flush(&self, fd: RawFd) -> io::Result<()> {
        let mut pending = self.control.borrow_mut();
        while let Some(record) = pending.front_mut() {
            while !record.body.is_empty() {
                let n = send_record(fd, record.content_type, &record.body)?;
                record.body.drain(..n);
            }
            if pending.pop().is_some_and(|r| r.rekey) {
                let (seq, secrets) = self.kernel.borrow_mut().update_tx_secret().map_err(other)?;
                install(
                    fd,
                    libc::TLS_TX,
                    &CryptoInfo::new(true, seq, &secrets).map_err(other)?,
                )?;
                self.records.set(0);
            }
        }
        Ok(())
    }

    /// Reads plaintext; control records are dealt with on the way (`WouldBlock`: nothing
    /// yet; 0: end of stream, a close_notify or a FIN).
    pub fn try_read(&self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.closed.get() {
                return Ok(0);
            }
            let (n, content_type) = recv_record(fd, buf)?;
            if n == 0 && !buf.is_empty() {
                // A TCP FIN without a close_notify: as in user-space TLS, an abort.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TCP FIN without a TLS close_notify",
                ));
            }
            match control::classify(content_type, &buf[..n]) {
                Record::Data => return Ok(n),
                Record::CloseNotify => self.closed.set(true),
                Record::KeyUpdate { requested } if self.tls13 => {
                    let (seq, secrets) =
                        self.kernel.borrow_mut().update_rx_secret().map_err(other)?;
                    install(
                        fd,
                        libc::TLS_RX,
                        &CryptoInfo::new(true, seq, &secrets).map_err(other)?,
                    )?;
                    if requested {
                        self.control.borrow_mut().key_update();
                    }
                }
                Record::Alert(d) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("TLS alert {d} from the client"),
                    ))
                }
                Record::KeyUpdate { .. } | Record::Unexpected => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected TLS record (type {content_type})"),
                    ))
                }
            }
        }
    }

    /// Writes data (after any pending control record: `WouldBlock` until it is out).
    pub fn try_write(&self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        self.flush(fd)?;
        if self.exhausted.get() {
            return Err(other("TLS 1.2 key at its confidentiality limit"));
        }
        let n = crate::sys::send(fd, data)?;
        self.sent(n);
        Ok(n)
    }

    /// Counts `n` bytes sent (by a write or a splice) against the key's limit; near it,
    /// TLS 1.3 moves to a new key, TLS 1.2 (which cannot) refuses further writes.
    pub fn sent(&self, n: usize) {
        let records = self.records.get() + (n as u64 >> 14) + 1;
        self.records.set(records);
        if records >= self.limit / 2 {
            if self.tls13 {
                self.control.borrow_mut().key_update();
            } else {
                self.exhausted.set(true);
            }
        }
    }

    /// Queues a close_notify (sent by [`Ktls::flush`], after any pending KeyUpdate).
    pub fn close_notify(&self) {
        self.control.borrow_mut().close_notify();
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: value is valid for reads of its length; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn attach_ulp(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")
}

fn install(fd: RawFd, direction: libc::c_int, crypto: &CryptoInfo) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TLS, direction, crypto.as_bytes())
}

/// Room for one `TLS_GET_RECORD_TYPE` control message, 8-byte aligned.
#[repr(C, align(8))]
struct CmsgSpace([u8; 32]);

/// Reads one record's plaintext (or part of it) with its content type.
fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut space = CmsgSpace([0; 32]);
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.0.as_mut_ptr().cast();
    msg.msg_controllen = space.0.len();
    // SAFETY: msg describes buffers valid for writes of their stated lengths.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut content_type = control::APPLICATION_DATA;
    // SAFETY: the CMSG_* walk stays within msg_controllen bytes the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                content_type = *libc::CMSG_DATA(c);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, content_type))
}

/// Sends `body` as a record of `content_type` (the kernel encrypts it).
fn send_record(fd: RawFd, content_type: u8, body: &[u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    let mut space = CmsgSpace([0; 32]);
    // SAFETY: as in recv_record; the control message is built within `space`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(1) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as usize;
        *libc::CMSG_DATA(c) = content_type;
        let n = libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests;
