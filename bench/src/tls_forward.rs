//! Forwarded plain-HTTP GETs over TLS to a proxy: HTTP/1.1 connections kept alive (one
//! request at a time on each) and streams of one HTTP/2 connection; requests per second.
//! What a browser sends an HTTPS proxy for `http://` URLs.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// An HTTP/1.1 origin with keep-alive: every request head is answered with [`ORIGIN_BODY`] bytes
/// (Content-Length); request bodies are not expected.
pub fn http_origin(port: u16) -> SocketAddr {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind origin");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || serve_origin(s));
        }
    });
    addr
}

fn serve_origin(s: TcpStream) {
    let mut reader = BufReader::new(&s);
    let mut writer = &s;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {ORIGIN_BODY}\r\n\r\n");
    let response = [head.as_bytes(), &[b'x'; ORIGIN_BODY]].concat();
    let mut line = String::new();
    loop {
        // The head, to its empty line.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

/// The body size of [`http_origin`]'s answers.
pub const ORIGIN_BODY: usize = 1024;

/// `total` GETs of `http://origin/` over `connections` TLS connections at once, each kept
/// alive for all of its requests; requests per second.
pub fn h1(
    proxy: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    origin: SocketAddr,
    connections: usize,
    total: usize,
) -> Result<f64, String> {
    let left = Arc::new(AtomicUsize::new(total));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (config, left) = (config.clone(), left.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let tcp = TcpStream::connect(proxy)?;
                tcp.set_nodelay(true)?;
                tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
                let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
                    .map_err(io::Error::other)?;
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
                while take_one(&left) {
                    tls.get_mut().write_all(request.as_bytes())?;
                    tls.get_mut().flush()?;
                    read_response(&mut tls)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| "a client thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn take_one(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Reads a 200 response with a Content-Length body.
fn read_response(r: &mut impl BufRead) -> io::Result<()> {
    let mut line = String::new();
    let mut length = None;
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("response: {line:?}")));
    }
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    let mut body = vec![0; length.ok_or_else(|| io::Error::other("no Content-Length"))?];
    r.read_exact(&mut body)
}

/// `total` GETs of `http://origin/` on streams of the HTTP/2 connection `client`,
/// `streams` at a time; requests per second.
pub async fn h2(
    client: h2::client::SendRequest<Bytes>,
    origin: SocketAddr,
    streams: usize,
    total: usize,
) -> Result<f64, String> {
    let left = Rc::new(Cell::new(total));
    let started = Instant::now();
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (client, left) = (client.clone(), left.clone());
            tokio::task::spawn_local(async move {
                while left.get() > 0 {
                    left.set(left.get() - 1);
                    let req = http::Request::get(format!("http://{origin}/"))
                        .body(())
                        .map_err(|e| e.to_string())?;
                    let mut client = client.clone().ready().await.map_err(|e| e.to_string())?;
                    let (resp, _) = client.send_request(req, true).map_err(|e| e.to_string())?;
                    let resp = resp.await.map_err(|e| e.to_string())?;
                    if resp.status() != 200 {
                        return Err(format!("status {}", resp.status()));
                    }
                    let mut body = resp.into_body();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.map_err(|e| e.to_string())?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
