//! Every client protocol driven by curl through the real proxy binary.

mod common;

use common::{curl, origin, Proxy};

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

#[test]
fn every_protocol_reaches_an_allowed_upstream() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    for scheme in ["socks5", "socks5h", "socks4", "socks4a", "http"] {
        let (code, body, err) = curl(&[
            "-x",
            &format!("{scheme}://{}", proxy.addr),
            &url(origin.addr, "/hello"),
        ]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello\n"[..]),
            "{scheme}: {err}"
        );
    }
    // Host names resolved by the proxy (socks5h, socks4a) and by an HTTP proxy.
    let named = format!("http://localhost:{}/hello", origin.addr.port());
    for scheme in ["socks5h", "socks4a", "http"] {
        let (code, body, err) = curl(&["-x", &format!("{scheme}://{}", proxy.addr), &named]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello\n"[..]),
            "{scheme}: {err}"
        );
    }
    // CONNECT tunnel (curl -p) for plain HTTP too.
    let (code, body, _) = curl(&[
        "-p",
        "-x",
        &format!("http://{}", proxy.addr),
        &url(origin.addr, "/hello"),
    ]);
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]));
    assert!(proxy.metric("zcproxy_connections_total", &["protocol=\"socks4\""]) >= 3.0);
    assert!(proxy.metric("zcproxy_connections_total", &["protocol=\"connect\""]) >= 1.0);
}

#[test]
fn ipv6_destinations() {
    let origin = origin::start("::1");
    let proxy = Proxy::start_default();
    let target = format!("http://[::1]:{}/hello", origin.addr.port());
    for scheme in ["socks5", "socks5h", "http"] {
        let (code, body, err) = curl(&["-x", &format!("{scheme}://{}", proxy.addr), &target]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello\n"[..]),
            "{scheme}: {err}"
        );
    }
    let (code, body, _) = curl(&["-p", "-x", &format!("http://{}", proxy.addr), &target]);
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]));
}

#[test]
fn internal_destinations_are_denied_with_the_right_code() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder().arg("--cores").arg("1").start(); // no --allow-destination
    let target = url(origin.addr, "/hello");
    let (code, _, err) = curl(&["-x", &format!("socks5://{}", proxy.addr), &target]);
    assert_eq!(code, 97, "{err}");
    assert!(
        err.contains("(2)"),
        "SOCKS5 reply 2 (not allowed by ruleset): {err}"
    );
    let (code, _, err) = curl(&["-x", &format!("socks4://{}", proxy.addr), &target]);
    assert_eq!(code, 97, "{err}");
    assert!(err.contains("(91)"), "SOCKS4 reply 0x5b: {err}");
    let (code, body, _) = curl(&["-i", "-x", &format!("http://{}", proxy.addr), &target]);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 0);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("Proxy-Status: zcproxy; error=destination_ip_prohibited"),
        "{text}"
    );
    let (code, _, err) = curl(&["-p", "-x", &format!("http://{}", proxy.addr), &target]);
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
    // The cloud metadata address and a name that resolves to loopback are denied too.
    let (_, body, _) = curl(&[
        "-i",
        "-x",
        &format!("http://{}", proxy.addr),
        "http://169.254.169.254/latest/meta-data/",
    ]);
    assert!(String::from_utf8_lossy(&body).starts_with("HTTP/1.1 403"));
    let named = format!("http://localhost:{}/hello", origin.addr.port());
    let (code, _, err) = curl(&["-x", &format!("socks5h://{}", proxy.addr), &named]);
    assert!(code == 97 && err.contains("(2)"), "{err}");
    assert!(proxy.metric("zcproxy_acl_denies_total", &[]) >= 6.0);
}

#[test]
fn credentials_required_accepted_and_rejected() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .arg("--cores")
        .arg("2")
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonder land")
        .start();
    let target = url(origin.addr, "/hello");
    for scheme in ["socks5", "socks5h", "http"] {
        let p = format!("{scheme}://{}", proxy.addr);
        let (code, body, err) = curl(&["-x", &p, "--proxy-user", "alice:wonder land", &target]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello\n"[..]),
            "{scheme}: {err}"
        );
        let (code, body, _) = curl(&["-x", &p, "--proxy-user", "alice:wrong", "-i", &target]);
        if scheme == "http" {
            let text = String::from_utf8_lossy(&body);
            assert!(text.starts_with("HTTP/1.1 407"), "{text}");
            assert!(
                text.contains("Proxy-Authenticate: Basic realm=\"zcproxy\""),
                "{text}"
            );
        } else {
            assert_eq!(code, 97, "{scheme} with a wrong password");
        }
        let (code, body, _) = curl(&["-x", &p, "-i", &target]);
        if scheme == "http" {
            assert!(String::from_utf8_lossy(&body).starts_with("HTTP/1.1 407"));
        } else {
            assert_eq!(code, 97, "{scheme} without credentials");
        }
    }
    // CONNECT with Proxy-Authorization.
    let p = format!("http://{}", proxy.addr);
    let (code, body, _) = curl(&["-p", "-x", &p, "--proxy-user", "alice:wonder land", &target]);
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]));
    let (code, _, err) = curl(&["-p", "-x", &p, "--proxy-user", "bob:x", &target]);
    assert!(code != 0 && err.contains("407"), "{err}");
    // SOCKS4 carries no password: refused once users exist and loopback is not anonymous.
    let (code, _, _) = curl(&["-x", &format!("socks4://{}", proxy.addr), &target]);
    assert_eq!(code, 97);
    // Lower-case scheme name (RFC 9110: case-insensitive).
    let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: basic YWxpY2U6d29uZGVyIGxhbmQ=\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("hello\n"),
        "{text}"
    );
    assert!(proxy.metric("zcproxy_auth_failures_total", &[]) >= 6.0);
    assert!(proxy.metric("zcproxy_credential_cache_hits_total", &[]) >= 1.0);
}

#[test]
fn https_through_connect_to_a_local_tls_server() {
    let dir = std::env::temp_dir().join(format!("zcproxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let port = common::free_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-accept", &port.to_string()])
        .arg("-key")
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let proxy = Proxy::start_default();
    let (code, body, err) = curl(&[
        "-k",
        "-x",
        &format!("http://{}", proxy.addr),
        &format!("https://localhost:{port}/"),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&body).contains("Ciphers"),
        "s_server status page"
    );
}

#[test]
fn forward_proxy_keeps_alive_strips_hop_by_hop_and_adds_via() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    let p = format!("http://{}", proxy.addr);
    // Two requests on one client connection reuse one upstream connection.
    let (code, body, err) = curl(&[
        "-x",
        &p,
        &url(origin.addr, "/hello"),
        &url(origin.addr, "/hello"),
    ]);
    assert_eq!(
        (code, body.as_slice()),
        (0, &b"hello\nhello\n"[..]),
        "{err}"
    );
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let (_, body, _) = curl(&[
        "-x",
        &p,
        "-H",
        "Connection: X-Drop",
        "-H",
        "X-Drop: 1",
        "-H",
        "Keep-Alive: 1",
        "-H",
        "TE: trailers",
        "--proxy-header",
        "Proxy-Connection: keep-alive",
        &url(origin.addr, "/headers"),
    ]);
    let seen = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(
        seen.starts_with("get /headers http/1.1\r\n"),
        "origin-form target: {seen}"
    );
    assert!(seen.contains("via: 1.1 zcproxy"), "{seen}");
    for gone in [
        "x-drop",
        "keep-alive",
        "\r\nte:",
        "proxy-connection",
        "connection:",
    ] {
        assert!(!seen.contains(gone), "{gone} forwarded: {seen}");
    }
}

#[test]
fn forward_proxy_bodies_chunked_and_fixed() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    let p = format!("http://{}", proxy.addr);
    let (code, body, _) = curl(&["-x", &p, &url(origin.addr, "/chunked/100000")]);
    assert_eq!(code, 0);
    assert_eq!(body, origin::expected(100000));
    let (code, body, _) = curl(&["-x", &p, &url(origin.addr, "/bytes/3000000")]);
    assert_eq!(code, 0);
    assert_eq!(body, origin::expected(3_000_000));
    let (code, body, _) = curl(&["-x", &p, &url(origin.addr, "/close/200000")]);
    assert_eq!(code, 0);
    assert_eq!(body, origin::expected(200_000));
    // Uploads: Content-Length, chunked, and with Expect: 100-continue (curl's default > 1 MiB).
    let upload = std::env::temp_dir().join(format!("zcproxy-upload-{}", std::process::id()));
    let data = origin::expected(2_500_000);
    std::fs::write(&upload, &data).unwrap();
    let file_arg = format!("@{}", upload.display());
    let (code, body, _) = curl(&[
        "-x",
        &p,
        "--data-binary",
        &file_arg,
        &url(origin.addr, "/echo"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(body, data, "Content-Length upload");
    let (code, body, _) = curl(&[
        "-x",
        &p,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &file_arg,
        &url(origin.addr, "/echo"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(body, data, "chunked upload");
    let (code, body, _) = curl(&[
        "-x",
        &p,
        "-H",
        "Expect: 100-continue",
        "-T",
        &upload.display().to_string(),
        &url(origin.addr, "/echo"),
    ]);
    let _ = std::fs::remove_file(&upload);
    assert_eq!(code, 0);
    assert_eq!(body, data, "PUT with Expect: 100-continue");
}

#[test]
fn upstream_failures_map_to_502_and_socks_codes() {
    let proxy = Proxy::start_default();
    let closed = common::free_port();
    let target = format!("http://127.0.0.1:{closed}/");
    let (_, body, _) = curl(&["-i", "-x", &format!("http://{}", proxy.addr), &target]);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(text.contains("error=connection_refused"), "{text}");
    let (code, _, err) = curl(&["-x", &format!("socks5://{}", proxy.addr), &target]);
    assert!(
        code == 97 && err.contains("(5)"),
        "connection refused is reply 5: {err}"
    );
    let (_, body, _) = curl(&[
        "-i",
        "-x",
        &format!("http://{}", proxy.addr),
        "http://no-such-host.invalid/",
    ]);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("HTTP/1.1 502") && text.contains("error=dns_error"),
        "{text}"
    );
    let (code, _, err) = curl(&[
        "-x",
        &format!("socks5h://{}", proxy.addr),
        "http://no-such-host.invalid/",
    ]);
    assert!(
        code == 97 && err.contains("(4)"),
        "unresolvable is host unreachable (4): {err}"
    );
}

/// Python client libraries (requests with PySocks, and raw PySocks sockets) as users run them.
#[test]
fn python_client_libraries() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .arg("--cores")
        .arg("2")
        .allow_loopback()
        .arg("--user")
        .arg("pyuser:py pass")
        .start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_clients.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(proxy.addr.to_string())
        .arg(format!("http://{}", origin.addr))
        .args(["pyuser", "py pass"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An origin that answers one request per connection with a keep-alive response, then closes
/// the connection, as an origin's idle timeout would. A body-less request on the stale
/// kept-alive upstream goes out again on a fresh connection; a request with a body is not
/// replayed (its body may have been consumed) and gets 502.
#[test]
fn a_stale_kept_alive_upstream_is_retried_only_for_requests_without_a_body() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let origin = common::spawn_server("127.0.0.1", move |s| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body);
        let mut s = s;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        // Dropping the stream closes it: the proxy's kept-alive upstream is now stale.
    });
    let proxy = Proxy::start_default();
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let read_response = |c: &mut std::net::TcpStream| {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        head
    };
    for i in 0..3 {
        write!(
            c,
            "GET http://{}/r{i} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin, origin
        )
        .unwrap();
        let head = read_response(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "one fresh connection per request"
    );
    // A POST on the stale connection: not replayed.
    write!(
        c,
        "POST http://{}/p HTTP/1.1\r\nHost: {}\r\nContent-Length: 4\r\n\r\ndata",
        origin, origin
    )
    .unwrap();
    let head = read_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}
