//! SOCKS5 UDP ASSOCIATE through the real binary: clients this project did not write
//! (PySocks, the Rust `socks` crate) and a hand-written one for what they cannot do (bad
//! input, foreign sources, the reply's address); the association's lifetime, limits, ACL
//! and counters.

mod common;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::socks_udp::{associate, client_socket, round_trip, wrap, UDP_ASSOCIATE};
use common::{socks5, Dest, Proxy};

fn drops(proxy: &Proxy, reason: &str) -> f64 {
    proxy.metric(
        "zcproxy_socks5_udp_dropped_total",
        &[&format!("reason=\"{reason}\"")],
    )
}

fn associations_open(proxy: &Proxy) -> f64 {
    proxy.metric("zcproxy_connections_active", &["protocol=\"socks5_udp\""])
}

/// Waits (up to 10 s) for `cond`.
/// An IPv6 UDP echo on ::1 (the IPv4 one is common::udp_echo).
fn udp_echo_v6() -> SocketAddr {
    common::udp_server("[::1]:0", <[u8]>::to_vec).0
}

/// A UDP server that answers anything with the largest IPv4 datagram (65,507 bytes).
fn big_replies() -> SocketAddr {
    common::udp_server("127.0.0.1:0", |_| vec![9u8; 65_507]).0
}

/// Runs the PySocks client script; returns its JSON line.
fn pysocks(
    proxy: &Proxy,
    dest_host: &str,
    port: u16,
    count: usize,
    size: usize,
    creds: Option<(&str, &str)>,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pysocks_udp.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg(proxy.addr.to_string())
        .arg(dest_host)
        .arg(port.to_string())
        .arg(count.to_string())
        .arg(size.to_string());
    if let Some((u, p)) = creds {
        cmd.arg(u).arg(p);
    }
    let out = cmd.output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pysocks_udp.py: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

#[test]
fn pysocks_relays_to_ipv4_ipv6_and_names_with_and_without_credentials() {
    let v4 = common::udp_echo();
    let v6 = udp_echo_v6();
    for creds in [None, Some(("alice", "wonderland"))] {
        let mut builder = Proxy::builder().arg("--cores").arg("2").allow_loopback();
        if creds.is_some() {
            builder = builder.arg("--user").arg("alice:wonderland");
        }
        let proxy = builder.start();
        for (host, port, source) in [
            ("127.0.0.1", v4.port(), v4.to_string()),
            ("::1", v6.port(), format!("::1:{}", v6.port())),
            ("localhost", v4.port(), v4.to_string()),
        ] {
            let r = pysocks(&proxy, host, port, 200, 512, creds);
            assert_eq!(r["sent"], 200, "{host} {creds:?}: {r}");
            assert_eq!(r["received"], 200, "{host} {creds:?}: {r}");
            assert_eq!(r["corrupt"], 0, "{host}: {r}");
            assert_eq!(r["sources"], serde_json::json!([source]), "{host}: {r}");
            assert!(
                r["relay"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{r}"
            );
        }
        assert_eq!(
            proxy.metric("zcproxy_socks5_udp_resolutions_total", &[]),
            1.0
        );
        testkit::eventually(10, "every association closed", || {
            associations_open(&proxy) == 0.0
        });
        assert_eq!(
            proxy.metric("zcproxy_connections_total", &["protocol=\"socks5_udp\""]),
            3.0
        );
    }
    // Without credentials where users exist: refused before any association.
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonderland")
        .start();
    let err = socks5(
        proxy.addr,
        Dest::Addr("0.0.0.0:0".parse().unwrap()),
        None,
        UDP_ASSOCIATE,
    )
    .err();
    assert_eq!(err, Some(0xff));
    let err = socks5(
        proxy.addr,
        Dest::Addr("0.0.0.0:0".parse().unwrap()),
        Some(("alice", "bad")),
        UDP_ASSOCIATE,
    )
    .err();
    assert_eq!(err, Some(0xfe));
}

/// 10,000 datagrams of 1,200 bytes: every one the client sent is either relayed or counted
/// as dropped by the proxy, and every echo is either delivered or counted.
#[test]
fn ten_thousand_datagrams_are_accounted_for() {
    let proxy = Proxy::builder()
        .arg("--cores")
        .arg("2")
        .allow_loopback()
        .start();
    let (echo, echoed) = common::udp_echo_counted();
    let r = pysocks(&proxy, "127.0.0.1", echo.port(), 10_000, 1200, None);
    assert_eq!(r["corrupt"], 0, "{r}");
    let received = r["received"].as_u64().unwrap();
    testkit::eventually(10, "every association closed", || {
        associations_open(&proxy) == 0.0
    });
    let m = proxy.metrics();
    let total =
        |labels: &[&str]| common::sum_metric(&m, "zcproxy_socks5_udp_datagrams_total", labels);
    let dropped = |reason: &str| {
        common::sum_metric(
            &m,
            "zcproxy_socks5_udp_dropped_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    let to_upstream = total(&["direction=\"client_to_upstream\""]);
    let to_client = total(&["direction=\"upstream_to_client\""]);
    let echoed = echoed.load(std::sync::atomic::Ordering::Relaxed) as f64;
    // Client → echo: what the proxy relayed is what the echo saw.
    assert_eq!(
        to_upstream, echoed,
        "relayed {to_upstream}, echo saw {echoed}"
    );
    assert_eq!(
        to_upstream + dropped("client_buffer") + dropped("upstream_send"),
        10_000.0
    );
    // Echo → client: relayed or counted.
    assert_eq!(
        to_client + dropped("upstream_buffer") + dropped("client_send") + dropped("unsolicited"),
        echoed
    );
    // What the client got is what the proxy delivered (its own socket may drop, rarely).
    assert!(
        received as f64 <= to_client && received >= 9_900,
        "client got {received} of {to_client}"
    );
    eprintln!("10,000 datagrams: {to_upstream} to the echo, {to_client} back, {received} received by the client");
}

/// The Rust `socks` crate's UDP client (Socks5Datagram), with credentials.
#[test]
fn the_rust_socks_crate_sends_and_receives_datagrams() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("bob:builder")
        .start();
    let echo = common::udp_echo();
    let d = socks::Socks5Datagram::bind_with_password(proxy.addr, "127.0.0.1:0", "bob", "builder")
        .unwrap();
    d.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..50u8 {
        let msg = vec![i; 100 + i as usize];
        d.send_to(&msg, echo).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = d.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..]);
        assert!(
            matches!(from, socks::TargetAddr::Ip(a) if a == echo),
            "{from:?}"
        );
    }
    // Counted once the batch is sent: the last reply may reach the client first.
    testkit::eventually(10, "50 replies counted", || {
        proxy.metric(
            "zcproxy_socks5_udp_datagrams_total",
            &["direction=\"upstream_to_client\""],
        ) == 50.0
    });
}

/// The reply names the address the client reached (never 0.0.0.0), or the advertised one;
/// relay ports come from the configured range.
#[test]
fn the_relay_address_is_the_one_reached_or_the_advertised_one() {
    let proxy = Proxy::builder().allow_loopback().start();
    let (_c, relay) = associate(&proxy, None, "0.0.0.0:0".parse().unwrap());
    assert_eq!(relay.ip(), proxy.addr.ip());
    assert_ne!(relay.port(), 0);

    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[socks5_udp]\nadvertised_address = \"203.0.113.9\"\nports = \"21000-21009\"\n")
        .start();
    let echo = common::udp_echo();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, relay) = associate(&proxy, None, "0.0.0.0:0".parse().unwrap());
        assert_eq!(relay.ip(), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert!((21000..=21009).contains(&relay.port()), "{relay}");
        // The socket itself is on the address reached, with the advertised port.
        let s = client_socket(3000);
        let local_relay = SocketAddr::new(proxy.addr.ip(), relay.port());
        assert_eq!(
            round_trip(&s, local_relay, Dest::Addr(echo), b"nat")
                .unwrap()
                .1,
            b"nat"
        );
        held.push(c);
    }
}

/// Closing the control connection ends the association at once: no more answers, the
/// relay and upstream sockets closed. Datagrams from any other source are dropped.
#[test]
fn the_association_lives_as_long_as_its_control_connection() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .start();
    let echo = common::udp_echo();
    let (baseline, _, _) = proxy.settled_fd_counts();
    let s = client_socket(500);
    let requested = s.local_addr().unwrap();
    let (control, relay) = associate(&proxy, None, requested);
    assert_eq!(
        round_trip(&s, relay, Dest::Addr(echo), b"one").unwrap(),
        (echo, b"one".to_vec())
    );
    assert_eq!(
        proxy.fd_counts().0,
        baseline + 3,
        "control, relay and upstream sockets"
    );

    // Another source, even on the client's address: dropped, and the client carries on.
    let stranger = client_socket(300);
    assert!(round_trip(&stranger, relay, Dest::Addr(echo), b"not mine").is_none());
    testkit::eventually(10, "foreign_source drops at 1.0", || {
        drops(&proxy, "foreign_source") == 1.0
    });
    assert_eq!(
        round_trip(&s, relay, Dest::Addr(echo), b"two").unwrap().1,
        b"two"
    );

    drop(control);
    testkit::eventually(10, "every association closed", || {
        associations_open(&proxy) == 0.0
    });
    testkit::eventually(10, "sockets closed", || proxy.fd_counts().0 == baseline);
    assert!(round_trip(&s, relay, Dest::Addr(echo), b"after").is_none());
}

/// A client that named no address learns it from its first datagram; the proxy closing
/// the control connection (idle) is seen by the client, and traffic keeps it alive.
#[test]
fn traffic_keeps_the_control_connection_alive_and_silence_ends_it() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[timeouts]\nidle_secs = 2\n")
        .start();
    let echo = common::udp_echo();
    let s = client_socket(1000);
    let (mut control, relay) = associate(&proxy, None, "0.0.0.0:0".parse().unwrap());
    control
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        assert!(round_trip(&s, relay, Dest::Addr(echo), b"tick").is_some());
        let mut b = [0u8; 1];
        assert!(
            control.read(&mut b).is_err(),
            "control closed while traffic flowed"
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let quiet = Instant::now();
    let mut b = [0u8; 1];
    assert!(
        matches!(control.read(&mut b), Ok(0)),
        "idle association not closed"
    );
    assert!(quiet.elapsed() >= Duration::from_millis(1500));
    testkit::eventually(10, "every association closed", || {
        associations_open(&proxy) == 0.0
    });
    assert_eq!(
        proxy.metric("zcproxy_errors_total", &["kind=\"idle_timeout\""]),
        1.0
    );
}

/// Bad datagrams are dropped and counted by reason; the association and another one keep
/// serving.
#[test]
fn bad_datagrams_are_dropped_and_counted() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .config("[timeouts]\nconnect_ms = 3000\n")
        .start();
    let echo = common::udp_echo();
    let s = client_socket(300);
    let (_c, relay) = associate(&proxy, None, "0.0.0.0:0".parse().unwrap());
    let other = client_socket(3000);
    let (_c2, relay2) = associate(&proxy, None, "0.0.0.0:0".parse().unwrap());
    let good = wrap(Dest::Addr(echo), b"ok");
    let mut fragment = good.clone();
    fragment[2] = 1;
    let mut reserved = good.clone();
    reserved[0] = 1;
    let mut atyp = good.clone();
    atyp[3] = 7;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", vec![]),
        ("malformed", vec![0, 0]),
        ("malformed", good[..6].to_vec()),
        ("malformed", reserved),
        ("malformed", atyp),
        ("malformed", wrap(Dest::Name("bad host", 7), b"x")),
        (
            "malformed",
            wrap(Dest::Addr("127.0.0.1:0".parse().unwrap()), b"x"),
        ),
        ("fragment", fragment),
    ];
    for (i, (reason, d)) in cases.iter().enumerate() {
        let before = drops(&proxy, reason);
        s.send_to(d, relay).unwrap();
        testkit::eventually(10, &format!("case {i} ({reason}) counted"), || {
            drops(&proxy, reason) == before + 1.0
        });
        assert_eq!(
            round_trip(&s, relay, Dest::Addr(echo), b"still").unwrap().1,
            b"still",
            "after case {i}"
        );
    }
    // Oversized: a reply too large to carry with its header back to an IPv4 client.
    let big = big_replies();
    assert!(round_trip(&s, relay, Dest::Addr(big), b"size?").is_none());
    testkit::eventually(10, "too_large drops at 1.0", || {
        drops(&proxy, "too_large") == 1.0
    });
    // Protected and own addresses are denied without a rule (loopback is allowed here).
    assert!(round_trip(&s, relay, Dest::Addr(proxy.admin), b"x").is_none());
    testkit::eventually(10, "denied drops at 1.0", || drops(&proxy, "denied") == 1.0);
    let private = "10.1.2.3:53".parse().unwrap();
    assert!(round_trip(&s, relay, Dest::Addr(private), b"x").is_none());
    testkit::eventually(10, "denied drops at 2.0", || drops(&proxy, "denied") == 2.0);
    // A name that does not resolve: counted, the datagram dropped.
    assert!(round_trip(&s, relay, Dest::Name("nonexistent.invalid", 7), b"x").is_none());
    testkit::eventually(10, "resolve drops at 1.0", || {
        drops(&proxy, "resolve") == 1.0
    });
    assert_eq!(
        round_trip(&other, relay2, Dest::Addr(echo), b"other")
            .unwrap()
            .1,
        b"other"
    );
}

/// The ACL applies per destination with the protocol `socks5_udp`; limits per association,
/// per user and per core hold.
#[test]
fn acl_and_limits_apply_to_destinations_and_associations() {
    let denied = common::udp_echo();
    let a = common::udp_echo();
    let b = common::udp_echo();
    let c = common::udp_echo();
    let proxy = Proxy::builder()
        .arg("--cores")
        .arg("1")
        .arg("--user")
        .arg("carol:secret")
        .config(&format!(
            "[socks5_udp]\nmax_destinations_per_association = 2\nmax_associations_per_user = 2\n\
             [policy]\n[[policy.rules]]\naction = \"deny\"\nprotocols = [\"socks5_udp\"]\nports = [\"{}\"]\n\
             [[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n",
            denied.port()
        ))
        .start();
    let carol = Some(("carol", "secret"));
    let s = client_socket(300);
    let (_c1, relay) = associate(&proxy, carol, "0.0.0.0:0".parse().unwrap());
    assert!(round_trip(&s, relay, Dest::Addr(denied), b"x").is_none());
    testkit::eventually(10, "denied drops at 1.0", || drops(&proxy, "denied") == 1.0);
    assert!(round_trip(&s, relay, Dest::Addr(a), b"a").is_some());
    assert!(round_trip(&s, relay, Dest::Addr(b), b"b").is_some());
    assert!(round_trip(&s, relay, Dest::Addr(c), b"c").is_none());
    testkit::eventually(10, "destination_limit drops at 1.0", || {
        drops(&proxy, "destination_limit") == 1.0
    });
    assert!(round_trip(&s, relay, Dest::Addr(a), b"a again").is_some());

    let (_c2, _) = associate(&proxy, carol, "0.0.0.0:0".parse().unwrap());
    let third = socks5(
        proxy.addr,
        Dest::Addr("0.0.0.0:0".parse().unwrap()),
        carol,
        UDP_ASSOCIATE,
    )
    .err();
    assert_eq!(
        third,
        Some(2),
        "a third association: not allowed by ruleset"
    );
    assert_eq!(proxy.metric("zcproxy_socks5_udp_refused_total", &[]), 1.0);
    // The same rules still let TCP through to the port UDP may not use.
    assert!(socks5(proxy.addr, Dest::Addr(common::echo_server()), carol, 1).is_ok());
}

/// Over an IPv6 control connection the relay is on ::1 and names it; it carries datagrams to
/// IPv6 and IPv4 destinations, and only from the client's IPv6 address.
#[test]
fn an_ipv6_client_gets_an_ipv6_relay_for_both_families() {
    let proxy = Proxy::builder().allow_loopback().listen_ipv6().start();
    let (v4, v6) = (common::udp_echo(), udp_echo_v6());
    let (_c, relay) = associate(&proxy, None, "[::]:0".parse().unwrap());
    assert_eq!(relay.ip(), "::1".parse::<IpAddr>().unwrap());
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(
        round_trip(&s, relay, Dest::Addr(v6), b"six"),
        Some((v6, b"six".to_vec()))
    );
    assert_eq!(
        round_trip(&s, relay, Dest::Addr(v4), b"four"),
        Some((v4, b"four".to_vec()))
    );
    assert_eq!(
        round_trip(&s, relay, Dest::Name("localhost", v4.port()), b"name").map(|r| r.1),
        Some(b"name".to_vec())
    );
}

/// Destinations quiet for `flow_idle_secs` are forgotten; the core's association limit
/// refuses one more.
#[test]
fn quiet_destinations_expire_and_the_core_limit_holds() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("1")
        .config("[socks5_udp]\nflow_idle_secs = 1\nmax_associations_per_core = 1\n")
        .start();
    let echo = common::udp_echo();
    let s = client_socket(3000);
    let (_c, relay) = associate(&proxy, None, "0.0.0.0:0".parse().unwrap());
    assert!(round_trip(&s, relay, Dest::Addr(echo), b"x").is_some());
    testkit::eventually(10, "the quiet flow expired", || {
        proxy.metric("zcproxy_socks5_udp_flows_expired_total", &[]) == 1.0
    });
    // Sending again opens the destination anew.
    assert!(round_trip(&s, relay, Dest::Addr(echo), b"y").is_some());
    assert_eq!(
        proxy.metric("zcproxy_socks5_udp_flows_opened_total", &[]),
        2.0
    );
    let second = socks5(
        proxy.addr,
        Dest::Addr("0.0.0.0:0".parse().unwrap()),
        None,
        UDP_ASSOCIATE,
    )
    .err();
    assert_eq!(second, Some(1), "general failure at the core's limit");
    assert_eq!(proxy.metric("zcproxy_socks5_udp_refused_total", &[]), 1.0);
}
