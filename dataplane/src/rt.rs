//! The runtime seam: everything the data plane takes from its async runtime (compio) goes
//! through here — the shard runtime, the listener and connected sockets, readiness, the
//! timer, spawning and racing futures, and UDP sockets for QUIC. A change of runtime rewrites
//! this file; nothing else names the runtime. See docs/architecture.md, "Runtime".

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::Poll;

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::fd::PollFd;
use compio::runtime::{Runtime, RuntimeBuilder};

use crate::config::IoDriver;

pub use compio::time::{sleep, timeout};

/// A connected TCP socket. The data plane moves bytes with its own syscalls (recv, send,
/// splice) after the runtime says the socket is ready, so the runtime gives readiness only.
pub struct TcpStream(PollFd<socket2::Socket>);

impl TcpStream {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.set_tcp_nodelay(on)
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A UDP socket; datagrams move with the data plane's own syscalls (batched, GSO/GRO)
/// after the runtime says it is ready.
pub struct UdpSocket(PollFd<socket2::Socket>);

impl UdpSocket {
    pub fn new(socket: socket2::Socket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        PollFd::new(socket).map(UdpSocket)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.0.read_ready().await
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.0.write_ready().await
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The waiting side of an eventfd another thread signals: the shard sleeps in its runtime
/// until a peer core has handed it work.
pub struct EventWait(PollFd<std::os::fd::OwnedFd>);

impl EventWait {
    /// Waits on a duplicate of `fd` (an eventfd) from this shard's runtime.
    pub fn new(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<EventWait> {
        PollFd::new(fd.try_clone_to_owned()?).map(EventWait)
    }

    /// Returns once the eventfd was signalled since the last call, and clears it.
    pub async fn wait(&self) -> io::Result<()> {
        loop {
            let mut count = 0u64;
            // SAFETY: an 8-byte read into a u64 from our own non-blocking eventfd.
            let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            self.0.read_ready().await?;
        }
    }
}

/// Readiness of a descriptor whose IO is the caller's own (an AF_XDP socket's rings): the
/// runtime only says when it is readable or writable.
pub struct FdReady(PollFd<std::os::fd::OwnedFd>);

impl FdReady {
    /// Waits on a duplicate of `fd` from this shard's runtime.
    pub fn new(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<FdReady> {
        PollFd::new(fd.try_clone_to_owned()?).map(FdReady)
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.0.read_ready().await
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.0.write_ready().await
    }
}

/// A listening TCP socket whose accepts are io_uring ACCEPT ops.
pub struct TcpListener(compio::net::TcpListener);

impl TcpListener {
    /// Takes over a listener bound elsewhere (the shards' SO_REUSEPORT sockets are bound
    /// before any shard starts, so a taken port fails start-up at once).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        compio::net::TcpListener::from_std(listener).map(TcpListener)
    }

    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(std::net::TcpListener::bind(addr)?)
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((TcpStream(stream.into_poll_fd()?), peer))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = compio::net::TcpStream::connect(addr).await?;
    Ok(TcpStream(stream.into_poll_fd()?))
}

/// Waits until `socket` is readable (io_uring POLL_ADD, one shot). A wait given up (by a
/// timeout) stays armed in the socket and is picked up by the next wait.
pub async fn readable(socket: &TcpStream) -> io::Result<()> {
    socket.0.read_ready().await
}

/// Waits until `socket` is writable.
pub async fn writable(socket: &TcpStream) -> io::Result<()> {
    socket.0.write_ready().await
}

/// Runs `task` on the current shard, detached: it lives until it finishes.
pub fn spawn(task: impl Future<Output = ()> + 'static) {
    compio::runtime::spawn(task).detach();
}

/// Lets the shard's other tasks run before this one goes on.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

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

/// Polls both futures; the first error wins and stops polling the other, success waits for
/// both. Takes the futures pinned by the caller so that they are stored once: an `async fn`
/// taking them by value kept a second copy of each (the tunnel future was 14.7 KiB, copied
/// on every spawn).
pub fn join_fail_fast<'f, A, B, E>(
    mut a: Pin<&'f mut A>,
    mut b: Pin<&'f mut B>,
) -> impl Future<Output = Result<(), E>> + 'f
where
    A: Future<Output = Result<(), E>>,
    B: Future<Output = Result<(), E>>,
{
    let (mut a_done, mut b_done) = (false, false);
    poll_fn(move |cx| {
        if !a_done {
            if let Poll::Ready(r) = a.as_mut().poll(cx) {
                if r.is_err() {
                    return Poll::Ready(r);
                }
                a_done = true;
            }
        }
        if !b_done {
            if let Poll::Ready(r) = b.as_mut().poll(cx) {
                if r.is_err() {
                    return Poll::Ready(r);
                }
                b_done = true;
            }
        }
        if a_done && b_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
}

pub type ShardRuntime = Runtime;

/// The shard's executor on `driver`. With `Auto`, io_uring where the kernel allows it,
/// epoll otherwise (containers whose seccomp profile blocks io_uring still run).
/// IORING_SETUP_COOP_TASKRUN (+ TASKRUN_FLAG) lets the kernel run completion work at the
/// shard's next syscall instead of interrupting it: measured +13% tunnels/s and -13% CPU
/// per tunnel here (docs/benchmarks.md). DEFER_TASKRUN and multishot accept measured no
/// better (docs/architecture.md). Kernels before 5.19 refuse the flags; the shard then
/// starts without them.
pub fn build_runtime(driver: IoDriver) -> io::Result<ShardRuntime> {
    let builder = |coop: bool| {
        let mut proactor = ProactorBuilder::new();
        proactor.capacity(1024);
        if coop {
            proactor.coop_taskrun(true).taskrun_flag(true);
        }
        match driver {
            IoDriver::Auto => &mut proactor,
            IoDriver::IoUring => proactor.driver_type(DriverType::IoUring),
            IoDriver::Epoll => proactor.driver_type(DriverType::Poll),
        };
        RuntimeBuilder::new().with_proactor(proactor).build()
    };
    builder(true).or_else(|e| {
        tracing::debug!(error = %e, "io_uring without COOP_TASKRUN");
        builder(false)
    })
}

/// Whether `runtime` runs on io_uring (else epoll).
pub fn on_io_uring(runtime: &ShardRuntime) -> bool {
    runtime.driver_type().is_iouring()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;

    #[test]
    fn race_returns_the_first_to_finish_and_drops_the_other() {
        let rt = build_runtime(IoDriver::Auto).unwrap();
        rt.block_on(async {
            let (slow, fast) = (pin!(sleep(Duration::from_secs(30))), pin!(async { 7 }));
            assert!(matches!(race(slow, fast).await, Either::Right(7)));
            let (one, two) = (pin!(async { 1 }), pin!(async { 2 }));
            assert!(matches!(race(one, two).await, Either::Left(1)));
        });
    }

    /// Readiness, a timed-out wait picked up again, accept and connect, on both drivers.
    #[test]
    fn sockets_work_on_io_uring_and_on_epoll() {
        for driver in [IoDriver::IoUring, IoDriver::Epoll] {
            let rt = build_runtime(driver).unwrap();
            assert_eq!(on_io_uring(&rt), driver == IoDriver::IoUring);
            rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let addr = listener.local_addr().unwrap();
                let client = connect(addr).await.unwrap();
                let (accepted, _) = listener.accept().await.unwrap();
                let quiet = timeout(Duration::from_millis(20), readable(&accepted)).await;
                assert!(quiet.is_err(), "nothing was sent yet");
                let sent = crate::sys::send(client.as_raw_fd(), b"x").unwrap();
                assert_eq!(sent, 1);
                readable(&accepted).await.unwrap();
                writable(&client).await.unwrap();
                assert_eq!(accepted.local_addr().unwrap(), addr);
            });
        }
    }
}
