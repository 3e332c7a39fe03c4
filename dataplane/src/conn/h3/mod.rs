//! HTTP/3 requests on a shard's QUIC connection (RFC 9114). CONNECT (§4.4) opens a TCP
//! tunnel per request stream through the admission gate: DATA frames one way, the socket's
//! bytes the other, a FIN for a stream end and a reset (H3_CONNECT_ERROR) for a broken
//! tunnel. Each request stream is its own session, so a policy change closes exactly the
//! streams it revokes and leaves the connection's others alone.

mod connect_udp;

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use h3::server::{RequestResolver, RequestStream};
use http::{Method, Request, Response};
use policy::Protocol;
use proto::{Failure, FailureKind};

use super::proxy_request::{connect_target, failure_response, identify};
use super::{ProtocolGuard, CLOSE_FLUSH, CLOSE_MARGIN};
use crate::admission;
use crate::buffer_budget::ConnShare;
use crate::metrics::ErrorKind;
use crate::quic::conn::Conn;
use crate::quic::h3_quic::{BidiStream, H3Conn};
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::Stream;
use connect_udp::Flows;

/// Largest header section accepted from a client.
const MAX_FIELD_SECTION: u64 = 16 * 1024;
/// Bytes read from the upstream socket per DATA frame at most.
const CHUNK: usize = 64 * 1024;

pub(super) type H3Stream = RequestStream<BidiStream<Bytes>, Bytes>;

/// Serves the HTTP/3 connection `conn` from `peer` until it closes.
pub async fn serve(shard: Rc<Shard>, conn: Rc<Conn>, peer: SocketAddr) {
    let built = h3::server::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_field_section_size(MAX_FIELD_SECTION)
        .build::<_, Bytes>(H3Conn(conn.clone()))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection not set up");
            return;
        }
    };
    let flows = Rc::new(Flows::default());
    rt::spawn(
        flows
            .clone()
            .dispatch(conn.clone(), shard.metrics().quic.clone()),
    );
    let quic = &shard.shared.config.quic;
    let buffers = shard
        .buffers
        .connection(2 * u64::from(quic.connection_window));
    let stream_charge = u64::from(quic.stream_window) + CHUNK as u64;
    // The connection's clock: busy while requests are in flight, else idle (the QUIC
    // handshake is over by now; QUIC PINGs keep the transport alive, not this).
    let in_flight = shard.deadlines();
    in_flight.handshake_over();
    loop {
        let next = {
            let accepting = pin!(h3.accept());
            let draining = pin!(shard.draining());
            let idle_out = pin!(in_flight.expired());
            let stop = pin!(rt::race(draining, idle_out));
            rt::race(accepting, stop).await
        };
        match next {
            rt::Either::Left(Ok(Some(resolver))) => {
                let (shard, conn, flows) = (shard.clone(), conn.clone(), flows.clone());
                let counted = in_flight.busy();
                let buffers = buffers.clone();
                rt::spawn(async move {
                    request(shard, resolver, conn, flows, &buffers, stream_charge).await;
                    drop(counted);
                });
            }
            rt::Either::Left(Ok(None)) => return,
            rt::Either::Left(Err(e)) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                return;
            }
            rt::Either::Right(rt::Either::Left(())) => break,
            // No request for the idle timeout (QUIC PINGs keep the transport alive, not
            // this): GOAWAY and close, as for a draining shard.
            rt::Either::Right(rt::Either::Right(_)) => {
                tracing::debug!(%peer, "idle HTTP/3 connection closed");
                shard.metrics().quic.idle_closes.inc();
                break;
            }
        }
    }
    // Draining: GOAWAY tells the client to take new requests elsewhere; the ones in flight
    // run until they end or the drain deadline is near, then the connection is closed
    // with H3_NO_ERROR rather than left to time out on the client.
    // The GOAWAY waits for the client's flow-control credit on the control stream: a
    // client that grants none does not hold the close up.
    let _ = rt::timeout(CLOSE_FLUSH, h3.shutdown(0)).await;
    let deadline = Instant::now()
        + shard
            .shared
            .config
            .timeouts
            .drain()
            .saturating_sub(CLOSE_MARGIN);
    while in_flight.is_busy() && Instant::now() < deadline {
        // Accepting on: h3 answers request streams the client sent after the GOAWAY's
        // stream ID with H3_REQUEST_REJECTED as it takes them. Left unaccepted, such a
        // request (sent just as the drain began) waited for an answer until the close.
        let accepting = pin!(h3.accept());
        let pause = pin!(rt::sleep(Duration::from_millis(20)));
        if let rt::Either::Left(accepted) = rt::race(accepting, pause).await {
            // A request within the GOAWAY's grace is dropped (reset) too: the drain takes
            // none; accepting that ended (None, an error) leaves only the wait.
            if !matches!(accepted, Ok(Some(_))) {
                rt::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    conn.close(h3::error::Code::H3_NO_ERROR.value(), b"shutting down");
    // Time for the connection's driver to send the close before the shard stops.
    rt::sleep(CLOSE_FLUSH).await;
}

async fn request(
    shard: Rc<Shard>,
    resolver: RequestResolver<H3Conn, Bytes>,
    conn: Rc<Conn>,
    flows: Rc<Flows>,
    buffers: &ConnShare,
    stream_charge: u64,
) {
    // The client's address now: a client that migrated is judged where it is (anonymous
    // networks, client-network rules), as a fresh connection from there would be.
    let peer = conn.remote_address();
    // Its head within the session's handshake deadline: a stream that never sends one must
    // not count as a request in flight (which keeps the connection from its idle close).
    let session = shard.session(peer);
    let (req, mut stream) = match session.within(resolver.resolve_request()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 request not read");
            shard.metrics().error(ErrorKind::ClientProtocol);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/3 request head not sent in time");
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
    };
    let Some(_charge) = buffers.charge(stream_charge) else {
        // Nothing was done for it: the client may send it again (RFC 9114 §4.1.1).
        tracing::debug!(%peer, committed = shard.buffers.committed(), "HTTP/3 request refused: the core's tunnel buffer budget is spent");
        shard.metrics().tunnel_buffer_refusals.inc();
        stream.stop_sending(h3::error::Code::H3_REQUEST_REJECTED);
        stream.stop_stream(h3::error::Code::H3_REQUEST_REJECTED);
        return;
    };
    let serving = handle(&shard, &session, req, stream, conn, flows);
    // A revoked request's stream is dropped unfinished: both halves reset.
    if session.unless_revoked(serving).await.is_none() {
        shard.metrics().error(ErrorKind::PolicyRevoked);
    }
}

async fn handle(
    shard: &Shard,
    session: &Session,
    req: Request<()>,
    mut stream: H3Stream,
    conn: Rc<Conn>,
    flows: Rc<Flows>,
) {
    let started = Instant::now();
    let extended = req.extensions().get::<h3::ext::Protocol>().cloned();
    if req.method() == Method::CONNECT && extended == Some(h3::ext::Protocol::CONNECT_UDP) {
        return connect_udp::serve(shard, session, req, stream, conn, flows).await;
    }
    if req.method() != Method::CONNECT || extended.is_some() {
        let failure = Failure::new(
            FailureKind::Unsupported,
            "this proxy serves CONNECT and CONNECT-UDP over HTTP/3",
        );
        return respond_failure(shard, &mut stream, &failure).await;
    }
    let _guard = ProtocolGuard::new(shard, Protocol::H3Connect);
    let target = match connect_target(req.uri()) {
        Ok(t) => t,
        Err(f) => return respond_failure(shard, &mut stream, &f).await,
    };
    let principal = match identify(shard, session, req.headers()).await {
        Ok(p) => p,
        Err(f) => return respond_failure(shard, &mut stream, &f).await,
    };
    let admitted =
        match admission::admit(shard, session, &principal, Protocol::H3Connect, &target).await {
            Ok(a) => a,
            Err(f) => return respond_failure(shard, &mut stream, &f).await,
        };
    // The client's stream credit decides when the answer goes: a wait of the session.
    let answered = session
        .deadlines()
        .within_op(stream.send_response(Response::new(())));
    if !matches!(answered.await, Ok(Ok(()))) {
        return;
    }
    shard.metrics().handshake_seconds.observe(started.elapsed());
    tunnel(shard, stream, admitted.stream).await;
    drop(admitted.permit);
}

pub(super) async fn respond_failure(shard: &Shard, stream: &mut H3Stream, failure: &Failure) {
    let Some((resp, body)) = failure_response(shard, failure) else {
        return;
    };
    if stream.send_response(resp).await.is_ok() {
        let _ = stream.send_data(body).await;
        let _ = stream.finish().await;
    }
}

/// Relays between the request stream and the upstream socket until both directions ended,
/// either breaks, or nothing moved for the idle timeout.
async fn tunnel(shard: &Shard, stream: H3Stream, upstream: Stream) {
    let (mut send, mut recv) = stream.split();
    let (send_half, recv_half) = (&mut send, &mut recv);
    // The request's session clock (the upstream socket's): bytes either way touch it.
    let clock = upstream.deadlines();
    let up = async {
        loop {
            match recv_half.recv_data().await {
                Ok(Some(mut chunk)) => {
                    while chunk.has_remaining() {
                        let n = chunk.chunk().len();
                        upstream.write_all(chunk.chunk()).await.map_err(drop)?;
                        chunk.advance(n);
                        shard.metrics().bytes_client_to_upstream.add(n as u64);
                    }
                    clock.touch();
                }
                Ok(None) => {
                    upstream.shutdown_write().await;
                    return Ok(());
                }
                Err(_) => return Err(()),
            }
        }
    };
    let down = async {
        // One buffer for the tunnel; each DATA frame gets an exact-size copy (quinn copies
        // it into its send buffer anyway) instead of a fresh zeroed 64 KiB per read.
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = loop {
                match upstream.try_read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        upstream.readiness(false).await.map_err(drop)?
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(()),
                }
            };
            if n == 0 {
                send_half.finish().await.map_err(drop)?;
                return Ok(());
            }
            shard.metrics().bytes_upstream_to_client.add(n as u64);
            let data = Bytes::copy_from_slice(&buf[..n]);
            send_half.send_data(data).await.map_err(drop)?;
            clock.touch();
        }
    };
    let watchdog = clock.expired();
    let ended = {
        let (up, down) = (pin!(up), pin!(down));
        let both = pin!(rt::join_fail_fast(up, down));
        matches!(
            rt::race(both, pin!(watchdog)).await,
            rt::Either::Left(Ok(()))
        )
    };
    if !ended {
        // Broken or idle: the client sees the stream reset, the upstream a reset.
        upstream.reset_on_close();
        send.stop_stream(h3::error::Code::H3_CONNECT_ERROR);
        recv.stop_sending(h3::error::Code::H3_CONNECT_ERROR);
    }
}
