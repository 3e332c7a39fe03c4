//! Timeouts and limits: idle tunnels, silent upstreams, connection caps, disabled users.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{curl, socks5, spawn_server, Dest, Proxy};

const ALLOW_LOOPBACK: &str =
    "[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n";

#[test]
fn idle_tunnels_are_closed_after_the_idle_timeout() {
    let server = common::echo_server();
    let proxy = Proxy::builder()
        .config(&format!(
            "cores = 1\n[timeouts]\nidle_secs = 1\n{ALLOW_LOOPBACK}"
        ))
        .start();
    let (mut s, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "closed by the proxy"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"idle_timeout\""]) >= 1.0);
}

#[test]
fn silent_upstream_gets_504() {
    // Reads the request, never answers.
    let server = spawn_server("127.0.0.1", |mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_secs(8));
    });
    let proxy = Proxy::builder()
        .config(&format!(
            "cores = 1\n[timeouts]\nidle_secs = 1\n{ALLOW_LOOPBACK}"
        ))
        .start();
    let (code, body, _) = curl(&[
        "-i",
        "-x",
        &format!("http://{}", proxy.addr),
        &format!("http://{server}/"),
    ]);
    assert_eq!(code, 0);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"upstream_timeout\""]) >= 1.0);
}

#[test]
fn connection_cap_per_core() {
    let server = common::echo_server();
    let proxy = Proxy::builder()
        .config(&format!(
            "cores = 1\n[limits]\nmax_connections_per_core = 3\n{ALLOW_LOOPBACK}"
        ))
        .start();
    let held: Vec<_> = (0..3)
        .map(|_| socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap())
        .collect();
    // The fourth is accepted and closed at once.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&[5, 1, 0]);
    let mut b = [0u8; 2];
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"connection_limit\""]) >= 1.0);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while socks5(proxy.addr, Dest::Addr(server), None, 1).is_err() {
        assert!(Instant::now() < deadline, "capacity not released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn disabled_users_are_refused_everywhere() {
    let server = common::echo_server();
    let hash = policy::password::hash("pw").unwrap();
    let proxy = Proxy::builder()
        .config(&format!(
            "cores = 1\n{ALLOW_LOOPBACK}[[policy.users]]\nname = \"dave\"\npassword_hash = \"{hash}\"\nenabled = false\n[[policy.users]]\nname = \"erin\"\npassword_hash = \"{hash}\"\n"
        ))
        .start();
    assert_eq!(
        socks5(proxy.addr, Dest::Addr(server), Some(("dave", "pw")), 1).err(),
        Some(0xfe)
    );
    assert!(socks5(proxy.addr, Dest::Addr(server), Some(("erin", "pw")), 1).is_ok());
    let (_, body, _) = curl(&[
        "-i",
        "-x",
        &format!("http://dave:pw@{}", proxy.addr),
        &format!("http://{server}/"),
    ]);
    assert!(String::from_utf8_lossy(&body).starts_with("HTTP/1.1 407"));
}

#[test]
fn connect_timeout_gives_socks_ttl_expired_and_http_504() {
    // A listener with a full backlog never completes new handshakes: SYNs are dropped.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let port = common::free_port();
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let _fill: Vec<_> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_millis(200)).ok())
        .collect();
    let proxy = Proxy::builder()
        .config(&format!(
            "cores = 1\n[timeouts]\nconnect_ms = 500\n{ALLOW_LOOPBACK}"
        ))
        .start();
    assert_eq!(
        socks5(proxy.addr, Dest::Addr(target), None, 1).err(),
        Some(6)
    );
    let (_, body, _) = curl(&[
        "-i",
        "-x",
        &format!("http://{}", proxy.addr),
        &format!("http://{target}/"),
    ]);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("HTTP/1.1 504") && text.contains("connection_timeout"),
        "{text}"
    );
}

#[test]
fn json_logs() {
    let out = std::process::Command::new(common::bin())
        .args([
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args([
            "--admin",
            &format!("127.0.0.1:{}", common::free_port()),
            "--cores",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(out.id() as i32, libc::SIGTERM) };
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    let listening = lines
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening"))
        })
        .expect("a JSON line saying the proxy listens");
    assert_eq!(listening["level"], "INFO");
}
