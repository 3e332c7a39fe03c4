//! An HTTP/3 client for the tests: the Rust h3 crate over quinn, trusting the certificate
//! the proxy generated at start.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};

use super::Proxy;

// The unit tests' quinn client configuration, shared rather than copied.
#[path = "../../src/quic/test_support.rs"]
mod test_support;
pub use test_support::client_config;

/// A current-thread tokio runtime for a test's QUIC client (quinn runs on tokio).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A quinn client endpoint on loopback trusting `cert` and offering `alpn`; made inside
/// the runtime.
pub fn quinn_client(cert: &Path, alpn: &[u8]) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(client_config(cert, alpn));
    ep
}

/// An HTTP/3 connection to `addr` over `ep`, its h3 driver running as a task (abort it to
/// stop driving).
pub async fn open_h3(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
) -> (quinn::Connection, SendRequest, tokio::task::JoinHandle<()>) {
    let quic = ep.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (quic, send, drive)
}

/// Runs the aioquic client `script` (in tests/clients) against `proxy`: its address and
/// certificate, then `args`. Returns what it printed; panics with its output if it failed.
pub fn aioquic(proxy: &Proxy, script: &str, args: &[&str]) -> String {
    aioquic_in(&[], proxy, script, args)
}

/// [`aioquic`] run under `prefix` (e.g. `ip netns exec NS`).
pub fn aioquic_in(prefix: &[&str], proxy: &Proxy, script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg("python3");
            c
        }
        None => std::process::Command::new("python3"),
    };
    let out = cmd
        .arg(path)
        .arg(proxy.addr.to_string())
        .arg(generated_cert(proxy))
        .args(args)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What [`aioquic_connect_udp_accounted`] saw: the script's output, how many of its
/// datagrams came back, and the proxy's metrics once the flow had ended.
pub struct ConnectUdpRun {
    pub stdout: String,
    pub received: u64,
    pub relayed: u64,
    pub metrics: String,
}

/// aioquic (under `prefix`, e.g. `ip netns exec NS`) sends `count` datagrams through
/// CONNECT-UDP to a counting UDP echo; once the flow has ended (its last drops are counted
/// then), every datagram the echo sent must be accounted for by the proxy, relayed to the
/// client or dropped by reason, and the client cannot have had more than was relayed.
pub fn aioquic_connect_udp_accounted(prefix: &[&str], proxy: &Proxy, count: u64) -> ConnectUdpRun {
    use std::sync::atomic::Ordering;
    let (echo, echoed) = super::udp_echo_counted();
    let stdout = aioquic_in(
        prefix,
        proxy,
        "aioquic_connect_udp.py",
        &[&echo.to_string(), &count.to_string()],
    );
    let received: u64 = stdout
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.metric("zcproxy_connections_active", &["protocol=\"connect_udp\""]) > 0.0 {
        assert!(std::time::Instant::now() < deadline, "the flow did not end");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let metrics = proxy.metrics();
    let quic: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("zcproxy_quic_datagram") && !l.ends_with(" 0"))
        .collect();
    eprintln!("CONNECT-UDP: {stdout}{}", quic.join("\n"));
    let metric = |name: &str| super::sum_metric(&metrics, name, &[]) as u64;
    let relayed = metric("zcproxy_quic_datagrams_sent_total");
    let dropped = metric("zcproxy_quic_datagrams_dropped_total");
    assert_eq!(
        relayed + dropped,
        echoed.load(Ordering::Relaxed),
        "{quic:?}"
    );
    assert!(received <= relayed, "{stdout}");
    ConnectUdpRun {
        stdout,
        received,
        relayed,
        metrics,
    }
}

pub fn generated_cert(proxy: &Proxy) -> PathBuf {
    proxy
        .tmp
        .0
        .join("zcproxy")
        .join(format!("zcproxy-{}.pem", proxy.addr.port()))
}

pub type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// Runs `f` with an HTTP/3 connection to the proxy, on a current-thread tokio runtime.
pub fn with_h3<F, Fut>(proxy: &Proxy, f: F)
where
    F: FnOnce(SendRequest) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cert = generated_cert(proxy);
    let addr = proxy.addr;
    runtime().block_on(async move {
        let ep = quinn_client(&cert, b"h3");
        let (_quic, send, drive) = open_h3(&ep, addr).await;
        f(send).await;
        drive.abort();
        ep.close(0u32.into(), b"done");
        ep.wait_idle().await;
    });
}

pub type DatagramReader =
    h3_datagram::datagram_handler::DatagramReader<h3_quinn::datagram::RecvDatagramHandler>;

/// Like [`with_h3`], with HTTP/3 datagrams on: `f` also gets the QUIC connection, to send
/// datagrams on ([`send_http_datagram`]), and the h3 reader of the ones that arrive.
pub fn with_h3_datagrams<F, Fut>(proxy: &Proxy, f: F)
where
    F: FnOnce(SendRequest, quinn::Connection, DatagramReader) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use h3_datagram::datagram_handler::HandleDatagramsExt;
    let cert = generated_cert(proxy);
    let addr = proxy.addr;
    runtime().block_on(async move {
        let ep = quinn_client(&cert, b"h3");
        let quic = ep.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut driver, send) = h3::client::builder()
            .enable_datagram(true)
            .enable_extended_connect(true)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(quic.clone()))
            .await
            .unwrap();
        let reader = driver.get_datagram_reader();
        let drive = async move {
            let _ = poll_fn(|cx| driver.poll_close(cx)).await;
        };
        tokio::select! {
            () = f(send, quic, reader) => {}
            () = drive => panic!("the HTTP/3 connection closed"),
        }
        ep.close(0u32.into(), b"done");
        ep.wait_idle().await;
    });
}

/// Sends an HTTP datagram for request stream `stream` carrying `payload` (a context ID
/// and what follows). Written here, not through h3-datagram 0.0.2, whose sender puts
/// quarter stream ID 0 on every datagram (hyperium/h3#345).
pub fn send_http_datagram(quic: &quinn::Connection, stream: h3::quic::StreamId, payload: &[u8]) {
    let quarter = stream.into_inner() / 4;
    let mut frame = Vec::with_capacity(payload.len() + 8);
    // QUIC variable-length integer (RFC 9000 §16), 1, 2 or 4 bytes here.
    match quarter {
        0..=63 => frame.push(quarter as u8),
        64..=16383 => frame.extend_from_slice(&(0x4000 | quarter as u16).to_be_bytes()),
        _ => frame.extend_from_slice(&(0x8000_0000 | quarter as u32).to_be_bytes()),
    }
    frame.extend_from_slice(payload);
    quic.send_datagram(Bytes::from(frame)).unwrap();
}

/// An extended CONNECT for a CONNECT-UDP flow to `target` through the default template.
pub fn connect_udp_request(proxy: &Proxy, target: SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!(
            "https://localhost:{}/.well-known/masque/udp/{}/{}/",
            proxy.addr.port(),
            target.ip(),
            target.port()
        ))
        .extension(h3::ext::Protocol::CONNECT_UDP)
        .header("capsule-protocol", "?1")
        .body(())
        .unwrap()
}

pub fn connect_request(target: SocketAddr, auth: Option<&str>) -> http::Request<()> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(target.to_string());
    if let Some(a) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(a);
        req = req.header("proxy-authorization", format!("Basic {token}"));
    }
    req.body(()).unwrap()
}

/// Sends `data` through a CONNECT tunnel to an echo server and returns what came back.
pub async fn echo_through(send: &mut SendRequest, target: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let stream = send
        .send_request(connect_request(target, None))
        .await
        .unwrap();
    let (mut tx, mut rx) = stream.split();
    let resp = rx.recv_response().await.unwrap();
    assert_eq!(resp.status(), 200);
    let writer = async move {
        for chunk in data.chunks(100_000) {
            tx.send_data(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        tx.finish().await.unwrap();
    };
    let reader = async move {
        let mut got = Vec::new();
        while let Some(mut chunk) = rx.recv_data().await.unwrap() {
            got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    got
}

pub type TunnelTx = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
pub type TunnelRx = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;

/// Opens a CONNECT tunnel to `target` and returns its halves once the proxy said 200.
pub async fn open_tunnel(
    send: &mut SendRequest,
    target: SocketAddr,
    auth: Option<&str>,
) -> (TunnelTx, TunnelRx) {
    let stream = send
        .send_request(connect_request(target, auth))
        .await
        .unwrap();
    let (tx, mut rx) = stream.split();
    let resp = rx.recv_response().await.unwrap();
    assert_eq!(resp.status(), 200, "CONNECT {target}");
    (tx, rx)
}

/// Sends `data` through an open tunnel to an echo server and reads it back; `Err` if the
/// stream was reset or ended on the way.
pub async fn round_trip(tx: &mut TunnelTx, rx: &mut TunnelRx, data: &[u8]) -> Result<(), String> {
    tx.send_data(Bytes::copy_from_slice(data))
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    while got.len() < data.len() {
        match rx.recv_data().await {
            Ok(Some(mut chunk)) => got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining())),
            Ok(None) => return Err("stream ended".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    assert!(got == data, "the echoed bytes differ");
    Ok(())
}

/// Echoes chunk `n` (64 KiB of a pattern of its number) through an open tunnel within
/// 10 s: what a migrating client checks after each move.
pub async fn echo_chunk(tx: &mut TunnelTx, rx: &mut TunnelRx, n: u32) {
    let chunk: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(7) ^ n) as u8)
        .collect();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        round_trip(tx, rx, &chunk),
    )
    .await
    .expect("the tunnel stalled after a migration")
    .unwrap_or_else(|e| panic!("chunk {n}: {e}"));
}

/// Sends round trips through the tunnel until one fails; `true` if that happened within
/// `secs` seconds (the proxy reset the stream).
pub async fn broken_within(tx: &mut TunnelTx, rx: &mut TunnelRx, secs: u64) -> bool {
    let probe = async {
        while round_trip(tx, rx, b"probe").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(secs), probe)
        .await
        .is_ok()
}
