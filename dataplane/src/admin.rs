//! Admin HTTP listener: /metrics, /healthz, /readyz. Off the data path, on its own thread,
//! one request at a time with short timeouts (it serves scrapers and probes, not clients).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics;
use crate::shared::Shared;

const MAX_REQUEST: usize = 8192;

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn read_path(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return req.path.map(str::to_string),
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => continue,
            _ => return None,
        }
    }
}

fn handle(shared: &Shared, started: Instant, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Some(path) = read_path(&mut stream) else {
        respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
        );
        return;
    };
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            let ready = if shared.is_ready() { 1.0 } else { 0.0 };
            let uptime = started.elapsed().as_secs_f64();
            let mut text = metrics::render(
                &shared.metrics,
                &[
                    (
                        "zcproxy_ready",
                        "1 when every core listens and the proxy is not draining",
                        ready,
                    ),
                    (
                        "zcproxy_cores",
                        "Shards (cores) serving",
                        shared.cores as f64,
                    ),
                    ("zcproxy_uptime_seconds", "Seconds since start", uptime),
                    (
                        "zcproxy_ktls_available",
                        "1 when the kernel accepted the tls ULP at start",
                        if shared.ktls { 1.0 } else { 0.0 },
                    ),
                    (
                        "zcproxy_resolver_in_flight",
                        "Host names being resolved now, for all cores",
                        shared.workers.resolver.in_flight() as f64,
                    ),
                ],
            );
            shared.policy_status.render(&mut text);
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &text);
        }
        "/healthz" => respond(&mut stream, "200 OK", "text/plain", "ok\n"),
        "/readyz" => {
            if shared.is_ready() {
                respond(&mut stream, "200 OK", "text/plain", "ready\n");
            } else {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    if shared.policy_status.is_stale() {
                        "not ready: policy stale\n"
                    } else {
                        "not ready\n"
                    },
                );
            }
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n"),
    }
}

/// Serves the admin endpoints until the process exits.
pub fn start(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    let started = Instant::now();
    std::thread::Builder::new()
        .name("zcproxy-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => handle(&shared, started, s),
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(())
}
