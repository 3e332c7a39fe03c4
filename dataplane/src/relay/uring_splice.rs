//! The io_uring SPLICE-op relay (`relay = "uring-splice"`), kept for comparison with the
//! default readiness + inline splice(2) relay and for kernels where it may win.
//!
//! The kernel hands every SPLICE op to an io-wq worker that blocks in splice(2) until the
//! socket has data, so each idle tunnel parks two kernel threads and owns two pipes for its
//! whole life; docs/benchmarks.md has the CPU cost. The op needs BLOCKING sockets (on an
//! O_NONBLOCK socket the worker returns -EAGAIN at once), so this mode clears O_NONBLOCK on the
//! tunnel's sockets: the handshake is over and nothing else uses them afterwards.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::net::{Pipe, TcpStream};

use super::{join_fail_fast, RelayEnv, RelayError, Side};
use crate::sys;

/// What one SPLICE op asks for: the default pipe capacity.
const CHUNK: u32 = 64 * 1024;

/// Another monoio stream over the same socket, in blocking mode. The original stays with
/// the caller, which closes it after the relay (the kernel socket lives until all close).
/// Each direction gets its own twins rather than split halves: dropping a monoio write half
/// sends a FIN, which would turn a reset into an orderly close.
fn blocking_twin(stream: &TcpStream) -> io::Result<TcpStream> {
    // SAFETY: the descriptor belongs to `stream`, which outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let dup = fd.try_clone_to_owned()?;
    let std_stream = std::net::TcpStream::from(dup);
    // Shared by both descriptors: they point at one open file description.
    std_stream.set_nonblocking(false)?;
    TcpStream::from_std(std_stream)
}

async fn direction<R: SpliceSource, W: SpliceDestination>(
    mut src: R,
    mut dst: W,
    dst_raw: std::os::fd::RawFd,
    src_side: Side,
    env: &RelayEnv<'_>,
    last_activity: &Cell<Instant>,
) -> Result<(), RelayError> {
    let (mut pipe_r, mut pipe_w): (Pipe, Pipe) =
        monoio::net::unix::new_pipe().map_err(|e| RelayError::Io(src_side, e))?;
    let bytes = match src_side {
        Side::Client => &env.metrics.bytes_client_to_upstream,
        Side::Upstream => &env.metrics.bytes_upstream_to_client,
    };
    loop {
        let n = match src.splice_to_pipe(&mut pipe_w, CHUNK).await {
            Ok(0) => {
                sys::shutdown_write(dst_raw);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if sys::is_spurious(&e) => continue,
            Err(e) if sys::is_reset(&e) => return Err(RelayError::Reset(src_side)),
            Err(e) => return Err(RelayError::Io(src_side, e)),
        };
        let mut left = n;
        while left > 0 {
            match dst.splice_from_pipe(&mut pipe_r, left).await {
                Ok(m) => left -= m,
                Err(e) if sys::is_spurious(&e) => continue,
                Err(e) if sys::is_reset(&e) => return Err(RelayError::Reset(src_side.other())),
                Err(e) => return Err(RelayError::Io(src_side.other(), e)),
            }
        }
        bytes.add(u64::from(n));
        env.metrics.splice_bytes.add(u64::from(n));
        last_activity.set(Instant::now());
    }
}

/// Ends the relay once neither direction has moved a byte for `idle`.
async fn idle_watch(idle: Duration, last_activity: &Cell<Instant>) -> Result<(), RelayError> {
    loop {
        let left = idle.saturating_sub(last_activity.get().elapsed());
        if left.is_zero() {
            return Err(RelayError::Idle);
        }
        monoio::time::sleep(left).await;
    }
}

/// Same contract as [`super::relay`]: both FINs passed on, resets propagated, idle ends it.
pub async fn relay(
    env: &RelayEnv<'_>,
    client: &TcpStream,
    upstream: &TcpStream,
) -> Result<(), RelayError> {
    let twin = |s: &TcpStream, side| blocking_twin(s).map_err(|e| RelayError::Io(side, e));
    let (client_r, client_w) = (twin(client, Side::Client)?, twin(client, Side::Client)?);
    let (upstream_r, upstream_w) = (
        twin(upstream, Side::Upstream)?,
        twin(upstream, Side::Upstream)?,
    );
    let (client_raw, upstream_raw) = (client.as_raw_fd(), upstream.as_raw_fd());
    let last_activity = Cell::new(Instant::now());
    let up = pin!(direction(
        client_r,
        upstream_w,
        upstream_raw,
        Side::Client,
        env,
        &last_activity,
    ));
    let down = pin!(direction(
        upstream_r,
        client_w,
        client_raw,
        Side::Upstream,
        env,
        &last_activity,
    ));
    let both = join_fail_fast(up, down);
    // The watchdog never returns Ok, so this ends with the relay or with Idle.
    let result = monoio::select! {
        r = both => r,
        r = idle_watch(env.idle, &last_activity) => r,
    };
    // Dropping the futures cancels any op still parked in io-wq; monoio keeps the
    // descriptors open until the kernel has reported the cancellation.
    result
}
