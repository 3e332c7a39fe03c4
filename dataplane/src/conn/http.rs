//! HTTP/1.1 driver: forward proxying of absolute-form requests with keep-alive, and CONNECT
//! tunnels. Request bodies and fixed-length or close-delimited response bodies move with
//! splice; chunked bodies are scanned for their end and copied.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use policy::Protocol;

use super::bufstream::{BufStream, ReadError};
use super::upstream::{self, OpenError};
use super::{left, run_tunnel, ProtocolGuard};
use crate::live::TunnelPermit;
use crate::metrics::ErrorKind;
use crate::proto::chunked::ChunkedDecoder;
use crate::proto::http::{self, BodyLength, RequestHead, MAX_HEAD};
use crate::proto::TargetAddr;
use crate::relay::{self, RelayError, Side};
use crate::sessions::Session;
use crate::shard::Shard;

const PROXY_AUTHENTICATE: (&str, &str) = ("Proxy-Authenticate", "Basic realm=\"zcproxy\"");

/// A kept-alive upstream connection and the destination it serves.
struct Upstream {
    target: TargetAddr,
    peer: SocketAddr,
    conn: BufStream,
    _permit: Option<TunnelPermit>,
}

/// Why a forwarded exchange stopped; each ends the client connection.
enum Abort {
    /// A response was already (partly) sent, or the client is gone: just close.
    Close,
    /// Nothing sent yet: answer with this status first.
    Status(u16, &'static str),
}

async fn respond(client: &mut BufStream, status: u16, extra: &[(&str, &str)], body: &str) {
    let _ = client
        .write_all(http::simple_response(status, extra, body, true))
        .await;
}

/// An error response carrying a `Proxy-Status` error type (RFC 9209).
async fn respond_proxy_error(client: &mut BufStream, status: u16, error: &str, detail: &str) {
    let proxy_status = format!("zcproxy; error={error}");
    respond(
        client,
        status,
        &[("Proxy-Status", &proxy_status)],
        &format!("{detail}\n"),
    )
    .await
}

async fn respond_open_error(client: &mut BufStream, e: &OpenError) {
    match e {
        OpenError::UserLimit => respond(client, 429, &[], "tunnel limit reached\n").await,
        OpenError::Revoked => {
            respond(
                client,
                407,
                &[PROXY_AUTHENTICATE],
                "proxy credentials revoked\n",
            )
            .await
        }
        OpenError::Dial(d) => {
            respond_proxy_error(client, d.http_status(), d.proxy_status(), &d.to_string()).await
        }
    }
}

/// Identifies the client of one request, under the policy in force now: Basic credentials,
/// or anonymous where the policy allows it.
async fn identify(shard: &Shard, session: &Session, head: &RequestHead) -> Result<(), ()> {
    session.restart(shard.policy());
    match head.proxy_credentials() {
        Ok(Some(creds)) => upstream::authenticate(shard, session, &creds.user, &creds.password)
            .await
            .map(drop)
            .map_err(drop),
        Ok(None) if session.policy().anonymous_allowed(session.client.ip()) => Ok(()),
        Ok(None) | Err(_) => {
            shard.metrics().auth_failures.inc();
            Err(())
        }
    }
}

/// Reads the next request head: up to the idle timeout for its first byte (keep-alive), then
/// the handshake timeout for the rest of it (slowloris).
async fn read_head(
    shard: &Shard,
    client: &mut BufStream,
    first: bool,
    deadline: Instant,
) -> Option<RequestHead> {
    let timeouts = &shard.shared.config.timeouts;
    let deadline = if !first && client.buf.is_empty() {
        match monoio::time::timeout(timeouts.idle(), client.read_more()).await {
            Ok(Ok(n)) if n > 0 => Instant::now() + timeouts.handshake(),
            _ => return None,
        }
    } else {
        deadline
    };
    match monoio::time::timeout(
        left(deadline),
        client.read_message(MAX_HEAD, http::parse_request),
    )
    .await
    {
        Ok(Ok(head)) => Some(head),
        Ok(Err(ReadError::Eof | ReadError::Io(_))) => None,
        Ok(Err(ReadError::TooLarge)) => {
            shard.metrics().error(ErrorKind::ClientProtocol);
            respond(client, 431, &[], "request head too large\n").await;
            None
        }
        Ok(Err(ReadError::Protocol(e))) => {
            shard.metrics().error(ErrorKind::ClientProtocol);
            respond(client, e.status(), &[], &format!("{e}\n")).await;
            None
        }
        Err(_) => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            respond(client, 408, &[], "request head not received in time\n").await;
            None
        }
    }
}

pub async fn serve(
    shard: &Shard,
    session: &Session,
    mut client: BufStream,
    started: Instant,
    deadline: Instant,
) {
    let mut upstream: Option<Upstream> = None;
    let mut first = true;
    let mut started = started;
    loop {
        let Some(head) = read_head(shard, &mut client, first, deadline).await else {
            return;
        };
        if !first {
            started = Instant::now();
        }
        first = false;
        let protocol = if head.is_connect() {
            Protocol::Connect
        } else {
            Protocol::Http
        };
        let _open = ProtocolGuard::new(shard, protocol);
        if identify(shard, session, &head).await.is_err() {
            respond(
                &mut client,
                407,
                &[PROXY_AUTHENTICATE],
                "proxy authentication required\n",
            )
            .await;
            return;
        }
        if head.is_connect() {
            match upstream::open(shard, session, Protocol::Connect, head.target_addr()).await {
                Ok(opened) => {
                    if client
                        .write_all(http::simple_response(200, &[], "", false))
                        .await
                        .is_ok()
                    {
                        let _permit = opened.permit;
                        run_tunnel(shard, client, opened.stream, started).await;
                    }
                }
                Err(e) => respond_open_error(&mut client, &e).await,
            }
            return;
        }
        match forward(shard, session, &mut client, &head, &mut upstream, started).await {
            Ok(true) => continue,
            Ok(false) => return,
            Err(Abort::Close) => return,
            Err(Abort::Status(status, why)) => {
                respond_proxy_error(&mut client, status, why, why).await;
                return;
            }
        }
    }
}

/// What one attempt at an exchange came to.
enum Exchange {
    /// `keep_alive`.
    Done(bool),
    /// A kept-alive upstream turned out closed (the origin's idle timeout) before a byte of
    /// the response arrived; the request has no body, so it can go out again.
    Stale,
}

/// Forwards one request and its response. `Ok(keep_alive)`. A body-less request that fails
/// on a reused upstream connection before any response byte is sent once more on a fresh
/// connection, as a browser would: the origin closed the idle connection meanwhile.
async fn forward(
    shard: &Shard,
    session: &Session,
    client: &mut BufStream,
    head: &RequestHead,
    slot: &mut Option<Upstream>,
    started: Instant,
) -> Result<bool, Abort> {
    let target = head.target_addr().clone();
    let replayable = !head.expects_continue() && matches!(head.body_length(), Ok(BodyLength::None));
    for attempt in 0..2 {
        let reused = upstream_for(shard, session, client, &target, slot).await?;
        let retry_allowed = reused && replayable && attempt == 0;
        match exchange(shard, client, head, slot, started, retry_allowed).await? {
            Exchange::Done(keep_alive) => return Ok(keep_alive),
            Exchange::Stale => {
                tracing::debug!(%target, "kept-alive upstream was closed; sending again");
                *slot = None;
            }
        }
    }
    Err(Abort::Status(502, "connection_terminated"))
}

/// Makes `slot` hold a usable upstream for `target`: the kept-alive one when the policy
/// still allows it (returns true), else a new one.
async fn upstream_for(
    shard: &Shard,
    session: &Session,
    client: &mut BufStream,
    target: &TargetAddr,
    slot: &mut Option<Upstream>,
) -> Result<bool, Abort> {
    let reusable = slot.as_ref().is_some_and(|u| {
        &u.target == target && upstream::may_reuse(session, Protocol::Http, target, u.peer)
    });
    if let (true, Some(up)) = (reusable, slot.as_ref()) {
        let fd = up.conn.stream.as_raw_fd();
        session.established(Protocol::Http, target.host_name(), up.peer, fd);
        return Ok(true);
    }
    *slot = None;
    match upstream::open(shard, session, Protocol::Http, target).await {
        Ok(opened) => {
            *slot = Some(Upstream {
                target: target.clone(),
                peer: opened.peer,
                conn: BufStream::new(opened.stream),
                _permit: opened.permit,
            });
            Ok(false)
        }
        Err(e) => {
            respond_open_error(client, &e).await;
            Err(Abort::Close)
        }
    }
}

async fn exchange(
    shard: &Shard,
    client: &mut BufStream,
    head: &RequestHead,
    slot: &mut Option<Upstream>,
    started: Instant,
    retry_allowed: bool,
) -> Result<Exchange, Abort> {
    let Some(up) = slot.as_mut() else {
        return Err(Abort::Status(502, "proxy_internal_error"));
    };
    shard.metrics().handshake_seconds.observe(started.elapsed());
    if head.expects_continue() {
        // Expect is not forwarded; the proxy answers it so the client sends its body now.
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await
            .map_err(|_| Abort::Close)?;
    }
    let via = &shard.shared.config.via_name;
    if up.conn.write_all(head.encode_upstream(via)).await.is_err() {
        if retry_allowed {
            return Ok(Exchange::Stale);
        }
        return Err(Abort::Status(502, "connection_terminated"));
    }
    let request_body = head.body_length().map_err(|_| Abort::Close)?;
    match transfer_body(shard, client, Side::Client, &mut up.conn, request_body).await {
        Ok(()) => {}
        // Nothing has been sent to the client yet: it learns why.
        Err(BodyError(Side::Upstream)) => {
            shard.metrics().error(ErrorKind::UpstreamProtocol);
            return Err(Abort::Status(502, "connection_terminated"));
        }
        Err(BodyError(Side::Client)) => return Err(Abort::Close),
    }

    let response = loop {
        let read = up.conn.read_message(MAX_HEAD, http::parse_response);
        let resp = match monoio::time::timeout(shard.shared.config.timeouts.idle(), read).await {
            Err(_) => {
                shard.metrics().error(ErrorKind::UpstreamTimeout);
                return Err(Abort::Status(504, "http_response_timeout"));
            }
            Ok(Err(ReadError::Eof | ReadError::Io(_)))
                if retry_allowed && up.conn.buf.is_empty() =>
            {
                return Ok(Exchange::Stale);
            }
            Ok(Err(_)) => {
                shard.metrics().error(ErrorKind::UpstreamProtocol);
                return Err(Abort::Status(502, "http_protocol_error"));
            }
            Ok(Ok(r)) => r,
        };
        // Interim responses are not relayed: Expect was answered by the proxy.
        if !resp.is_informational() {
            break resp;
        }
    };
    let body = response.body_length(&head.method);
    let close = head.wants_close() || response.server_closes() || body == BodyLength::UntilClose;
    client
        .write_all(response.encode_downstream(via, close))
        .await
        .map_err(|_| Abort::Close)?;
    transfer_body(shard, &mut up.conn, Side::Upstream, client, body)
        .await
        .map_err(|_| Abort::Close)?;
    if response.server_closes() || body == BodyLength::UntilClose {
        *slot = None;
    }
    Ok(Exchange::Done(!close))
}

/// A body transfer failed; the side at fault.
#[derive(Debug)]
struct BodyError(Side);

/// Moves one message body from `src` to `dst`.
async fn transfer_body(
    shard: &Shard,
    src: &mut BufStream,
    src_side: Side,
    dst: &mut BufStream,
    length: BodyLength,
) -> Result<(), BodyError> {
    match length {
        BodyLength::None => Ok(()),
        BodyLength::Fixed(n) => forward_bytes(shard, src, src_side, dst, Some(n)).await,
        BodyLength::UntilClose => forward_bytes(shard, src, src_side, dst, None).await,
        BodyLength::Chunked => forward_chunked(shard, src, src_side, dst).await,
    }
}

fn direction_counter(shard: &Shard, src_side: Side) -> &crate::metrics::Counter {
    match src_side {
        Side::Client => &shard.metrics().bytes_client_to_upstream,
        Side::Upstream => &shard.metrics().bytes_upstream_to_client,
    }
}

/// Sends buffered body bytes through user space (they were already read) and counts them.
async fn send_buffered(
    shard: &Shard,
    src_side: Side,
    dst: &mut BufStream,
    part: Vec<u8>,
) -> Result<(), BodyError> {
    direction_counter(shard, src_side).add(part.len() as u64);
    shard.metrics().copy_bytes.add(part.len() as u64);
    dst.write_all(part)
        .await
        .map_err(|_| BodyError(src_side.other()))
}

/// `limit` bytes, or everything until `src` closes: what is buffered first, then the rest
/// spliced straight from socket to socket.
async fn forward_bytes(
    shard: &Shard,
    src: &mut BufStream,
    src_side: Side,
    dst: &mut BufStream,
    limit: Option<u64>,
) -> Result<(), BodyError> {
    let buffered = match limit {
        Some(l) => src.buf.len().min(usize::try_from(l).unwrap_or(usize::MAX)),
        None => src.buf.len(),
    };
    let early: Vec<u8> = src.buf.drain(..buffered).collect();
    send_buffered(shard, src_side, dst, early).await?;
    let rest = limit.map(|l| l - buffered as u64);
    if rest == Some(0) {
        return Ok(());
    }
    let moved = relay::transfer(&shard.relay_env(), &src.stream, src_side, &dst.stream, rest)
        .await
        .map_err(|e| match e {
            RelayError::Reset(side) | RelayError::Io(side, _) => BodyError(side),
            RelayError::Idle => BodyError(src_side),
        })?;
    match rest {
        // The source closed before the announced length.
        Some(r) if moved < r => Err(BodyError(src_side)),
        _ => Ok(()),
    }
}

/// A chunked body, forwarded with its framing; the decoder finds where it ends.
async fn forward_chunked(
    shard: &Shard,
    src: &mut BufStream,
    src_side: Side,
    dst: &mut BufStream,
) -> Result<(), BodyError> {
    let mut decoder = ChunkedDecoder::default();
    loop {
        if !src.buf.is_empty() {
            let n = decoder.feed(&src.buf).map_err(|_| BodyError(src_side))?;
            let part: Vec<u8> = src.buf.drain(..n).collect();
            send_buffered(shard, src_side, dst, part).await?;
            if decoder.is_done() {
                return Ok(());
            }
        }
        match src.read_more().await {
            Ok(0) | Err(_) => return Err(BodyError(src_side)),
            Ok(_) => {}
        }
    }
}
