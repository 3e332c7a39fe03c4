//! ACL rule vocabulary: what a rule can say about a request.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::PolicyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// Declares [`Protocol`] once: the variants, their rule spelling, and `ALL`, so that adding
/// a protocol sizes every per-protocol table with it (nothing is counted by hand).
macro_rules! protocols {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// The client-facing protocol a request arrived with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Protocol {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)+
        }

        impl Protocol {
            pub const ALL: &'static [Protocol] = &[$(Protocol::$variant,)+];
            pub const COUNT: usize = Protocol::ALL.len();

            /// The name rules and metrics use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Protocol::$variant => $name,)+
                }
            }
        }
    };
}

protocols! {
    Socks5 => "socks5",
    Socks4 => "socks4",
    /// HTTP/1.1 forward proxying of absolute-form requests.
    Http => "http",
    /// HTTP CONNECT tunnels.
    Connect => "connect",
    /// CONNECT over HTTP/3 (QUIC): a TCP tunnel per request stream.
    H3Connect => "h3_connect",
    /// CONNECT over HTTP/2 (TLS with ALPN h2): a TCP tunnel per stream.
    H2Connect => "h2_connect",
    /// MASQUE CONNECT-UDP over HTTP/3: a UDP flow per request stream.
    ConnectUdp => "connect_udp",
    /// SOCKS5 UDP ASSOCIATE: each destination a client sends datagrams to.
    Socks5Udp => "socks5_udp",
}

impl Protocol {
    /// Position in [`Protocol::ALL`], for per-protocol tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A destination host name pattern: `example.com` (exact) or `*.example.com` (any strict
/// subdomain). Stored lower-case; DNS names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix including its leading dot, e.g. `.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for HostPattern {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower).to_string();
        if let Some(rest) = lower.strip_prefix("*.") {
            if valid_dns_name(rest) {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if valid_dns_name(&lower) {
            return Ok(HostPattern::Exact(lower));
        }
        Err(PolicyError::HostPattern(s.to_string()))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PolicyError::PortRange(s.to_string());
        let (low, high) = match s.trim().split_once('-') {
            Some((l, h)) => (l.trim(), h.trim()),
            None => (s.trim(), s.trim()),
        };
        let low: u16 = low.parse().map_err(|_| err())?;
        let high: u16 = high.parse().map_err(|_| err())?;
        if low == 0 || low > high {
            return Err(err());
        }
        Ok(PortRange { low, high })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(HostPattern);
serde_via_str!(PortRange);

/// One ACL rule. Every non-empty field must match; empty fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    /// Requested destination host names. A rule with hosts never matches a request that
    /// named its destination by address only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostPattern>,
    /// Destination addresses (checked against every resolved address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    /// Client source addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<IpNet>,
}

impl Rule {
    /// A rule that allows every destination in `net` (the `--allow-destination` flag).
    pub fn allow_destination(net: IpNet) -> Rule {
        Rule {
            action: Action::Allow,
            hosts: vec![],
            destinations: vec![net],
            ports: vec![],
            protocols: vec![],
            sources: vec![],
        }
    }

    pub(crate) fn matches(
        &self,
        protocol: Protocol,
        client: IpAddr,
        host: Option<&str>,
        addr: IpAddr,
        port: u16,
    ) -> bool {
        (self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h))))
            && (self.destinations.is_empty() || self.destinations.iter().any(|n| n.contains(&addr)))
            && (self.ports.is_empty() || self.ports.iter().any(|r| r.contains(port)))
            && (self.protocols.is_empty() || self.protocols.contains(&protocol))
            && (self.sources.is_empty() || self.sources.iter().any(|n| n.contains(&client)))
    }

    /// Whether this rule names `addr` explicitly by destination range: only such a rule may
    /// open a protected (internal) address.
    pub(crate) fn names_address(&self, addr: IpAddr) -> bool {
        self.destinations.iter().any(|n| n.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let exact: HostPattern = "Example.COM".parse().unwrap();
        assert!(exact.matches("example.com"));
        assert!(exact.matches("EXAMPLE.com."));
        assert!(!exact.matches("www.example.com"));
        let suffix: HostPattern = "*.example.com".parse().unwrap();
        assert!(suffix.matches("www.example.com"));
        assert!(suffix.matches("a.b.EXAMPLE.com"));
        assert!(!suffix.matches("example.com"));
        assert!(!suffix.matches("badexample.com"));
        assert!(!suffix.matches("ü.com"));
        for bad in ["", "*.", "a..b", "*", "exa mple.com", "*.*.com", "x/y"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "8000-9000".parse().unwrap();
        assert!(r.contains(8000) && r.contains(9000) && !r.contains(7999));
        assert_eq!("443".parse::<PortRange>().unwrap().to_string(), "443");
        for bad in ["0", "9-8", "70000", "a", "1-", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rule_serde_round_trip() {
        let rule: Rule = toml::from_str(
            r#"action = "deny"
hosts = ["*.ads.example"]
destinations = ["10.0.0.0/8", "fd00::/8"]
ports = ["80", "8000-8080"]
protocols = ["socks5", "connect"]
sources = ["192.0.2.0/24"]"#,
        )
        .unwrap();
        let json = serde_json::to_string(&rule).unwrap();
        let back: Rule = serde_json::from_str(&json).unwrap();
        assert_eq!(rule, back);
        assert!(toml::from_str::<Rule>("action = \"deny\"\nbogus = 1").is_err());
    }
}
