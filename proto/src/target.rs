use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A destination as the client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    Ip(SocketAddr),
    /// A host name still to be resolved (never an IP literal: see [`TargetAddr::from_host`]).
    Domain(String, u16),
}

impl TargetAddr {
    /// Builds a target from a host string, turning IP literals (with or without IPv6
    /// brackets) into addresses so that they never go through name resolution.
    pub fn from_host(host: &str, port: u16) -> TargetAddr {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
            Err(_) => TargetAddr::Domain(host.to_ascii_lowercase(), port),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(a) => a.port(),
            TargetAddr::Domain(_, p) => *p,
        }
    }

    pub fn host_name(&self) -> Option<&str> {
        match self {
            TargetAddr::Ip(_) => None,
            TargetAddr::Domain(h, _) => Some(h),
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(a) => write!(f, "{a}"),
            TargetAddr::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A host name a client may ask for: DNS-shaped, printable ASCII, at most 255 bytes.
pub fn valid_host_name(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_are_not_names() {
        assert_eq!(
            TargetAddr::from_host("[::1]", 80),
            TargetAddr::Ip("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            TargetAddr::from_host("127.0.0.1", 8080),
            TargetAddr::Ip("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            TargetAddr::from_host("Example.COM", 443),
            TargetAddr::Domain("example.com".into(), 443)
        );
        assert!(valid_host_name(b"a-b.example_1.com"));
        assert!(!valid_host_name(b"a b"));
        assert!(!valid_host_name(b""));
        assert!(!valid_host_name(b"a\0b"));
    }
}
