//! `zcbench-quic`: zcproxy's QUIC side measured against TCP and against no proxy, side by
//! side in one run on loopback (docs/benchmarks.md, "QUIC"):
//! - download throughput through one HTTP/3 CONNECT stream and eight streams on one QUIC
//!   connection, against TCP CONNECT through zcproxy and a direct TCP connection, with the
//!   proxy's CPU seconds per GB;
//! - CONNECT-UDP round trips per second (a window of datagrams in flight) at 64 and 1,200
//!   bytes against direct UDP to the same echo, the proxy's CPU µs per round trip, and the
//!   p50/p99 of one datagram's round trip;
//! - full QUIC handshakes (TLS 1.3, HTTP/3 ALPN) per second and the proxy's CPU per handshake.
//!
//! The client is quinn on one tokio thread; with `--proxy-cpus` the proxy has its CPUs to
//! itself and the client and upstreams share the rest. Every loop is bounded by a count and
//! a deadline.

#[allow(dead_code)]
mod cpus;
// Shared with `zcbench`, which uses more of them.
#[allow(dead_code)]
mod load;
#[allow(dead_code)]
mod peers;
#[allow(dead_code)]
mod procstat;
mod quic_veth;
mod samples;
#[allow(dead_code)]
mod servers;
#[allow(dead_code)]
mod stats;
mod udp_echo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use clap::Parser;
use peers::{Handshake, Running, ZcOptions};
use rustls::pki_types::pem::PemObject;
use samples::Samples;

#[derive(Parser)]
#[command(about = "zcproxy's QUIC side against TCP and direct, on loopback")]
struct Args {
    #[arg(long, default_value = "target/release/zcproxy")]
    zcproxy: PathBuf,
    /// Shards for zcproxy (default: one per CPU it may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Run the proxy on these CPUs and the client and upstreams on the others.
    #[arg(long, value_parser = cpus::CpuSet::parse)]
    proxy_cpus: Option<cpus::CpuSet>,
    /// Bytes per download.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Seconds of each datagram and handshake run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Datagrams in flight in the CONNECT-UDP rate runs.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Concurrent handshakes in the handshake run.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Repeat every measurement this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long, default_value_t = 26400)]
    base_port: u16,
    /// Extra TOML for zcproxy, e.g. 'driver = "epoll"'.
    #[arg(long)]
    zc_config: Option<String>,
    /// Over a veth pair with the client in a network namespace (needs root and iproute2):
    /// zcproxy on its kernel UDP socket and on AF_XDP, side by side (no direct paths).
    #[arg(long)]
    veth: bool,
}

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A quinn client configuration trusting the proxy's generated certificate.
fn client_config(cert: &Path) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("certificate") {
        roots.add(c.expect("certificate")).expect("a usable root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS"),
    ));
    let mut transport = quinn::TransportConfig::default();
    // Windows large enough that flow control does not cap a loopback transfer.
    transport
        .stream_receive_window(quinn::VarInt::from_u32(16 << 20))
        .receive_window(quinn::VarInt::from_u32(64 << 20))
        .datagram_receive_buffer_size(Some(8 << 20));
    config.transport_config(Arc::new(transport));
    config
}

struct Client {
    endpoint: quinn::Endpoint,
    proxy: SocketAddr,
}

impl Client {
    fn new(proxy: SocketAddr, cert: &Path) -> Client {
        // Loopback to a proxy on loopback, else any address (a namespace's own).
        let bind = if proxy.ip().is_loopback() {
            "127.0.0.1:0"
        } else {
            "0.0.0.0:0"
        };
        let mut endpoint = quinn::Endpoint::client(bind.parse().unwrap()).expect("bind");
        endpoint.set_default_client_config(client_config(cert));
        Client { endpoint, proxy }
    }

    async fn connect(&self) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect(self.proxy, "localhost")
            .map_err(|e| e.to_string())?;
        connecting.await.map_err(|e| e.to_string())
    }

    /// An HTTP/3 connection; the driver runs as a task until the connection ends.
    async fn h3(&self) -> Result<(quinn::Connection, SendRequest), String> {
        let quic = self.connect().await?;
        let (mut driver, send) = h3::client::builder()
            .enable_extended_connect(true)
            .enable_datagram(true)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_local(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok((quic, send))
    }
}

/// Downloads `bytes` from the source server through `streams` HTTP/3 CONNECT tunnels of one
/// connection; seconds taken.
async fn h3_download(
    client: &Client,
    source: SocketAddr,
    bytes: u64,
    streams: usize,
) -> Result<f64, String> {
    let (_quic, send) = client.h3().await?;
    let each = bytes / streams as u64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let mut send = send.clone();
            tokio::task::spawn_local(async move {
                let req = http::Request::builder()
                    .method(http::Method::CONNECT)
                    .uri(source.to_string())
                    .body(())
                    .map_err(|e| e.to_string())?;
                let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
                let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("CONNECT answered {}", resp.status()));
                }
                stream
                    .send_data(Bytes::copy_from_slice(&each.to_le_bytes()))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut got = 0u64;
                while got < each {
                    match stream.recv_data().await.map_err(|e| e.to_string())? {
                        Some(mut chunk) => {
                            got += chunk.remaining() as u64;
                            chunk.advance(chunk.remaining());
                        }
                        None => return Err(format!("tunnel ended after {got} of {each}")),
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// p50 and p99 in µs of a 64-byte round trip through one HTTP/3 CONNECT tunnel to a TCP
/// echo, `rounds` times.
async fn h3_rtt(client: &Client, echo: SocketAddr, rounds: usize) -> Result<(f64, f64), String> {
    let (_quic, mut send) = client.h3().await?;
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(echo.to_string())
        .body(())
        .map_err(|e| e.to_string())?;
    let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
    let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("CONNECT answered {}", resp.status()));
    }
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        stream
            .send_data(Bytes::from_static(&[9u8; 64]))
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while got < 64 {
            let mut chunk = stream
                .recv_data()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("tunnel ended")?;
            got += chunk.remaining();
            chunk.advance(chunk.remaining());
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        stats::percentile(&samples, 0.5),
        stats::percentile(&samples, 0.99),
    ))
}

/// A datagram path to the echo: direct UDP, or a CONNECT-UDP flow through the proxy.
enum DatagramPath {
    Direct(tokio::net::UdpSocket),
    Flow {
        quic: quinn::Connection,
        quarter: u8,
        // Held: the h3 client closes its connection when the last of these is dropped.
        _held: Box<(
            h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
            SendRequest,
        )>,
    },
}

impl DatagramPath {
    async fn direct(echo: SocketAddr) -> Result<DatagramPath, String> {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        s.connect(echo).await.map_err(|e| e.to_string())?;
        Ok(DatagramPath::Direct(s))
    }

    async fn flow(client: &Client, echo: SocketAddr) -> Result<DatagramPath, String> {
        let (quic, mut send) = client.h3().await?;
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!(
                "https://localhost:{}/.well-known/masque/udp/{}/{}/",
                client.proxy.port(),
                echo.ip(),
                echo.port()
            ))
            .extension(h3::ext::Protocol::CONNECT_UDP)
            .header("capsule-protocol", "?1")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
        let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("CONNECT-UDP answered {}", resp.status()));
        }
        let id = stream.id().into_inner();
        let quarter = u8::try_from(id / 4)
            .ok()
            .filter(|q| *q < 64)
            .ok_or("stream id")?;
        Ok(DatagramPath::Flow {
            quic,
            quarter,
            _held: Box::new((stream, send)),
        })
    }

    /// Sends one UDP payload (framed as an HTTP datagram on a flow: quarter stream ID in
    /// one byte, context 0).
    async fn send(&self, payload: &[u8]) -> Result<(), String> {
        match self {
            DatagramPath::Direct(s) => s.send(payload).await.map(|_| ()).map_err(|e| e.to_string()),
            DatagramPath::Flow { quic, quarter, .. } => {
                let mut frame = Vec::with_capacity(payload.len() + 2);
                frame.extend_from_slice(&[*quarter, 0]);
                frame.extend_from_slice(payload);
                quic.send_datagram(Bytes::from(frame))
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, String> {
        match self {
            DatagramPath::Direct(s) => s.recv(buf).await.map_err(|e| e.to_string()),
            DatagramPath::Flow { quic, .. } => {
                let d = quic.read_datagram().await.map_err(|e| e.to_string())?;
                let payload = d.get(2..).ok_or("short datagram")?;
                buf[..payload.len()].copy_from_slice(payload);
                Ok(payload.len())
            }
        }
    }
}

/// Round trips per second with `window` datagrams of `size` bytes in flight, for `secs`;
/// a datagram lost leaves its slot to a 50 ms timeout.
async fn datagram_rate(path: &DatagramPath, size: usize, window: usize, secs: u64) -> (f64, u64) {
    let payload = vec![0x42u8; size];
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut done, mut lost) = (0u64, 0u64);
    let mut in_flight = 0usize;
    let started = Instant::now();
    while Instant::now() < deadline {
        while in_flight < window {
            if let Err(e) = path.send(&payload).await {
                eprintln!("send: {e}");
                return (0.0, lost);
            }
            in_flight += 1;
        }
        match tokio::time::timeout(Duration::from_millis(50), path.recv(&mut buf)).await {
            Ok(Ok(_)) => {
                done += 1;
                in_flight -= 1;
            }
            _ => {
                lost += in_flight as u64;
                in_flight = 0;
            }
        }
    }
    (done as f64 / started.elapsed().as_secs_f64(), lost)
}

/// p50 and p99 in µs of one datagram's round trip, `rounds` times.
async fn datagram_rtt(path: &DatagramPath, rounds: usize) -> (f64, f64) {
    let mut buf = vec![0u8; 2048];
    // Answers still on their way from the rate run would be taken for this run's.
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(100), path.recv(&mut buf)).await
    {}
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        if path.send(&[7u8; 64]).await.is_err() {
            continue;
        }
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), path.recv(&mut buf)).await
        {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    (
        stats::percentile(&samples, 0.5),
        stats::percentile(&samples, 0.99),
    )
}

/// Full handshakes per second with `concurrency` at a time for `secs`.
async fn handshakes(client: &Client, concurrency: usize, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let counts = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (endpoint, proxy, counts) = (client.endpoint.clone(), client.proxy, counts.clone());
            tokio::task::spawn_local(async move {
                while Instant::now() < deadline {
                    let Ok(connecting) = endpoint.connect(proxy, "localhost") else {
                        return;
                    };
                    if let Ok(Ok(c)) =
                        tokio::time::timeout(Duration::from_secs(5), connecting).await
                    {
                        c.close(0u32.into(), b"");
                        counts.set(counts.get() + 1);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    counts.get() as f64 / started.elapsed().as_secs_f64()
}

/// Round trips per second at 64 and 1,200 bytes (with loss and the proxy's CPU µs per
/// round trip), and one round trip's p50/p99, recorded under `key`.
async fn measure_datagrams(
    path: &DatagramPath,
    proxy: &Running,
    args: &Args,
    key: &str,
    s: &mut Samples,
) {
    for size in [64usize, 1200] {
        let c0 = cpu(proxy);
        let (rate, lost) = datagram_rate(path, size, args.window, args.seconds).await;
        let spent = cpu(proxy) - c0;
        s.add(&format!("{key} {size}"), rate);
        s.add(&format!("{key} {size} lost"), lost as f64);
        s.add(
            &format!("{key} {size} cpu"),
            spent * 1e6 / (rate * args.seconds as f64),
        );
    }
    let (p50, p99) = datagram_rtt(path, 2000).await;
    s.add(&format!("{key} rtt50"), p50);
    s.add(&format!("{key} rtt99"), p99);
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
    let dir = std::env::temp_dir().join(format!("zcbench-quic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let port = args.base_port;
    let source = servers::source(port + 10);
    let echo = udp_echo::udp_echo(port + 11);
    let tcp_echo = servers::echo_pool(port + 12, 4);
    // The proxy writes its generated certificate under TMPDIR; give it this run's directory.
    std::env::set_var("TMPDIR", &dir);
    if args.veth {
        quic_veth::run(&args, cores, &dir, source, echo);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let opts = ZcOptions {
        bin: &args.zcproxy,
        listen: peers::LOOPBACK,
        cores,
        config: args.zc_config.as_deref(),
    };
    let Some(proxy) = peers::zcproxy(&dir, &opts, port, port + 1, Handshake::Connect, "zcproxy")
    else {
        eprintln!("zcbench-quic: zcproxy did not start");
        std::process::exit(1);
    };
    let cert = dir.join("zcproxy").join(format!("zcproxy-{port}.pem"));
    let direct = peers::direct();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // quinn endpoints bind within the runtime.
    let _entered = rt.enter();
    let local = tokio::task::LocalSet::new();
    let mut s = Samples::default();
    let gb = args.bytes as f64 / 1e9;
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        for streams in [1usize, 8] {
            // Throughput and the proxy's CPU per GB of one download (the latter unused for
            // the direct path, which the report leaves out).
            let mut record = |key: String, c0: f64, took: Result<f64, String>| match took {
                Ok(t) => {
                    s.add(&key, args.bytes as f64 * 8.0 / t / 1e9);
                    s.add(&format!("{key} cpu"), (cpu(&proxy) - c0) / gb);
                }
                Err(e) => eprintln!("{key}: {e}"),
            };
            let c0 = cpu(&proxy);
            let took = load::download(&direct, source, args.bytes, streams);
            record(
                format!("direct tcp {streams}"),
                c0,
                took.map_err(|e| e.to_string()),
            );
            let c0 = cpu(&proxy);
            let took = load::download(&proxy, source, args.bytes, streams);
            record(
                format!("tcp connect {streams}"),
                c0,
                took.map_err(|e| e.to_string()),
            );
            let client = Client::new(proxy.addr.expect("proxy address"), &cert);
            let c0 = cpu(&proxy);
            let took = local.block_on(&rt, h3_download(&client, source, args.bytes, streams));
            record(format!("h3 connect {streams}"), c0, took);
        }
        for (name, via) in [("direct tcp", &direct), ("tcp connect", &proxy)] {
            if let Ok((p50, p99)) = load::ping_pong(via, tcp_echo, 2000) {
                s.add(&format!("{name} rtt50"), p50);
                s.add(&format!("{name} rtt99"), p99);
            }
        }
        let client = Client::new(proxy.addr.expect("proxy address"), &cert);
        local.block_on(&rt, async {
            match h3_rtt(&client, tcp_echo, 2000).await {
                Ok((p50, p99)) => {
                    s.add("h3 connect rtt50", p50);
                    s.add("h3 connect rtt99", p99);
                }
                Err(e) => eprintln!("HTTP/3 CONNECT round trips: {e}"),
            }
            let paths = [
                ("direct udp", DatagramPath::direct(echo).await),
                ("connect-udp", DatagramPath::flow(&client, echo).await),
            ];
            for (name, path) in paths {
                let path = match path {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("{name}: {e}");
                        continue;
                    }
                };
                measure_datagrams(&path, &proxy, &args, name, &mut s).await;
            }
            let c0 = cpu(&proxy);
            let rate = handshakes(&client, args.concurrency, args.seconds).await;
            s.add("handshakes", rate);
            s.add(
                "handshake cpu",
                (cpu(&proxy) - c0) * 1e6 / (rate * args.seconds as f64),
            );
        });
    }
    report(&args, cores, &s);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

fn report(args: &Args, cores: usize, s: &Samples) {
    let runs = args.runs;
    println!("\nzcproxy QUIC on {cores} core(s), medians of {runs} run(s)\n");
    println!("| path | 1 stream Gbit/s | 8 streams Gbit/s | proxy CPU s/GB (1 / 8) | 64 B round trip p50 / p99 µs |");
    println!("|---|---|---|---|---|");
    for (label, key) in [
        ("direct TCP", "direct tcp"),
        ("TCP CONNECT through zcproxy", "tcp connect"),
        ("HTTP/3 CONNECT through zcproxy", "h3 connect"),
    ] {
        let cpu = |n| match key {
            "direct tcp" => "–".to_string(),
            _ => format!("{:.2}", s.median(&format!("{key} {n} cpu"))),
        };
        println!(
            "| {label} | {:.2} | {:.2} | {} / {} | {:.0} / {:.0} |",
            s.median(&format!("{key} 1")),
            s.median(&format!("{key} 8")),
            cpu(1),
            cpu(8),
            s.median(&format!("{key} rtt50")),
            s.median(&format!("{key} rtt99"))
        );
    }
    println!(
        "\n| datagrams ({} in flight) | 64 B round trips/s | 1,200 B round trips/s | proxy CPU µs per round trip (64 / 1,200) | lost (64 / 1,200) | one round trip p50 / p99 µs |",
        args.window
    );
    println!("|---|---|---|---|---|---|");
    for (label, key) in [
        ("direct UDP", "direct udp"),
        ("CONNECT-UDP through zcproxy", "connect-udp"),
    ] {
        let m = |suffix: &str| s.median(&format!("{key} {suffix}"));
        let cpu = |size| match key {
            "direct udp" => "–".to_string(),
            _ => format!("{:.1}", m(&format!("{size} cpu"))),
        };
        println!(
            "| {label} | {:.0} | {:.0} | {} / {} | {:.0} / {:.0} | {:.0} / {:.0} |",
            m("64"),
            m("1200"),
            cpu(64),
            cpu(1200),
            m("64 lost"),
            m("1200 lost"),
            m("rtt50"),
            m("rtt99")
        );
    }
    println!(
        "\n| QUIC handshakes ({} at a time) | per second | proxy CPU µs each |\n|---|---|---|\n| zcproxy | {:.0} | {:.0} |",
        args.concurrency,
        s.median("handshakes"),
        s.median("handshake cpu")
    );
}
