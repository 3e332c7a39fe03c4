//! `zcspike-compio`: the spike's SOCKS5 path (`spike/core.rs`) on compio 0.19, for the runtime
//! decision of issue 10. `--multishot`: one io_uring multishot ACCEPT per listener instead
//! of one op per connection; `--defer-taskrun`: IORING_SETUP_DEFER_TASKRUN + SINGLE_ISSUER
//! (completion work runs only when the shard asks for it).

#[path = "spike/core.rs"]
mod core;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use compio::driver::ProactorBuilder;
use compio::net::{TcpListener, TcpStream};
use compio::runtime::fd::PollFd;
use compio::runtime::RuntimeBuilder;
use futures_util::StreamExt;

struct Compio;

impl core::Runtime for Compio {
    type Sock = PollFd<socket2::Socket>;

    async fn ready(s: &Self::Sock, write: bool) -> io::Result<()> {
        if write {
            s.write_ready().await
        } else {
            s.read_ready().await
        }
    }

    async fn connect(addr: SocketAddr) -> io::Result<Self::Sock> {
        TcpStream::connect(addr).await?.into_poll_fd()
    }

    async fn timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
        compio::time::timeout(d, f).await.ok()
    }
}

fn shard(listener: std::net::TcpListener, args: core::Args) -> io::Result<()> {
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
        let pipes = Rc::new(core::Pipes::default());
        let mut last_warning: Option<Instant> = None;
        let mut handle = |accepted: io::Result<TcpStream>| match accepted
            .and_then(TcpStream::into_poll_fd)
        {
            Ok(s) => compio::runtime::spawn(core::serve::<Compio>(pipes.clone(), s, idle)).detach(),
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
    core::run(core::Args::parse(), shard)
}
