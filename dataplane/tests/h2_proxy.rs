//! HTTP/2 to the proxy (TLS with ALPN h2, and prior knowledge over plain TCP) with the Rust
//! h2 crate as the client: many CONNECT tunnels on one connection with flow control end to
//! end, each stream its own session, CONNECT-UDP with capsules, drain, and h2 protocol
//! abuse that ends only the offending connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::h2::{self as h2c, Raw};
use common::{pattern, rss_kib, runtime_multi_thread as runtime, Proxy, RssWatch};

const STREAMS: usize = 100;
const LEN: usize = 16 << 20;

#[test]
fn a_hundred_tunnels_share_one_connection_with_flow_control_end_to_end() {
    let echo = common::echo_server().to_string();
    let holding = common::holding_server().to_string();
    let proxy = Proxy::builder().allow_loopback().start();
    let cert = common::h3::generated_cert(&proxy);
    let pid = proxy.pid();
    let baseline = rss_kib(pid).unwrap();
    let watch = RssWatch::start(pid);
    let data = pattern(LEN, 13);
    let (stalled_growth, stalled_at) = runtime().block_on(async {
        let (client, _drive) = h2c::open_tls(proxy.addr, &cert).await;
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut others = Vec::new();
        let mut specials = Vec::new();
        for i in 0..STREAMS {
            let (mut client, data, echo, gate) =
                (client.clone(), data.clone(), echo.clone(), gate.clone());
            let task = tokio::spawn(async move {
                let (resp, mut send) = h2c::connect(&mut client, &echo, None).await;
                assert_eq!(resp.status(), 200, "stream {i}");
                let mut recv = resp.into_body();
                match i {
                    // Reset by the client mid-transfer; the others must not notice.
                    0 => {
                        h2c::send_all(&mut send, data.slice(..4 << 20), false)
                            .await
                            .unwrap();
                        // At least 1 MiB: the last DATA frame may run past it.
                        let got = h2c::recv_exact(&mut recv, 1 << 20).await.unwrap();
                        assert!(got.len() >= 1 << 20 && got[..] == data[..got.len()]);
                        send.send_reset(h2::Reason::CANCEL);
                    }
                    // Reads 1 MiB, then nothing until the others are done.
                    1 => {
                        let writer =
                            tokio::spawn(async move { h2c::send_all(&mut send, data, true).await });
                        let head = h2c::recv_exact(&mut recv, 1 << 20).await.unwrap();
                        gate.notified().await;
                        let rest = h2c::recv_exact(&mut recv, LEN).await.unwrap();
                        writer.await.unwrap().unwrap();
                        assert_eq!(head.len() + rest.len(), LEN, "slow stream length");
                        let expected = pattern(LEN, 13);
                        // The head may end past 1 MiB (a whole DATA frame).
                        assert!(
                            head[..] == expected[..head.len()]
                                && rest[..] == expected[head.len()..]
                        );
                    }
                    _ => {
                        let (sent, got) = tokio::join!(
                            h2c::send_all(&mut send, data.clone(), true),
                            h2c::recv_exact(&mut recv, LEN + 1)
                        );
                        sent.unwrap();
                        let got = got.unwrap();
                        assert_eq!(got.len(), LEN, "stream {i}: length");
                        assert!(got[..] == data[..], "stream {i}: bytes differ");
                    }
                }
            });
            if i < 2 {
                specials.push(task);
            } else {
                others.push(task);
            }
        }
        // Every other tunnel finishes while the slow one holds its window closed.
        let all = async {
            for t in others {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(240), all)
            .await
            .expect("the tunnels beside a stalled one did not finish");
        // A stream to an upstream that never reads, whose client offers 64 MiB: the proxy
        // takes its window's worth (the rest waits in the client), so its memory stays flat
        // while the client keeps trying.
        let (resp, mut send) = h2c::connect(&mut client.clone(), &holding, None).await;
        assert_eq!(resp.status(), 200);
        let before = rss_kib(pid).unwrap();
        let pushing = tokio::spawn(async move {
            let _ = h2c::send_all(&mut send, pattern(64 << 20, 3), false).await;
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid).unwrap();
        assert!(!pushing.is_finished(), "64 MiB went into a stalled tunnel");
        pushing.abort();
        gate.notify_one();
        for t in specials {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("the slow stream did not finish once it read again")
                .unwrap();
        }
        (after.saturating_sub(before), before)
    });
    let peak = watch.peak();
    eprintln!(
        "proxy RSS: {baseline} KiB at start, {stalled_at} KiB with one stalled stream, +{stalled_growth} KiB over 2 s of a client pushing into a tunnel that does not move, peak {peak} KiB"
    );
    assert!(
        stalled_growth < 4 * 1024,
        "grew {stalled_growth} KiB while a client pushed into a stalled tunnel"
    );
    // 100 tunnels moved 3.2 GB; the proxy holds windows, not transfers.
    assert!(
        peak - baseline < 96 * 1024,
        "peak {peak} KiB from {baseline} KiB"
    );
    testkit::eventually(10, "the client's reset is counted", || {
        proxy.metric("zcproxy_h2_resets_total", &["by=\"client\""]) == 1.0
    });
    assert_eq!(proxy.metric("zcproxy_h2_connections_total", &[]), 1.0);
    // The hundred, and the one to the upstream that never reads.
    assert_eq!(
        proxy.metric("zcproxy_h2_streams_total", &["kind=\"connect\""]),
        (STREAMS + 1) as f64
    );
    assert_eq!(
        proxy.metric("zcproxy_connections_total", &["protocol=\"h2_connect\""]),
        (STREAMS + 1) as f64
    );
    assert!(proxy.metric("zcproxy_tls_sessions_total", &["alpn=\"h2\""]) >= 1.0);
}

/// One round trip through a CONNECT tunnel on an h2 stream.
async fn round_trip(
    send: &mut h2::SendStream<Bytes>,
    recv: &mut h2::RecvStream,
    msg: &'static [u8],
) {
    h2c::send_all(send, Bytes::from_static(msg), false)
        .await
        .unwrap();
    let got = h2c::recv_exact(recv, msg.len()).await.unwrap();
    assert_eq!(got, msg);
}

fn proxy_status(resp: &http::Response<h2::RecvStream>) -> String {
    resp.headers()
        .get("proxy-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn each_stream_is_its_own_session_and_drain_sends_goaway() {
    let echo = common::echo_server();
    let denied = common::echo_server();
    let closed = common::free_port();
    let mut proxy = Proxy::builder()
        .arg("--user")
        .arg("alice:wonderland")
        .config(&format!(
            "[timeouts]\ndrain_secs = 20\n[[policy.rules]]\naction = \"deny\"\nports = [\"{}\"]\nprotocols = [\"h2_connect\"]\n[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n",
            denied.port()
        ))
        .start();
    let cert = common::h3::generated_cert(&proxy);
    let (addr, pid) = (proxy.addr, proxy.pid());
    let alice = Some("alice:wonderland");
    runtime().block_on(async {
        let (mut client, drive) = h2c::open_tls(addr, &cert).await;
        let (resp, mut tx) = h2c::connect(&mut client, &echo.to_string(), alice).await;
        assert_eq!(resp.status(), 200);
        let mut rx = resp.into_body();
        round_trip(&mut tx, &mut rx, b"first").await;

        // Each request on the connection is judged on its own.
        let (resp, _) = h2c::connect(&mut client, &echo.to_string(), None).await;
        assert_eq!(resp.status(), 407);
        assert!(resp.headers().contains_key("proxy-authenticate"));
        let (resp, _) = h2c::connect(&mut client, &echo.to_string(), Some("alice:wrong")).await;
        assert_eq!(resp.status(), 407);
        let (resp, _) = h2c::connect(&mut client, &denied.to_string(), alice).await;
        assert_eq!(resp.status(), 403, "{}", proxy_status(&resp));
        assert!(proxy_status(&resp).contains("zcproxy"), "{resp:?}");
        let (resp, _) = h2c::connect(&mut client, &format!("127.0.0.1:{closed}"), alice).await;
        assert_eq!(resp.status(), 502, "{}", proxy_status(&resp));
        assert!(
            proxy_status(&resp).contains("connection_refused"),
            "{resp:?}"
        );
        // A plain-HTTP request to an upstream that answers no HTTP (the echo sends the
        // request back): 502 with the reason.
        let (status, headers, _) =
            h2c::request(&client, "GET", &format!("http://{echo}/"), alice, None).await;
        assert_eq!(status, 502);
        let why = headers["proxy-status"].to_str().unwrap();
        assert!(why.contains("http_protocol_error"), "{why}");
        // The first tunnel carried on through all of that.
        round_trip(&mut tx, &mut rx, b"still there").await;

        // HTTP/2 with prior knowledge, no TLS, on the same port.
        let (mut plain, plain_drive) = h2c::open_plain(addr).await;
        let (resp, mut ptx) = h2c::connect(&mut plain, &echo.to_string(), alice).await;
        assert_eq!(resp.status(), 200);
        let mut prx = resp.into_body();
        round_trip(&mut ptx, &mut prx, b"cleartext").await;
        drop((ptx, prx, plain));
        plain_drive.abort();

        // SIGTERM: a GOAWAY turns new streams away; the open tunnel runs to its end.
        // SAFETY: signalling the proxy this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let refused = async {
            loop {
                let req = http::Request::builder()
                    .method("CONNECT")
                    .uri(echo.to_string())
                    .body(())
                    .unwrap();
                let ready = client.clone().ready().await;
                let Ok(mut c) = ready else { return };
                match c.send_request(req, false) {
                    Err(_) => return,
                    Ok((resp, _)) => {
                        if resp.await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("no GOAWAY");
        for _ in 0..5 {
            round_trip(&mut tx, &mut rx, b"during the drain").await;
        }
        tx.send_data(Bytes::new(), true).unwrap();
        assert_eq!(h2c::recv_exact(&mut rx, 1).await.unwrap(), b"");
        tokio::time::timeout(Duration::from_secs(5), drive)
            .await
            .expect("the proxy did not close the drained connection")
            .unwrap();
    });
    let status = proxy.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A DATAGRAM capsule (type 0) of context 0 carrying `payload` (RFC 9297, RFC 9298).
fn capsule(payload: &[u8]) -> Vec<u8> {
    let mut c = vec![0u8];
    let len = payload.len() + 1;
    assert!(len < 16384);
    c.extend_from_slice(&(0x4000u16 | len as u16).to_be_bytes());
    c.push(0);
    c.extend_from_slice(payload);
    c
}

/// Splits whole DATAGRAM capsules off the front of `buf`; their UDP payloads.
fn take_capsules(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    fn varint(b: &[u8]) -> Option<(u64, usize)> {
        let first = *b.first()?;
        let len = 1usize << (first >> 6);
        if b.len() < len {
            return None;
        }
        let mut v = u64::from(first & 0x3f);
        for x in &b[1..len] {
            v = (v << 8) | u64::from(*x);
        }
        Some((v, len))
    }
    let mut out = Vec::new();
    while let Some((kind, a)) = varint(buf) {
        let Some((len, b)) = varint(&buf[a..]) else {
            break;
        };
        let end = a + b + len as usize;
        if buf.len() < end {
            break;
        }
        assert_eq!(kind, 0, "only DATAGRAM capsules expected");
        let body = &buf[a + b..end];
        let (ctx, c) = varint(body).unwrap();
        assert_eq!(ctx, 0);
        out.push(body[c..].to_vec());
        buf.drain(..end);
    }
    out
}

#[test]
fn connect_udp_over_h2_carries_datagrams_as_capsules() {
    let echo = common::udp_echo();
    let proxy = Proxy::builder().allow_loopback().start();
    let cert = common::h3::generated_cert(&proxy);
    let addr = proxy.addr;
    runtime().block_on(async {
        let (client, _drive) = h2c::open_tls(addr, &cert).await;
        let open = |path: String| {
            let client = client.clone();
            async move {
                let mut req = http::Request::builder()
                    .method("CONNECT")
                    .uri(format!("https://localhost{path}"))
                    .header("capsule-protocol", "?1")
                    .body(())
                    .unwrap();
                req.extensions_mut()
                    .insert(h2::ext::Protocol::from_static("connect-udp"));
                let mut client = client.ready().await.unwrap();
                let (resp, send) = client.send_request(req, false).unwrap();
                (resp.await.unwrap(), send)
            }
        };
        let (resp, _) = open("/not/the/template".into()).await;
        assert_eq!(resp.status(), 404);
        let path = format!("/.well-known/masque/udp/127.0.0.1/{}/", echo.port());
        let (resp, mut send) = open(path).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["capsule-protocol"], "?1");
        let mut recv = resp.into_body();
        let mut pending = Vec::new();
        let mut echoed = Vec::new();
        for i in 0..100u32 {
            let msg = format!("datagram {i}").into_bytes();
            h2c::send_all(&mut send, Bytes::from(capsule(&msg)), false)
                .await
                .unwrap();
            // UDP may lose datagrams; over loopback with one in flight it does not.
            while echoed.len() <= i as usize {
                let chunk = tokio::time::timeout(Duration::from_secs(5), recv.data())
                    .await
                    .expect("no echo")
                    .unwrap()
                    .unwrap();
                let _ = recv.flow_control().release_capacity(chunk.len());
                pending.extend_from_slice(&chunk);
                echoed.extend(take_capsules(&mut pending));
            }
            assert_eq!(echoed[i as usize], msg);
        }
        // A 1,200-byte datagram and an unknown capsule type (skipped) in one DATA frame.
        let mut frame = vec![0x17, 0x03, 1, 2, 3];
        frame.extend_from_slice(&capsule(&[7u8; 1200]));
        h2c::send_all(&mut send, Bytes::from(frame), false)
            .await
            .unwrap();
        while echoed.len() < 101 {
            let chunk = recv.data().await.unwrap().unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
            echoed.extend(take_capsules(&mut pending));
        }
        assert_eq!(echoed[100], vec![7u8; 1200]);
        send.send_data(Bytes::new(), true).unwrap();
        // The proxy ends its side too (an empty DATA frame with END_STREAM).
        while let Some(chunk) = recv.data().await {
            assert!(chunk.unwrap().is_empty(), "data after the end");
        }
    });
    assert_eq!(
        proxy.metric("zcproxy_h2_streams_total", &["kind=\"connect_udp\""]),
        2.0
    );
    assert!(proxy.metric("zcproxy_h2_datagrams_received_total", &[]) >= 101.0);
    assert!(proxy.metric("zcproxy_h2_datagrams_sent_total", &[]) >= 1.0);
    // Counted as HTTP/2's, not as HTTP/3's.
    assert_eq!(
        proxy.metric("zcproxy_quic_datagrams_received_total", &[]),
        0.0
    );
}

/// A CONNECT that works on a fresh h2 connection: the proxy still serves others.
fn others_still_served(proxy: &Proxy, echo: std::net::SocketAddr) {
    let cert = common::h3::generated_cert(proxy);
    let addr = proxy.addr;
    runtime().block_on(async {
        let (mut client, _drive) = h2c::open_tls(addr, &cert).await;
        let (resp, mut tx) = h2c::connect(&mut client, &echo.to_string(), None).await;
        assert_eq!(resp.status(), 200);
        round_trip(&mut tx, &mut resp.into_body(), b"still served").await;
    });
}

#[test]
fn h2_protocol_abuse_ends_only_the_offending_connection() {
    let echo = common::echo_server();
    let holding = common::holding_server();
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[h2]\nmax_concurrent_streams = 4\nmax_premature_resets = 50\n")
        .start();
    let cert = common::h3::generated_cert(&proxy);
    let addr = proxy.addr;
    let protocol_errors = || {
        proxy.metric(
            "zcproxy_h2_connections_ended_total",
            &["reason=\"protocol_error\""],
        )
    };

    // Not the HTTP/2 preface after ALPN h2.
    let mut raw = Raw::open(addr, &cert, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        matches!(raw.goaway(), None | Some(1)),
        "PROTOCOL_ERROR or a close"
    );
    others_still_served(&proxy, echo);

    // A frame larger than the proxy's SETTINGS_MAX_FRAME_SIZE (16,384).
    let mut raw = Raw::handshake(addr, &cert);
    raw.send(h2c::HEADERS, h2c::END_HEADERS, 1, &vec![0u8; 20_000])
        .unwrap();
    assert_eq!(raw.goaway(), Some(6), "FRAME_SIZE_ERROR");
    others_still_served(&proxy, echo);
    testkit::eventually(5, "protocol errors counted", || protocol_errors() >= 2.0);

    // More streams than SETTINGS_MAX_CONCURRENT_STREAMS: the fifth is refused, the
    // connection and its four tunnels carry on.
    let mut raw = Raw::handshake(addr, &cert);
    let block = h2c::connect_headers(&holding.to_string());
    for id in [1, 3, 5, 7, 9] {
        raw.send(h2c::HEADERS, h2c::END_HEADERS, id, &block)
            .unwrap();
    }
    let (mut opened, mut refused) = (Vec::new(), Vec::new());
    while opened.len() < 4 || refused.is_empty() {
        let (kind, _, stream, payload) = raw.next().expect("the connection ended");
        match kind {
            h2c::HEADERS => opened.push(stream),
            h2c::RST_STREAM => {
                assert_eq!(payload, 7u32.to_be_bytes(), "REFUSED_STREAM");
                refused.push(stream)
            }
            _ => {}
        }
    }
    opened.sort();
    assert_eq!((opened, refused), (vec![1, 3, 5, 7], vec![9]));
    raw.send(h2c::PING, 0, 0, b"12345678").unwrap();
    loop {
        let (kind, flags, _, payload) = raw.next().expect("the connection ended");
        if kind == h2c::PING {
            assert_eq!((flags, &payload[..]), (1, &b"12345678"[..]));
            break;
        }
    }
    drop(raw);

    // A SETTINGS flood from a client that reads nothing: the proxy stops reading it
    // (one acknowledgement pending at a time), its memory does not follow the flood.
    let before = proxy.rss_kib();
    let mut raw = Raw::handshake(addr, &cert);
    raw.tls
        .sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let settings = h2c::frame(h2c::SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]);
    let burst: Vec<u8> = settings
        .iter()
        .copied()
        .cycle()
        .take(settings.len() * 10_000)
        .collect();
    let mut sent = 0usize;
    for _ in 0..50 {
        use std::io::Write;
        if raw.tls.write_all(&burst).is_err() {
            break;
        }
        sent += 10_000;
    }
    others_still_served(&proxy, echo);
    let grown = proxy.rss_kib().saturating_sub(before);
    eprintln!("SETTINGS flood: {sent} frames written, proxy RSS +{grown} KiB");
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB");
    drop(raw);

    // Rapid reset, paced so each stream is accepted before its reset: the connection is
    // closed with ENHANCE_YOUR_CALM once most of its streams were reset at once.
    let mut raw = Raw::handshake(addr, &cert);
    let block = h2c::connect_headers(&holding.to_string());
    let mut calm = None;
    for n in 0..1000u32 {
        let id = 1 + 2 * n;
        if raw
            .send(h2c::HEADERS, h2c::END_HEADERS, id, &block)
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        if raw
            .send(h2c::RST_STREAM, 0, id, &8u32.to_be_bytes())
            .is_err()
        {
            break;
        }
        if n == 200 {
            calm = raw.goaway();
            break;
        }
    }
    if calm.is_none() {
        calm = raw.goaway();
    }
    assert_eq!(calm, Some(11), "ENHANCE_YOUR_CALM");
    // Counted by whichever limit struck first: the proxy's watch, or h2's own on resets
    // of streams not yet accepted (a loaded machine accepts later).
    let calmed = || {
        ["rapid_reset", "flood"]
            .iter()
            .map(|r| {
                proxy.metric(
                    "zcproxy_h2_connections_ended_total",
                    &[&format!("reason=\"{r}\"")],
                )
            })
            .sum::<f64>()
    };
    testkit::eventually(5, "the rapid reset is counted", || calmed() == 1.0);
    // The same in one burst: h2's own limit on reset streams not yet accepted.
    let mut raw = Raw::handshake(addr, &cert);
    let mut burst = Vec::new();
    for n in 0..1000u32 {
        let id = 1 + 2 * n;
        burst.extend(h2c::frame(h2c::HEADERS, h2c::END_HEADERS, id, &block));
        burst.extend(h2c::frame(h2c::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = std::io::Write::write_all(&mut raw.tls, &burst);
    assert!(matches!(raw.goaway(), None | Some(11)));
    testkit::eventually(5, "the burst is counted", || calmed() == 2.0);
    others_still_served(&proxy, echo);
    let streams = proxy.metric("zcproxy_h2_streams_total", &["kind=\"connect\""]);
    eprintln!("streams served across the abuse: {streams}");
    assert!(streams < 700.0, "{streams} streams served of 1,200 opened");
}
