//! Malformed, truncated and slow handshakes: each gets its protocol's error, the connection
//! closes, a metric counts it, and the proxy keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{curl, origin, Proxy};

/// Sends `bytes`, half-closes, and returns everything the proxy answered before closing.
fn exchange(proxy: &Proxy, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn still_serving(proxy: &Proxy, origin: &origin::Origin) {
    for scheme in ["socks5", "socks4", "http"] {
        let (code, body, err) = curl(&[
            "-x",
            &format!("{scheme}://{}", proxy.addr),
            &format!("http://{}/hello", origin.addr),
        ]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello\n"[..]),
            "{scheme} after bad input: {err}"
        );
    }
}

#[test]
fn malformed_socks5_gets_reply_codes() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    // Unknown command: reply 7 (command not supported).
    let out = exchange(&proxy, &[5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80]);
    assert_eq!(&out[..2], &[5, 0]);
    assert_eq!(out[2..4], [5, 7]);
    // Unknown address type: reply 8.
    let out = exchange(&proxy, &[5, 1, 0, 5, 1, 0, 9]);
    assert_eq!(out[2..4], [5, 8]);
    // UDP ASSOCIATE is served: reply 0 naming the relay on the address reached.
    let out = exchange(&proxy, &[5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, 0, 80]);
    assert_eq!(out[2..8], [5, 0, 0, 1, 127, 0]);
    // No acceptable method (only GSSAPI offered): 0xff.
    let out = exchange(&proxy, &[5, 1, 1]);
    assert_eq!(out, [5, 0xff]);
    // Zero methods, bad host names, non-zero reserved byte, wrong version mid-way.
    assert!(exchange(&proxy, &[5, 0]).is_empty());
    let out = exchange(&proxy, &[5, 1, 0, 5, 1, 0, 3, 3, b'a', b' ', b'b', 0, 80]);
    assert_eq!(out[2..4], [5, 1]);
    let out = exchange(&proxy, &[5, 1, 0, 5, 1, 7, 1, 1, 2, 3, 4, 0, 80]);
    assert_eq!(out[2..4], [5, 1]);
    let out = exchange(&proxy, &[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80]);
    assert_eq!(out[2..4], [5, 1]);
    // Truncated at every length: the proxy just waits for more, then sees EOF; no reply
    // other than method selection, and nothing breaks.
    let full = [5u8, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
    for cut in 0..full.len() {
        let out = exchange(&proxy, &full[..cut]);
        assert!(out.len() <= 2, "cut {cut}: {out:?}");
    }
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"client_protocol\""]) >= 6.0);
    still_serving(&proxy, &origin);
}

#[test]
fn malformed_socks4_is_rejected_with_5b() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    let out = exchange(&proxy, &[4, 3, 0, 80, 1, 2, 3, 4, 0]);
    assert_eq!(out, [0, 0x5b, 0, 0, 0, 0, 0, 0]);
    let mut long = vec![4, 1, 0, 80, 1, 2, 3, 4];
    long.extend(std::iter::repeat_n(b'u', 600));
    assert_eq!(exchange(&proxy, &long)[..2], [0, 0x5b]);
    let out = exchange(
        &proxy,
        &[4, 1, 0, 80, 0, 0, 0, 1, 0, b'b', b'a', b'd', b'/', 0],
    );
    assert_eq!(out[..2], [0, 0x5b]);
    for cut in 0..9 {
        assert!(exchange(&proxy, &[4, 1, 0, 80, 127, 0, 0, 1, 0][..cut]).is_empty());
    }
    still_serving(&proxy, &origin);
}

#[test]
fn malformed_http_gets_4xx_and_5xx() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::start_default();
    let status = |bytes: &[u8]| {
        let out = exchange(&proxy, bytes);
        String::from_utf8_lossy(&out)
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(status(b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n"), "400");
    assert_eq!(status(b"GET https://x/ HTTP/1.1\r\n\r\n"), "400");
    assert_eq!(status(b"GET http://x\x01y/ HTTP/1.1\r\n\r\n"), "400");
    assert_eq!(status(b"CONNECT nohost HTTP/1.1\r\n\r\n"), "400");
    assert_eq!(
        status(
            b"GET http://x/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        "400"
    );
    assert_eq!(
        status(b"POST http://x/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        "501"
    );
    assert_eq!(
        status(b"GET http://x/ HTTP/1.1\r\nBad Header\r\n\r\n"),
        "400"
    );
    let mut huge = b"GET http://x/ HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70 * 1024));
    assert_eq!(status(&huge), "431");
    // Garbage that starts no protocol: closed without an answer.
    assert!(exchange(&proxy, b"\x00\x01\x02").is_empty());
    assert!(exchange(&proxy, b"get http://x/ HTTP/1.1\r\n\r\n").is_empty());
    // TLS to the proxy is not enabled on this listener: closed.
    assert!(exchange(&proxy, &[0x16, 3, 1, 0, 5]).is_empty());
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"client_protocol\""]) >= 10.0);
    still_serving(&proxy, &origin);
}

#[test]
fn slow_handshakes_time_out() {
    let origin = origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .config("cores = 2\n[timeouts]\nhandshake_ms = 400\n[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n")
        .start();
    // HTTP: a head that never completes gets 408 and a close.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // SOCKS5 stuck after the greeting, and a client that never speaks: closed.
    for first in [&[5u8, 1, 0][..], &[][..]] {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(first).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("closed, not hanging");
        assert!(out.len() <= 2);
    }
    // Keep-alive: the second request's head gets a handshake deadline of its own (the
    // session's clock starts one when its first byte arrives), though the first request
    // ended the first handshake long ago.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let get = format!(
        "GET http://{}/hello HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.addr
    );
    s.write_all(get.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // The head and the body may come in separate reads.
    while !answer.ends_with(b"hello\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(600));
    s.write_all(b"GET http://x/ HTTP/1.1\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "second head: {out}");
    // HTTP/2 with prior knowledge: half a preface, then nothing. The h2 crate's reads wait
    // on the session's clock like every other wait: closed at the handshake deadline.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("closed, not hanging");
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"handshake_timeout\""]) >= 5.0);
    still_serving(&proxy, &origin);
}
