//! Load generators. Every loop is bounded by a count and a deadline.

use crate::stats::percentile;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::peers::{Handshake, Running};

/// Opens a connection to `target`, through the proxy when there is one.
pub fn open(via: &Running, target: SocketAddr) -> io::Result<TcpStream> {
    let Some(proxy) = via.addr else {
        let s = TcpStream::connect(target)?;
        s.set_nodelay(true)?;
        return Ok(s);
    };
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let SocketAddr::V4(t) = target else {
        return Err(io::Error::other("IPv4 targets only"));
    };
    match via.handshake {
        Handshake::None => {}
        Handshake::Socks5 | Handshake::Socks5Auth => {
            // Greeting first, request after the method selection: some servers (microsocks)
            // do not accept a pipelined request.
            let auth = via.handshake == Handshake::Socks5Auth;
            s.write_all(&[5, 1, if auth { 2 } else { 0 }])?;
            let mut method = [0u8; 2];
            s.read_exact(&mut method)?;
            if method != [5, if auth { 2 } else { 0 }] {
                return Err(io::Error::other(format!(
                    "SOCKS5 method refused: {method:?}"
                )));
            }
            if auth {
                let (user, pass) = crate::peers::BENCH_CREDENTIALS;
                let mut msg = vec![1, user.len() as u8];
                msg.extend_from_slice(user.as_bytes());
                msg.push(pass.len() as u8);
                msg.extend_from_slice(pass.as_bytes());
                s.write_all(&msg)?;
                let mut status = [0u8; 2];
                s.read_exact(&mut status)?;
                if status[1] != 0 {
                    return Err(io::Error::other("SOCKS5 credentials refused"));
                }
            }
            let mut msg = vec![5, 1, 0, 1];
            msg.extend_from_slice(&t.ip().octets());
            msg.extend_from_slice(&t.port().to_be_bytes());
            s.write_all(&msg)?;
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply)?;
            if reply[1] != 0 || reply[3] != 1 {
                return Err(io::Error::other(format!("SOCKS5 refused: {reply:?}")));
            }
        }
        Handshake::Connect => {
            write!(s, "CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n")?;
            // The upstreams here speak only after the client, so everything before the
            // tunnel's first byte is the response head: read it in chunks rather than a
            // byte per syscall (which cost the shared CPUs more than the proxy's work).
            let mut head = Vec::with_capacity(256);
            let mut chunk = [0u8; 512];
            loop {
                let n = s.read(&mut chunk)?;
                if n == 0 || head.len() > 8192 {
                    return Err(io::Error::other("CONNECT: no response head"));
                }
                head.extend_from_slice(&chunk[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    if end + 4 != head.len() {
                        return Err(io::Error::other("CONNECT: bytes after the response head"));
                    }
                    break;
                }
            }
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                return Err(io::Error::other(
                    String::from_utf8_lossy(&head).into_owned(),
                ));
            }
        }
    }
    Ok(s)
}

/// Downloads `bytes` over `streams` parallel tunnels; returns wall seconds.
pub fn download(via: &Running, source: SocketAddr, bytes: u64, streams: usize) -> io::Result<f64> {
    let conns = (0..streams)
        .map(|_| open(via, source))
        .collect::<io::Result<Vec<_>>>()?;
    download_over(conns, bytes / streams as u64)
}

/// Asks the source for `per` bytes on each of `conns` (opened tunnels of any kind) and
/// reads them all at once, a thread per tunnel; wall seconds.
pub fn download_over<S: Read + Write + Send>(conns: Vec<S>, per: u64) -> io::Result<f64> {
    let started = Instant::now();
    let results: Vec<io::Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                scope.spawn(move || {
                    s.write_all(&per.to_le_bytes())?;
                    s.flush()?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut got = 0u64;
                    while got < per {
                        let n = s.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        got += n as u64;
                    }
                    Ok(got)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    for r in results {
        if r? != per {
            return Err(io::Error::other("short download"));
        }
    }
    Ok(secs)
}

pub struct Rate {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failures: u64,
}

/// Tunnels per second: open, 64-byte echo, close, by `workers` threads until `duration`
/// passes or `max_total` tunnels are done.
pub fn tunnels_per_second(
    via: &Running,
    echo: SocketAddr,
    workers: usize,
    duration: Duration,
    max_total: usize,
) -> Rate {
    let deadline = Instant::now() + duration;
    let per_worker = max_total / workers;
    let started = Instant::now();
    let (mut times, failures): (Vec<f64>, u64) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    let mut times = Vec::new();
                    let mut failures = 0u64;
                    let payload = [7u8; 64];
                    while Instant::now() < deadline && times.len() < per_worker {
                        let t = Instant::now();
                        let ok = (|| -> io::Result<()> {
                            let mut s = open(via, echo)?;
                            s.write_all(&payload)?;
                            let mut back = [0u8; 64];
                            s.read_exact(&mut back)?;
                            Ok(())
                        })();
                        match ok {
                            Ok(()) => times.push(t.elapsed().as_secs_f64() * 1e3),
                            Err(_) => failures += 1,
                        }
                    }
                    (times, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .fold((Vec::new(), 0), |(mut all, f), h| {
                let (t, fl) = h.join().unwrap_or_default();
                all.extend(t);
                (all, f + fl)
            })
    });
    let secs = started.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    Rate {
        per_second: times.len() as f64 / secs,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        failures,
    }
}

/// Round trips of 64 bytes over one tunnel; (p50, p99) in microseconds.
pub fn ping_pong(via: &Running, echo: SocketAddr, rounds: usize) -> io::Result<(f64, f64)> {
    let mut s = open(via, echo)?;
    let payload = [9u8; 64];
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&payload)?;
        s.read_exact(&mut back)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// Opens up to `count` idle tunnels (stops at the first failure or after `limit`);
/// returns them so the caller can measure while they are open.
pub fn idle_tunnels(
    via: &Running,
    echo: SocketAddr,
    count: usize,
    limit: Duration,
) -> Vec<TcpStream> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::with_capacity(count);
    while out.len() < count && Instant::now() < deadline {
        match open(via, echo) {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
    }
    out
}
