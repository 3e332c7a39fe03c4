//! HTTP/3 CONNECT through the real binary, with the Rust h3 client over quinn (clients this
//! project did not write): byte-exact tunnels both ways, many streams on one connection,
//! credentials and ACLs as for TCP, failures answered with a status and Proxy-Status.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::h3::{aioquic, connect_request, echo_through, generated_cert, with_h3};
use common::Proxy;

#[test]
fn connect_over_h3_is_byte_exact_both_ways() {
    let proxy = Proxy::builder().allow_loopback().start();
    let echo = common::echo_server();
    with_h3(&proxy, |mut send| async move {
        let data = common::pattern(16 << 20, 7).to_vec();
        let got = echo_through(&mut send, echo, data.clone()).await;
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echoed bytes differ");
    });
    assert!(proxy.metric("zcproxy_connections_total", &["protocol=\"h3_connect\""]) >= 1.0);
}

#[test]
fn a_hundred_concurrent_connect_streams_on_one_connection() {
    let proxy = Proxy::builder().allow_loopback().start();
    let echo = common::echo_server();
    with_h3(&proxy, |send| async move {
        let tasks: Vec<_> = (0..100u8)
            .map(|i| {
                let mut send = send.clone();
                tokio::spawn(async move {
                    let data = common::pattern(64 * 1024, u64::from(i)).to_vec();
                    assert_eq!(
                        echo_through(&mut send, echo, data.clone()).await,
                        data,
                        "stream {i}"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn credentials_and_acls_answer_like_tcp() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonderland")
        .start();
    let echo = common::echo_server();
    let denied: SocketAddr = "10.255.255.1:80".parse().unwrap();
    with_h3(&proxy, |mut send| async move {
        for (target, auth, status) in [
            (echo, None, 407),
            (echo, Some("alice:wrong"), 407),
            (denied, Some("alice:wonderland"), 403),
            (echo, Some("alice:wonderland"), 200),
        ] {
            let mut stream = send
                .send_request(connect_request(target, auth))
                .await
                .unwrap();
            let resp = stream.recv_response().await.unwrap();
            assert_eq!(resp.status(), status, "{target} {auth:?}");
            match status {
                407 => assert!(resp.headers().contains_key("proxy-authenticate")),
                403 => {
                    let ps = resp.headers()["proxy-status"].to_str().unwrap();
                    assert!(
                        ps.contains("destination_ip_prohibited") || ps.contains("error="),
                        "{ps}"
                    );
                }
                _ => {}
            }
        }
    });
}

/// TCP clients on the same port number carry on while QUIC serves.
#[test]
fn tcp_protocols_share_the_port_number() {
    let proxy = Proxy::builder().allow_loopback().start();
    let echo = common::echo_server();
    let (mut s, _) = common::socks5(proxy.addr, common::Dest::Addr(echo), None, 1).unwrap();
    s.write_all(b"over tcp").unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"over tcp");
    with_h3(&proxy, |mut send| async move {
        assert_eq!(
            echo_through(&mut send, echo, b"over quic".to_vec()).await,
            b"over quic"
        );
    });
}

/// aioquic (Python) as the HTTP/3 client: 64 MiB echoed byte-exact through one tunnel, ten
/// tunnels at once, and 407 without credentials.
#[test]
fn aioquic_connects_through_h3() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("py:quic pass")
        .start();
    let echo = common::echo_server();
    let stdout = aioquic(
        &proxy,
        "aioquic_connect.py",
        &[&echo.to_string(), &(64 << 20).to_string(), "py:quic pass"],
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

/// A generated certificate that cannot be written leaves QUIC off and TCP serving.
#[test]
fn an_unwritable_certificate_directory_leaves_tcp_serving() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[tls]\ngenerated_dir = \"/proc/zcproxy-cannot-write-here\"\n")
        .start();
    let echo = common::echo_server();
    let (mut s, _) = common::socks5(proxy.addr, common::Dest::Addr(echo), None, 1).unwrap();
    s.write_all(b"tcp").unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"tcp");
    assert!(!generated_cert(&proxy).exists());
}

/// aioquic sends 10,000 datagrams of mixed sizes through CONNECT-UDP to a UDP echo; the
/// count that came back is printed (loss is counted, ordering not assumed). Every datagram
/// the echo sent is accounted for by the proxy: relayed to the client, or dropped and
/// counted by reason. Paths outside the template or with a bad port get 404 and 400.
#[test]
fn aioquic_connect_udp_echoes_datagrams() {
    let proxy = Proxy::builder().allow_loopback().start();
    let run = common::h3::aioquic_connect_udp_accounted(&[], &proxy, 10_000);
    // Python on both ends of a loaded machine loses some on the way to the client; a
    // broken path returns almost none.
    assert!(run.received >= 5_000, "{}", run.stdout);
    assert!(
        common::sum_metric(&run.metrics, "zcproxy_quic_datagrams_received_total", &[]) <= 10_000.0
    );
    assert!(proxy.metric("zcproxy_connections_total", &["protocol=\"connect_udp\""]) >= 1.0);
}

/// The Rust h3 client runs two CONNECT-UDP flows on one connection, each to its own UDP
/// echo: every datagram comes back on its own flow (routed by stream ID, context 0). With
/// `max_flows_per_connection = 2` a third flow is answered 429, and once
/// a flow ends its place is free again.
#[test]
fn rust_h3_client_runs_connect_udp_flows_side_by_side() {
    use common::h3::{connect_udp_request, send_http_datagram, with_h3_datagrams};
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[quic]\nmax_flows_per_connection = 2\n")
        .start();
    let (echo_a, _) = common::udp_echo_counted();
    let (echo_b, _) = common::udp_echo_counted();
    let request = |target| connect_udp_request(&proxy, target);
    let (req_a, req_b, req_c, req_d) = (
        request(echo_a),
        request(echo_b),
        request(echo_a),
        request(echo_a),
    );
    async fn open(
        send: &mut common::h3::SendRequest,
        req: http::Request<()>,
    ) -> (
        h3::client::RequestStream<h3_quinn::BidiStream<bytes::Bytes>, bytes::Bytes>,
        http::Response<()>,
    ) {
        let mut stream = send.send_request(req).await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        (stream, resp)
    }
    with_h3_datagrams(&proxy, |mut send, quic, mut reader| async move {
        let (mut a, resp) = open(&mut send, req_a).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["capsule-protocol"], "?1");
        let (b, resp) = open(&mut send, req_b).await;
        assert_eq!(resp.status(), 200);
        let (_c, resp) = open(&mut send, req_c).await;
        assert_eq!(resp.status(), 429);

        let mut want = std::collections::HashSet::new();
        for i in 0..200u32 {
            for (tag, stream) in [(b'a', a.id()), (b'b', b.id())] {
                let mut payload = vec![0u8, tag];
                payload.extend_from_slice(&i.to_be_bytes());
                payload.resize(2 + 4 + (i as usize * 7) % 1000, tag);
                send_http_datagram(&quic, stream, &payload);
                want.insert((tag, payload));
            }
            if i % 20 == 19 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while got < want.len() {
            let Ok(d) = tokio::time::timeout_at(deadline, reader.read_datagram()).await else {
                break;
            };
            let d = d.unwrap();
            let payload = d.payload().to_vec();
            let tag = if d.stream_id() == a.id() { b'a' } else { b'b' };
            assert!(
                want.contains(&(tag, payload)),
                "a datagram on the wrong flow"
            );
            got += 1;
        }
        // Loopback, no Python: loss would mean a bug, but UDP owes nothing.
        assert!(got >= want.len() * 9 / 10, "{got} of {}", want.len());

        a.finish().await.unwrap();
        drop(a);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (_d, resp) = open(&mut send, req_d).await;
        assert_eq!(resp.status(), 200, "a finished flow frees its place");
        drop(b);
    });
}

/// A QUIC connection inside a CONNECT-UDP flow: aioquic's client runs HTTP/3 to a local
/// aioquic server through the proxy, its packets as HTTP datagrams, and gets its GET
/// answered.
#[test]
fn quic_runs_inside_connect_udp() {
    let proxy = Proxy::builder().allow_loopback().start();
    let stdout = aioquic(&proxy, "aioquic_quic_in_udp.py", &[]);
    assert!(
        stdout.starts_with("ok hello from inside the tunnel"),
        "{stdout}"
    );
    assert!(proxy.metric("zcproxy_quic_datagrams_sent_total", &[]) >= 2.0);
}

/// A user's tunnel limit counts HTTP/3 CONNECT streams and CONNECT-UDP flows together, as
/// for TCP tunnels: with `max_tunnels = 2`, one of each fills it, the next request is
/// answered 429, and a slot is free again once a tunnel ends.
#[test]
fn the_user_tunnel_limit_counts_connect_streams_and_udp_flows() {
    use common::h3::{connect_udp_request, with_h3_datagrams};
    let hash = policy::password::hash("pw").unwrap();
    let proxy = Proxy::builder()
        .allow_loopback()
        .config(&format!(
            "[policy]\n[[policy.users]]\nname = \"carol\"\npassword_hash = \"{hash}\"\nmax_tunnels = 2\n"
        ))
        .start();
    let echo = common::echo_server();
    let udp = common::udp_echo();
    let mut flow_req = connect_udp_request(&proxy, udp);
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode("carol:pw");
    flow_req.headers_mut().insert(
        "proxy-authorization",
        format!("Basic {token}").parse().unwrap(),
    );
    with_h3_datagrams(&proxy, |mut send, _quic, _reader| async move {
        let mut tunnel = send
            .send_request(connect_request(echo, Some("carol:pw")))
            .await
            .unwrap();
        assert_eq!(tunnel.recv_response().await.unwrap().status(), 200);
        let mut flow = send.send_request(flow_req).await.unwrap();
        assert_eq!(flow.recv_response().await.unwrap().status(), 200);
        let mut third = send
            .send_request(connect_request(echo, Some("carol:pw")))
            .await
            .unwrap();
        assert_eq!(third.recv_response().await.unwrap().status(), 429);
        flow.finish().await.unwrap();
        drop(flow);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut again = send
                .send_request(connect_request(echo, Some("carol:pw")))
                .await
                .unwrap();
            if again.recv_response().await.unwrap().status() == 200 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slot not released");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        drop(tunnel);
    });
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"user_limit\""]) >= 1.0);
}
