//! `zcbench-tls`: TLS to the proxy measured side by side in one run on loopback
//! (docs/benchmarks.md, "TLS and HTTP/2"):
//! - download throughput through one tunnel and through 100 at once: plain CONNECT, CONNECT
//!   inside TLS (HTTP/1.1), CONNECT streams on one HTTP/2 connection, Squid's `https_port`
//!   where Squid is installed, and a direct connection; with the proxy's CPU seconds per GB;
//! - tunnels set up per second over TLS (TCP + TLS handshake + CONNECT + a 64-byte echo),
//!   with full handshakes and with resumed sessions, against plain CONNECT; the proxy's
//!   CPU per set-up;
//! - forwarded plain-HTTP GETs per second over TLS: HTTP/1.1 keep-alive connections and
//!   streams of one HTTP/2 connection (tls_forward.rs).
//!
//! Both proxies get the same ECDSA P-256 certificate. Clients are rustls (blocking, one
//! thread per tunnel) and the h2 crate on one tokio thread. Every loop is bounded.

#[allow(dead_code)]
mod cpus;
#[allow(dead_code)]
mod load;
#[allow(dead_code)]
mod peers;
#[allow(dead_code)]
mod procstat;
mod samples;
#[allow(dead_code)]
mod servers;
#[allow(dead_code)]
mod stats;
mod tls_forward;

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use peers::{Handshake, Running, ZcOptions};
use rustls::pki_types::pem::PemObject;
use samples::Samples;

#[derive(Parser)]
#[command(about = "TLS and HTTP/2 to zcproxy against plain CONNECT, Squid and direct")]
struct Args {
    #[arg(long, default_value = "target/release/zcproxy")]
    zcproxy: PathBuf,
    /// Another zcproxy binary (e.g. an earlier build) measured beside, as "zcproxy before".
    #[arg(long)]
    zcproxy_before: Option<PathBuf>,
    /// Shards for zcproxy (default: one per CPU it may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Run the proxies on these CPUs and the clients and upstreams on the others.
    #[arg(long, value_parser = cpus::CpuSet::parse)]
    proxy_cpus: Option<cpus::CpuSet>,
    /// Bytes per download (split evenly over the tunnels of a many-tunnel run).
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Tunnels of the many-tunnel runs.
    #[arg(long, default_value_t = 100)]
    tunnels: usize,
    /// Seconds of each set-up rate run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Client threads of the set-up rate runs.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Idle TLS tunnels held open to measure the proxy's memory per tunnel (first run).
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Forwarded GETs per measurement of the forward-proxy runs.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    #[arg(long, default_value_t = 24000)]
    base_port: u16,
}

/// A TLS-terminating proxy under test.
struct TlsProxy {
    label: &'static str,
    key: &'static str,
    running: Running,
    /// Serves HTTP/2 (zcproxy does, Squid does not).
    h2: bool,
}

impl TlsProxy {
    fn addr(&self) -> SocketAddr {
        self.running.addr.expect("proxy address")
    }
}

fn client_config(cert: &Path, alpn: &[u8], resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("certificate") {
        roots.add(c.expect("certificate")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A CONNECT tunnel to `target` inside TLS to `proxy`.
fn tls_tunnel(
    proxy: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    target: SocketAddr,
) -> io::Result<TlsStream> {
    let tcp = TcpStream::connect(proxy)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
        .map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
    s.flush()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 || head.len() > 4096 {
            return Err(io::Error::other("no CONNECT response"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(s)
}

/// Downloads `bytes` over `tunnels` TLS connections at once; wall seconds.
fn tls_download(
    proxy: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    source: SocketAddr,
    bytes: u64,
    tunnels: usize,
) -> io::Result<f64> {
    let streams = (0..tunnels)
        .map(|_| tls_tunnel(proxy, config, source))
        .collect::<io::Result<Vec<_>>>()?;
    load::download_over(streams, bytes / tunnels as u64)
}

/// Downloads `bytes` over `streams` CONNECT streams of one HTTP/2 connection; wall seconds.
/// An HTTP/2 connection over TLS to `proxy`, driven by a local task (abort it to close).
async fn h2_client(
    proxy: SocketAddr,
    cert: &Path,
) -> Result<(h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>), String> {
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(client_config(cert, b"h2", false))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(512 << 20)
        .max_concurrent_streams(1024)
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok((client, driver))
}

async fn h2_download(
    proxy: SocketAddr,
    cert: &Path,
    source: SocketAddr,
    bytes: u64,
    streams: usize,
) -> Result<f64, String> {
    let (client, driver) = h2_client(proxy, cert).await?;
    let per = bytes / streams as u64;
    let mut opened = Vec::new();
    for _ in 0..streams {
        let mut client = client.clone().ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::builder()
            .method("CONNECT")
            .uri(source.to_string())
            .body(())
            .map_err(|e| e.to_string())?;
        let (resp, send) = client.send_request(req, false).map_err(|e| e.to_string())?;
        opened.push((resp, send));
    }
    let mut tunnels = Vec::new();
    for (resp, send) in opened {
        let resp = resp.await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("CONNECT answered {}", resp.status()));
        }
        tunnels.push((resp.into_body(), send));
    }
    let started = Instant::now();
    let tasks: Vec<_> = tunnels
        .into_iter()
        .map(|(mut recv, mut send)| {
            tokio::task::spawn_local(async move {
                send.send_data(Bytes::copy_from_slice(&per.to_le_bytes()), false)
                    .map_err(|e| e.to_string())?;
                let mut got = 0u64;
                while got < per {
                    match recv.data().await {
                        Some(Ok(chunk)) => {
                            got += chunk.len() as u64;
                            let _ = recv.flow_control().release_capacity(chunk.len());
                        }
                        Some(Err(e)) => return Err(e.to_string()),
                        None => break,
                    }
                }
                let _ = send.send_data(Bytes::new(), true);
                Ok::<u64, String>(got)
            })
        })
        .collect();
    for t in tasks {
        let got = t.await.map_err(|e| e.to_string())??;
        if got != per {
            return Err(format!("short download: {got} of {per}"));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(client);
    driver.abort();
    // The connection is gone once the driver is.
    let _ = poll_fn(|_| std::task::Poll::Ready(())).await;
    Ok(secs)
}

/// TLS tunnels set up per second: TCP + TLS + CONNECT + a 64-byte echo + close, by
/// `workers` threads for `secs` (each worker's sessions resume where `config` allows).
fn tls_setups(
    proxy: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    echo: SocketAddr,
    workers: usize,
    secs: u64,
) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let (done, failed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let (mut done, mut failed) = (0u64, 0u64);
                    while Instant::now() < deadline && done < 1_000_000 {
                        let ok = (|| -> io::Result<()> {
                            let mut s = tls_tunnel(proxy, config, echo)?;
                            s.write_all(&[7u8; 64])?;
                            s.flush()?;
                            let mut back = [0u8; 64];
                            s.read_exact(&mut back)?;
                            s.conn.send_close_notify();
                            let _ = s.flush();
                            Ok(())
                        })();
                        match ok {
                            Ok(()) => done += 1,
                            Err(_) => failed += 1,
                        }
                    }
                    (done, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 1)))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    (done as f64 / started.elapsed().as_secs_f64(), failed)
}

/// Squid terminating TLS on an `https_port` with `cert`/`key` (Debian's squid-openssl):
/// CONNECT inside TLS, as zcproxy's TLS port serves it.
fn squid_https(dir: &Path, port: u16, cert: &Path, key: &Path) -> Option<Running> {
    let d = dir.display();
    let conf = peers::write(
        dir,
        "squid-https.conf",
        &format!(
            "https_port 127.0.0.1:{port} tls-cert={} tls-key={}\nhttp_access allow all\n\
             cache deny all\ncache_mem 8 MB\naccess_log none\ncache_log /dev/null\n\
             cache_store_log none\npid_filename {d}/squid-https.pid\ncoredump_dir {d}\n\
             shutdown_lifetime 0 seconds\nmax_filedescriptors 20000\ncache_effective_user proxy\n",
            cert.display(),
            key.display()
        ),
    );
    peers::spawn(
        "squid (https_port)",
        Handshake::Connect,
        ([127, 0, 0, 1], port).into(),
        Command::new("squid").args(["-N", "-f"]).arg(conf),
    )
}

/// An ECDSA P-256 certificate for localhost and its key, made with openssl.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("proxy.pem"), dir.join("proxy.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl could not make a certificate");
    (cert, key)
}

fn cpu(proxy: &Running) -> f64 {
    proxy.pid().map_or(f64::NAN, procstat::cpu_seconds)
}

fn main() {
    let args = Args::parse();
    if let Some(set) = args.proxy_cpus.clone() {
        cpus::split(set).expect("CPU placement");
    }
    let cores = cpus::shards(args.cores, args.proxy_cpus.as_ref());
    let dir = std::env::temp_dir().join(format!("zcbench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let (cert, key) = certificate(&dir);
    let port = args.base_port;
    let source = servers::source(port + 10);
    let echo = servers::echo_pool(port + 11, 4);
    let origin = tls_forward::http_origin(port + 12);
    let holder = servers::echo(port + 13);
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[quic]\nenabled = false\n",
        cert.display(),
        key.display()
    );
    let opts = ZcOptions {
        bin: &args.zcproxy,
        listen: peers::LOOPBACK,
        cores,
        config: Some(&config),
    };
    let Some(zc) = peers::zcproxy(&dir, &opts, port, port + 1, Handshake::Connect, "zcproxy")
    else {
        eprintln!("zcbench-tls: zcproxy did not start");
        std::process::exit(1);
    };
    let mut proxies = vec![TlsProxy {
        label: "zcproxy",
        key: "zc",
        running: zc,
        h2: true,
    }];
    if let Some(bin) = &args.zcproxy_before {
        let before = ZcOptions { bin, ..opts };
        match peers::zcproxy(
            &dir,
            &before,
            port + 3,
            port + 4,
            Handshake::Connect,
            "before",
        ) {
            Some(running) => proxies.push(TlsProxy {
                label: "zcproxy before",
                key: "before",
                running,
                h2: true,
            }),
            None => eprintln!("zcbench-tls: {} did not start; left out", bin.display()),
        }
    }
    match squid_https(&dir, port + 2, &cert, &key) {
        Some(running) => proxies.push(TlsProxy {
            label: "Squid https_port",
            key: "squid",
            running,
            h2: false,
        }),
        None => eprintln!("zcbench-tls: Squid with https_port not available; left out"),
    }
    let plain = Running {
        name: "zcproxy plain".into(),
        handshake: Handshake::Connect,
        addr: proxies[0].running.addr,
        child: None,
    };
    let direct = peers::direct();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let mut s = Samples::default();
    let gb = args.bytes as f64 / 1e9;
    let zc_cpu = || cpu(&proxies[0].running);
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        for (n, label) in [(1usize, "1"), (args.tunnels, "n")] {
            let mut record = |key: String, spent: f64, took: Result<f64, String>| match took {
                Ok(t) => {
                    s.add(&key, args.bytes as f64 * 8.0 / t / 1e9);
                    s.add(&format!("{key} cpu"), spent / gb);
                }
                Err(e) => eprintln!("{key}: {e}"),
            };
            let took = load::download(&direct, source, args.bytes, n).map_err(|e| e.to_string());
            record(format!("direct {label}"), 0.0, took);
            let c0 = zc_cpu();
            let took = load::download(&plain, source, args.bytes, n).map_err(|e| e.to_string());
            record(format!("plain {label}"), zc_cpu() - c0, took);
            for p in &proxies {
                let config = client_config(&cert, b"http/1.1", false);
                let c0 = cpu(&p.running);
                let took = tls_download(p.addr(), &config, source, args.bytes, n)
                    .map_err(|e| e.to_string());
                record(format!("{} tls {label}", p.key), cpu(&p.running) - c0, took);
                if p.h2 {
                    let c0 = cpu(&p.running);
                    let took =
                        local.block_on(&rt, h2_download(p.addr(), &cert, source, args.bytes, n));
                    record(format!("{} h2 {label}", p.key), cpu(&p.running) - c0, took);
                }
            }
        }
        let secs = args.seconds;
        let c0 = zc_cpu();
        let rate = load::tunnels_per_second(
            &plain,
            echo,
            args.workers,
            Duration::from_secs(secs),
            1_000_000,
        );
        s.add("plain setups", rate.per_second);
        s.add(
            "plain setups cpu",
            (zc_cpu() - c0) * 1e6 / (rate.per_second * secs as f64),
        );
        for p in &proxies {
            for (mode, resume) in [("full", false), ("resumed", true)] {
                let config = client_config(&cert, b"http/1.1", resume);
                let c0 = cpu(&p.running);
                let (rate, failed) = tls_setups(p.addr(), &config, echo, args.workers, secs);
                let key = format!("{} {mode}", p.key);
                s.add(&format!("{key} setups"), rate);
                s.add(
                    &format!("{key} setups cpu"),
                    (cpu(&p.running) - c0) * 1e6 / (rate * secs as f64),
                );
                s.add(&format!("{key} setups failed"), failed as f64);
            }
        }
        if run == 0 && args.idle > 0 {
            for p in &proxies {
                match idle_kib(p, &cert, holder, args.idle) {
                    Ok(kib) => s.add(&format!("{} idle", p.key), kib),
                    Err(e) => eprintln!("{} idle TLS tunnels: {e}", p.label),
                }
            }
        }
        // Forwarded GETs, FORWARD_AT_ONCE at a time.
        for p in &proxies {
            let config = client_config(&cert, b"http/1.1", true);
            let per = |c0: f64| (cpu(&p.running) - c0) * 1e6 / args.requests as f64;
            let c0 = cpu(&p.running);
            let rps = tls_forward::h1(p.addr(), &config, origin, FORWARD_AT_ONCE, args.requests);
            match rps {
                Ok(rps) => {
                    s.add(&format!("{} fwd h1", p.key), rps);
                    s.add(&format!("{} fwd h1 cpu", p.key), per(c0));
                }
                Err(e) => eprintln!("{} forwarded HTTP/1.1: {e}", p.label),
            }
            if p.h2 {
                let c0 = cpu(&p.running);
                let rps = local.block_on(&rt, async {
                    let (client, driver) = h2_client(p.addr(), &cert).await?;
                    let rps = tls_forward::h2(client, origin, FORWARD_AT_ONCE, args.requests).await;
                    driver.abort();
                    rps
                });
                match rps {
                    Ok(rps) => {
                        s.add(&format!("{} fwd h2", p.key), rps);
                        s.add(&format!("{} fwd h2 cpu", p.key), per(c0));
                    }
                    Err(e) => eprintln!("{} forwarded HTTP/2: {e}", p.label),
                }
            }
        }
    }
    report(&args, cores, &proxies, &s);
    drop(proxies);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The proxy's memory (PSS) per idle TLS tunnel: `n` CONNECT tunnels inside TLS opened
/// one after another and held, nothing sent after the CONNECT.
fn idle_kib(p: &TlsProxy, cert: &Path, target: SocketAddr, n: usize) -> Result<f64, String> {
    let pid = p.running.pid().ok_or("no pid")?;
    let config = client_config(cert, b"http/1.1", false);
    let before = procstat::pss_kib(pid);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(tls_tunnel(p.addr(), &config, target).map_err(|e| e.to_string())?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = procstat::pss_kib(pid);
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Forwarded requests in flight at once (HTTP/1.1 connections, or HTTP/2 streams).
const FORWARD_AT_ONCE: usize = 8;

fn report(args: &Args, cores: usize, proxies: &[TlsProxy], s: &Samples) {
    let n = args.tunnels;
    println!(
        "\nTLS to the proxy, zcproxy on {cores} core(s), medians of {} run(s), {} MB per download\n",
        args.runs,
        args.bytes / 1_000_000
    );
    println!("| path | 1 tunnel Gbit/s | proxy CPU s/GB | {n} tunnels Gbit/s | proxy CPU s/GB |");
    println!("|---|---|---|---|---|");
    let mut rows = vec![
        ("direct TCP".to_string(), "direct".to_string()),
        ("plain CONNECT, zcproxy (splice)".into(), "plain".into()),
    ];
    for p in proxies {
        rows.push((
            format!("CONNECT inside TLS, {}", p.label),
            format!("{} tls", p.key),
        ));
        if p.h2 {
            rows.push((
                format!("HTTP/2 CONNECT streams on one connection, {}", p.label),
                format!("{} h2", p.key),
            ));
        }
    }
    for (label, key) in rows {
        let cpu = |which: &str| match key.as_str() {
            "direct" => "–".to_string(),
            _ => format!("{:.2}", s.median(&format!("{key} {which} cpu"))),
        };
        println!(
            "| {label} | {:.2} | {} | {:.2} | {} |",
            s.median(&format!("{key} 1")),
            cpu("1"),
            s.median(&format!("{key} n")),
            cpu("n"),
        );
    }
    println!(
        "\n| tunnel set-up ({} client threads) | per second | proxy CPU µs each | failed |",
        args.workers
    );
    println!("|---|---|---|---|");
    println!(
        "| plain CONNECT, zcproxy | {:.0} | {:.0} | – |",
        s.median("plain setups"),
        s.median("plain setups cpu")
    );
    for p in proxies {
        for mode in ["full", "resumed"] {
            let key = format!("{} {mode}", p.key);
            println!(
                "| TLS {mode} handshake + CONNECT, {} | {:.0} | {:.0} | {:.0} |",
                p.label,
                s.median(&format!("{key} setups")),
                s.median(&format!("{key} setups cpu")),
                s.median(&format!("{key} setups failed")),
            );
        }
    }
    if args.idle > 0 {
        println!(
            "\n| {} idle tunnels inside TLS (after the CONNECT) | proxy memory (PSS) per tunnel, KiB |",
            args.idle
        );
        println!("|---|---|");
        for p in proxies {
            println!(
                "| {} | {:.1} |",
                p.label,
                s.median(&format!("{} idle", p.key))
            );
        }
    }
    println!(
        "\n| forwarded GET, {} B body, {FORWARD_AT_ONCE} at a time | requests/s | proxy CPU µs each |",
        tls_forward::ORIGIN_BODY
    );
    println!("|---|---|---|");
    for p in proxies {
        let mut kinds = vec![("fwd h1", "HTTP/1.1 keep-alive connections inside TLS")];
        if p.h2 {
            kinds.push(("fwd h2", "streams of one HTTP/2 connection"));
        }
        for (kind, what) in kinds {
            let key = format!("{} {kind}", p.key);
            println!(
                "| {what}, {} | {:.0} | {:.0} |",
                p.label,
                s.median(&key),
                s.median(&format!("{key} cpu")),
            );
        }
    }
}
