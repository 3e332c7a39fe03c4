//! Kernel TLS: whether this kernel can take over a TLS session's record layer
//! (`setsockopt(TCP_ULP, "tls")`), so that a tunnel inside TLS could be spliced like a plain
//! one. Probed once at start on a loopback connection; the hand-over itself (rustls' secrets
//! into `TLS_TX`/`TLS_RX`) is not built yet — see docs/tls.md.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// `Ok` when the `tls` upper-layer protocol can be attached to a TCP socket here; the
/// error says why not (ENOENT: the `tls` module is not available).
pub fn probe() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    let name = b"tls";
    // SAFETY: a string option of the stated length on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    /// The probe gives a definite answer; where it says no, it is for a reason the kernel
    /// names (these machines: ENOENT, no `tls` module), never a failure of the probe itself.
    #[test]
    fn the_probe_answers_yes_or_names_the_kernel_s_reason() {
        match super::probe() {
            Ok(()) => {}
            Err(e) => assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENOPROTOOPT | libc::EPERM)
                ),
                "{e}"
            ),
        }
    }
}
