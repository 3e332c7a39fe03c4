//! HTTP/3 connections are bounded in memory and time: QUIC windows cap what tunnels to
//! upstreams that never read can make the proxy hold and the per-core budget refuses streams
//! past it (aioquic); a connection with no request is closed however many PINGs keep QUIC
//! alive; a client that migrates is judged by its new address; and streams the client ends
//! with STOP_SENDING are freed (the Rust h3 client over quinn).

mod common;

use std::time::{Duration, Instant};

use common::h3::{
    aioquic, connect_request, generated_cert, open_h3, open_tunnel, quinn_client, round_trip,
    runtime,
};
use common::{Proxy, RssWatch};

/// Runs the aioquic flood; (admitted, refused, bytes the proxy took).
fn flood(proxy: &Proxy, target: std::net::SocketAddr, streams: u32, bytes: u32) -> (u32, u32, u64) {
    let out = aioquic(
        proxy,
        "aioquic_flood.py",
        &[
            &target.to_string(),
            &streams.to_string(),
            &bytes.to_string(),
            "3",
        ],
    );
    let words: Vec<&str> = out.split_whitespace().collect();
    match words.as_slice() {
        ["admitted", a, "refused", r, "sent", s] => {
            (a.parse().unwrap(), r.parse().unwrap(), s.parse().unwrap())
        }
        _ => panic!("aioquic_flood.py printed {out:?}"),
    }
}

/// Defect 2: quinn's defaults gave each stream ~1.25 MB of window and the connection no
/// limit, so 256 tunnels to upstreams that never read could hold ~320 MB.
#[test]
fn windows_bound_what_256_stalled_tunnels_hold() {
    let holding = common::holding_server();
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .config("[quic]\nstream_window = 262144\nconnection_window = 4194304\n")
        .start();
    let baseline = proxy.rss_kib();
    let watch = RssWatch::start(proxy.pid());
    // 256 tunnels offered 2 MiB each: 512 MiB, of which the proxy may hold 4 MiB; what it
    // took beyond that sits in the upstream sockets' kernel buffers, not in its memory.
    let (admitted, refused, sent) = flood(&proxy, holding, 256, 2 << 20);
    let peak = watch.peak();
    assert_eq!((admitted, refused), (256, 0));
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown < 32 * 1024,
        "RSS grew by {grown} KiB with 256 stalled tunnels (the proxy took {sent} bytes)"
    );
}

/// The per-core budget: each tunnel stream commits its window plus a read buffer, a
/// connection at most twice its connection window; past the budget streams are refused
/// (H3_REQUEST_REJECTED, which a client may retry) and the committed bytes are shown.
#[test]
fn streams_past_the_cores_buffer_budget_are_refused() {
    let holding = common::holding_server();
    // 320 KiB per stream, a 4 MiB budget: 12 streams fit.
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .config(
            "[quic]\nstream_window = 262144\nconnection_window = 4194304\n\
             [limits]\ntunnel_buffer_per_core = 4194304\n",
        )
        .start();
    let (admitted, refused, _) = flood(&proxy, holding, 40, 1 << 20);
    assert_eq!((admitted, refused), (12, 28));
    assert_eq!(
        proxy.metric("zcproxy_tunnel_buffer_refusals_total", &[]),
        28.0
    );
    // The connection closed with the script: everything it committed is given back.
    testkit::eventually(10, "the budget given back", || {
        proxy.metric("zcproxy_tunnel_buffer_committed_bytes", &[]) == 0.0
    });
}

/// Defect 3: HTTP/3 had no application idle timer, and client PINGs keep QUIC alive: a
/// connection with no request is closed after the idle timeout (GOAWAY, H3_NO_ERROR).
#[test]
fn an_h3_connection_that_only_pings_is_closed_when_idle() {
    let proxy = Proxy::builder()
        .config("[timeouts]\nidle_secs = 2\n")
        .start();
    let cert = generated_cert(&proxy);
    let addr = proxy.addr;
    let took = runtime().block_on(async move {
        let mut ep = quinn_client(&cert, b"h3");
        let mut config = common::h3::client_config(&cert, b"h3");
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_millis(300)));
        config.transport_config(std::sync::Arc::new(transport));
        ep.set_default_client_config(config);
        let (quic, _send, drive) = open_h3(&ep, addr).await;
        let started = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(15), quic.closed()).await;
        drive.abort();
        closed.expect("the proxy closed the idle connection");
        started.elapsed()
    });
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    assert_eq!(proxy.metric("zcproxy_quic_idle_closes_total", &[]), 1.0);
}

/// Defect 5: requests were judged by the address the connection was accepted from. A client
/// anonymous from 127.0.0.1 that migrates to 127.0.0.2 is asked for credentials, as a fresh
/// connection from 127.0.0.2 is.
#[test]
fn a_migrated_client_is_judged_by_its_new_address() {
    let echo = common::echo_server();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$BZLBZP7FSPh0A8cqXic8LQ$gzcbUZxX0vmlA5VGwoW/dDVEd5Zim7/QelstpJg+so4";
    let proxy = Proxy::builder()
        .allow_loopback()
        .config(&format!(
            "[policy]\nanonymous_clients = [\"127.0.0.1/32\"]\n\
             [[policy.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"
        ))
        .start();
    let cert = generated_cert(&proxy);
    let addr = proxy.addr;
    runtime().block_on(async move {
        let ep = quinn_client(&cert, b"h3");
        let (_quic, mut send, drive) = open_h3(&ep, addr).await;
        let (mut tx, mut rx) = open_tunnel(&mut send, echo, None).await;
        round_trip(&mut tx, &mut rx, b"from .1").await.unwrap();
        ep.rebind(std::net::UdpSocket::bind("127.0.0.2:0").unwrap())
            .unwrap();
        // Traffic on the new path, so that the proxy has seen the migration.
        round_trip(&mut tx, &mut rx, b"from .2").await.unwrap();
        let status = |req| {
            let mut send = send.clone();
            async move {
                let mut stream = send.send_request(req).await.unwrap();
                stream.recv_response().await.unwrap().status().as_u16()
            }
        };
        assert_eq!(status(connect_request(echo, None)).await, 407);
        assert_eq!(
            status(connect_request(echo, Some("alice:wonderland"))).await,
            200
        );
        drive.abort();

        // A fresh connection from 127.0.0.2 gets the same answer.
        let mut fresh = quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap();
        fresh.set_default_client_config(common::h3::client_config(&cert, b"h3"));
        let (_quic, mut send, drive) = open_h3(&fresh, addr).await;
        let mut stream = send
            .send_request(connect_request(echo, None))
            .await
            .unwrap();
        assert_eq!(stream.recv_response().await.unwrap().status(), 407);
        drive.abort();
    });
    assert!(proxy.metric("zcproxy_quic_migrations_total", &[]) >= 1.0);
}

/// Defect 10: a client that ends each tunnel with FIN + STOP_SENDING (what dropping a quinn
/// or h3 stream does) got ~256 tunnels on one connection; RESET_STREAM must answer each
/// STOP_SENDING so the stream is freed.
#[test]
fn two_thousand_tunnels_ended_with_stop_sending_share_one_connection() {
    let echo = common::echo_server();
    let proxy = Proxy::builder().allow_loopback().start();
    let cert = generated_cert(&proxy);
    let addr = proxy.addr;
    let proxy = &proxy;
    runtime().block_on(async move {
        let ep = quinn_client(&cert, b"h3");
        let (_quic, mut send, drive) = open_h3(&ep, addr).await;
        for i in 0..2_000 {
            let opened =
                tokio::time::timeout(Duration::from_secs(10), open_tunnel(&mut send, echo, None))
                    .await;
            let (mut tx, mut rx) = opened.unwrap_or_else(|_| panic!("tunnel {i} never opened"));
            round_trip(&mut tx, &mut rx, b"x").await.unwrap();
            tx.finish().await.unwrap();
            // Dropped before its end: quinn sends STOP_SENDING for the receiving half.
            drop(rx);
        }
        // With the connection still open, every tunnel is over on the proxy too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.metric("zcproxy_connections_active", &["protocol=\"h3_connect\""]) > 0.0 {
            assert!(Instant::now() < deadline, "tunnels left open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drive.abort();
        ep.close(0u32.into(), b"done");
        ep.wait_idle().await;
    });
}
