//! Request heads: the target (absolute form, CONNECT's authority, HTTP/2's pseudo-header
//! fields), framing, and the head sent upstream.

use super::{
    collect_headers, framing, parse_basic, tokens, write_forwarded_fields, BasicCredentials,
    BodyLength, Header, HttpError, MAX_HEAD, MAX_HEADERS,
};
use crate::target::{valid_host_name, TargetAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTarget {
    /// CONNECT host:port
    Authority(TargetAddr),
    /// http://authority/path?query
    Absolute {
        target: TargetAddr,
        authority: String,
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: RequestTarget,
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p| p != 0)
}

/// The target of a CONNECT request: `host:port` or `[v6]:port` (RFC 9110 §9.3.6, RFC 9114
/// §4.4: `:authority` only).
pub fn connect_target(authority: &str) -> Result<TargetAddr, HttpError> {
    parse_authority(authority, None)
}

/// Splits `host[:port]` / `[v6][:port]`.
fn parse_authority(auth: &str, default_port: Option<u16>) -> Result<TargetAddr, HttpError> {
    if auth.contains('@') {
        return Err(HttpError::Host);
    }
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(HttpError::Host)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p).ok_or(HttpError::Host)?),
            None if after.is_empty() => None,
            None => return Err(HttpError::Host),
        };
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| HttpError::Host)?;
        (ip.to_string(), port)
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(parse_port(p).ok_or(HttpError::Host)?)),
            None => (auth.to_string(), None),
        }
    };
    let port = port.or(default_port).ok_or(HttpError::Host)?;
    if !valid_host_name(host.as_bytes()) && host.parse::<std::net::IpAddr>().is_err() {
        return Err(HttpError::Host);
    }
    Ok(TargetAddr::from_host(&host, port))
}

/// The target of a request whose scheme, authority and path come apart (HTTP/2's
/// pseudo-header fields): only `http` is forwarded (`https` goes through CONNECT).
pub fn absolute_target(
    scheme: &str,
    authority: &str,
    path: &str,
) -> Result<RequestTarget, HttpError> {
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(HttpError::Scheme(scheme.to_string()));
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    Ok(RequestTarget::Absolute {
        target: parse_authority(authority, Some(80))?,
        authority: authority.to_string(),
        path,
    })
}

pub(super) fn parse_target(method: &str, uri: &str) -> Result<RequestTarget, HttpError> {
    if method == "CONNECT" {
        return parse_authority(uri, None).map(RequestTarget::Authority);
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(HttpError::Target);
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(HttpError::Scheme(scheme.to_string()));
    }
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = path.split('#').next().unwrap_or("");
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok(RequestTarget::Absolute {
        target: parse_authority(authority, Some(80))?,
        authority: authority.to_string(),
        path,
    })
}

pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if n > MAX_HEAD {
        return Err(HttpError::TooLarge);
    }
    let (Some(method), Some(uri), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed("incomplete request line".into()));
    };
    let head = RequestHead {
        method: method.to_string(),
        target: parse_target(method, uri)?,
        minor_version: version,
        headers: collect_headers(req.headers),
    };
    head.body_length()?;
    Ok(Some((head, n)))
}

impl RequestHead {
    pub fn is_connect(&self) -> bool {
        matches!(self.target, RequestTarget::Authority(_))
    }

    pub fn target_addr(&self) -> &TargetAddr {
        match &self.target {
            RequestTarget::Authority(t) | RequestTarget::Absolute { target: t, .. } => t,
        }
    }

    pub fn body_length(&self) -> Result<BodyLength, HttpError> {
        match framing(&self.headers) {
            Ok(None) => Ok(BodyLength::None),
            Ok(Some(BodyLength::UntilClose)) => Err(HttpError::TransferCoding),
            Ok(Some(b)) => Ok(b),
            Err(()) => Err(HttpError::Framing),
        }
    }

    /// Whether the client wants the connection closed after this exchange.
    pub fn wants_close(&self) -> bool {
        let conn = tokens(&self.headers, "connection");
        let proxy_conn = tokens(&self.headers, "proxy-connection");
        let all = || conn.iter().chain(proxy_conn.iter());
        if self.minor_version == 0 {
            !all().any(|t| t == "keep-alive")
        } else {
            all().any(|t| t == "close")
        }
    }

    pub fn expects_continue(&self) -> bool {
        tokens(&self.headers, "expect")
            .iter()
            .any(|t| t == "100-continue")
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Basic credentials from Proxy-Authorization (scheme name case-insensitive,
    /// RFC 9110 §11.1). `Ok(None)` when the field is absent.
    pub fn proxy_credentials(&self) -> Result<Option<BasicCredentials>, HttpError> {
        self.header("proxy-authorization")
            .map(parse_basic)
            .transpose()
    }

    /// The head sent upstream: origin-form target, hop-by-hop fields (and those the client
    /// listed in Connection) removed, Host set from the target, Via appended.
    pub fn encode_upstream(&self, via: &str) -> Vec<u8> {
        let RequestTarget::Absolute {
            authority, path, ..
        } = &self.target
        else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
        let listed = tokens(&self.headers, "connection");
        write_forwarded_fields(
            &mut out,
            &self.headers,
            &listed,
            &["host"],
            via,
            self.minor_version,
        );
        out.extend_from_slice(b"\r\n");
        out
    }
}
