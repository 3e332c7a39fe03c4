//! HTTP/2 connections and streams are bounded in memory and time like TCP tunnels: finished
//! connections leave nothing behind, idle ones are closed even when the client never answers,
//! a stalled request body or a shut client window is given up on, a storm of cancelled
//! password checks costs no more Argon2 runs than the per-core limit allows, idle pooled
//! upstreams give their tunnel slots back, and a client window smaller than one capsule
//! still carries datagrams.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2::{self as h2c, frame, GOAWAY, HEADERS, RST_STREAM, SETTINGS};
use common::h3::runtime;
use common::Proxy;

/// A plain-TCP HTTP/2 connection (prior knowledge) that has sent the preface and an empty
/// SETTINGS frame, and read the proxy's SETTINGS.
fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Frames go out as written (Nagle would hold each small write for the last one's ACK).
    s.set_nodelay(true).unwrap();
    let mut hello = h2c_preface();
    hello.extend_from_slice(&frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[3], SETTINGS, "the proxy's first frame");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    s
}

fn h2c_preface() -> Vec<u8> {
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
}

/// Reads until the proxy closes the connection; how long that took.
fn until_closed(s: &mut TcpStream, patience: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(patience)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed())
            }
            Err(_) => return None,
        }
    }
}

/// Defect 1: every h2 connection used to leave its task behind (a waker pushed on the
/// shard's drain list at every poll, never removed): ~4 KiB each, until the shard drained.
#[test]
fn ten_thousand_finished_h2c_connections_leave_nothing_behind() {
    let proxy = Proxy::builder().arg("--cores").arg("1").start();
    let open_and_close = |n: usize| {
        for _ in 0..n {
            let mut s = raw_h2c(proxy.addr);
            s.write_all(&frame(GOAWAY, 0, 0, &[0; 8])).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            assert!(until_closed(&mut s, Duration::from_secs(10)).is_some());
        }
    };
    open_and_close(500);
    let baseline = proxy.rss_kib();
    open_and_close(10_000);
    let after = proxy.rss_kib();
    assert!(
        after < baseline + 6 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB over 10,000 finished connections"
    );
    testkit::eventually(10, "no HTTP/2 connection counted open", || {
        proxy.metric("zcproxy_h2_connections_active", &[]) == 0.0
    });
}

/// Defect 3: an idle connection got a GOAWAY and then waited forever for the PING answer
/// h2 sends with it. A client that never answers is closed after another idle period.
#[test]
fn an_idle_h2_connection_whose_client_never_answers_is_closed() {
    let proxy = Proxy::builder()
        .config("[timeouts]\nidle_secs = 2\n")
        .start();
    let mut s = raw_h2c(proxy.addr);
    let took = until_closed(&mut s, Duration::from_secs(15)).expect("the idle connection closed");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(7),
        "closed after {took:?} (idle 2 s: GOAWAY, then the close one idle period later)"
    );
    // The client sees the close (h2 shuts the socket down) a moment before the proxy's
    // connection task has counted it.
    testkit::eventually(5, "the idle close counted", || {
        proxy.metric("zcproxy_h2_connections_ended_total", &["reason=\"idle\""]) == 1.0
            && proxy.metric("zcproxy_h2_connections_active", &[]) == 0.0
    });
}

/// An HTTP/2 client over plain TCP with the given initial stream window.
async fn h2c_client(
    addr: SocketAddr,
    window: u32,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send.ready().await.unwrap(), drive)
}

/// Defect 4: forwarding a plain-HTTP request waited without a deadline for the request
/// body and for room in the client's window, each stalled stream holding an upstream and a
/// tunnel slot.
#[test]
fn stalled_forwarded_requests_are_given_up_on_after_the_idle_timeout() {
    let origin = common::origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[timeouts]\nidle_secs = 2\n")
        .start();
    let o = origin.addr;
    runtime().block_on(async {
        // A POST announcing 10 bytes that never come: 408 once the body stalled.
        let (client, _drive) = h2c_client(proxy.addr, 65_535).await;
        let req = http::Request::post(format!("http://{o}/echo"))
            .header("content-length", "10")
            .body(())
            .unwrap();
        let mut client = client.ready().await.unwrap();
        let (resp, _body) = client.send_request(req, false).unwrap();
        let started = Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(15), resp)
            .await
            .expect("an answer to the stalled POST")
            .unwrap();
        assert_eq!(resp.status(), 408);
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );

        // A GET from a client whose window is shut: the head comes, the body cannot, and
        // the stream is reset once the window stayed shut for the idle timeout.
        let (client, _drive) = h2c_client(proxy.addr, 0).await;
        let req = http::Request::get(format!("http://{o}/bytes/100000"))
            .body(())
            .unwrap();
        let mut client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("the response head")
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let started = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(15), body.data())
            .await
            .expect("the stream given up on");
        assert!(matches!(end, Some(Err(_))), "reset, not {end:?}");
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );
    });
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"idle_timeout\""]) >= 2.0);
    testkit::eventually(10, "both upstreams closed", || {
        proxy.metric("zcproxy_connections_active", &["protocol=\"http\""]) == 0.0
    });
}

/// A HEADERS block for a CONNECT to `authority` with Basic credentials, HPACK literals only
/// (`proxy-authorization` is static-table entry 49).
fn connect_with_credentials(authority: &str, token: &str) -> Vec<u8> {
    let mut block = h2c::connect_headers(authority);
    // Literal without indexing, indexed name 49: 4-bit prefix 15, then 34.
    block.extend_from_slice(&[0x0f, 34]);
    let value = format!("Basic {token}");
    assert!(value.len() < 127);
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
    block
}

/// Reads the proxy's frames until all but one of `ids` have their response HEADERS, or
/// `patience` ran out; the streams answered.
fn answers(s: &mut TcpStream, ids: &[u32], patience: Duration) -> Vec<u32> {
    let deadline = Instant::now() + patience;
    let mut answered = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = Vec::new();
    while answered.len() + 1 < ids.len() && Instant::now() < deadline {
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => panic!("the proxy closed the connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            if buf[3] == HEADERS && ids.contains(&id) {
                answered.push(id);
            }
            buf.drain(..9 + len);
        }
    }
    answered
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Defect 6: a stream reset during its password check freed the core's check slot while
/// its Argon2 job still ran or waited, so HEADERS+RST pairs queued a run each and filled
/// the shared pool's queue; the next real login was then refused.
#[test]
fn cancelled_password_checks_cost_no_runs_past_the_limit() {
    let echo = common::echo_server();
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .arg("--user")
        .arg("alice:wonderland")
        .config(
            "[limits]\npassword_checks_per_core = 1\npassword_threads = 4\n\
             [h2]\nmax_premature_resets = 1000000\n",
        )
        .start();
    let runs = || proxy.metric("zcproxy_password_verifications_total", &[]);
    // The proof that alice logs in at all.
    let connect_as_alice = || {
        runtime().block_on(async {
            let (mut client, _drive) = h2c::open_plain(proxy.addr).await;
            let (resp, _send) =
                h2c::connect(&mut client, &echo.to_string(), Some("alice:wonderland")).await;
            resp.status().as_u16()
        })
    };
    assert_eq!(connect_as_alice(), 200);
    assert_eq!(runs(), 1.0);
    // What one Argon2 run of the proxy's hash costs on this machine (its fastest of three,
    // so that the bound below is not loosened by a slow one).
    let hash = policy::password::hash("wonderland").unwrap();
    let one_run = (0..3)
        .map(|_| {
            let t = Instant::now();
            let _ = policy::password::verify(&hash, b"x");
            t.elapsed()
        })
        .min()
        .unwrap();

    // 1,000 streams, each a CONNECT with a random user's credentials: ten at a time, and
    // once the proxy has answered the checks it refused at once ("overloaded": one runs at
    // a time), the one it is running is reset.
    let mut s = raw_h2c(proxy.addr);
    let storm = Instant::now();
    let authority = echo.to_string();
    for batch in 0..100u32 {
        let mut out = Vec::new();
        let ids: Vec<u32> = (0..10).map(|i| 1 + 2 * (batch * 10 + i)).collect();
        for &id in &ids {
            let block = connect_with_credentials(&authority, &basic(&format!("u{id}"), "x"));
            out.extend_from_slice(&frame(HEADERS, h2c::END_HEADERS, id, &block));
        }
        s.write_all(&out).unwrap();
        let answered = answers(&mut s, &ids, Duration::from_millis(500));
        let mut resets = Vec::new();
        for id in ids.iter().filter(|id| !answered.contains(id)) {
            resets.extend_from_slice(&frame(RST_STREAM, 0, *id, &8u32.to_be_bytes()));
        }
        s.write_all(&resets).unwrap();
    }
    let storm = storm.elapsed();
    // Right after the storm a real login goes through: no queue of abandoned runs ahead.
    assert_eq!(
        connect_as_alice(),
        200,
        "alice logs in right after the storm"
    );
    std::thread::sleep(one_run * 4);
    let storm_runs = runs() - 1.0;
    eprintln!("storm {storm:?}, one run {one_run:?}, {storm_runs} runs");
    // One check at a time on the core: a run per run-time of the storm at most (and one
    // begun at its end); the 1,000 cancelled checks themselves queue none.
    let limit = (storm.as_secs_f64() / one_run.as_secs_f64()).ceil() + 2.0;
    assert!(
        storm_runs <= limit,
        "{storm_runs} Argon2 runs for a {storm:?} storm (one run takes ~{one_run:?}; at most {limit})"
    );
    // Every stream reached the proxy (most were answered "overloaded" before their reset).
    assert_eq!(
        proxy.metric("zcproxy_h2_streams_total", &["kind=\"connect\""]),
        1_002.0
    );
}

/// Defect 8: upstreams kept alive between forwarded requests held their user's tunnel
/// slots, so a user at `max_tunnels` could not open a tunnel on the same connection.
#[test]
fn idle_pooled_upstreams_give_their_slots_to_a_new_tunnel() {
    let (o1, o2) = (
        common::origin::start("127.0.0.1"),
        common::origin::start("127.0.0.1"),
    );
    let echo = common::echo_server();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$BZLBZP7FSPh0A8cqXic8LQ$gzcbUZxX0vmlA5VGwoW/dDVEd5Zim7/QelstpJg+so4";
    let proxy = Proxy::builder()
        .allow_loopback()
        .config(&format!(
            "[[policy.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nmax_tunnels = 2\n"
        ))
        .start();
    let alice = Some("alice:wonderland");
    runtime().block_on(async {
        let (mut client, _drive) = h2c::open_plain(proxy.addr).await;
        for o in [o1.addr, o2.addr] {
            let req = http::Request::get(format!("http://{o}/hello"))
                .header(
                    "proxy-authorization",
                    format!("Basic {}", basic("alice", "wonderland")),
                )
                .body(())
                .unwrap();
            let mut c = client.clone().ready().await.unwrap();
            let (resp, _) = c.send_request(req, true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            while let Some(chunk) = body.data().await {
                chunk.unwrap();
            }
        }
        // Both slots are held by idle upstreams now; the tunnel takes one of them.
        let (resp, mut send) = h2c::connect(&mut client, &echo.to_string(), alice).await;
        assert_eq!(resp.status(), 200, "CONNECT at the tunnel limit");
        let mut recv = resp.into_body();
        h2c::send_all(&mut send, Bytes::from_static(b"ping"), false)
            .await
            .unwrap();
        assert_eq!(h2c::recv_exact(&mut recv, 4).await.unwrap(), b"ping");
    });
    // The other pooled upstream still served its origin again.
    assert_eq!(o1.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Defect 9: a CONNECT-UDP flow over h2 waited for room for a whole capsule at once, which
/// never came when the client's stream window was smaller than one datagram.
#[test]
fn a_window_smaller_than_a_capsule_still_carries_datagrams() {
    let echo = common::udp_echo();
    let proxy = Proxy::builder().allow_loopback().start();
    runtime().block_on(async {
        // A 1,000-byte datagram comes back as a capsule of ~1,010 bytes; the window is 600.
        let (mut client, _drive) = h2c_client(proxy.addr, 600).await;
        let req = http::Request::builder()
            .method("CONNECT")
            .uri(format!(
                "http://localhost:{}/.well-known/masque/udp/{}/{}/",
                proxy.addr.port(),
                echo.ip(),
                echo.port()
            ))
            .extension(h2::ext::Protocol::from("connect-udp"))
            .header("capsule-protocol", "?1")
            .body(())
            .unwrap();
        client = client.ready().await.unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        // DATAGRAM capsule (type 0, varint length), context ID 0, the payload.
        let mut capsule = vec![0x00, 0x43, 0xe9, 0x00];
        capsule.extend_from_slice(&payload);
        assert_eq!(capsule.len() - 3, 1001);
        h2c::send_all(&mut send, Bytes::from(capsule.clone()), false)
            .await
            .unwrap();
        let mut recv = resp.into_body();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            h2c::recv_exact(&mut recv, capsule.len()),
        )
        .await
        .expect("the echoed capsule, across windows")
        .unwrap();
        assert_eq!(got, capsule);
    });
}

/// A TLS connection to the proxy that agreed on ALPN h2, its handshake done.
fn tls_h2(
    addr: SocketAddr,
    cert: &std::path::Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    let conn = rustls::ClientConnection::new(
        h2c::tls_config(&[cert], &[b"h2"]),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// Defect 11: a TLS connection with ALPN h2 closed before its preface (Chromium's spare
/// connection) is an ordinary end, not a protocol error.
#[test]
fn an_h2_connection_closed_before_its_preface_is_no_error() {
    let proxy = Proxy::builder().start();
    let cert = common::h3::generated_cert(&proxy);
    for _ in 0..3 {
        let mut tls = tls_h2(proxy.addr, &cert);
        // Closed once the proxy is past its side of the handshake, as a browser's spare
        // connection is.
        std::thread::sleep(Duration::from_millis(200));
        tls.conn.send_close_notify();
        let _ = tls.conn.complete_io(&mut tls.sock);
    }
    // And one that closes without a close_notify, as a browser may.
    let tls = tls_h2(proxy.addr, &cert);
    std::thread::sleep(Duration::from_millis(200));
    drop(tls);
    testkit::eventually(10, "the TLS sessions counted", || {
        proxy.metric("zcproxy_tls_handshakes_total", &["result=\"ok\""]) == 4.0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        proxy.metric(
            "zcproxy_h2_connections_ended_total",
            &["reason=\"protocol_error\""]
        ),
        0.0
    );
    assert_eq!(
        proxy.metric("zcproxy_errors_total", &["kind=\"client_protocol\""]),
        0.0
    );
}

/// Defect 11: a CONNECT stream still open when its client closed the connection was never
/// taken off `zcproxy_h2_streams_active` (the gauge went down at the end of the stream's
/// code, which a dropped stream never reaches).
#[test]
fn streams_open_when_the_connection_closes_leave_the_gauge() {
    let echo = common::echo_server();
    let proxy = Proxy::builder().allow_loopback().start();
    runtime().block_on(async {
        let (mut client, drive) = h2c::open_plain(proxy.addr).await;
        let mut open = Vec::new();
        for _ in 0..3 {
            let (resp, send) = h2c::connect(&mut client, &echo.to_string(), None).await;
            assert_eq!(resp.status(), 200);
            open.push((resp, send));
        }
        assert_eq!(proxy.metric("zcproxy_h2_streams_active", &[]), 3.0);
        // The connection goes away under its open streams.
        drive.abort();
        drop((client, open));
    });
    testkit::eventually(10, "no stream counted open", || {
        proxy.metric("zcproxy_h2_streams_active", &[]) == 0.0
            && proxy.metric("zcproxy_h2_connections_active", &[]) == 0.0
    });
}
