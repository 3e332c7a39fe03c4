//! QUIC at the edge of the proxy: forced Retry, a wrong ALPN, a client that goes silent
//! mid-handshake, a flood of Initials that never complete, packets that are not QUIC at all,
//! and malformed HTTP/3 and capsules. Each is answered as the RFCs say or dropped, counted by
//! reason, and a well-behaved client is served throughout.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::h3::{aioquic, echo_through, generated_cert, quinn_client, runtime, with_h3};
use common::Proxy;

/// Polls `metric` (summed over cores) until `ok` holds; panics after 10 s.
fn wait_metric(proxy: &Proxy, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = proxy.metric(name, labels);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name}{labels:?} stayed at {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tunnel_works(proxy: &Proxy) {
    let echo = common::echo_server();
    with_h3(proxy, |mut send| async move {
        let data = vec![0x5a; 100_000];
        assert_eq!(echo_through(&mut send, echo, data.clone()).await, data);
    });
}

#[test]
fn with_retry_forced_every_client_proves_its_address_first() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[quic]\nretry_above_handshakes = 0\n")
        .start();
    tunnel_works(&proxy);
    assert!(proxy.metric("zcproxy_quic_packets_stateless_total", &[]) >= 1.0);
    assert!(proxy.metric("zcproxy_quic_handshakes_completed_total", &[]) >= 1.0);
}

/// A client offering only an ALPN the proxy does not speak gets a TLS alert
/// (no_application_protocol), counted as a failed handshake of reason `tls`.
#[test]
fn a_client_without_h3_fails_its_handshake_with_a_tls_alert() {
    let proxy = Proxy::builder().allow_loopback().start();
    let cert = generated_cert(&proxy);
    let addr = proxy.addr;
    let err = runtime().block_on(async move {
        let ep = quinn_client(&cert, b"not-h3");
        ep.connect(addr, "localhost").unwrap().await.unwrap_err()
    });
    assert!(
        err.to_string().contains("120") || err.to_string().contains("application protocol"),
        "{err}"
    );
    wait_metric(
        &proxy,
        "zcproxy_quic_handshake_failures_total",
        &["reason=\"tls\""],
        |v| v >= 1.0,
    );
    tunnel_works(&proxy);
}

/// Relays clients' packets to `to` and drops everything coming back: handshakes through it
/// start on the proxy and never complete.
fn black_hole(to: SocketAddr) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from != to {
                let _ = socket.send_to(&buf[..n], to);
            }
        }
    });
    addr
}

/// Starts `count` handshakes toward `to` that cannot complete, and gives up on them after
/// `secs`.
fn doomed_handshakes(cert: std::path::PathBuf, to: SocketAddr, count: usize, secs: u64) {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let ep = quinn_client(&cert, b"h3");
            let attempts: Vec<_> = (0..count)
                .map(|_| {
                    let connecting = ep.connect(to, "localhost").unwrap();
                    tokio::spawn(tokio::time::timeout(Duration::from_secs(secs), connecting))
                })
                .collect();
            for a in attempts {
                let _ = a.await;
            }
        });
    });
}

/// A client that sends its Initial and then hears nothing back is dropped at the
/// handshake deadline, counted as `timeout`.
#[test]
fn a_handshake_that_stalls_ends_at_the_deadline() {
    let proxy = Proxy::builder()
        .config("[timeouts]\nhandshake_ms = 300\n")
        .start();
    let relay = black_hole(proxy.addr);
    doomed_handshakes(generated_cert(&proxy), relay, 1, 5);
    wait_metric(&proxy, "zcproxy_quic_connections_total", &[], |v| v >= 1.0);
    wait_metric(
        &proxy,
        "zcproxy_quic_handshake_failures_total",
        &["reason=\"timeout\""],
        |v| v >= 1.0,
    );
    wait_metric(&proxy, "zcproxy_quic_connections_active", &[], |v| v == 0.0);
}

/// 400 handshakes that never complete: past `retry_above_handshakes` each new one costs
/// the proxy a stateless Retry, not a connection; a real client is still served.
#[test]
fn a_flood_of_initials_holds_no_more_state_than_the_retry_threshold() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .config("[quic]\nretry_above_handshakes = 16\n[timeouts]\nhandshake_ms = 3000\n")
        .start();
    let relay = black_hole(proxy.addr);
    doomed_handshakes(generated_cert(&proxy), relay, 400, 4);
    wait_metric(&proxy, "zcproxy_quic_packets_stateless_total", &[], |v| {
        v >= 300.0
    });
    let started = proxy.metric("zcproxy_quic_connections_total", &[]);
    assert!(started <= 17.0, "{started} connections kept for a flood");
    tunnel_works(&proxy);
    wait_metric(&proxy, "zcproxy_quic_connections_active", &[], |v| v == 0.0);
}

/// Datagrams that are not QUIC, or not QUIC this proxy speaks: a reply where RFC 9000 asks
/// for one (Version Negotiation), silence otherwise; the port keeps serving.
#[test]
fn garbage_and_unknown_versions_are_dropped_or_negotiated() {
    let proxy = Proxy::builder().allow_loopback().start();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |buf: &mut [u8]| {
        for b in buf {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
    };
    // Short-header packets for connections that do not exist, of every size.
    for len in 1..200 {
        let mut buf = vec![0u8; len];
        random(&mut buf);
        buf[0] = (buf[0] & 0x3f) | 0x40;
        socket.send_to(&buf, proxy.addr).unwrap();
    }
    // An Initial too short to be one (under 1200 bytes): dropped, no state.
    let mut initial = vec![0u8; 300];
    random(&mut initial);
    initial[0] = 0xc3;
    initial[1..5].copy_from_slice(&1u32.to_be_bytes());
    initial[5] = 8;
    socket.send_to(&initial, proxy.addr).unwrap();
    // An Initial-sized long header of an unknown version: Version Negotiation comes back,
    // echoing the connection IDs swapped (RFC 9000 §17.2.1).
    let mut probe = vec![0u8; 1200];
    random(&mut probe);
    probe[0] = 0xc0;
    probe[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());
    probe[5] = 8;
    let dcid = probe[6..14].to_vec();
    probe[14] = 8;
    let scid = probe[15..23].to_vec();
    socket.send_to(&probe, proxy.addr).unwrap();
    // Short headers of unknown connections may be answered with stateless resets (short
    // headers themselves); the Version Negotiation is the long header with version 0.
    let mut buf = [0u8; 1500];
    let n = loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("a Version Negotiation packet");
        if buf[0] & 0x80 != 0 {
            break n;
        }
    };
    assert!(buf[1..5] == [0, 0, 0, 0], "{:?}", &buf[..n.min(16)]);
    assert_eq!(&buf[6..6 + buf[5] as usize], &scid[..]);
    let at = 6 + buf[5] as usize;
    assert_eq!(&buf[at + 1..at + 1 + buf[at] as usize], &dcid[..]);
    let versions = &buf[at + 1 + buf[at] as usize..n];
    assert!(
        versions.chunks(4).any(|v| v == [0, 0, 0, 1]),
        "QUIC v1 offered"
    );

    // Every one of the 201 packets is either dropped or answered without state.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let handled = proxy.metric("zcproxy_quic_packets_unroutable_total", &[])
            + proxy.metric("zcproxy_quic_packets_stateless_total", &[]);
        if handled >= 201.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{handled} of 201 packets accounted for"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proxy.metric("zcproxy_quic_connections_total", &[]), 0.0);
    tunnel_works(&proxy);
}

/// Malformed HTTP/3 from aioquic, one connection per case: each is closed with the error
/// code RFC 9114 / RFC 9204 names; malformed capsules on a CONNECT-UDP flow are skipped
/// (the oversized one counted) and the datagram after them still gets through; the port
/// keeps serving.
#[test]
fn malformed_http3_gets_the_errors_the_rfcs_name() {
    let proxy = Proxy::builder().allow_loopback().start();
    let echo = common::udp_echo();
    let stdout = aioquic(&proxy, "aioquic_bad_h3.py", &[&echo.to_string()]);
    let expected = [
        ("data_on_control", "266"),     // H3_MISSING_SETTINGS
        ("duplicate_setting", "265"),   // H3_SETTINGS_ERROR
        ("h2_setting", "265"),          // H3_SETTINGS_ERROR
        ("second_control", "259"),      // H3_STREAM_CREATION_ERROR
        ("data_before_headers", "261"), // H3_FRAME_UNEXPECTED
        ("bad_qpack", "512"),           // QPACK_DECOMPRESSION_FAILED
        ("truncated_frame", "262"),     // H3_FRAME_ERROR
        ("capsules", "echo"),
    ];
    for (case, want) in expected {
        let line = format!("{case} {want}");
        assert!(stdout.lines().any(|l| l == line), "{case}: {stdout}");
    }
    assert!(
        proxy.metric(
            "zcproxy_quic_datagrams_dropped_total",
            &["reason=\"too_large\""]
        ) >= 1.0
    );
    tunnel_works(&proxy);
}
