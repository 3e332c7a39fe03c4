//! `zcspike-monoio`: the spike's SOCKS5 path (`spike/core.rs`) on monoio 0.2.4 with the
//! runtime set-up zcproxy uses (fusion driver, 1024 entries, COOP_TASKRUN): the baseline the
//! compio spike is measured against, feature for feature.

#[path = "spike/core.rs"]
mod core;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use monoio::net::{TcpListener, TcpStream};

struct Monoio;

impl core::Runtime for Monoio {
    type Sock = TcpStream;

    async fn ready(s: &Self::Sock, write: bool) -> io::Result<()> {
        loop {
            let r = if write {
                s.writable(false).await
            } else {
                s.readable(false).await
            };
            // A cancelled poll can complete with -ERESTARTSYS (512): wait again.
            match r {
                Err(e) if e.raw_os_error() == Some(512) => continue,
                other => return other,
            }
        }
    }

    async fn connect(addr: SocketAddr) -> io::Result<Self::Sock> {
        TcpStream::connect_addr(addr).await
    }

    async fn timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
        monoio::time::timeout(d, f).await.ok()
    }
}

fn shard(listener: std::net::TcpListener, args: core::Args) -> io::Result<()> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .uring_builder(urb)
        .build()?;
    let idle = Duration::from_secs(args.idle_secs);
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let pipes = Rc::new(core::Pipes::default());
        let mut last_warning: Option<Instant> = None;
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    monoio::spawn(core::serve::<Monoio>(pipes.clone(), s, idle));
                }
                Err(e) => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        eprintln!("zcspike-monoio: accept: {e}");
                        last_warning = Some(Instant::now());
                    }
                }
            }
        }
    })
}

fn main() -> io::Result<()> {
    core::run(core::Args::parse(), shard)
}
