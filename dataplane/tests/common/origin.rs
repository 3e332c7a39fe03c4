//! A small HTTP/1.1 origin server for forward-proxy tests (keep-alive, chunked, echo).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{spawn_server, Pattern};

pub struct Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

/// Starts an origin on `ip` ("127.0.0.1" or "::1").
pub fn start(ip: &str) -> Origin {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let addr = spawn_server(ip, move |s| {
        counter.fetch_add(1, Ordering::SeqCst);
        serve(s);
    });
    Origin { addr, connections }
}

fn read_body(r: &mut BufReader<TcpStream>, headers: &[(String, String)]) -> Option<Vec<u8>> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t).ok()?;
                    if t == "\r\n" || t.is_empty() {
                        return Some(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    }
    let len: usize = get("content-length").map_or(Some(0), |v| v.trim().parse().ok())?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

fn serve(stream: TcpStream) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut head = request_line.clone();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let Some(body) = read_body(&mut r, &headers) else {
            return;
        };
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let close = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let ok = match (
            method,
            path.split('/').nth(1).unwrap_or(""),
            path.split('/').nth(2),
        ) {
            ("GET", "hello", _) => respond(&mut w, b"hello\n"),
            ("GET", "headers", _) => respond(&mut w, head.as_bytes()),
            ("POST", "echo", _) | ("PUT", "echo", _) => respond(&mut w, &body),
            ("GET", "bytes", Some(n)) => {
                let n: u64 = n.parse().unwrap_or(0);
                write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").is_ok()
                    && stream_pattern(&mut w, n)
            }
            ("GET", "chunked", Some(n)) => {
                let n: usize = n.parse().unwrap_or(0);
                let mut body = vec![0u8; n];
                Pattern::new(n as u64).fill(&mut body);
                let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for c in body.chunks(1000) {
                    out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
                w.write_all(&out).is_ok()
            }
            ("GET", "close", Some(n)) => {
                let n: u64 = n.parse().unwrap_or(0);
                let _ = write!(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                stream_pattern(&mut w, n);
                return;
            }
            _ => write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_ok(),
        };
        if !ok || close {
            return;
        }
    }
}

fn respond(w: &mut TcpStream, body: &[u8]) -> bool {
    write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n", body.len()).is_ok()
        && w.write_all(body).is_ok()
}

fn stream_pattern(w: &mut TcpStream, n: u64) -> bool {
    let mut p = Pattern::new(n);
    let mut buf = vec![0u8; 65536];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..k]);
        if w.write_all(&buf[..k]).is_err() {
            return false;
        }
        left -= k as u64;
    }
    true
}

/// The body `/bytes/N` and `/chunked/N` serve.
pub fn expected(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Pattern::new(n as u64).fill(&mut v);
    v
}
