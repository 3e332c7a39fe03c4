//! `zcspike-compio`: zcproxy's SOCKS5 hot path (accept → no-auth handshake → dial → readiness +
//! inline splice relay) on the compio runtime, to choose the data plane's runtime on numbers
//! (issue 10 §1). It parses with the same `proto` crate as zcproxy, arms the same timeouts
//! (handshake, connect, idle) and relays the same way, so that a side-by-side `zcbench` run
//! compares runtimes, not features. Not a product: no policy, no metrics, no auth.
//!
//! Knobs measured: `--multishot` (one io_uring multishot ACCEPT per listener instead of one
//! op per connection) and `--defer-taskrun` (IORING_SETUP_DEFER_TASKRUN + SINGLE_ISSUER:
//! completion work runs only when the shard asks for it).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use compio::driver::ProactorBuilder;
use compio::net::{TcpListener, TcpStream};
use compio::runtime::fd::PollFd;
use compio::runtime::RuntimeBuilder;
use futures_util::StreamExt;
use proto::socks5;
use socket2_06::Socket;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// One multishot ACCEPT per listener.
    #[arg(long)]
    multishot: bool,
    /// IORING_SETUP_DEFER_TASKRUN (with SINGLE_ISSUER).
    #[arg(long)]
    defer_taskrun: bool,
    #[arg(long, default_value_t = 300)]
    idle_secs: u64,
}

const HANDSHAKE: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(10);
const BURST_ROUNDS: usize = 16;
const SMALL_READ: usize = 16 * 1024;
const PIPE_SIZE: i32 = 256 * 1024;

fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

fn set_nonblocking(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: ioctl(FIONBIO) on a descriptor we own, with a valid int pointer.
    unsafe { libc::ioctl(fd, libc::FIONBIO, &on) };
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
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

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets for sockets and pipes; both descriptors are owned by the caller.
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

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    buffered: usize,
}

fn new_pipe() -> io::Result<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded; both descriptors are ours alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok(Pipe {
        read,
        write,
        buffered: 0,
    })
}

/// The shard's pipes, held only while bytes are in flight (as zcproxy's pool).
#[derive(Default)]
struct Pipes(std::cell::RefCell<Vec<Pipe>>);

impl Pipes {
    fn take(&self) -> io::Result<Pipe> {
        match self.0.borrow_mut().pop() {
            Some(p) => Ok(p),
            None => new_pipe(),
        }
    }
    fn give(&self, p: Pipe) {
        let mut free = self.0.borrow_mut();
        if p.buffered == 0 && free.len() < 64 {
            free.push(p);
        }
    }
}

type Sock = PollFd<Socket>;

async fn ready(s: &Sock, write: bool, idle: Duration) -> io::Result<()> {
    let wait = async {
        if write {
            s.write_ready().await
        } else {
            s.read_ready().await
        }
    };
    match compio::time::timeout(idle, wait).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

async fn read_some(s: &Sock, buf: &mut Vec<u8>, idle: Duration) -> io::Result<usize> {
    let mut chunk = [0u8; 1024];
    loop {
        match recv(s.as_raw_fd(), &mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready(s, false, idle).await?,
            Err(e) => return Err(e),
        }
    }
}

async fn read_message<T, E>(
    s: &Sock,
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
                if read_some(s, buf, HANDSHAKE).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(_) => return Err(io::ErrorKind::InvalidData.into()),
        }
    }
}

async fn write_all(s: &Sock, data: &[u8], idle: Duration) -> io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        match send(s.as_raw_fd(), &data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready(s, true, idle).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One direction: readiness, then splice bursts through a pooled pipe; FIN passed on.
async fn pump(pipes: &Pipes, src: &Sock, dst: &Sock, idle: Duration) -> io::Result<()> {
    loop {
        ready(src, false, idle).await?;
        let mut pipe = pipes.take()?;
        let mut eof = false;
        let mut result = Ok(());
        for _ in 0..BURST_ROUNDS {
            match splice(src.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE as usize) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    pipe.buffered = n;
                    while pipe.buffered > 0 {
                        match splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), pipe.buffered) {
                            Ok(m) => pipe.buffered -= m,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                if let Err(e) = ready(dst, true, idle).await {
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
            // SAFETY: shutdown on a socket we own.
            unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
    }
}

async fn serve(pipes: Rc<Pipes>, client: TcpStream, idle: Duration) -> io::Result<()> {
    let client = client.into_poll_fd()?;
    set_nonblocking(client.as_raw_fd());
    let _ = client.set_tcp_nodelay(true);
    let mut buf = Vec::new();
    let handshake = async {
        let greeting = read_message(&client, &mut buf, socks5::parse_greeting).await?;
        let method = if greeting.no_auth {
            socks5::METHOD_NO_AUTH
        } else {
            socks5::METHOD_NONE_ACCEPTABLE
        };
        write_all(&client, &socks5::method_selection(method), idle).await?;
        if method != socks5::METHOD_NO_AUTH {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        read_message(&client, &mut buf, socks5::parse_request).await
    };
    let request = compio::time::timeout(HANDSHAKE, handshake)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let proto::TargetAddr::Ip(addr) = request.target else {
        write_all(
            &client,
            &socks5::encode_reply(socks5::Reply::AddressTypeNotSupported, socks5::UNSPECIFIED),
            idle,
        )
        .await?;
        return Ok(());
    };
    let upstream = match compio::time::timeout(CONNECT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s.into_poll_fd()?,
        _ => {
            let reply = socks5::encode_reply(socks5::Reply::HostUnreachable, socks5::UNSPECIFIED);
            return write_all(&client, &reply, idle).await;
        }
    };
    set_nonblocking(upstream.as_raw_fd());
    let _ = upstream.set_tcp_nodelay(true);
    let bound = upstream
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(socks5::UNSPECIFIED);
    write_all(
        &client,
        &socks5::encode_reply(socks5::Reply::Succeeded, bound),
        idle,
    )
    .await?;
    if !buf.is_empty() {
        write_all(&upstream, &buf, idle).await?;
    }
    let up = std::pin::pin!(pump(&pipes, &client, &upstream, idle));
    let down = std::pin::pin!(pump(&pipes, &upstream, &client, idle));
    let result = futures_util::future::try_join(up, down).await.map(drop);
    if result.is_err() {
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = upstream.set_linger(Some(Duration::ZERO));
    }
    result
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(
        socket2_06::Domain::for_address(addr),
        socket2_06::Type::STREAM,
        Some(socket2_06::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

fn shard(listener: std::net::TcpListener, args: Args) -> io::Result<()> {
    let mut proactor = ProactorBuilder::new();
    proactor
        .capacity(1024)
        .coop_taskrun(true)
        .taskrun_flag(true);
    if args.defer_taskrun {
        proactor.single_issuer(true).defer_taskrun(true);
    }
    let rt = RuntimeBuilder::new().with_proactor(proactor).build()?;
    let idle = Duration::from_secs(args.idle_secs);
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let pipes = Rc::new(Pipes::default());
        let mut last_warning: Option<Instant> = None;
        let mut handle = |accepted: io::Result<TcpStream>| match accepted {
            Ok(s) => compio::runtime::spawn(serve(pipes.clone(), s, idle)).detach(),
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    eprintln!("zcspike-compio: accept: {e}");
                    last_warning = Some(Instant::now());
                }
            }
        };
        if args.multishot {
            let mut incoming = listener.incoming();
            while let Some(s) = incoming.next().await {
                handle(s);
            }
        } else {
            loop {
                handle(listener.accept().await.map(|(s, _)| s));
            }
        }
        Ok(())
    })
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let threads: Vec<_> = (0..args.cores.max(1))
        .map(|_| {
            let listener = bind(args.listen)?;
            let args = args.clone();
            Ok(std::thread::spawn(move || shard(listener, args)))
        })
        .collect::<io::Result<_>>()?;
    for t in threads {
        t.join().map_err(|_| io::Error::other("shard panicked"))??;
    }
    Ok(())
}
