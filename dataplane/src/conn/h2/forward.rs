//! Plain-HTTP requests on an HTTP/2 connection to the proxy: what a browser sends an HTTPS
//! proxy for `http://` URLs (`:scheme http`, the origin in `:authority`). Each stream is
//! forwarded as one HTTP/1.1 request through the admission gate (protocol `http`, like the
//! HTTP/1.1 forward path), on an upstream connection kept alive from an earlier stream of
//! the connection where one is idle (upstreams.rs), and the response is translated back:
//! hop-by-hop fields dropped, chunked framing decoded into DATA frames, the client's window
//! respected. `https://` goes through CONNECT.

use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use policy::Protocol;
use proto::chunked::ChunkedDecoder;
use proto::http::{self as h1, BodyLength, Header, RequestHead, ResponseHead, MAX_HEAD};
use proto::{Failure, FailureKind};

use super::stream::{respond_failure, until_reset, Ended};
use super::tunnel::{send_all, SendError};
use super::upstreams::{Kept, Upstreams};
use crate::admission;
use crate::conn::proxy_request::identify;
use crate::conn::ProtocolGuard;
use crate::metrics::ErrorKind;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::{BufStream, ReadError};

/// Response fields that describe the HTTP/1.1 connection, not the message (RFC 9113
/// §8.2.2 forbids them in HTTP/2).
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

pub(super) async fn serve(
    shard: &Shard,
    session: &Session,
    upstreams: &Upstreams,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Ended {
    let _guard = ProtocolGuard::new(shard, Protocol::Http);
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let head = match request_head(&parts, body.is_end_stream()) {
        Ok(h) => h,
        Err(f) => return respond_failure(shard, &mut respond, &f),
    };
    let h1::RequestTarget::Absolute { target, .. } = &head.target else {
        let f = Failure::new(FailureKind::Internal, "no absolute target");
        return respond_failure(shard, &mut respond, &f);
    };
    let principal = match until_reset(&mut respond, identify(shard, session, &parts.headers)).await
    {
        None => return Ended::ResetByClient,
        Some(Ok(p)) => p,
        Some(Err(f)) => return respond_failure(shard, &mut respond, &f),
    };
    // A request without a body may go out again on a fresh connection when a kept-alive
    // one turns out closed by its origin before answering (as a browser would).
    let replayable = body.is_end_stream();
    let mut body = Some(body);
    let idle = shard.shared.config.timeouts.idle();
    for attempt in 0..2 {
        let (mut up, reused) = match upstreams.take(shard, session, &principal, target, idle) {
            Some(kept) => (kept, true),
            None => {
                let make_room = || upstreams.evict(&principal);
                let admitting = admission::admit_making_room(
                    shard,
                    session,
                    &principal,
                    Protocol::Http,
                    target,
                    &make_room,
                );
                match until_reset(&mut respond, admitting).await {
                    None => return Ended::ResetByClient,
                    Some(Ok(a)) => {
                        let conn = BufStream::new(a.stream);
                        let kept =
                            Kept::new(principal.clone(), target.clone(), a.peer, conn, a.permit);
                        (kept, false)
                    }
                    Some(Err(f)) => return respond_failure(shard, &mut respond, &f),
                }
            }
        };
        if attempt == 0 {
            shard.metrics().handshake_seconds.observe(started.elapsed());
        }
        let retry = reused && replayable && attempt == 0;
        match exchange(shard, &head, body.take(), &mut up.conn, &mut respond, retry).await {
            Step::Stale => {
                tracing::debug!(%target, "kept-alive upstream was closed; sending again")
            }
            Step::Ended(ended, reusable) => {
                if reusable {
                    upstreams.put(up);
                }
                return ended;
            }
        }
    }
    let f = Failure::new(
        FailureKind::UpstreamClosed,
        "upstream closed the connection",
    );
    respond_failure(shard, &mut respond, &f)
}

/// Where an exchange on an upstream connection ended.
enum Step {
    /// A kept-alive connection was closed before the request could be answered: nothing
    /// was sent to the client, the request may go out again.
    Stale,
    /// The stream is over; whether the connection may carry another request.
    Ended(Ended, bool),
}

/// Sends the request (and its body, if any is left to send) on `up` and relays the
/// response back.
async fn exchange(
    shard: &Shard,
    head: &RequestHead,
    body: Option<RecvStream>,
    up: &mut BufStream,
    respond: &mut SendResponse<Bytes>,
    retry: bool,
) -> Step {
    let via = &shard.shared.config.via_name;
    let chunked = head
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let sent = async {
        up.write_all(&head.encode_upstream(via))
            .await
            .map_err(BodyError::Upstream)?;
        match body {
            Some(body) => send_request_body(shard, body, up, chunked).await,
            None => Ok(()),
        }
    };
    match until_reset(respond, sent).await {
        None => return Step::Ended(Ended::ResetByClient, false),
        Some(Ok(())) => {}
        Some(Err(BodyError::ClientStalled)) => {
            shard.metrics().error(ErrorKind::IdleTimeout);
            let f = Failure::new(
                FailureKind::HandshakeTimeout,
                "the request body stalled for the idle timeout",
            );
            return Step::Ended(respond_failure(shard, respond, &f), false);
        }
        Some(Err(BodyError::Client)) => return Step::Ended(Ended::ResetByClient, false),
        Some(Err(BodyError::Upstream(_))) if retry => return Step::Stale,
        Some(Err(BodyError::Upstream(e))) => {
            tracing::debug!(error = %e, "request not sent upstream whole");
            let f = Failure::new(
                FailureKind::UpstreamClosed,
                "upstream closed the connection",
            );
            return Step::Ended(respond_failure(shard, respond, &f), false);
        }
    }
    let response = match until_reset(respond, response_head(shard, up)).await {
        None => return Step::Ended(Ended::ResetByClient, false),
        Some(Ok(r)) => r,
        // Closed with not a byte of an answer (not a timeout): the origin had closed it.
        Some(Err(f))
            if retry && f.kind != FailureKind::ResponseTimeout && up.buffered().is_empty() =>
        {
            return Step::Stale
        }
        Some(Err(f)) => return Step::Ended(respond_failure(shard, respond, &f), false),
    };
    let length = response.body_length(&head.method);
    let Ok(resp) = translate(&response, via) else {
        shard.metrics().error(ErrorKind::UpstreamProtocol);
        let f = Failure::new(
            FailureKind::UpstreamProtocol,
            "response fields HTTP/2 cannot carry",
        );
        return Step::Ended(respond_failure(shard, respond, &f), false);
    };
    let Ok(mut send) = respond.send_response(resp, length == BodyLength::None) else {
        return Step::Ended(Ended::ResetByClient, false);
    };
    let ended = match length {
        BodyLength::None => Ended::Done,
        _ => send_response_body(shard, up, &mut send, length).await,
    };
    // Reusable when the response ended where its framing said and nothing followed it.
    let reusable = ended == Ended::Done
        && length != BodyLength::UntilClose
        && !response.server_closes()
        && up.buffered().is_empty();
    Step::Ended(ended, reusable)
}

/// The HTTP/1.1 request head for an HTTP/2 request (RFC 9113 §8.3.1 to RFC 9112): `:scheme`
/// must be `http`; the body is chunked unless its length is known or it is empty.
fn request_head(parts: &http::request::Parts, empty_body: bool) -> Result<RequestHead, Failure> {
    let scheme = parts.uri.scheme_str().unwrap_or("");
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .ok_or_else(|| Failure::new(FailureKind::Malformed, "no :authority"))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = h1::absolute_target(scheme, authority, path).map_err(|e| {
        let kind = match e {
            h1::HttpError::Scheme(_) => FailureKind::Unsupported,
            _ => FailureKind::Malformed,
        };
        Failure::new(kind, e.to_string())
    })?;
    let mut headers: Vec<Header> = parts
        .headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    let has_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
    if !empty_body && !has_length {
        headers.push(Header {
            name: "transfer-encoding".into(),
            value: b"chunked".to_vec(),
        });
    }
    Ok(RequestHead {
        method: parts.method.as_str().to_string(),
        target,
        minor_version: 1,
        headers,
    })
}

/// Why a request could not be sent upstream whole.
enum BodyError {
    /// The upstream socket failed (or, on a kept-alive one, had been closed).
    Upstream(std::io::Error),
    /// The client broke or reset the stream mid-body.
    Client,
    /// The client sent no DATA for the idle timeout: the stream would hold an upstream and
    /// a tunnel slot for nothing.
    ClientStalled,
}

/// Sends the request's DATA upstream (chunk-framed when `chunked`), reopening the client's
/// window only as the upstream takes it.
async fn send_request_body(
    shard: &Shard,
    mut body: RecvStream,
    up: &BufStream,
    chunked: bool,
) -> Result<(), BodyError> {
    // The session's clock, which the upstream's writes touch.
    let deadlines = up.stream().deadlines();
    // One buffer for every chunk's framing, reused: one write per DATA frame.
    let mut framed = Vec::new();
    loop {
        let chunk = match deadlines.within(body.data()).await {
            Err(_) => return Err(BodyError::ClientStalled),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Client),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if chunk.is_empty() {
            continue;
        }
        if chunked {
            use std::io::Write as _;
            framed.clear();
            let _ = write!(framed, "{:x}\r\n", chunk.len());
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            up.write_all(&framed).await
        } else {
            up.write_all(&chunk).await
        }
        .map_err(BodyError::Upstream)?;
        shard
            .metrics()
            .bytes_client_to_upstream
            .add(chunk.len() as u64);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if chunked {
        up.write_all(b"0\r\n\r\n")
            .await
            .map_err(BodyError::Upstream)?;
    }
    Ok(())
}

/// The upstream's final response head (interim 1xx responses are not relayed).
async fn response_head(shard: &Shard, up: &mut BufStream) -> Result<ResponseHead, Failure> {
    loop {
        // Its waits are the stream's, bounded by the session's idle timeout.
        let head = match up.read_message(MAX_HEAD, h1::parse_response).await {
            Ok(h) => h,
            Err(ReadError::Io(_)) => {
                shard.metrics().error(ErrorKind::UpstreamTimeout);
                return Err(Failure::new(
                    FailureKind::ResponseTimeout,
                    "no response head in time",
                ));
            }
            Err(e) => {
                shard.metrics().error(ErrorKind::UpstreamProtocol);
                let detail = match e {
                    ReadError::Protocol(p) => p.to_string(),
                    _ => "upstream closed before a whole response head".into(),
                };
                return Err(Failure::new(FailureKind::UpstreamProtocol, detail));
            }
        };
        if !head.is_informational() {
            return Ok(head);
        }
    }
}

/// The HTTP/2 response for an HTTP/1.1 one: status and end-to-end fields, with Via.
fn translate(head: &ResponseHead, via: &str) -> Result<Response<()>, http::Error> {
    let listed: Vec<String> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .collect();
    let mut fields = HeaderMap::new();
    for h in &head.headers {
        let lower = h.name.to_ascii_lowercase();
        if CONNECTION_SPECIFIC.contains(&lower.as_str()) || listed.contains(&lower) {
            continue;
        }
        fields.append(
            HeaderName::from_bytes(lower.as_bytes())?,
            HeaderValue::from_bytes(&h.value)?,
        );
    }
    fields.append(
        http::header::VIA,
        HeaderValue::from_str(&format!("1.{} {via}", head.minor_version))?,
    );
    let mut resp = Response::builder().status(head.status).body(())?;
    *resp.headers_mut() = fields;
    Ok(resp)
}

/// Relays the response body as DATA frames, as far as the client's window allows.
async fn send_response_body(
    shard: &Shard,
    up: &mut BufStream,
    send: &mut SendStream<Bytes>,
    length: BodyLength,
) -> Ended {
    let mut left = match length {
        BodyLength::Fixed(n) => Some(n),
        _ => None,
    };
    let mut decoder = (length == BodyLength::Chunked).then(ChunkedDecoder::default);
    let mut payload = Vec::new();
    while left != Some(0) {
        // What is buffered first, then read more (the head's read may hold body bytes).
        if up.buffered().is_empty() {
            match up.read_more().await {
                Ok(0) if length == BodyLength::UntilClose => break,
                Ok(n) if n > 0 => {}
                // The upstream ended or broke before the body did.
                _ => {
                    send.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Ended::ResetByProxy;
                }
            }
        }
        payload.clear();
        let buffered = up.buffered();
        let taken = match (&mut decoder, left) {
            (Some(d), _) => match d.decode(buffered, &mut payload) {
                Ok(n) => n,
                Err(_) => {
                    shard.metrics().error(ErrorKind::UpstreamProtocol);
                    send.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Ended::ResetByProxy;
                }
            },
            (None, Some(l)) => {
                let n = buffered.len().min(usize::try_from(l).unwrap_or(usize::MAX));
                payload.extend_from_slice(&buffered[..n]);
                n
            }
            (None, None) => {
                payload.extend_from_slice(buffered);
                buffered.len()
            }
        };
        up.consume(taken);
        if let Some(l) = left.as_mut() {
            *l -= taken as u64;
        }
        match send_all(send, &payload, up.stream().deadlines()).await {
            Ok(()) => {
                let n = payload.len() as u64;
                shard.metrics().bytes_upstream_to_client.add(n);
                shard.metrics().copy_bytes.add(n);
            }
            Err(SendError::Client) => return Ended::ResetByClient,
            Err(SendError::Stalled) => {
                shard.metrics().error(ErrorKind::IdleTimeout);
                send.send_reset(h2::Reason::CANCEL);
                return Ended::ResetByProxy;
            }
        }
        if decoder.as_ref().is_some_and(|d| d.is_done()) {
            break;
        }
    }
    let _ = send.send_data(Bytes::new(), true);
    Ended::Done
}
