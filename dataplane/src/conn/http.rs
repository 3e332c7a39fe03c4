//! HTTP/1.1 driver: forward proxying of absolute-form requests with keep-alive, and CONNECT
//! tunnels. Request bodies and fixed-length or close-delimited response bodies move with
//! splice; chunked bodies are scanned for their end and copied.

use std::net::SocketAddr;
use std::time::Instant;

use policy::Protocol;
use proto::chunked::ChunkedDecoder;
use proto::http::{self, BodyLength, RequestHead, MAX_HEAD};
use proto::proxy_status;
use proto::{Failure, FailureKind, TargetAddr};

use super::{run_tunnel, ProtocolGuard};
use crate::admission::{self, Principal};
use crate::live::TunnelPermit;
use crate::metrics::ErrorKind;
use crate::relay::{self, RelayError, Side};
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::{BufStream, Expired, ReadError};

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
    /// Nothing sent yet: answer for this failure first.
    Fail(Failure),
}

fn fail(kind: FailureKind, detail: &str) -> Abort {
    Abort::Fail(Failure::new(kind, detail))
}

async fn respond(client: &BufStream, status: u16, extra: &[(&str, &str)], body: &str) {
    let _ = client
        .write_all(&http::simple_response(status, extra, body, true))
        .await;
}

/// The answer HTTP gives for a failure: its status, `Proxy-Authenticate` where credentials
/// would help, `Proxy-Status` (RFC 9209) where the RFC has an error type for it.
async fn respond_failure(shard: &Shard, client: &BufStream, failure: &Failure) {
    let (status, fields) = proxy_status::answer(&shard.shared.config.via_name, failure);
    let extra: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    respond(client, status, &extra, &format!("{}\n", failure.detail)).await
}

/// Identifies the client of one request under the policy in force now: Basic credentials,
/// or anonymous where the policy allows it. The previous request's destination (and its
/// kept-alive upstream) stays granted until here; its principal until this one's is known.
async fn identify(
    shard: &Shard,
    session: &Session,
    head: &RequestHead,
) -> Result<Principal, Failure> {
    session.clear_destination();
    let value = head.header("proxy-authorization");
    admission::identify(shard, session, value).await
}

/// Reads the next request head: up to the idle timeout for its first byte (keep-alive), then
/// a new handshake deadline for the rest of it (slowloris); every wait is the stream's,
/// bounded by the session's deadlines.
async fn read_head(
    shard: &Shard,
    session: &Session,
    client: &mut BufStream,
    first: bool,
) -> Option<RequestHead> {
    if !first {
        if client.buffered().is_empty() {
            match client.read_more().await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
        session.deadlines().next_handshake();
    }
    match client.read_message(MAX_HEAD, http::parse_request).await {
        Ok(head) => Some(head),
        Err(ReadError::Io(e)) if Expired::of(&e).is_some() => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            respond(client, 408, &[], "request head not received in time\n").await;
            None
        }
        Err(ReadError::Eof | ReadError::Io(_)) => None,
        Err(ReadError::TooLarge) => {
            shard.metrics().error(ErrorKind::ClientProtocol);
            respond(client, 431, &[], "request head too large\n").await;
            None
        }
        Err(ReadError::Protocol(e)) => {
            shard.metrics().error(ErrorKind::ClientProtocol);
            respond(client, e.status(), &[], &format!("{e}\n")).await;
            None
        }
    }
}

pub async fn serve(shard: &Shard, session: &Session, mut client: BufStream, started: Instant) {
    let mut upstream: Option<Upstream> = None;
    let mut first = true;
    let mut started = started;
    loop {
        let Some(head) = read_head(shard, session, &mut client, first).await else {
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
        let principal = match identify(shard, session, &head).await {
            Ok(p) => p,
            Err(f) => return respond_failure(shard, &client, &f).await,
        };
        if head.is_connect() {
            let target = head.target_addr();
            match admission::admit(shard, session, &principal, Protocol::Connect, target).await {
                Ok(admitted) => {
                    let ok = http::simple_response(200, &[], "", false);
                    if client.write_all(&ok).await.is_ok() {
                        let _permit = admitted.permit;
                        run_tunnel(shard, client, admitted.stream, started).await;
                    }
                }
                Err(f) => respond_failure(shard, &client, &f).await,
            }
            return;
        }
        let request = Request {
            head: &head,
            principal: &principal,
            started,
        };
        match forward(shard, session, &mut client, &request, &mut upstream).await {
            Ok(true) => continue,
            Ok(false) | Err(Abort::Close) => return,
            Err(Abort::Fail(f)) => return respond_failure(shard, &client, &f).await,
        }
    }
}

/// One forwarded request: its head, who sent it, and when it started.
struct Request<'a> {
    head: &'a RequestHead,
    principal: &'a Principal,
    started: Instant,
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
    request: &Request<'_>,
    slot: &mut Option<Upstream>,
) -> Result<bool, Abort> {
    let head = request.head;
    let target = head.target_addr();
    let replayable = !head.expects_continue() && matches!(head.body_length(), Ok(BodyLength::None));
    for attempt in 0..2 {
        let reused = upstream_for(shard, session, request, slot).await?;
        let retry_allowed = reused && replayable && attempt == 0;
        match exchange(shard, client, request, slot, retry_allowed).await? {
            Exchange::Done(keep_alive) => return Ok(keep_alive),
            Exchange::Stale => {
                tracing::debug!(%target, "kept-alive upstream was closed; sending again");
                *slot = None;
            }
        }
    }
    Err(fail(
        FailureKind::UpstreamClosed,
        "upstream closed the connection",
    ))
}

/// Makes `slot` hold a usable upstream for the request: the kept-alive one when the policy
/// in force still allows it (returns true), else a new one through the gate.
async fn upstream_for(
    shard: &Shard,
    session: &Session,
    request: &Request<'_>,
    slot: &mut Option<Upstream>,
) -> Result<bool, Abort> {
    let target = request.head.target_addr();
    let reusable = slot.as_ref().is_some_and(|u| {
        &u.target == target
            && admission::readmit(
                shard,
                session,
                request.principal,
                Protocol::Http,
                target,
                u.peer,
            )
    });
    if reusable {
        return Ok(true);
    }
    // Dropped before dialling again: a stale connection must not be counted as the grant.
    *slot = None;
    let admitted = admission::admit(shard, session, request.principal, Protocol::Http, target)
        .await
        .map_err(Abort::Fail)?;
    *slot = Some(Upstream {
        target: target.clone(),
        peer: admitted.peer,
        conn: BufStream::new(admitted.stream),
        _permit: admitted.permit,
    });
    Ok(false)
}

async fn exchange(
    shard: &Shard,
    client: &mut BufStream,
    request: &Request<'_>,
    slot: &mut Option<Upstream>,
    retry_allowed: bool,
) -> Result<Exchange, Abort> {
    let head = request.head;
    let Some(up) = slot.as_mut() else {
        return Err(fail(FailureKind::Internal, "no upstream connection"));
    };
    shard
        .metrics()
        .handshake_seconds
        .observe(request.started.elapsed());
    if head.expects_continue() {
        // Expect is not forwarded; the proxy answers it so the client sends its body now.
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Abort::Close)?;
    }
    let via = &shard.shared.config.via_name;
    if up.conn.write_all(&head.encode_upstream(via)).await.is_err() {
        if retry_allowed {
            return Ok(Exchange::Stale);
        }
        return Err(fail(
            FailureKind::UpstreamClosed,
            "upstream closed the connection",
        ));
    }
    let request_body = head.body_length().map_err(|_| Abort::Close)?;
    match transfer_body(shard, client, Side::Client, &mut up.conn, request_body).await {
        Ok(()) => {}
        // Nothing has been sent to the client yet: it learns why.
        Err(BodyError(Side::Upstream)) => {
            shard.metrics().error(ErrorKind::UpstreamProtocol);
            return Err(fail(
                FailureKind::UpstreamClosed,
                "upstream failed while taking the request body",
            ));
        }
        Err(BodyError(Side::Client)) => return Err(Abort::Close),
    }

    let response = loop {
        let read = up.conn.read_message(MAX_HEAD, http::parse_response);
        let timed_out = || {
            shard.metrics().error(ErrorKind::UpstreamTimeout);
            fail(FailureKind::ResponseTimeout, "no response head in time")
        };
        let resp = match read.await {
            Err(ReadError::Io(e)) if Expired::of(&e).is_some() => return Err(timed_out()),
            Err(ReadError::Eof | ReadError::Io(_))
                if retry_allowed && up.conn.buffered().is_empty() =>
            {
                return Ok(Exchange::Stale);
            }
            Err(e) => {
                shard.metrics().error(ErrorKind::UpstreamProtocol);
                let detail = match e {
                    ReadError::Protocol(p) => p.to_string(),
                    _ => "upstream closed before a whole response head".into(),
                };
                return Err(fail(FailureKind::UpstreamProtocol, &detail));
            }
            Ok(r) => r,
        };
        // Interim responses are not relayed: Expect was answered by the proxy.
        if !resp.is_informational() {
            break resp;
        }
    };
    let body = response.body_length(&head.method);
    let close = head.wants_close() || response.server_closes() || body == BodyLength::UntilClose;
    client
        .write_all(&response.encode_downstream(via, close))
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
    dst.write_all(&part)
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
        Some(l) => src
            .buffered()
            .len()
            .min(usize::try_from(l).unwrap_or(usize::MAX)),
        None => src.buffered().len(),
    };
    let early = src.take_front(buffered);
    send_buffered(shard, src_side, dst, early).await?;
    let rest = limit.map(|l| l - buffered as u64);
    if rest == Some(0) {
        return Ok(());
    }
    let moved = relay::transfer(
        &shard.relay_env(),
        src.stream(),
        src_side,
        dst.stream(),
        rest,
    )
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
        if !src.buffered().is_empty() {
            let n = decoder
                .feed(src.buffered())
                .map_err(|_| BodyError(src_side))?;
            let part = src.take_front(n);
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
