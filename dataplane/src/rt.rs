//! The runtime seam: everything the data plane takes from its async runtime (monoio today)
//! goes through here — the shard runtime, the listener and connected sockets, readiness,
//! the timer, spawning and racing two futures. A change of runtime rewrites this file (and
//! drops or ports `relay/uring_splice.rs`, which drives monoio's own SPLICE op); nothing
//! else names the runtime. See docs/architecture.md, "Runtime".

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;

pub use monoio::net::{TcpListener, TcpStream};
pub use monoio::spawn;
pub use monoio::time::{sleep, timeout};

/// The outcome of [`race`].
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures until one finishes (the left one first). Takes them pinned by the
/// caller so that each is stored once: taking them by value stored every connection's whole
/// state twice (a 12 KiB task instead of 6 KiB, i.e. +6 KiB per idle tunnel).
pub fn race<'f, A: Future, B: Future>(
    mut a: Pin<&'f mut A>,
    mut b: Pin<&'f mut B>,
) -> impl Future<Output = Either<A::Output, B::Output>> + 'f {
    poll_fn(move |cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
}

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_addr(addr).await
}

/// Waits until `socket` is readable (io_uring POLL_ADD, one shot).
pub async fn readable(socket: &TcpStream) -> io::Result<()> {
    socket.readable(false).await
}

/// Waits until `socket` is writable.
pub async fn writable(socket: &TcpStream) -> io::Result<()> {
    socket.writable(false).await
}

pub type ShardRuntime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// The shard's executor: io_uring where the kernel allows it, epoll otherwise (containers
/// whose seccomp profile blocks io_uring still run). IORING_SETUP_COOP_TASKRUN lets the
/// kernel run completion work at the shard's next syscall instead of interrupting it:
/// measured +13% tunnels/s and -13% CPU per tunnel here (docs/benchmarks.md). Kernels before
/// 5.19 refuse the flag; the shard then starts without it.
pub fn build_runtime() -> io::Result<ShardRuntime> {
    let builder = |coop: bool| {
        let mut urb = io_uring::IoUring::builder();
        if coop {
            urb.setup_coop_taskrun();
        }
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .uring_builder(urb)
            .build()
    };
    builder(true).or_else(|e| {
        tracing::debug!(error = %e, "io_uring without COOP_TASKRUN");
        builder(false)
    })
}

/// Whether the shards will run on io_uring (else epoll).
pub fn io_uring_available() -> bool {
    monoio::utils::detect_uring()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;

    #[test]
    fn race_returns_the_first_to_finish_and_drops_the_other() {
        let mut rt = build_runtime().unwrap();
        rt.block_on(async {
            let (slow, fast) = (pin!(sleep(Duration::from_secs(30))), pin!(async { 7 }));
            assert!(matches!(race(slow, fast).await, Either::Right(7)));
            let (one, two) = (pin!(async { 1 }), pin!(async { 2 }));
            assert!(matches!(race(one, two).await, Either::Left(1)));
        });
    }
}
