//! A CONNECT tunnel on an HTTP/2 stream (RFC 9113 §8.5), with flow control end to end: the
//! client's DATA is acknowledged (its window reopened) only once the upstream socket took
//! it, and the upstream is read only as far as the client's window has room. A slow side
//! therefore holds back its own stream only, and a tunnel buffers at most one window each
//! way. A broken upstream resets the stream with CONNECT_ERROR; the upstream of a stream
//! the client reset is closed with a TCP reset.

use std::future::poll_fn;
use std::pin::pin;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};

use super::stream::Ended;
use crate::rt;
use crate::shard::Shard;
use crate::stream::{Deadlines, Stream};

/// Bytes read from the upstream socket per DATA frame at most (h2 splits it into frames of
/// the client's maximum frame size).
pub(super) const CHUNK: usize = 64 * 1024;

/// Which side broke a tunnel.
enum Broke {
    Client,
    Upstream,
}

pub(super) async fn run(
    shard: &Shard,
    mut recv: RecvStream,
    mut send: SendStream<Bytes>,
    upstream: Stream,
) -> Ended {
    // The stream's session clock (the upstream socket's): touched by bytes either way.
    let clock = upstream.deadlines();
    let metrics = shard.metrics();
    let (recv_half, send_half) = (&mut recv, &mut send);
    let up = async {
        loop {
            match recv_half.data().await {
                Some(Ok(chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    upstream
                        .write_all(&chunk)
                        .await
                        .map_err(|_| Broke::Upstream)?;
                    metrics.bytes_client_to_upstream.add(chunk.len() as u64);
                    metrics.copy_bytes.add(chunk.len() as u64);
                    // Only now may the client send this much more.
                    let _ = recv_half.flow_control().release_capacity(chunk.len());
                    clock.touch();
                }
                None => {
                    upstream.shutdown_write().await;
                    return Ok(());
                }
                Some(Err(_)) => return Err(Broke::Client),
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let room = room(send_half, CHUNK, 1).await.map_err(|_| Broke::Client)?;
            let n = loop {
                match upstream.try_read(&mut buf[..room.min(CHUNK)]) {
                    Ok(n) => break n,
                    Err(e) if crate::sys::would_block(&e) => {
                        // A client reset must end the tunnel even while the upstream is quiet.
                        let ready = pin!(upstream.readiness(false));
                        let reset = pin!(poll_fn(|cx| send_half.poll_reset(cx)));
                        match rt::race(ready, reset).await {
                            rt::Either::Left(Ok(())) => {}
                            rt::Either::Left(Err(e)) if crate::sys::would_block(&e) => {}
                            rt::Either::Left(Err(_)) => return Err(Broke::Upstream),
                            rt::Either::Right(_) => return Err(Broke::Client),
                        }
                    }
                    Err(_) => return Err(Broke::Upstream),
                }
            };
            if n == 0 {
                send_half
                    .send_data(Bytes::new(), true)
                    .map_err(|_| Broke::Client)?;
                return Ok(());
            }
            metrics.bytes_upstream_to_client.add(n as u64);
            metrics.copy_bytes.add(n as u64);
            send_half
                .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                .map_err(|_| Broke::Client)?;
            clock.touch();
        }
    };
    let outcome = {
        let (up, down) = (pin!(up), pin!(down));
        let both = pin!(rt::join_fail_fast(up, down));
        rt::race(both, pin!(clock.expired())).await
    };
    match outcome {
        rt::Either::Left(Ok(())) => Ended::Done,
        rt::Either::Left(Err(Broke::Client)) => {
            upstream.reset_on_close();
            Ended::ResetByClient
        }
        rt::Either::Left(Err(Broke::Upstream)) | rt::Either::Right(_) => {
            upstream.reset_on_close();
            send.send_reset(Reason::CONNECT_ERROR);
            Ended::ResetByProxy
        }
    }
}

/// Waits until the client's window lets the stream send at least `at_least` of the `want`
/// bytes asked for; how much it may send.
pub(super) async fn room(
    send: &mut SendStream<Bytes>,
    want: usize,
    at_least: usize,
) -> Result<usize, h2::Error> {
    send.reserve_capacity(want);
    loop {
        // Capacity already assigned is not announced again by poll_capacity.
        let now = send.capacity();
        if now >= at_least.max(1) {
            return Ok(now);
        }
        match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        }
    }
}

/// Why bytes could not be sent on a stream.
pub(super) enum SendError {
    /// The client reset the stream or broke the connection.
    Client,
    /// The client's window stayed shut past the session's deadlines.
    Stalled,
}

/// Sends `data` on the stream in pieces the client's window takes, each piece's wait for
/// room one operation of the session's `deadlines`. A piece may be smaller than any message
/// in `data` (a capsule or a chunk spans DATA frames as a byte stream may), so a window
/// smaller than one message still moves it.
pub(super) async fn send_all(
    send: &mut SendStream<Bytes>,
    data: &[u8],
    deadlines: &Deadlines,
) -> Result<(), SendError> {
    let mut at = 0;
    while at < data.len() {
        let want = (data.len() - at).min(CHUNK);
        let room = match deadlines.within_op(room(send, want, 1)).await {
            Err(_) => return Err(SendError::Stalled),
            Ok(Err(_)) => return Err(SendError::Client),
            Ok(Ok(room)) => room,
        };
        let n = room.min(data.len() - at);
        send.send_data(Bytes::copy_from_slice(&data[at..at + n]), false)
            .map_err(|_| SendError::Client)?;
        at += n;
        deadlines.touch();
    }
    Ok(())
}
