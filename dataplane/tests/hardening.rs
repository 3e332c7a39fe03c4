//! Smaller holes found by review and by third-party clients: IPv6 forms that carry an
//! internal IPv4 address, foreign datagrams keeping a SOCKS5 UDP association alive, a TCP
//! FIN inside TLS passed on as a clean end, 407 answers that told which users exist, and
//! credentials treated differently by HTTP and SOCKS5 on a proxy without users.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::socks_udp::{associate, client_socket, round_trip};
use common::{curl, socks5, Dest, Proxy};

/// 6to4 (2002::/16) and Teredo (2001::/32) addresses reach the IPv4 address they embed
/// through a relay: with the default policy they are refused like that address (reply 2).
#[test]
fn six_to_four_and_teredo_forms_of_loopback_are_refused() {
    let proxy = Proxy::start_default();
    for dest in [
        "[2002:7f00:1::1]:80",
        "[2001:0:808:808:0:f227:80ff:fffe]:80",
        "[64:ff9b::7f00:1]:80",
    ] {
        let dest: SocketAddr = dest.parse().unwrap();
        assert_eq!(
            socks5(proxy.addr, Dest::Addr(dest), None, 1).err(),
            Some(2),
            "{dest}"
        );
    }
    assert_eq!(proxy.metric("zcproxy_acl_denies_total", &[]), 3.0);
}

/// Anyone can send to a relay's port: such datagrams are dropped, and must not keep the
/// association alive past the idle timeout.
#[test]
fn foreign_datagrams_do_not_keep_an_association_alive() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .config("[timeouts]\nidle_secs = 2\n")
        .start();
    let echo = common::udp_echo();
    let client = client_socket(1000);
    let (mut control, relay) = associate(&proxy, None, client.local_addr().unwrap());
    assert!(round_trip(&client, relay, Dest::Addr(echo), b"mine").is_some());
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let quiet = Instant::now();
    control
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let closed = loop {
        stranger
            .send_to(&common::socks_udp::wrap(Dest::Addr(echo), b"noise"), relay)
            .unwrap();
        let mut b = [0u8; 1];
        match control.read(&mut b) {
            Ok(0) => break quiet.elapsed(),
            Ok(_) => panic!("bytes on the control connection"),
            Err(_) => {}
        }
        assert!(
            quiet.elapsed() < Duration::from_secs(10),
            "foreign datagrams kept the association alive"
        );
    };
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    assert!(
        proxy.metric(
            "zcproxy_socks5_udp_dropped_total",
            &["reason=\"foreign_source\""]
        ) >= 5.0
    );
}

/// An upstream that reports how its connection ended: `Ok(bytes)` at a clean end (FIN),
/// `Err` at a reset.
fn reporting_server() -> (
    SocketAddr,
    mpsc::Receiver<Result<usize, std::io::ErrorKind>>,
) {
    let (tx, rx) = mpsc::channel();
    let addr = common::spawn_server("127.0.0.1", move |mut s| {
        let mut total = 0;
        let mut buf = [0u8; 4096];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(total),
                Ok(n) => total += n,
                Err(e) => break Err(e.kind()),
            }
        };
        let _ = tx.send(end);
    });
    (addr, rx)
}

/// A CONNECT tunnel inside TLS to `target`, 100 bytes sent; then the TLS session ends with
/// a close_notify or the TCP connection with a bare FIN.
fn tunnel_then_close(proxy: &Proxy, target: SocketAddr, close_notify: bool) {
    let cert = common::h3::generated_cert(proxy);
    let tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(
        common::h2::tls_config(&[&cert], &[b"http/1.1"]),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tls.write_all(&[7u8; 100]).unwrap();
    tls.flush().unwrap();
    if close_notify {
        tls.conn.send_close_notify();
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = tls.sock.read(&mut [0u8; 64]);
}

/// A client cut off mid-upload (its TCP connection ends without a TLS close_notify) must
/// not look to the upstream like a complete upload: the upstream sees a reset, while a
/// close_notify is passed on as a clean end.
#[test]
fn a_fin_inside_tls_without_close_notify_reaches_the_upstream_as_an_abort() {
    let (target, ends) = reporting_server();
    let proxy = Proxy::builder().allow_loopback().start();
    tunnel_then_close(&proxy, target, true);
    let clean = ends.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(clean, Ok(100), "a close_notify is a clean end");
    tunnel_then_close(&proxy, target, false);
    let cut = ends.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        cut,
        Err(std::io::ErrorKind::ConnectionReset),
        "a bare FIN is an abort"
    );
}

/// The answer to a failed login says the same for an unknown user, a wrong password and a
/// disabled user (the log says which).
#[test]
fn a_failed_login_does_not_tell_which_users_exist() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$BZLBZP7FSPh0A8cqXic8LQ$gzcbUZxX0vmlA5VGwoW/dDVEd5Zim7/QelstpJg+so4";
    let echo = common::echo_server();
    let proxy = Proxy::builder()
        .allow_loopback()
        .config(&format!(
            "[[policy.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
             [[policy.users]]\nname = \"carol\"\npassword_hash = \"{hash}\"\nenabled = false\n"
        ))
        .start();
    let url = format!("http://{echo}/");
    let answers: Vec<(i32, String)> = ["alice:wrong", "mallory:wrong", "carol:wonderland"]
        .iter()
        .map(|creds| {
            let p = format!("http://{creds}@{}", proxy.addr);
            let (code, body, _) = curl(&["-s", "-x", &p, "-o", "-", "-w", "%{http_code}", &url]);
            (code, String::from_utf8_lossy(&body).into_owned())
        })
        .collect();
    for (code, answer) in &answers {
        assert_eq!(*code, 0);
        assert!(answer.ends_with("407"), "{answer}");
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answers differ: {answers:?}"
    );
    // And over CONNECT, where git saw "wrong password".
    let connect = |creds: &str| {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(creds);
        write!(
            s,
            "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: Basic {token}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
            .lines()
            .filter(|l| !l.starts_with("Date"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(connect("alice:wrong"), connect("mallory:wrong"));
    assert!(!connect("mallory:wrong").contains("unknown"));
}

/// On a proxy without users, a client sending credentials is served as anonymous over HTTP
/// as over SOCKS5 (where the proxy then picks "no authentication").
#[test]
fn credentials_on_a_proxy_without_users_are_treated_alike_by_every_protocol() {
    let origin = common::origin::start("127.0.0.1");
    let proxy = Proxy::builder().allow_loopback().start();
    let url = format!("http://{}/hello", origin.addr);
    for scheme in ["http", "socks5h"] {
        let p = format!("{scheme}://someone:secret@{}", proxy.addr);
        let (code, body, err) = curl(&["-s", "-x", &p, &url]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello\n"[..]),
            "{scheme}: {err}"
        );
    }
    // With users, credentials are checked on both.
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonderland")
        .start();
    for scheme in ["http", "socks5h"] {
        let p = format!("{scheme}://someone:secret@{}", proxy.addr);
        let (code, _, _) = curl(&["-s", "-f", "-x", &p, &url]);
        assert_ne!(code, 0, "{scheme} with unknown credentials");
    }
}

/// The start-up line's example works as printed: with a user's name (and a placeholder for
/// the password) where loopback clients need credentials.
#[test]
fn the_start_up_hint_names_credentials_when_they_are_needed() {
    use std::io::BufRead;
    for (args, want) in [
        (&["--user", "alice:secret"][..], "socks5h://alice:PASSWORD@"),
        (&[][..], "socks5h://127.0.0.1:"),
    ] {
        let listen = format!("127.0.0.1:{}", common::free_port());
        let admin = format!("127.0.0.1:{}", common::free_port());
        let mut child = std::process::Command::new(common::bin())
            .args(["--listen", &listen, "--admin", &admin, "--no-quic"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("try:") {
                    let _ = tx.send(line);
                    return;
                }
            }
        });
        let hint = rx.recv_timeout(Duration::from_secs(20));
        let _ = child.kill();
        let _ = child.wait();
        let hint = hint.expect("a start-up hint");
        assert!(hint.contains(want), "{hint}");
    }
}
