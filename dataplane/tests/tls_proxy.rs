//! TLS to the proxy on its TCP port (an "HTTPS proxy"), with clients this project did not
//! write: Debian's curl (`-x https://…`), Python's ssl module (SOCKS5 inside TLS, session
//! resumption), rustls as a client (a live tunnel across a certificate rotation); bad
//! input ends only the offending connection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{curl, origin, Proxy};

fn ca(proxy: &Proxy) -> PathBuf {
    common::h3::generated_cert(proxy)
}

fn python(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tls_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "tls_client.py {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn https_proxy(proxy: &Proxy) -> String {
    format!("https://localhost:{}", proxy.addr.port())
}

#[test]
fn curl_forwards_and_tunnels_through_the_proxy_over_tls() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonderland")
        .start();
    let cacert = ca(&proxy);
    let cacert = cacert.to_str().unwrap();
    let p = https_proxy(&proxy);
    let big = 8 << 20;
    let target = format!("http://{}/bytes/{big}", origin.addr);
    let mut expected = vec![0u8; big];
    common::Pattern::new(big as u64).fill(&mut expected);
    for tunnel in [false, true] {
        let mut args = vec![
            "--proxy-cacert",
            cacert,
            "-x",
            &p,
            "--proxy-user",
            "alice:wonderland",
        ];
        if tunnel {
            args.push("-p");
        }
        args.push(&target);
        let (code, body, err) = curl(&args);
        assert_eq!(code, 0, "tunnel {tunnel}: {err}");
        assert!(
            body == expected,
            "tunnel {tunnel}: {} bytes differ",
            body.len()
        );
    }
    // Wrong password: 407 inside TLS, for a forwarded request and for CONNECT.
    let hello = format!("http://{}/hello", origin.addr);
    let (_, body, _) = curl(&[
        "--proxy-cacert",
        cacert,
        "-x",
        &p,
        "--proxy-user",
        "alice:wrong",
        "-i",
        &hello,
    ]);
    assert!(
        String::from_utf8_lossy(&body).starts_with("HTTP/1.1 407"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, _, err) = curl(&[
        "--proxy-cacert",
        cacert,
        "-p",
        "-x",
        &p,
        "--proxy-user",
        "alice:wrong",
        &hello,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("407"), "{err}");
    // An upload through the TLS tunnel comes back whole.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = proxy.tmp.0.join("upload.bin");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let echo = format!("http://{}/echo", origin.addr);
    let (code, back, err) = curl(&[
        "--proxy-cacert",
        cacert,
        "-p",
        "-x",
        &p,
        "--proxy-user",
        "alice:wonderland",
        "--data-binary",
        &data,
        &echo,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(back == body, "echoed upload differs ({} bytes)", back.len());
    assert!(proxy.metric("zcproxy_tls_handshakes_total", &["result=\"ok\""]) >= 5.0);
    assert!(proxy.metric("zcproxy_tls_sessions_total", &["version=\"1.3\""]) >= 5.0);
    // The two tunnels (8 MiB down, 300 kB up and back) took the path this kernel allows:
    // spliced through kernel TLS where it has it, copied through rustls where not.
    let tunnelled = (8 << 20) + 2 * 300_000;
    let handed = proxy.metric("zcproxy_ktls_handovers_total", &["result=\"done\""]);
    let ktls = proxy.metric("zcproxy_ktls_bytes_total", &[]);
    if proxy.metric("zcproxy_ktls_available", &[]) == 1.0 {
        assert_eq!(handed, 2.0);
        assert!(
            ktls >= tunnelled as f64,
            "{ktls} bytes spliced through kTLS"
        );
    } else {
        assert_eq!(handed + ktls, 0.0, "no hand-over without kernel TLS");
        assert_eq!(proxy.metric("zcproxy_ktls_handovers_total", &[]), 0.0);
        assert!(proxy.metric("zcproxy_copy_bytes_total", &[]) >= tunnelled as f64);
    }
}

#[test]
fn socks5_inside_tls_and_sessions_resume() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder().allow_loopback().start();
    let cacert = ca(&proxy);
    let (p, c) = (proxy.addr.to_string(), cacert.to_str().unwrap().to_string());
    let out = python(&["socks5", &p, &c, &origin.addr.to_string()]);
    assert_eq!(out, "HTTP/1.1 200 OK 6", "status line and body length");
    assert_eq!(python(&["resume", &p, &c]), "resumed");
    assert!(proxy.metric("zcproxy_tls_resumed_total", &[]) >= 1.0);
}

/// Garbage where a ClientHello should be, a client that leaves mid-handshake and TLS inside
/// TLS each end only their own connection, counted; others carry on.
#[test]
fn broken_tls_ends_only_its_own_connection() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder().allow_loopback().start();
    let cacert = ca(&proxy);
    let exchange = |bytes: &[u8]| {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // A handshake record holding an unknown message: an alert back (content type 21),
    // before any TLS library saw it.
    let out = exchange(&[0x16, 3, 1, 0, 4, 0x63, 0, 0, 0]);
    assert_eq!(out.first(), Some(&21), "an alert: {out:?}");
    // A well-formed ClientHello rustls cannot agree with (no key share, no signature
    // algorithms): rustls' alert.
    let out = exchange(&proto::tls_hello::build(Some("localhost"), &[b"h2"], true));
    assert_eq!(out.first(), Some(&21), "an alert: {out:?}");
    // A ClientHello cut short, then the client leaves.
    exchange(&[0x16, 3, 1, 0x02, 0]);
    let before = proxy.metric("zcproxy_tls_handshakes_total", &["result=\"ok\""]);
    let (code, _, err) = curl(&[
        "--proxy-cacert",
        cacert.to_str().unwrap(),
        "-x",
        &https_proxy(&proxy),
        &format!("http://{}/hello", origin.addr),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        proxy.metric("zcproxy_tls_handshakes_total", &["result=\"ok\""]),
        before + 1.0
    );
    assert!(proxy.metric("zcproxy_tls_handshakes_total", &["result=\"tls_error\""]) >= 1.0);
    assert!(
        proxy.metric(
            "zcproxy_tls_handshakes_total",
            &["result=\"not_client_hello\""]
        ) >= 1.0
    );
    assert!(proxy.metric("zcproxy_tls_handshakes_total", &["result=\"eof\""]) >= 1.0);
    // Plain clients on the same port are untouched.
    let (code, body, _) = curl(&[
        "-x",
        &format!("http://{}", proxy.addr),
        &format!("http://{}/hello", origin.addr),
    ]);
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]));
}

fn openssl_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    common::certs::self_signed(dir, name, "DNS:localhost,IP:127.0.0.1")
}

fn rustls_client(roots: &[&Path]) -> Arc<rustls::ClientConfig> {
    // Each handshake must fetch the certificate in use, not resume an earlier session.
    let mut config = common::h2::tls_client(roots, &[]);
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A SOCKS5 CONNECT to `target` inside TLS; returns the stream and the proxy's certificate.
fn socks5_over_tls(
    proxy: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    target: SocketAddr,
) -> (TlsStream, Vec<u8>) {
    let tcp = TcpStream::connect(proxy).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).unwrap();
    let SocketAddr::V4(t) = target else {
        panic!("IPv4 target")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 reply");
    let cert = s.conn.peer_certificates().unwrap()[0].to_vec();
    (s, cert)
}

fn echo_once(s: &mut TlsStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// The certificate files are replaced while a TLS tunnel is live: new handshakes get the new
/// certificate, the live tunnel keeps running.
#[test]
fn a_certificate_rotation_keeps_live_tunnels() {
    let dir = std::env::temp_dir().join(format!("zcproxy-tls-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old_cert, old_key) = openssl_cert(&dir, "old");
    let (new_cert, new_key) = openssl_cert(&dir, "new");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let proxy = Proxy::builder()
        .allow_loopback()
        .config(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nreload_secs = 1\n",
            cert.display(),
            key.display()
        ))
        .start();
    let echo = common::echo_server();
    let config = rustls_client(&[&old_cert, &new_cert]);
    let (mut live, first) = socks5_over_tls(proxy.addr, &config, echo);
    echo_once(&mut live, b"before");
    // Key first, then the certificate: the reloader must never pair them wrongly.
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, now) = socks5_over_tls(proxy.addr, &config, echo);
        if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never presented"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    echo_once(&mut live, b"after the rotation");
    let _ = std::fs::remove_dir_all(&dir);
}
