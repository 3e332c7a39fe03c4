//! Admin HTTP listener, off the data path: `GET /metrics`, `/healthz`, `/readyz` for scrapers
//! and probes, and `POST /drain`, `POST /reload` for operators (from loopback, or with the
//! admin token). Served by hyper on a thread of its own with a current-thread tokio
//! runtime: connections are served side by side, each bounded in time, so a slow scraper
//! cannot hold up a health probe (the hand-written loop before served one at a time).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::metrics;
use crate::reload::Reloader;
use crate::shared::Shared;

/// Admin connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head, and a connection may last.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints act on.
pub struct Admin {
    pub shared: Arc<Shared>,
    /// `None` when there is nothing to reload from (no configuration file).
    pub reloader: Option<Arc<Reloader>>,
    /// Lets non-loopback clients use `POST /drain` and `/reload` (`Authorization: Bearer …`).
    pub token: Option<String>,
}

/// Serves the admin endpoints until the process exits.
pub fn start(admin: Admin, listener: TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = Arc::new(admin);
    std::thread::Builder::new()
        .name("zcproxy-admin".into())
        .spawn(move || runtime.block_on(serve(admin, listener)))?;
    Ok(())
}

async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    let started = Instant::now();
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, req, peer, started).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    text(status, "text/plain", body)
}

async fn route(
    admin: &Admin,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
) -> Response<Full<Bytes>> {
    let shared = &admin.shared;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(shared, started),
        ),
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if shared.is_ready() => plain(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") if shared.policy_status.is_stale() => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "not ready: policy stale\n")
        }
        (&Method::GET, "/readyz") => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::POST, "/drain" | "/reload")
            if !allowed(admin.token.as_deref(), req.headers(), peer) =>
        {
            tracing::warn!(%peer, path = req.uri().path(), "admin request refused: not from loopback and no valid token");
            plain(
                StatusCode::FORBIDDEN,
                "forbidden: Authorization: Bearer <admin token> (or, without one configured, from loopback)\n",
            )
        }
        (&Method::POST, "/drain") => {
            tracing::info!(%peer, "drain requested over the admin listener");
            // The same path as SIGTERM: readiness off, listeners closed, live connections
            // given drain_secs, then the process exits 0.
            // SAFETY: raise only queues a signal for this process.
            if unsafe { libc::raise(libc::SIGTERM) } != 0 {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "drain not started\n");
            }
            plain(StatusCode::ACCEPTED, "draining\n")
        }
        (&Method::POST, "/reload") => {
            let Some(reloader) = admin.reloader.clone() else {
                return plain(
                    StatusCode::CONFLICT,
                    "nothing to reload: the proxy runs without a configuration file\n",
                );
            };
            tracing::info!(%peer, "reload requested over the admin listener");
            match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(Ok(report)) => {
                    log_report(&report);
                    text(StatusCode::OK, "text/plain", report.join("\n") + "\n")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reload refused");
                    text(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "text/plain",
                        format!("not reloaded: {e}\n"),
                    )
                }
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "reload failed\n"),
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/drain" | "/reload") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Logs what a reload did, a line each.
pub fn log_report(report: &[String]) {
    for line in report {
        tracing::info!("reload: {line}");
    }
}

/// Operator actions need the admin token where one is configured (from every client: a
/// local sidecar or reverse proxy connects from loopback too); without one, they come from
/// the proxy's own host only.
fn allowed(token: Option<&str>, headers: &http::HeaderMap, peer: SocketAddr) -> bool {
    let Some(token) = token else {
        return policy::address::canonical(peer.ip()).is_loopback();
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return false;
    };
    // Compared in constant time: a keyed hash of each, then the digests.
    let key = [0x5a; 32];
    blake3::keyed_hash(&key, token.as_bytes()) == blake3::keyed_hash(&key, given.trim().as_bytes())
}

fn render_metrics(shared: &Shared, started: Instant) -> String {
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
    crate::packet_io::af_xdp::plane::render_verdicts(&mut text, shared.xdp.get().map(|p| &**p));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_actions_need_loopback_or_the_token() {
        let mut with = http::HeaderMap::new();
        with.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        let mut wrong = http::HeaderMap::new();
        wrong.insert(http::header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        let none = http::HeaderMap::new();
        let remote: SocketAddr = "198.18.0.7:4000".parse().unwrap();
        for local in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(allowed(None, &none, local.parse().unwrap()), "{local}");
            // With a token, loopback needs it too.
            assert!(
                !allowed(Some("s3cret"), &none, local.parse().unwrap()),
                "{local}"
            );
            assert!(
                allowed(Some("s3cret"), &with, local.parse().unwrap()),
                "{local}"
            );
        }
        assert!(allowed(Some("s3cret"), &with, remote));
        assert!(!allowed(Some("s3cret"), &wrong, remote));
        assert!(!allowed(Some("s3cret"), &none, remote));
        assert!(
            !allowed(None, &with, remote),
            "no token configured: loopback only"
        );
    }
}
