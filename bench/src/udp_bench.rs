//! `zcbench-udp`: SOCKS5 UDP ASSOCIATE through zcproxy and through Dante (`danted`) against
//! direct UDP to the same echo, side by side in one run on loopback (docs/benchmarks.md,
//! "SOCKS5 UDP"): round trips per second with a window of datagrams in flight at 64 and
//! 1,200 bytes, datagrams lost, and each proxy's CPU µs per relayed datagram (every round
//! trip is two datagrams through the proxy).
//!
//! The client is one thread with std sockets; with `--proxy-cpus` the proxies have their
//! CPUs to themselves. Every loop is bounded by a deadline.

#[allow(dead_code)]
mod cpus;
#[allow(dead_code)]
mod peers;
#[allow(dead_code)]
mod procstat;
mod samples;
mod udp_echo;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use peers::{Handshake, Running, ZcOptions};
use samples::Samples;

#[derive(Parser)]
#[command(about = "SOCKS5 UDP ASSOCIATE: zcproxy against Dante and direct UDP, on loopback")]
struct Args {
    #[arg(long, default_value = "target/release/zcproxy")]
    zcproxy: PathBuf,
    /// Shards for zcproxy (default: one per CPU it may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Run the proxies on these CPUs and the client and echo on the others.
    #[arg(long, value_parser = cpus::CpuSet::parse)]
    proxy_cpus: Option<cpus::CpuSet>,
    /// Seconds of each rate run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Datagrams in flight.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Repeat every measurement this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long, default_value_t = 26600)]
    base_port: u16,
    /// Extra TOML for zcproxy.
    #[arg(long)]
    zc_config: Option<String>,
}

/// A datagram path to the echo: direct, or through a SOCKS5 relay (the control connection
/// held open, every datagram with the SOCKS UDP header for the echo in front).
struct Path {
    socket: UdpSocket,
    header: Vec<u8>,
    _control: Option<TcpStream>,
}

impl Path {
    fn direct(echo: SocketAddr) -> std::io::Result<Path> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(echo)?;
        Ok(Path {
            socket,
            header: Vec::new(),
            _control: None,
        })
    }

    /// UDP ASSOCIATE without authentication, naming the client's own address.
    fn socks(proxy: SocketAddr, echo: SocketAddr) -> std::io::Result<Path> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let me = socket.local_addr()?;
        let mut c = TcpStream::connect(proxy)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(&[5, 1, 0])?;
        let mut sel = [0u8; 2];
        c.read_exact(&mut sel)?;
        let mut req = vec![5, 3, 0, 1];
        req.extend_from_slice(&ipv4(me)?);
        req.extend_from_slice(&me.port().to_be_bytes());
        c.write_all(&req)?;
        let mut reply = [0u8; 10];
        c.read_exact(&mut reply)?;
        if sel[1] != 0 || reply[1] != 0 || reply[3] != 1 {
            return Err(std::io::Error::other(format!("refused: {sel:?} {reply:?}")));
        }
        let relay = SocketAddr::from((
            [reply[4], reply[5], reply[6], reply[7]],
            u16::from_be_bytes([reply[8], reply[9]]),
        ));
        // A relay that names 0.0.0.0 means "where you reached me".
        let relay = if relay.ip().is_unspecified() {
            SocketAddr::new(proxy.ip(), relay.port())
        } else {
            relay
        };
        socket.connect(relay)?;
        let mut header = vec![0, 0, 0, 1];
        header.extend_from_slice(&ipv4(echo)?);
        header.extend_from_slice(&echo.port().to_be_bytes());
        Ok(Path {
            socket,
            header,
            _control: Some(c),
        })
    }
}

fn ipv4(a: SocketAddr) -> std::io::Result<[u8; 4]> {
    match a {
        SocketAddr::V4(v4) => Ok(v4.ip().octets()),
        SocketAddr::V6(_) => Err(std::io::Error::other("IPv4 only")),
    }
}

/// Round trips per second with `window` datagrams of `size` bytes in flight for `secs`, and
/// how many were lost (a loss frees its slot after 50 ms).
fn rate(path: &Path, size: usize, window: usize, secs: u64) -> (f64, u64) {
    let mut datagram = path.header.clone();
    datagram.resize(path.header.len() + size, 0x42);
    let _ = path
        .socket
        .set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 4096];
    // Echoes of an earlier run still on their way would count for this one.
    while path.socket.recv(&mut buf).is_ok() {}
    let (mut done, mut lost, mut in_flight) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    while Instant::now() < deadline {
        while in_flight < window {
            if path.socket.send(&datagram).is_err() {
                return (0.0, lost);
            }
            in_flight += 1;
        }
        match path.socket.recv(&mut buf) {
            Ok(n) if n == datagram.len() => {
                done += 1;
                in_flight -= 1;
            }
            Ok(_) => {}
            Err(_) => {
                lost += in_flight as u64;
                in_flight = 0;
            }
        }
    }
    (done as f64 / started.elapsed().as_secs_f64(), lost)
}

fn cpu(proxy: &Running) -> f64 {
    proxy.pid().map_or(f64::NAN, procstat::cpu_seconds)
}

const SIZES: [usize; 2] = [64, 1200];

fn main() {
    let args = Args::parse();
    if let Some(set) = args.proxy_cpus.clone() {
        cpus::split(set).expect("CPU placement");
    }
    let cores = cpus::shards(args.cores, args.proxy_cpus.as_ref());
    let dir = std::env::temp_dir().join(format!("zcbench-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let port = args.base_port;
    let echo = udp_echo::udp_echo(port + 11);
    std::env::set_var("TMPDIR", &dir);
    let opts = ZcOptions {
        bin: &args.zcproxy,
        listen: peers::LOOPBACK,
        cores,
        config: args.zc_config.as_deref(),
    };
    let zc = peers::zcproxy(&dir, &opts, port, port + 1, Handshake::Socks5, "zcproxy");
    let dante = peers::danted(&dir, port + 2);
    let direct = peers::direct();
    let mut proxies: Vec<(&str, Running)> = vec![("direct UDP", direct)];
    proxies.extend(zc.map(|p| ("zcproxy", p)));
    proxies.extend(dante.map(|p| ("Dante", p)));
    let mut s = Samples::default();
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        for (name, proxy) in &proxies {
            let path = match proxy.addr {
                None => Path::direct(echo),
                Some(addr) => Path::socks(addr, echo),
            };
            let path = match path {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    continue;
                }
            };
            for size in SIZES {
                let c0 = cpu(proxy);
                let (rt, lost) = rate(&path, size, args.window, args.seconds);
                let spent = cpu(proxy) - c0;
                s.add(&format!("{name} {size}"), rt);
                s.add(&format!("{name} {size} lost"), lost as f64);
                // Two datagrams through the proxy per round trip.
                s.add(
                    &format!("{name} {size} cpu"),
                    spent * 1e6 / (2.0 * rt * args.seconds as f64),
                );
            }
        }
    }
    println!(
        "\nSOCKS5 UDP ASSOCIATE, zcproxy on {cores} core(s), {} datagrams in flight, medians of {} run(s)\n",
        args.window, args.runs
    );
    println!("| path | 64 B round trips/s | 1,200 B round trips/s | vs direct (64 / 1,200) | proxy CPU µs per datagram (64 / 1,200) | lost (64 / 1,200) |");
    println!("|---|---|---|---|---|---|");
    for (name, proxy) in &proxies {
        let m = |suffix: String| s.median(&format!("{name} {suffix}"));
        let vs = |size: usize| m(format!("{size}")) / s.median(&format!("direct UDP {size}"));
        let cpu = |size: usize| match proxy.addr {
            None => "–".to_string(),
            Some(_) => format!("{:.1}", m(format!("{size} cpu"))),
        };
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} / {:.2} | {} / {} | {:.0} / {:.0} |",
            m("64".into()),
            m("1200".into()),
            vs(64),
            vs(1200),
            cpu(64),
            cpu(1200),
            m("64 lost".into()),
            m("1200 lost".into()),
        );
    }
    drop(proxies);
    let _ = std::fs::remove_dir_all(&dir);
}
