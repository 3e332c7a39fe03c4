//! What CONNECT requests over HTTP/2 and HTTP/3 share: who sent them (Proxy-Authorization,
//! else the anonymous rules), the TCP target of a plain CONNECT, and the response a failure
//! gets (status, Proxy-Status, a one-line body).

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Uri};
use proto::{proxy_status, Failure, FailureKind, TargetAddr};

use crate::admission::{self, Principal};
use crate::sessions::Session;
use crate::shard::Shard;

/// The principal a request's `Proxy-Authorization` names, or the anonymous one where the
/// policy lets this client in without.
pub(super) async fn identify(
    shard: &Shard,
    session: &Session,
    headers: &HeaderMap,
) -> Result<Principal, Failure> {
    let value = headers.get(http::header::PROXY_AUTHORIZATION);
    admission::identify(shard, session, value.map(|v| v.as_bytes())).await
}

/// The `host:port` a CONNECT request's authority names.
pub(super) fn connect_target(uri: &Uri) -> Result<TargetAddr, Failure> {
    uri.authority()
        .ok_or(proto::http::HttpError::Host)
        .and_then(|a| proto::http::connect_target(a.as_str()))
        .map_err(|e| Failure::new(FailureKind::Malformed, e.to_string()))
}

/// The response head and body that tell a client why its request failed.
pub(super) fn failure_response(shard: &Shard, failure: &Failure) -> Option<(Response<()>, Bytes)> {
    let (status, fields) = proxy_status::answer(&shard.shared.config.via_name, failure);
    let mut resp =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (name, value) in fields {
        resp = resp.header(name, value);
    }
    let resp = resp.body(()).ok()?;
    Some((resp, Bytes::from(format!("{}\n", failure.detail))))
}

/// A bare status response (no Proxy-Status: nothing went wrong with the proxy).
pub(super) fn status_response(status: StatusCode) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    resp
}
