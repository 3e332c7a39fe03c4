//! Why a proxied request failed, neutral of the protocol it came in on, and who is to blame.
//!
//! Drivers and the admission gate report a [`Failure`]; each protocol turns it into its own
//! codes in its own module (SOCKS5 replies, SOCKS4 codes, HTTP status + Proxy-Status), so no
//! part of the proxy needs to know every protocol's codes.

use std::fmt;

/// The party at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong, or asked for something it may not have.
    Client,
    /// The destination could not be reached or misbehaved.
    Upstream,
    /// The proxy itself could not do its part.
    Internal,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Upstream => "upstream",
            Blame::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The client's bytes do not form a valid message.
    Malformed,
    /// A command or feature the proxy does not offer.
    Unsupported,
    /// An address type the proxy does not understand.
    AddressType,
    /// Credentials are needed and none (or unusable ones) were given.
    AuthRequired,
    /// Credentials were given and are wrong, or the user is disabled.
    AuthFailed,
    /// The user was deleted, disabled or re-keyed since authenticating.
    Revoked,
    /// The policy denies this destination.
    Denied,
    /// The user holds as many tunnels as they may.
    UserLimit,
    /// The client did not finish its handshake in time.
    HandshakeTimeout,
    /// The destination name did not resolve.
    Dns,
    ConnectionRefused,
    NetworkUnreachable,
    HostUnreachable,
    /// The destination did not answer the connection attempt in time.
    ConnectTimeout,
    /// The destination closed or reset the connection before answering.
    UpstreamClosed,
    /// The destination answered with something that is not valid for the protocol.
    UpstreamProtocol,
    /// The destination accepted the request but did not answer in time.
    ResponseTimeout,
    /// A proxy-side resource (descriptors, a worker pool) failed.
    Internal,
}

impl FailureKind {
    pub fn blame(self) -> Blame {
        use FailureKind::*;
        match self {
            Malformed | Unsupported | AddressType | AuthRequired | AuthFailed | Revoked
            | Denied | UserLimit | HandshakeTimeout => Blame::Client,
            Dns | ConnectionRefused | NetworkUnreachable | HostUnreachable | ConnectTimeout
            | UpstreamClosed | UpstreamProtocol | ResponseTimeout => Blame::Upstream,
            Internal => Blame::Internal,
        }
    }
}

/// A failure with a human-readable detail for logs and error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    pub fn blame(&self) -> Blame {
        self.kind.blame()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} at fault)", self.detail, self.blame().as_str())
    }
}

impl std::error::Error for Failure {}

impl From<FailureKind> for Failure {
    fn from(kind: FailureKind) -> Failure {
        Failure::new(kind, format!("{kind:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_follows_the_kind() {
        assert_eq!(FailureKind::Denied.blame(), Blame::Client);
        assert_eq!(FailureKind::ConnectTimeout.blame(), Blame::Upstream);
        assert_eq!(FailureKind::Internal.blame(), Blame::Internal);
        let f = Failure::new(FailureKind::Dns, "no such host");
        assert_eq!(f.to_string(), "no such host (upstream at fault)");
    }
}
