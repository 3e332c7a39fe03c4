//! MASQUE CONNECT-UDP over HTTP/2 (RFC 9298 §3 and RFC 8441's extended CONNECT): UDP
//! payloads travel as DATAGRAM capsules on the stream both ways (HTTP/2 has no
//! unreliable datagrams). The stream's flow control holds back a client that sends faster
//! than the flow takes; datagrams from a target faster than its client wait in the flow's
//! socket buffer until the window reopens (dropped there, and counted, when it is full).

use std::pin::pin;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, StatusCode};
use policy::Protocol;
use proto::capsule;

use super::stream::{respond_failure, respond_status, until_reset, Ended};
use super::tunnel::{send_all, SendError};
use crate::conn::udp_flow::{self, Capsules, Refused, TargetSide, MAX_UDP};
use crate::conn::ProtocolGuard;
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;

pub(super) async fn serve(
    shard: &Shard,
    session: &Session,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Ended {
    let _guard = ProtocolGuard::new(shard, Protocol::ConnectUdp);
    let (head, mut recv) = req.into_parts();
    let path = head.uri.path_and_query().map_or("", |p| p.as_str());
    let admitting = udp_flow::admit(shard, session, path, &head.headers);
    let target = match until_reset(&mut respond, admitting).await {
        None => return Ended::ResetByClient,
        Some(Ok(t)) => t,
        Some(Err(Refused::NotFound)) => return respond_status(&mut respond, StatusCode::NOT_FOUND),
        Some(Err(Refused::Failure(f))) => return respond_failure(shard, &mut respond, &f),
    };
    let Ok(mut send) = respond.send_response(udp_flow::opened(), false) else {
        return Ended::ResetByClient;
    };
    // The stream's session clock: datagrams either way touch it.
    let clock = session.deadlines();
    let datagrams = &shard.metrics().h2.datagrams;
    let side = TargetSide::new(shard, datagrams, &target.socket, clock);
    let from_client = async {
        let mut capsules = Capsules::new();
        loop {
            match recv.data().await {
                Some(Ok(chunk)) => {
                    capsules.feed(&chunk, datagrams, |p| side.send(p));
                    // Sent on (or dropped) already: the window reopens at once.
                    let _ = recv.flow_control().release_capacity(chunk.len());
                }
                // The client ended the stream: the flow is over.
                None => return Ended::Done,
                Some(Err(_)) => return Ended::ResetByClient,
            }
        }
    };
    let from_target = async {
        let mut buf = vec![0u8; MAX_UDP];
        let mut payload = Vec::with_capacity(MAX_UDP + 8);
        let mut out = Vec::with_capacity(MAX_UDP + 16);
        loop {
            side.next_payload(&mut buf, &mut payload).await;
            out.clear();
            capsule::encode_datagram(&payload, &mut out);
            // A client slower than its target: the target's datagrams wait in the socket
            // buffer (dropped there when it is full, and counted), not in the proxy. A
            // window smaller than one capsule takes it in pieces.
            match send_all(&mut send, &out, clock).await {
                Ok(()) => datagrams.sent.inc(),
                Err(SendError::Client) => return Ended::ResetByClient,
                Err(SendError::Stalled) => return Ended::ResetByProxy,
            }
        }
    };
    let ended = {
        let (client, idle) = (pin!(from_client), pin!(clock.expired()));
        let ends = pin!(rt::race(client, idle));
        match rt::race(ends, pin!(from_target)).await {
            rt::Either::Left(rt::Either::Left(e)) | rt::Either::Right(e) => e,
            rt::Either::Left(rt::Either::Right(_)) => Ended::ResetByProxy,
        }
    };
    side.finish();
    drop(target.permit);
    match ended {
        Ended::Done => {
            let _ = send.send_data(Bytes::new(), true);
        }
        Ended::ResetByProxy => send.send_reset(h2::Reason::NO_ERROR),
        Ended::ResetByClient => {}
    }
    ended
}
