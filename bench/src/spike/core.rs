//! The runtime-independent part of the runtime spikes (issue 10 §1): zcproxy's SOCKS5 hot
//! path — no-auth handshake parsed by the `proto` crate, connect, reply, then readiness +
//! inline splice(2) through pooled pipes, with the same handshake, connect and idle timeouts
//! and burst rules as zcproxy. Each spike binary supplies a [`Runtime`]; nothing else
//! differs, so `zcbench` compares runtimes rather than features. No policy, no metrics, no
//! auth: it is not a product. It borrows zcproxy's syscall helpers, pipe pool and listener
//! set-up, so those are the same code too.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use proto::socks5;
use zcproxy::relay::pipe_pool::{Pipe, PipePool};
use zcproxy::sys;

const HANDSHAKE: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(10);
const BURST_ROUNDS: usize = 16;
const SMALL_READ: usize = 16 * 1024;
const PIPE_SIZE: usize = 256 * 1024;

/// The shard's pipes: zcproxy's own pool (held only while bytes are in flight).
#[derive(Default)]
pub struct Pipes(RefCell<Option<PipePool>>);

impl Pipes {
    fn take(&self) -> io::Result<Pipe> {
        self.0
            .borrow_mut()
            .get_or_insert_with(|| PipePool::new(64, PIPE_SIZE))
            .take()
    }
    fn give(&self, p: Pipe) {
        if let Some(pool) = self.0.borrow_mut().as_mut() {
            pool.give(p);
        }
    }
}

/// What the spike takes from a runtime: connected sockets with readiness, connect, a timer.
pub trait Runtime: 'static {
    type Sock: AsRawFd + 'static;
    fn ready(s: &Self::Sock, write: bool) -> impl Future<Output = io::Result<()>>;
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Sock>>;
    /// `None` when `d` passed first.
    fn timeout<F: Future>(d: Duration, f: F) -> impl Future<Output = Option<F::Output>>;
}

async fn ready<R: Runtime>(s: &R::Sock, write: bool, idle: Duration) -> io::Result<()> {
    R::timeout(idle, R::ready(s, write))
        .await
        .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
}

async fn read_some<R: Runtime>(
    s: &R::Sock,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> io::Result<usize> {
    let mut chunk = [0u8; 1024];
    loop {
        match sys::recv(s.as_raw_fd(), &mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready::<R>(s, false, idle).await?,
            Err(e) => return Err(e),
        }
    }
}

async fn read_message<R: Runtime, T, E>(
    s: &R::Sock,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> io::Result<T> {
    loop {
        match parse(buf) {
            Ok(Some((v, n))) => {
                buf.drain(..n);
                return Ok(v);
            }
            Ok(None) if buf.len() > 1024 => return Err(io::ErrorKind::InvalidData.into()),
            Ok(None) => {
                if read_some::<R>(s, buf, HANDSHAKE).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(_) => return Err(io::ErrorKind::InvalidData.into()),
        }
    }
}

async fn write_all<R: Runtime>(s: &R::Sock, data: &[u8], idle: Duration) -> io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(s.as_raw_fd(), &data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready::<R>(s, true, idle).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One direction: readiness, then splice bursts through a pooled pipe; FIN passed on.
async fn pump<R: Runtime>(
    pipes: &Pipes,
    src: &R::Sock,
    dst: &R::Sock,
    idle: Duration,
) -> io::Result<()> {
    loop {
        ready::<R>(src, false, idle).await?;
        let mut pipe = pipes.take()?;
        let mut eof = false;
        let mut result = Ok(());
        for _ in 0..BURST_ROUNDS {
            match sys::splice(src.as_raw_fd(), pipe.write_fd(), pipe.capacity) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    pipe.buffered = n;
                    while pipe.buffered > 0 {
                        match sys::splice(pipe.read_fd(), dst.as_raw_fd(), pipe.buffered) {
                            Ok(m) => pipe.buffered -= m,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                if let Err(e) = ready::<R>(dst, true, idle).await {
                                    result = Err(e);
                                    break;
                                }
                            }
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    if result.is_err() || n < SMALL_READ {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        pipes.give(pipe);
        result?;
        if eof {
            sys::shutdown_write(dst.as_raw_fd());
            return Ok(());
        }
    }
}

/// Serves one accepted client: SOCKS5 no-auth handshake, connect, reply, relay.
pub async fn serve<R: Runtime>(
    pipes: Rc<Pipes>,
    client: R::Sock,
    idle: Duration,
) -> io::Result<()> {
    prepare(client.as_raw_fd());
    let mut buf = Vec::new();
    let handshake = async {
        let greeting = read_message::<R, _, _>(&client, &mut buf, socks5::parse_greeting).await?;
        let method = if greeting.no_auth {
            socks5::METHOD_NO_AUTH
        } else {
            socks5::METHOD_NONE_ACCEPTABLE
        };
        write_all::<R>(&client, &socks5::method_selection(method), idle).await?;
        if method != socks5::METHOD_NO_AUTH {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        read_message::<R, _, _>(&client, &mut buf, socks5::parse_request).await
    };
    let request = R::timeout(HANDSHAKE, handshake)
        .await
        .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))??;
    let proto::TargetAddr::Ip(addr) = request.target else {
        let reply =
            socks5::encode_reply(socks5::Reply::AddressTypeNotSupported, socks5::UNSPECIFIED);
        return write_all::<R>(&client, &reply, idle).await;
    };
    let upstream = match R::timeout(CONNECT, R::connect(addr)).await {
        Some(Ok(s)) => s,
        _ => {
            let reply = socks5::encode_reply(socks5::Reply::HostUnreachable, socks5::UNSPECIFIED);
            return write_all::<R>(&client, &reply, idle).await;
        }
    };
    prepare(upstream.as_raw_fd());
    let bound = local_addr(upstream.as_raw_fd()).unwrap_or(socks5::UNSPECIFIED);
    let reply = socks5::encode_reply(socks5::Reply::Succeeded, bound);
    write_all::<R>(&client, &reply, idle).await?;
    if !buf.is_empty() {
        write_all::<R>(&upstream, &buf, idle).await?;
    }
    let up = std::pin::pin!(pump::<R>(&pipes, &client, &upstream, idle));
    let down = std::pin::pin!(pump::<R>(&pipes, &upstream, &client, idle));
    let result = futures_util::future::try_join(up, down).await.map(drop);
    if result.is_err() {
        sys::abort_on_close(client.as_raw_fd());
        sys::abort_on_close(upstream.as_raw_fd());
    }
    result
}

/// Non-blocking (the relay issues syscalls itself) and without Nagle's delay.
fn prepare(fd: RawFd) {
    let _ = sys::set_nonblocking(fd);
    let _ = socket2::SockRef::from(&borrow(fd)).set_tcp_nodelay(true);
}

fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: every caller passes a descriptor it owns for longer than the borrow.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    socket2::SockRef::from(&borrow(fd))
        .local_addr()
        .ok()?
        .as_socket()
}

/// Options both spikes take.
#[derive(clap::Parser, Clone)]
pub struct Args {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// compio only: one multishot ACCEPT per listener.
    #[arg(long)]
    pub multishot: bool,
    /// compio only: IORING_SETUP_DEFER_TASKRUN (with SINGLE_ISSUER).
    #[arg(long)]
    pub defer_taskrun: bool,
    #[arg(long, default_value_t = 300)]
    pub idle_secs: u64,
}

/// Starts `args.cores` shard threads, each with its own listener, and waits for them.
pub fn run(args: Args, shard: fn(std::net::TcpListener, Args) -> io::Result<()>) -> io::Result<()> {
    let threads: Vec<_> = (0..args.cores.max(1))
        .map(|_| {
            let listener = zcproxy::shard_loop::bind_listener(args.listen)?;
            let args = args.clone();
            Ok(std::thread::spawn(move || shard(listener, args)))
        })
        .collect::<io::Result<_>>()?;
    for t in threads {
        t.join().map_err(|_| io::Error::other("shard panicked"))??;
    }
    Ok(())
}
