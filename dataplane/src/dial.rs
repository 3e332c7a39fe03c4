//! Reaching the upstream: resolve off the shard thread, check every resolved address against
//! the policy, connect to the first allowed one that answers within the deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use policy::{CompiledPolicy, Decision, DenyReason, Request, UserId};
use thiserror::Error;

use proto::{Failure, FailureKind, TargetAddr};

use crate::resolver::{ResolveError, Resolver};
use crate::rt::{self, TcpStream};

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

impl From<DialError> for Failure {
    fn from(e: DialError) -> Failure {
        let kind = match &e {
            DialError::Denied(_) => FailureKind::Denied,
            DialError::Resolve(_) => FailureKind::Dns,
            DialError::Refused => FailureKind::ConnectionRefused,
            DialError::NetworkUnreachable => FailureKind::NetworkUnreachable,
            DialError::HostUnreachable => FailureKind::HostUnreachable,
            DialError::Timeout => FailureKind::ConnectTimeout,
            DialError::Other(_) => FailureKind::Internal,
        };
        Failure::new(kind, e.to_string())
    }
}

impl DialError {
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

/// Resolves a name off the shard (the resolver thread), giving up at `deadline`.
pub async fn resolve(
    resolver: &Resolver,
    target: &TargetAddr,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, DialError> {
    let (host, port) = match target {
        TargetAddr::Ip(a) => return Ok(vec![*a]),
        TargetAddr::Domain(h, p) => (h.as_str(), *p),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match rt::timeout(left, resolver.socket_addrs(host, port)).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Err(ResolveError::NotFound(why))) => Err(DialError::Resolve(why)),
        Ok(Err(e)) => Err(DialError::Other(io::Error::other(e))),
        Ok(Ok(addrs)) => Ok(addrs),
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
        match rt::timeout(left, rt::connect(*addr)).await {
            Err(_) => return Err(DialError::Timeout),
            Ok(Ok(stream)) => return Ok((stream, *addr)),
            Ok(Err(e)) => last = DialError::from_io(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_failure_kinds() {
        let kind =
            |errno| Failure::from(DialError::from_io(io::Error::from_raw_os_error(errno))).kind;
        assert_eq!(kind(libc::ECONNREFUSED), FailureKind::ConnectionRefused);
        assert_eq!(kind(libc::ENETUNREACH), FailureKind::NetworkUnreachable);
        assert_eq!(kind(libc::EHOSTUNREACH), FailureKind::HostUnreachable);
        assert_eq!(kind(libc::ETIMEDOUT), FailureKind::ConnectTimeout);
        assert_eq!(kind(libc::EACCES), FailureKind::Internal);
        let denied = Failure::from(DialError::Denied(DenyReason::Default));
        assert_eq!(denied.kind, FailureKind::Denied);
        assert_eq!(denied.blame(), proto::Blame::Client);
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
