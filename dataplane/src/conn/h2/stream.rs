//! One HTTP/2 stream: a session of its own (user, ACL decision, revoke handle), dispatched
//! by what it asks for. A client reset at any point ends only this stream; while the
//! request is being admitted (a password check, a dial) a reset stops that work at once.

use std::future::poll_fn;
use std::pin::pin;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Method, Request, StatusCode};
use policy::Protocol;
use proto::{Failure, FailureKind};

use super::{forward, tunnel, udp, Conn, ResetWatch};
use crate::admission::{self, Admitted};
use crate::conn::proxy_request::{connect_target, failure_response, identify};
use crate::conn::ProtocolGuard;
use crate::metrics::h2::{ResetBy, StreamKind};
use crate::metrics::ErrorKind;
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Both sides ended it, or it was answered with a status.
    Done,
    ResetByClient,
    /// The upstream broke, the tunnel went idle or its user was revoked.
    ResetByProxy,
}

/// The `:protocol` of an extended CONNECT (RFC 8441) that opens a CONNECT-UDP flow.
const CONNECT_UDP: &str = "connect-udp";

pub(super) async fn serve(
    shard: &Shard,
    conn: &Conn,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    resets: &ResetWatch,
) {
    let opened = Instant::now();
    let metrics = &shard.metrics().h2;
    let _active = metrics.streams_active.hold();
    let Some(_charge) = conn.buffers.charge(conn.stream_charge) else {
        // Nothing was done for it: the client may send it again (RFC 9113 §8.7).
        tracing::debug!(peer = %conn.peer, committed = shard.buffers.committed(), "HTTP/2 stream refused: the core's tunnel buffer budget is spent");
        shard.metrics().tunnel_buffer_refusals.inc();
        let mut respond = respond;
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        resets.stream_ended(opened, false);
        return;
    };
    let session = shard.session(conn.peer);
    session.set_certified(conn.certified.clone());
    let serving = handle(shard, conn, &session, req, respond);
    let ended = match session.unless_revoked(serving).await {
        Some(ended) => ended,
        None => {
            // Dropping the stream's halves unfinished resets it (CANCEL).
            shard.metrics().error(ErrorKind::PolicyRevoked);
            Ended::ResetByProxy
        }
    };
    match ended {
        Ended::Done => {}
        Ended::ResetByClient => metrics.reset(ResetBy::Client),
        Ended::ResetByProxy => metrics.reset(ResetBy::Proxy),
    }
    resets.stream_ended(opened, ended == Ended::ResetByClient);
}

async fn handle(
    shard: &Shard,
    conn: &Conn,
    session: &Session,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Ended {
    let started = Instant::now();
    let protocol = req
        .extensions()
        .get::<h2::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let metrics = &shard.metrics().h2;
    if req.method() != Method::CONNECT {
        metrics.stream(StreamKind::Forward);
        return forward::serve(shard, session, &conn.upstreams, req, respond).await;
    }
    match protocol.as_deref() {
        None => {}
        Some(CONNECT_UDP) => {
            metrics.stream(StreamKind::ConnectUdp);
            return udp::serve(shard, session, req, respond).await;
        }
        Some(other) => {
            metrics.stream(StreamKind::Other);
            let f = Failure::new(
                FailureKind::Unsupported,
                format!("extended CONNECT protocol {other:?} is not served"),
            );
            return respond_failure(shard, &mut respond, &f);
        }
    }
    metrics.stream(StreamKind::Connect);
    let _guard = ProtocolGuard::new(shard, Protocol::H2Connect);
    let target = match connect_target(req.uri()) {
        Ok(t) => t,
        Err(f) => return respond_failure(shard, &mut respond, &f),
    };
    let (head, body) = req.into_parts();
    let admitting = async {
        let principal = identify(shard, session, &head.headers).await?;
        let make_room = || conn.upstreams.evict(&principal);
        admission::admit_making_room(
            shard,
            session,
            &principal,
            Protocol::H2Connect,
            &target,
            &make_room,
        )
        .await
    };
    let admitted: Admitted = match until_reset(&mut respond, admitting).await {
        None => return Ended::ResetByClient,
        Some(Ok(a)) => a,
        Some(Err(f)) => return respond_failure(shard, &mut respond, &f),
    };
    let send = match respond.send_response(http::Response::new(()), false) {
        Ok(s) => s,
        Err(_) => return Ended::ResetByClient,
    };
    shard.metrics().handshake_seconds.observe(started.elapsed());
    let ended = tunnel::run(shard, body, send, admitted.stream).await;
    drop(admitted.permit);
    ended
}

/// Runs `work` unless the client resets the stream first (`None`).
pub(super) async fn until_reset<T>(
    respond: &mut SendResponse<Bytes>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let work = pin!(work);
    let reset = pin!(poll_fn(|cx| respond.poll_reset(cx)));
    match rt::race(work, reset).await {
        rt::Either::Left(v) => Some(v),
        rt::Either::Right(_) => None,
    }
}

/// Answers a request with the status and Proxy-Status its failure calls for, and a
/// one-line body.
pub(super) fn respond_failure(
    shard: &Shard,
    respond: &mut SendResponse<Bytes>,
    failure: &Failure,
) -> Ended {
    let Some((resp, body)) = failure_response(shard, failure) else {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return Ended::ResetByProxy;
    };
    if let Ok(mut send) = respond.send_response(resp, false) {
        let _ = send.send_data(body, true);
    }
    Ended::Done
}

/// Answers a request with a bare status and no body.
pub(super) fn respond_status(respond: &mut SendResponse<Bytes>, status: StatusCode) -> Ended {
    let _ = respond.send_response(crate::conn::proxy_request::status_response(status), true);
    Ended::Done
}
