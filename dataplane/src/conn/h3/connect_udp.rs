//! MASQUE CONNECT-UDP (RFC 9298) on an HTTP/3 connection: an extended CONNECT with
//! `:protocol connect-udp` whose `:path` names a UDP target through the proxy's URI template
//! opens one connected UDP socket on the shard; UDP payloads travel as HTTP datagrams (QUIC
//! DATAGRAM frames, context 0) or, from a client without datagrams, as DATAGRAM capsules on
//! the request stream. Datagrams of other contexts, unknown capsules and datagrams too large
//! for the path are dropped (and counted), as the RFCs allow.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::{Buf, Bytes};
use http::Request;
use policy::Protocol;
use proto::{capsule, http_datagram, Failure, FailureKind};
use quinn_proto::SendDatagramError;

use super::{respond_failure, H3Stream};
use crate::conn::proxy_request::status_response;
use crate::conn::udp_flow::{self, Capsules, Refused, TargetSide, MAX_UDP};
use crate::conn::ProtocolGuard;
use crate::metrics::datagrams::DatagramDrop;
use crate::metrics::quic::QuicMetrics;
use crate::quic::conn::Conn;
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::Deadlines;

/// Datagrams queued for one flow before the newest are dropped.
const FLOW_QUEUE: usize = 1024;

/// Datagrams that arrived for one request stream, waiting for its flow.
#[derive(Default)]
struct Inbox {
    queue: RefCell<VecDeque<Bytes>>,
    waker: RefCell<Option<Waker>>,
}

/// The CONNECT-UDP flows of one QUIC connection, by request stream ID, and the task that
/// hands each incoming QUIC DATAGRAM frame to its flow.
#[derive(Default)]
pub struct Flows {
    by_stream: RefCell<HashMap<u64, Rc<Inbox>>>,
}

impl Flows {
    /// Reads the connection's datagrams until it closes and routes them by stream.
    pub async fn dispatch(self: Rc<Self>, conn: Rc<Conn>, metrics: Arc<QuicMetrics>) {
        while let Ok(frame) = poll_fn(|cx| conn.poll_datagram(cx)).await {
            metrics.datagrams.received.inc();
            let Some((stream, payload)) = http_datagram::from_quic(&frame) else {
                metrics.datagrams.dropped(DatagramDrop::Context);
                continue;
            };
            let offset = frame.len() - payload.len();
            let inbox = self.by_stream.borrow().get(&stream).cloned();
            // Datagrams for a stream without a flow (not yet, or no longer) are dropped.
            let Some(inbox) = inbox else {
                metrics.datagrams.dropped(DatagramDrop::NoFlow);
                continue;
            };
            {
                let mut queue = inbox.queue.borrow_mut();
                if queue.len() < FLOW_QUEUE {
                    queue.push_back(frame.slice(offset..));
                } else {
                    metrics.datagrams.dropped(DatagramDrop::QueueFull);
                }
            }
            let waker = inbox.waker.borrow_mut().take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// A new flow on `stream`, unless `max` flows are open already. Datagrams for it are
    /// queued from now on (a client may send them before the response, RFC 9298 §5).
    fn open(self: &Rc<Self>, stream: u64, max: usize) -> Option<Flow> {
        let mut flows = self.by_stream.borrow_mut();
        if flows.len() >= max {
            return None;
        }
        let inbox = Rc::new(Inbox::default());
        flows.insert(stream, inbox.clone());
        Some(Flow {
            flows: self.clone(),
            stream,
            inbox,
        })
    }
}

/// A flow's place in its connection's dispatcher, given up when dropped.
struct Flow {
    flows: Rc<Flows>,
    stream: u64,
    inbox: Rc<Inbox>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.flows.by_stream.borrow_mut().remove(&self.stream);
    }
}

/// Serves one CONNECT-UDP request to its end.
pub async fn serve(
    shard: &Shard,
    session: &Session,
    req: Request<()>,
    mut stream: H3Stream,
    conn: Rc<Conn>,
    flows: Rc<Flows>,
) {
    let _guard = ProtocolGuard::new(shard, Protocol::ConnectUdp);
    let stream_id = stream.id().into_inner();
    let Some(flow) = flows.open(stream_id, shard.shared.config.quic.max_flows_per_connection)
    else {
        let f = Failure::new(
            FailureKind::UserLimit,
            "CONNECT-UDP flow limit of this connection reached",
        );
        return respond_failure(shard, &mut stream, &f).await;
    };
    let path = req.uri().path_and_query().map_or("", |p| p.as_str());
    let target = match udp_flow::admit(shard, session, path, req.headers()).await {
        Ok(t) => t,
        Err(Refused::NotFound) => {
            let resp = status_response(http::StatusCode::NOT_FOUND);
            if stream.send_response(resp).await.is_ok() {
                let _ = stream.finish().await;
            }
            return;
        }
        Err(Refused::Failure(f)) => return respond_failure(shard, &mut stream, &f).await,
    };
    let answered = session
        .deadlines()
        .within_op(stream.send_response(udp_flow::opened()));
    if !matches!(answered.await, Ok(Ok(()))) {
        return;
    }
    relay(
        shard,
        session.deadlines(),
        stream,
        &conn,
        &flow,
        &target.socket,
    )
    .await;
    drop(target.permit);
}

/// Moves datagrams both ways until the client ends the request stream, either side fails, or
/// nothing moved for the session's idle timeout (`clock`, touched by datagrams either way).
async fn relay(
    shard: &Shard,
    clock: &Deadlines,
    stream: H3Stream,
    conn: &Conn,
    flow: &Flow,
    socket: &rt::UdpSocket,
) {
    let (stream_id, inbox) = (flow.stream, &flow.inbox);
    let (mut send, mut recv) = stream.split();
    let datagrams = &shard.metrics().quic.datagrams;
    let target = TargetSide::new(shard, datagrams, socket, clock);
    let from_datagrams = async {
        loop {
            let next = poll_fn(|cx| match inbox.queue.borrow_mut().pop_front() {
                Some(d) => Poll::Ready(d),
                None => {
                    *inbox.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            target.send(&next);
        }
    };
    let from_capsules = async {
        let mut capsules = Capsules::new();
        loop {
            match recv.recv_data().await {
                Ok(Some(mut chunk)) => {
                    while chunk.has_remaining() {
                        let n = chunk.chunk().len();
                        capsules.feed(chunk.chunk(), datagrams, |p| target.send(p));
                        chunk.advance(n);
                    }
                }
                // The client ended the request stream: the flow is over.
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT-UDP request stream ended");
                    return;
                }
            }
        }
    };
    let from_target = async {
        let mut buf = vec![0u8; MAX_UDP];
        let mut payload = Vec::with_capacity(MAX_UDP + 8);
        let mut out = Vec::with_capacity(MAX_UDP + 16);
        loop {
            target.next_payload(&mut buf, &mut payload).await;
            out.clear();
            if conn.max_datagram_size().is_some() {
                http_datagram::to_quic(stream_id, &payload, &mut out);
                let frame = Bytes::copy_from_slice(&out);
                match poll_fn(|cx| conn.poll_send_datagram(&frame, cx)).await {
                    Ok(()) => datagrams.sent.inc(),
                    // Larger than the client's path or limit allows: dropped, as UDP may be.
                    Err(SendDatagramError::TooLarge) => datagrams.dropped(DatagramDrop::TooLarge),
                    Err(_) => return,
                }
            } else {
                capsule::encode_datagram(&payload, &mut out);
                if send.send_data(Bytes::copy_from_slice(&out)).await.is_err() {
                    return;
                }
                datagrams.sent.inc();
            }
        }
    };
    let watchdog = async {
        clock.expired().await;
    };
    let client_ended = {
        let (a, b) = (pin!(from_capsules), pin!(watchdog));
        let ends = pin!(rt::race(a, b));
        let (c, d) = (pin!(from_datagrams), pin!(from_target));
        let runs = pin!(rt::race(c, d));
        matches!(
            rt::race(ends, runs).await,
            rt::Either::Left(rt::Either::Left(()))
        )
    };
    target.finish();
    if client_ended {
        let _ = send.finish().await;
    }
    // Otherwise (idle, or the stream broke) dropping the halves resets the stream.
}
