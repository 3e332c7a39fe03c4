//! Connection drivers: the IO around the sans-IO protocol cores.

pub mod bind;
pub mod h2;
pub mod h3;
pub mod http;
mod proxy_request;
pub mod socks4;
pub mod socks5;
mod socks_commands;
mod socks_udp;
mod tls_accept;
mod udp_flow;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use policy::Protocol;
use proto::sniff::{sniff, Sniffed};

use crate::admission;
use crate::metrics::ErrorKind;
use crate::relay::{self, RelayError};
use crate::rt::TcpStream;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::{BufStream, Expired, Stream};

/// How long before the shard's drain deadline multiplexed connections (h2, h3) cut the
/// streams still open, and how long their closing frame is given to go out.
const CLOSE_MARGIN: Duration = Duration::from_millis(250);
const CLOSE_FLUSH: Duration = Duration::from_millis(100);

/// Runs a protocol's handshake under the session's handshake deadline. An expiry anywhere
/// in it (one of the stream's waits, or the whole) is counted once as a handshake timeout;
/// `None` when the handshake failed or expired.
async fn handshake<T>(
    shard: &Shard,
    session: &Session,
    work: impl std::future::Future<Output = Option<T>>,
) -> Option<T> {
    match session.within(work).await {
        Ok(Some(v)) => Some(v),
        Ok(None) if session.deadlines().expired_now().is_none() => None,
        _ => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            None
        }
    }
}

/// Marks a connection as open for `protocol` in the metrics for as long as it lives.
pub struct ProtocolGuard<'a> {
    shard: &'a Shard,
    protocol: Protocol,
}

impl<'a> ProtocolGuard<'a> {
    pub fn new(shard: &'a Shard, protocol: Protocol) -> Self {
        shard.metrics().protocol_opened(protocol);
        ProtocolGuard { shard, protocol }
    }
}

impl Drop for ProtocolGuard<'_> {
    fn drop(&mut self) {
        self.shard.metrics().protocol_closed(self.protocol);
    }
}

/// Serves one accepted client connection to the end, or until a policy change revokes it
/// (its sockets then close with a reset as the task drops them).
pub async fn serve(shard: &Shard, socket: TcpStream, peer: SocketAddr) {
    let session = shard.session(peer);
    let stream = admission::session_stream(&session, socket);
    let started = Instant::now();
    let client = BufStream::new(stream);
    let serving = serve_client(shard, &session, client, started, true);
    if session.unless_revoked(serving).await.is_none() {
        shard.metrics().error(ErrorKind::PolicyRevoked);
    }
}

/// Reads a client's first bytes (or those of the plaintext inside its TLS) and hands it to
/// the driver of the protocol they show; TLS is terminated where `tls` allows (not inside
/// TLS). One level of async calls on the plain path: each level keeps its own copy of the
/// client's state in the task, and idle tunnels are counted in thousands.
async fn serve_client(
    shard: &Shard,
    session: &Session,
    client: BufStream,
    started: Instant,
    tls: bool,
) {
    let peer = session.client;
    let Some(client) = first_bytes(shard, client).await else {
        return;
    };
    match sniff(client.buffered()) {
        Ok(Some(Sniffed::Socks5)) => socks5::serve(shard, session, client, started).await,
        Ok(Some(Sniffed::Socks4)) => socks4::serve(shard, session, client, started).await,
        Ok(Some(Sniffed::Http)) if is_h2_preface(client.buffered()) => {
            if shard.shared.config.h2.enabled {
                // Boxed: a plain client's task must not carry this path's state.
                Box::pin(h2::serve(shard, session, client)).await
            } else {
                tracing::debug!(%peer, "HTTP/2 is not enabled");
                shard.metrics().error(ErrorKind::ClientProtocol);
            }
        }
        Ok(Some(Sniffed::Http)) => http::serve(shard, session, client, started).await,
        Ok(Some(Sniffed::Tls)) if tls => match &shard.shared.tls_tcp {
            // Boxed as h2 (with it inline, 7.0 KiB per idle plain tunnel instead of 4.8).
            Some(config) => {
                let config = config.clone();
                Box::pin(serve_tls(shard, session, client, config, started)).await
            }
            None => {
                tracing::debug!(%peer, "TLS to the proxy is not enabled on this listener");
                shard.metrics().error(ErrorKind::ClientProtocol);
            }
        },
        Ok(Some(Sniffed::Tls)) => {
            tracing::debug!(%peer, "TLS inside TLS refused");
            shard.metrics().error(ErrorKind::ClientProtocol);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(%peer, error = %e, "unrecognised protocol");
            shard.metrics().error(ErrorKind::ClientProtocol);
        }
    }
}

/// Terminates TLS and serves what is inside: HTTP/2 by ALPN, else whatever the plaintext is.
async fn serve_tls(
    shard: &Shard,
    session: &Session,
    client: BufStream,
    config: std::sync::Arc<rustls::ServerConfig>,
    started: Instant,
) {
    let Some(client) = tls_accept::accept(shard, client, config).await else {
        return;
    };
    let info = client.stream().tls_info();
    session.set_certified(
        info.as_ref()
            .and_then(|t| t.client_name.as_deref())
            .map(std::rc::Rc::from),
    );
    if info.is_some_and(|t| t.alpn.as_deref() == Some(b"h2")) {
        return h2::serve(shard, session, client).await;
    }
    // The plaintext may be any protocol of the port but TLS again.
    Box::pin(serve_client(shard, session, client, started, false)).await
}

/// Reads the first bytes of a client (or of the plaintext inside its TLS), within the
/// session's handshake deadline; `None` when there are none.
async fn first_bytes(shard: &Shard, mut client: BufStream) -> Option<BufStream> {
    match client.read_more().await {
        Ok(n) if n > 0 => Some(client),
        Err(e) if Expired::of(&e).is_some() => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            None
        }
        _ => None,
    }
}

/// Whether a client's first bytes are (the start of) the HTTP/2 connection preface: an
/// HTTP/2 client with prior knowledge, no TLS. No HTTP/1 request starts with `PRI `.
fn is_h2_preface(first: &[u8]) -> bool {
    let n = first.len().min(h2::PREFACE.len());
    n >= 4 && first[..n] == h2::PREFACE[..n]
}

/// A tunnel inside TLS goes to kernel TLS where this kernel has it, to be spliced; `None`
/// when the session was lost on the way (the client is reset).
fn kernel_tls(shard: &Shard, client: Stream) -> Option<Stream> {
    if !shard.shared.ktls || !client.is_tls() {
        return Some(client);
    }
    let (client, outcome) = client.into_kernel_tls();
    if let Err(why) = &outcome {
        tracing::debug!(error = %why, "the TLS tunnel stays in user space");
    }
    shard.metrics().tls.handover(outcome.as_ref().copied());
    client
}

/// Runs an established tunnel: forwards what the client sent early, then relays.
pub async fn run_tunnel(shard: &Shard, client: BufStream, upstream: Stream, started: Instant) {
    shard.metrics().handshake_seconds.observe(started.elapsed());
    let (client, early) = client.into_parts();
    if !early.is_empty() {
        shard
            .metrics()
            .bytes_client_to_upstream
            .add(early.len() as u64);
        shard.metrics().copy_bytes.add(early.len() as u64);
        if upstream.write_all(&early).await.is_err() {
            shard.metrics().error(ErrorKind::RelayReset);
            return;
        }
    }
    // The handshake buffer (8 KiB of capacity) must not live as long as the tunnel: idle
    // tunnels would each keep a touched page of it.
    drop(early);
    let Some(client) = kernel_tls(shard, client) else {
        return;
    };
    match relay::relay(&shard.relay_env(), &client, &upstream).await {
        Ok(()) => {}
        Err(RelayError::Idle) => shard.metrics().error(ErrorKind::IdleTimeout),
        Err(RelayError::Reset(_)) | Err(RelayError::Io(..)) => {
            shard.metrics().error(ErrorKind::RelayReset)
        }
    }
}
