//! Thin syscall wrappers for the relay: splice, recv, send, shutdown and abortive close.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// A syscall's count, or the error it reported (`ret < 0`).
pub(crate) fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Non-blocking splice between a socket and a pipe (both ends are O_NONBLOCK).
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets are required for sockets and pipes; the descriptors are owned by
    // the caller for the duration of the call.
    check(unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    })
}

pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    check(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// Relay syscalls must never block the shard thread, but sockets accepted or connected
/// through io_uring come without O_NONBLOCK. FIONBIO sets it in one syscall (F_GETFL +
/// F_SETFL took two, per socket, per tunnel).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: ioctl(FIONBIO) on a descriptor the caller owns, with a valid int pointer.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends our FIN: the peer reads end-of-stream, and can still send to us.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on a socket descriptor the caller owns; errors (already closed by the
    // peer) leave nothing to undo.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Makes the next close send RST instead of FIN, so that a reset on one side of a tunnel
/// reaches the other side as a reset.
pub fn abort_on_close(fd: RawFd) {
    // SAFETY: the caller owns fd for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO));
}

/// io_uring ops cancelled in flight can complete with -ERESTARTSYS (512), which is not a
/// real error: the wait is simply retried.
pub fn is_spurious(e: &io::Error) -> bool {
    e.raw_os_error() == Some(512) || e.kind() == io::ErrorKind::Interrupted
}

/// Nothing to do yet: the socket would block (or the wait was spuriously interrupted), so
/// wait for readiness and try again.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || is_spurious(e)
}

pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET)
            | Some(libc::EPIPE)
            | Some(libc::ECONNABORTED)
            | Some(libc::ETIMEDOUT)
    )
}

/// recv(2) into memory that need not be initialised (a buffer's spare capacity).
pub fn recv_uninit(fd: RawFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes; recv only writes, never reads them.
    check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// Blocks until `fd` is readable (or writable), for tests driving non-blocking sockets by
/// hand; panics after 10 s.
#[cfg(test)]
pub fn wait_ready(fd: RawFd, write: bool) {
    let mut p = libc::pollfd {
        fd,
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert!(unsafe { libc::poll(&mut p, 1, 10_000) } > 0, "socket stuck");
}
