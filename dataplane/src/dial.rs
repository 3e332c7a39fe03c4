//! Reaching the upstream: resolve off the shard thread, check every resolved address against
//! the policy, connect to the first allowed one that answers within the deadline.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use monoio::net::TcpStream;
use policy::{CompiledPolicy, Decision, DenyReason, Request, UserId};
use thiserror::Error;

use crate::metrics::ErrorKind;
use crate::proto::socks5::Reply;
use crate::proto::TargetAddr;

#[derive(Debug, Error)]
pub enum DialError {
    #[error("denied by policy: {0:?}")]
    Denied(DenyReason),
    #[error("name resolution failed: {0}")]
    Resolve(String),
    #[error("connection refused by upstream")]
    Refused,
    #[error("network unreachable")]
    NetworkUnreachable,
    #[error("host unreachable")]
    HostUnreachable,
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream connect failed: {0}")]
    Other(io::Error),
}

impl DialError {
    pub fn socks5_reply(&self) -> Reply {
        match self {
            DialError::Denied(_) => Reply::NotAllowed,
            DialError::Resolve(_) | DialError::HostUnreachable => Reply::HostUnreachable,
            DialError::Refused => Reply::ConnectionRefused,
            DialError::NetworkUnreachable => Reply::NetworkUnreachable,
            DialError::Timeout => Reply::TtlExpired,
            DialError::Other(_) => Reply::GeneralFailure,
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            DialError::Denied(_) => 403,
            DialError::Timeout => 504,
            _ => 502,
        }
    }

    /// The `Proxy-Status` error type (RFC 9209) for this failure.
    pub fn proxy_status(&self) -> &'static str {
        match self {
            DialError::Denied(_) => "destination_ip_prohibited",
            DialError::Resolve(_) => "dns_error",
            DialError::Refused => "connection_refused",
            DialError::NetworkUnreachable | DialError::HostUnreachable => {
                "destination_ip_unroutable"
            }
            DialError::Timeout => "connection_timeout",
            DialError::Other(_) => "proxy_internal_error",
        }
    }

    pub fn metric(&self) -> Option<ErrorKind> {
        match self {
            DialError::Denied(_) => None,
            DialError::Resolve(_) => Some(ErrorKind::Resolve),
            DialError::Timeout => Some(ErrorKind::UpstreamTimeout),
            _ => Some(ErrorKind::UpstreamConnect),
        }
    }

    fn from_io(e: io::Error) -> DialError {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => DialError::Refused,
            Some(libc::ENETUNREACH) => DialError::NetworkUnreachable,
            Some(libc::EHOSTUNREACH) => DialError::HostUnreachable,
            Some(libc::ETIMEDOUT) => DialError::Timeout,
            _ => DialError::Other(e),
        }
    }
}

/// Resolves a name on the blocking pool: getaddrinfo may block for seconds and must never
/// stall a shard.
pub async fn resolve(target: &TargetAddr, deadline: Instant) -> Result<Vec<SocketAddr>, DialError> {
    let (host, port) = match target {
        TargetAddr::Ip(a) => return Ok(vec![*a]),
        TargetAddr::Domain(h, p) => (h.clone(), *p),
    };
    let lookup = monoio::spawn_blocking(move || (host.as_str(), port).to_socket_addrs());
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, lookup).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Err(_)) => Err(DialError::Resolve("resolver task failed".into())),
        Ok(Ok(Err(e))) => Err(DialError::Resolve(e.to_string())),
        Ok(Ok(Ok(addrs))) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(DialError::Resolve("no addresses".into()))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// The resolved addresses this request may use, in resolver order.
pub fn permitted(
    policy: &CompiledPolicy,
    user: Option<UserId>,
    req: &Request<'_>,
    addrs: &[SocketAddr],
) -> Result<Vec<SocketAddr>, DialError> {
    let mut first_denial = None;
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| match policy.decide(user, req, a.ip()) {
            Decision::Allow => true,
            Decision::Deny(reason) => {
                first_denial.get_or_insert(reason);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), first_denial) {
        (true, Some(reason)) => Err(DialError::Denied(reason)),
        (true, None) => Err(DialError::Resolve("no addresses".into())),
        (false, _) => Ok(allowed),
    }
}

/// Connects to the first address that answers before `deadline`; returns the stream and
/// that address (so nobody asks the kernel for it again).
pub async fn connect(
    addrs: &[SocketAddr],
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let mut last = DialError::Resolve("no addresses".into());
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DialError::Timeout);
        }
        match monoio::time::timeout(left, TcpStream::connect_addr(*addr)).await {
            Err(_) => return Err(DialError::Timeout),
            Ok(Ok(stream)) => {
                crate::conn::bufstream::prepare(&stream);
                return Ok((stream, *addr));
            }
            Ok(Err(e)) => last = DialError::from_io(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_protocol_codes() {
        let from = |errno| DialError::from_io(io::Error::from_raw_os_error(errno));
        assert_eq!(
            from(libc::ECONNREFUSED).socks5_reply(),
            Reply::ConnectionRefused
        );
        assert_eq!(
            from(libc::ENETUNREACH).socks5_reply(),
            Reply::NetworkUnreachable
        );
        assert_eq!(
            from(libc::EHOSTUNREACH).socks5_reply(),
            Reply::HostUnreachable
        );
        assert_eq!(from(libc::ETIMEDOUT).socks5_reply(), Reply::TtlExpired);
        assert_eq!(from(libc::EACCES).socks5_reply(), Reply::GeneralFailure);
        assert_eq!(
            DialError::Denied(DenyReason::Default).socks5_reply(),
            Reply::NotAllowed
        );
        assert_eq!(
            DialError::Resolve("x".into()).socks5_reply(),
            Reply::HostUnreachable
        );
        assert_eq!(from(libc::ETIMEDOUT).http_status(), 504);
        assert_eq!(from(libc::ECONNREFUSED).http_status(), 502);
        assert_eq!(DialError::Denied(DenyReason::Default).http_status(), 403);
        assert_eq!(
            from(libc::ENETUNREACH).proxy_status(),
            "destination_ip_unroutable"
        );
    }

    #[test]
    fn permitted_keeps_only_allowed_addresses() {
        let policy = CompiledPolicy::compile(&policy::PolicyDoc::default(), &[]).unwrap();
        let req = Request {
            protocol: policy::Protocol::Socks5,
            client: "127.0.0.1".parse().unwrap(),
            host: Some("mixed.example"),
            port: 80,
        };
        let addrs: Vec<SocketAddr> = vec![
            "10.0.0.1:80".parse().unwrap(),
            "93.184.216.34:80".parse().unwrap(),
        ];
        assert_eq!(
            permitted(&policy, None, &req, &addrs).unwrap(),
            vec![addrs[1]]
        );
        assert!(matches!(
            permitted(&policy, None, &req, &addrs[..1]),
            Err(DialError::Denied(DenyReason::Protected(_)))
        ));
    }
}
