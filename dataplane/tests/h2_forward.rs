//! Plain-HTTP requests on HTTP/2 streams (what a browser sends an HTTPS proxy for `http://`
//! URLs), forwarded as HTTP/1.1 with the Rust h2 client: bodies of every framing, uploads,
//! per-stream credentials and errors, and upstream connections kept alive between streams.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::h2 as h2c;
use common::{pattern, runtime_multi_thread as runtime, Proxy};

/// POSTs `upload` to the origin's /echo: whether it came back whole with a 200.
async fn echoes(
    client: &h2::client::SendRequest<Bytes>,
    origin: std::net::SocketAddr,
    creds: Option<&str>,
    upload: Bytes,
) -> bool {
    let url = format!("http://{origin}/echo");
    let (status, _, body) = h2c::request(client, "POST", &url, creds, Some(upload.clone())).await;
    status == 200 && body == upload[..]
}

#[test]
fn plain_http_requests_on_h2_streams_are_forwarded() {
    let origin = common::origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonderland")
        .start();
    let cert = common::h3::generated_cert(&proxy);
    let addr = proxy.addr;
    let o = origin.addr;
    let alice = Some("alice:wonderland");
    runtime().block_on(async {
        let (client, _drive) = h2c::open_tls(addr, &cert).await;
        let (status, headers, body) =
            h2c::request(&client, "GET", &format!("http://{o}/hello"), alice, None).await;
        assert_eq!((status, body.as_slice()), (200, &b"hello\n"[..]));
        assert!(
            headers["via"].to_str().unwrap().contains("zcproxy"),
            "{headers:?}"
        );
        // Content-Length, chunked (decoded: no sizes, extensions or trailers) and
        // close-delimited bodies, several at once on the one connection.
        let n = 3 << 20;
        let urls = [
            format!("http://{o}/bytes/{n}"),
            format!("http://{o}/chunked/{n}"),
            format!("http://{o}/close/{n}"),
        ];
        let mut tasks = Vec::new();
        for url in urls {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let (status, headers, body) = h2c::request(&client, "GET", &url, alice, None).await;
                assert_eq!(status, 200, "{url}");
                assert!(!headers.contains_key("transfer-encoding"), "{url}");
                assert!(!headers.contains_key("connection"), "{url}");
                assert!(
                    body == common::origin::expected(n),
                    "{url}: {} bytes",
                    body.len()
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // A body of unknown length goes upstream chunked; the origin echoes it.
        assert!(echoes(&client, o, alice, pattern(1 << 20, 5)).await);
        // Per stream: no credentials, https:// (CONNECT's job), an unknown path upstream.
        let (status, headers, _) =
            h2c::request(&client, "GET", &format!("http://{o}/hello"), None, None).await;
        assert_eq!(status, 407);
        assert!(headers.contains_key("proxy-authenticate"));
        let (status, _, body) =
            h2c::request(&client, "GET", &format!("https://{o}/hello"), alice, None).await;
        assert_eq!(status, 501);
        // The hint once (it was given twice).
        let body = String::from_utf8_lossy(&body);
        assert_eq!(body.matches("CONNECT").count(), 1, "{body}");
        let (status, _, _) =
            h2c::request(&client, "GET", &format!("http://{o}/missing"), alice, None).await;
        assert_eq!(status, 404);
    });
    assert_eq!(
        proxy.metric("zcproxy_h2_streams_total", &["kind=\"forward\""]),
        8.0
    );
    assert!(proxy.metric("zcproxy_connections_total", &["protocol=\"http\""]) >= 8.0);
}

/// Forwarded requests on one HTTP/2 connection reuse an upstream connection kept alive by
/// an earlier stream — the same user's, to the same origin — and dial again where it cannot
/// be: after a close-delimited response, for another user, for requests at once, and when
/// the origin closed the idle connection.
#[test]
fn forwarded_requests_reuse_kept_alive_upstreams() {
    use std::sync::atomic::Ordering;
    let origin = common::origin::start("127.0.0.1");
    // An origin that answers one request, then closes the connection a moment later
    // without having said so.
    let closing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = closing.clone();
    let closer = common::spawn_server("127.0.0.1", move |mut s| {
        use std::io::{Read, Write};
        counter.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye");
        std::thread::sleep(Duration::from_millis(100));
    });
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--user")
        .arg("alice:wonderland")
        .arg("--user")
        .arg("bob:builder")
        .start();
    let cert = common::h3::generated_cert(&proxy);
    let o = origin.addr;
    let alice = Some("alice:wonderland");
    let dialled = || origin.connections.load(Ordering::SeqCst);
    runtime().block_on(async {
        let (client, _drive) = h2c::open_tls(proxy.addr, &cert).await;
        let get = |url: String, creds: Option<&'static str>| {
            let client = client.clone();
            async move { h2c::request(&client, "GET", &url, creds, None).await.0 }
        };
        for path in ["hello", "bytes/100000", "chunked/100000", "hello"].repeat(5) {
            let (status, _, body) =
                h2c::request(&client, "GET", &format!("http://{o}/{path}"), alice, None).await;
            assert_eq!(status, 200, "{path}");
            assert!(!body.is_empty());
        }
        assert_eq!(dialled(), 1, "20 requests one after another, one upstream");
        // A POST with a body reuses it too.
        assert!(echoes(&client, o, alice, pattern(100_000, 3)).await);
        assert_eq!(dialled(), 1);
        // Another user gets a connection of their own.
        assert_eq!(
            get(format!("http://{o}/hello"), Some("bob:builder")).await,
            200
        );
        assert_eq!(dialled(), 2, "not shared across users");
        // A close-delimited response leaves nothing to reuse.
        let close = format!("http://{o}/close/1000");
        assert_eq!(get(close.clone(), alice).await, 200);
        let before = dialled();
        assert_eq!(get(close, alice).await, 200);
        assert_eq!(dialled(), before + 1);
        // Three at once need three; afterwards they are reused.
        let before = dialled();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let client = client.clone();
            let url = format!("http://{o}/bytes/2000000");
            tasks.push(tokio::spawn(async move {
                h2c::request(&client, "GET", &url, alice, None).await.0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        let at_once = dialled() - before;
        assert!((1..=3).contains(&at_once), "{at_once}");
        for _ in 0..6 {
            assert_eq!(get(format!("http://{o}/hello"), alice).await, 200);
        }
        assert_eq!(dialled(), before + at_once, "the three were kept");
        // An origin that closed the idle connection: the next request dials again.
        let c = format!("http://{closer}/");
        for _ in 0..3 {
            let (status, _, body) = h2c::request(&client, "GET", &c, alice, None).await;
            assert_eq!((status, body.as_slice()), (200, &b"bye"[..]));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(closing.load(Ordering::SeqCst), 3);
    });
}
