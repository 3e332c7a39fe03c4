//! Shards, shutdown, resource exhaustion, limits, BIND and the command line.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, curl, http_get, origin, socks5, Dest, Proxy};

#[test]
fn every_shard_accepts_connections() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    for _ in 0..200 {
        let (s, _) = socks5(proxy.addr, Dest::Addr(origin.addr), None, 1).unwrap();
        drop(s);
    }
    let text = proxy.metrics();
    for core in 0..2 {
        let accepted = common::sum_metric(
            &text,
            "zcproxy_accepted_connections_total",
            &[&format!("core=\"{core}\"")],
        );
        assert!(
            accepted >= 10.0,
            "core {core} accepted only {accepted} of 200"
        );
    }
    assert_eq!(common::sum_metric(&text, "zcproxy_cores", &[]), 2.0);
}

#[test]
fn sigterm_drains_live_tunnels_then_exits_zero() {
    let server = common::echo_server();
    let proxy = Proxy::builder()
        .config("cores = 2\n[timeouts]\ndrain_secs = 3\n[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n")
        .start();
    let (mut live, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    let admin = proxy.admin;
    let addr = proxy.addr;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(admin, "/readyz").map(|r| r.0) != Some(503) {
        assert!(
            Instant::now() < deadline,
            "/readyz still ready while draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // New clients are turned away, the live tunnel keeps working during the drain.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener closed while draining"
    );
    live.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    let started = Instant::now();
    let status = proxy.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The drain deadline closed the tunnel.
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(live.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn sigterm_with_no_tunnels_exits_at_once() {
    let proxy = Proxy::start_default();
    let started = Instant::now();
    let status = proxy.terminate();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn accept_survives_running_out_of_file_descriptors() {
    let origin = origin::start("127.0.0.1");
    // 64 descriptors in all: a few dozen clients exhaust them.
    let proxy = Proxy::builder()
        .wrapper(&["prlimit", "--nofile=64:64", "--"])
        .arg("--cores")
        .arg("1")
        .allow_loopback()
        .start();
    let mut clients: Vec<TcpStream> = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = TcpStream::connect(proxy.addr) {
            clients.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // Free the descriptors before scraping: the admin listener needs one to accept too.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    let accept_errors = loop {
        if let Some((200, text)) = common::http_get(proxy.admin, "/metrics") {
            break common::sum_metric(&text, "zcproxy_errors_total", &["kind=\"accept\""]);
        }
        assert!(Instant::now() < deadline, "admin endpoint did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(accept_errors >= 1.0, "EMFILE was counted");
    // Once descriptors are free again, service resumes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body, _) = curl(&[
            "-x",
            &format!("socks5://{}", proxy.addr),
            &format!("http://{}/hello", origin.addr),
        ]);
        if code == 0 && body == b"hello\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy did not recover from EMFILE"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn per_user_tunnel_limit_across_cores() {
    let server = common::echo_server();
    let hash = policy::password::hash("pw").unwrap();
    let proxy = Proxy::builder()
        .config(&format!(
            "cores = 2\n[policy]\n[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n[[policy.users]]\nname = \"carol\"\npassword_hash = \"{hash}\"\nmax_tunnels = 2\n"
        ))
        .start();
    let a = socks5(proxy.addr, Dest::Addr(server), Some(("carol", "pw")), 1).unwrap();
    let b = socks5(proxy.addr, Dest::Addr(server), Some(("carol", "pw")), 1).unwrap();
    assert_eq!(
        socks5(proxy.addr, Dest::Addr(server), Some(("carol", "pw")), 1).err(),
        Some(2)
    );
    let (code, body, _) = curl(&[
        "-i",
        "-x",
        &format!("http://carol:pw@{}", proxy.addr),
        &format!("http://{server}/"),
    ]);
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&body).starts_with("HTTP/1.1 429"));
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while socks5(proxy.addr, Dest::Addr(server), Some(("carol", "pw")), 1).is_err() {
        assert!(
            Instant::now() < deadline,
            "slot not released after a tunnel closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(b);
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"user_limit\""]) >= 1.0);
}

fn bind_roundtrip(proxy: &Proxy, socks4: bool) {
    let expected_peer: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (mut control, bound) = if socks4 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&[4, 2, 0, 0, 127, 0, 0, 1, 0]).unwrap();
        let mut r = [0u8; 8];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r[1], 0x5a);
        let bound = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[2], r[3]])));
        (s, bound)
    } else {
        socks5(proxy.addr, Dest::Addr(expected_peer), None, 2).unwrap()
    };
    assert_eq!(bound.ip().to_string(), "127.0.0.1");
    assert_ne!(bound.port(), 0);
    // The "server" side connects in to the announced address.
    let mut inbound = TcpStream::connect(bound).unwrap();
    let from = if socks4 {
        let mut r = [0u8; 8];
        control.read_exact(&mut r).unwrap();
        assert_eq!(r[1], 0x5a);
        SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[2], r[3]])))
    } else {
        common::read_socks5_reply(&mut control).unwrap()
    };
    assert_eq!(from, inbound.local_addr().unwrap());
    // The listener served its one connection and is closed (the runtime closes descriptors
    // through its ring, so allow it a moment): nobody else can connect in.
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        TcpStream::connect(bound).is_err()
    });
    assert!(
        closed,
        "the BIND listener stayed open for the tunnel's lifetime"
    );
    inbound.write_all(b"data from server").unwrap();
    let mut buf = [0u8; 16];
    control.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"data from server");
    control.write_all(b"ack").unwrap();
    let mut ack = [0u8; 3];
    inbound.read_exact(&mut ack).unwrap();
    assert_eq!(&ack, b"ack");
}

#[test]
fn socks_bind_for_both_versions() {
    let proxy = Proxy::start_default();
    bind_roundtrip(&proxy, false);
    bind_roundtrip(&proxy, true);
    // BIND for a host the policy denies is refused before anything listens.
    let denied: SocketAddr = "10.9.9.9:0".parse().unwrap();
    assert_eq!(
        socks5(proxy.addr, Dest::Addr(denied), None, 2).err(),
        Some(2)
    );
}

#[test]
fn hash_password_and_check_config() {
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(policy::password::verify(hash.trim(), b"correct horse"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/zcproxy.toml");
    let out = Command::new(bin())
        .args(["--check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = std::env::temp_dir().join(format!("zcproxy-bad-{}.toml", std::process::id()));
    for (text, needle) in [
        ("cores = 0\n", "cores"),
        ("lisen = \"x\"\n", "unknown field"),
        (
            "[[policy.users]]\nname = \"u\"\npassword_hash = \"plain\"\n",
            "Argon2",
        ),
        (
            "[[policy.rules]]\naction = \"allow\"\nports = [\"0\"]\n",
            "port",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(bin())
            .arg("--check-config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
    let _ = std::fs::remove_file(&bad);
    // A bad flag value is a usage error, not a crash.
    let out = Command::new(bin())
        .args(["--user", "nocolon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn taken_port_fails_fast_with_a_clear_error() {
    let holder = std::net::TcpListener::bind(("127.0.0.1", common::free_port())).unwrap();
    let addr = holder.local_addr().unwrap();
    let out = Command::new(bin())
        .args([
            "--listen",
            &addr.to_string(),
            "--admin",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
