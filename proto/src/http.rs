//! HTTP/1.1 proxy request and response heads (RFC 9110, RFC 9112), parsed with httparse.

use base64::Engine;
use thiserror::Error;

use super::target::{valid_host_name, TargetAddr};

/// Largest request or response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 128;

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the proxy's own: never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// What a client can get wrong in a request head. Each maps to one status code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    TooLarge,
    #[error("request target must be absolute-form (http://host/path) or CONNECT host:port")]
    Target,
    #[error("scheme {0:?} not supported for forwarding (use CONNECT for https)")]
    Scheme(String),
    #[error("invalid host or port in request target")]
    Host,
    #[error("conflicting or invalid Content-Length / Transfer-Encoding")]
    Framing,
    #[error("transfer coding other than chunked")]
    TransferCoding,
    #[error("invalid Proxy-Authorization")]
    Authorization,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::TooLarge => 431,
            HttpError::TransferCoding => 501,
            _ => 400,
        }
    }
}

/// What an upstream server can get wrong in its response head (answered with 502).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpstreamHttpError {
    #[error("malformed response head: {0}")]
    Malformed(String),
    #[error("response head too large")]
    TooLarge,
    #[error("conflicting or invalid response framing")]
    Framing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

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

/// `Proxy-Authorization: Basic` credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: RequestTarget,
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Fixed(u64),
    Chunked,
    /// Response bodies only: delimited by the server closing the connection.
    UntilClose,
}

fn header_values<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// Comma-separated tokens of every field named `name`, lower-cased.
fn tokens(headers: &[Header], name: &str) -> Vec<String> {
    header_values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Body framing from Transfer-Encoding and Content-Length (RFC 9112 §6.3). Both present, or
/// several different lengths, is refused: that is how requests are smuggled.
fn framing(headers: &[Header]) -> Result<Option<BodyLength>, ()> {
    let te = tokens(headers, "transfer-encoding");
    let mut lengths = header_values(headers, "content-length")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|v| {
            let s = std::str::from_utf8(v).map_err(|_| ())?.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            s.parse::<u64>().map_err(|_| ())
        });
    let first = lengths.next().transpose()?;
    for other in lengths {
        if Some(other?) != first {
            return Err(());
        }
    }
    match (te.is_empty(), first) {
        (true, None) => Ok(None),
        (true, Some(n)) => Ok(Some(BodyLength::Fixed(n))),
        (false, Some(_)) => Err(()),
        (false, None) => {
            if te.last().map(String::as_str) == Some("chunked") {
                Ok(Some(BodyLength::Chunked))
            } else {
                Ok(Some(BodyLength::UntilClose))
            }
        }
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p| p != 0)
}

/// `Basic` credentials from a Proxy-Authorization value (scheme name case-insensitive,
/// RFC 9110 §11.1; RFC 7617 user-pass).
pub fn parse_basic(value: &[u8]) -> Result<BasicCredentials, HttpError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| HttpError::Authorization)?
        .trim();
    let (scheme, token) = value.split_once(' ').ok_or(HttpError::Authorization)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(HttpError::Authorization);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| HttpError::Authorization)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::Authorization)?;
    Ok(BasicCredentials {
        user: decoded[..colon].to_vec(),
        password: decoded[colon + 1..].to_vec(),
    })
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

fn parse_target(method: &str, uri: &str) -> Result<RequestTarget, HttpError> {
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

fn collect_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect()
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
        header_values(&self.headers, "proxy-authorization")
            .next()
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

fn write_forwarded_fields(
    out: &mut Vec<u8>,
    headers: &[Header],
    listed: &[String],
    also_skip: &[&str],
    via: &str,
    minor_version: u8,
) {
    let mut prior_via: Vec<&[u8]> = Vec::new();
    for h in headers {
        let lower = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || listed.contains(&lower)
            || also_skip.contains(&lower.as_str())
        {
            continue;
        }
        if lower == "via" {
            prior_via.push(&h.value);
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Via: ");
    for v in prior_via {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(format!("1.{minor_version} {via}\r\n").as_bytes());
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, UpstreamHttpError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(UpstreamHttpError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamHttpError::TooLarge),
        Err(e) => return Err(UpstreamHttpError::Malformed(e.to_string())),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(UpstreamHttpError::Malformed(
            "incomplete status line".into(),
        ));
    };
    let head = ResponseHead {
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        minor_version: version,
        headers: collect_headers(resp.headers),
    };
    framing(&head.headers).map_err(|()| UpstreamHttpError::Framing)?;
    Ok(Some((head, n)))
}

impl ResponseHead {
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// Body framing of this response to a request with `method` (RFC 9112 §6.3).
    pub fn body_length(&self, method: &str) -> BodyLength {
        if method == "HEAD" || self.is_informational() || self.status == 204 || self.status == 304 {
            return BodyLength::None;
        }
        match framing(&self.headers) {
            Ok(Some(b)) => b,
            Ok(None) | Err(()) => BodyLength::UntilClose,
        }
    }

    /// Whether the server will close after this response.
    pub fn server_closes(&self) -> bool {
        let conn = tokens(&self.headers, "connection");
        if self.minor_version == 0 {
            !conn.iter().any(|t| t == "keep-alive")
        } else {
            conn.iter().any(|t| t == "close")
        }
    }

    /// The head sent to the client. Transfer-Encoding is kept: the body is relayed with its
    /// framing unchanged.
    pub fn encode_downstream(&self, via: &str, close: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", self.status, self.reason).as_bytes());
        let listed = tokens(&self.headers, "connection");
        write_forwarded_fields(
            &mut out,
            &self.headers,
            &listed,
            &[],
            via,
            self.minor_version,
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A response generated by the proxy itself.
pub fn simple_response(status: u16, extra: &[(&str, &str)], body: &str, close: bool) -> Vec<u8> {
    let reason = match status {
        200 => "Connection Established",
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if status != 200 {
        out.push_str(&format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if status != 200 {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_request(text.as_bytes())
    }

    #[test]
    fn absolute_form_get() {
        let text = "GET http://Example.com:8080/a/b?x=1#frag HTTP/1.1\r\nHost: wrong\r\nProxy-Authorization: Basic YTpi\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nVia: 1.0 other\r\nAccept: */*\r\n\r\nBODY";
        let (h, n) = req(text).unwrap().unwrap();
        assert_eq!(&text[n..], "BODY");
        assert_eq!(
            h.target_addr(),
            &TargetAddr::Domain("example.com".into(), 8080)
        );
        assert_eq!(h.body_length(), Ok(BodyLength::None));
        assert!(!h.wants_close());
        let up = String::from_utf8(h.encode_upstream("zcproxy")).unwrap();
        assert!(
            up.starts_with("GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\n"),
            "{up}"
        );
        assert!(up.contains("Accept: */*\r\n"));
        assert!(up.contains("Via: 1.0 other, 1.1 zcproxy\r\n"));
        for gone in ["Proxy-Authorization", "X-Secret", "Connection", "wrong"] {
            assert!(!up.contains(gone), "{gone} in {up}");
        }
        assert!(up.ends_with("\r\n\r\n"));
    }

    #[test]
    fn targets() {
        let t = |s: &str| req(&format!("{s}\r\n\r\n"));
        let (h, _) = t("CONNECT [::1]:443 HTTP/1.1").unwrap().unwrap();
        assert_eq!(
            h.target_addr(),
            &TargetAddr::Ip("[::1]:443".parse().unwrap())
        );
        assert!(h.is_connect());
        let (h, _) = t("GET http://[2001:db8::1]/ HTTP/1.1").unwrap().unwrap();
        assert_eq!(
            h.target_addr(),
            &TargetAddr::Ip("[2001:db8::1]:80".parse().unwrap())
        );
        let (h, _) = t("GET http://h?q HTTP/1.0").unwrap().unwrap();
        assert!(matches!(&h.target, RequestTarget::Absolute { path, .. } if path == "/?q"));
        assert!(h.wants_close());
        assert_eq!(t("GET / HTTP/1.1"), Err(HttpError::Target));
        assert_eq!(
            t("GET https://h/ HTTP/1.1"),
            Err(HttpError::Scheme("https".into()))
        );
        assert_eq!(t("CONNECT host HTTP/1.1"), Err(HttpError::Host));
        assert_eq!(t("CONNECT host:0 HTTP/1.1"), Err(HttpError::Host));
        assert_eq!(t("CONNECT host:99999 HTTP/1.1"), Err(HttpError::Host));
        assert_eq!(t("GET http://u:p@h/ HTTP/1.1"), Err(HttpError::Host));
        assert_eq!(t("GET http://a b/ HTTP/1.1").unwrap_err().status(), 400);
    }

    #[test]
    fn framing_rules() {
        let f = |hs: &str| {
            req(&format!("POST http://h/ HTTP/1.1\r\n{hs}\r\n"))
                .map(|o| o.map(|(h, _)| h.body_length()))
        };
        assert_eq!(
            f("Content-Length: 5\r\n"),
            Ok(Some(Ok(BodyLength::Fixed(5))))
        );
        assert_eq!(
            f("Content-Length: 5, 5\r\n"),
            Ok(Some(Ok(BodyLength::Fixed(5))))
        );
        assert_eq!(
            f("Transfer-Encoding: gzip, chunked\r\n"),
            Ok(Some(Ok(BodyLength::Chunked)))
        );
        assert_eq!(
            f("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Err(HttpError::Framing)
        );
        assert_eq!(
            f("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Err(HttpError::Framing)
        );
        assert_eq!(f("Content-Length: -1\r\n"), Err(HttpError::Framing));
        assert_eq!(
            f("Transfer-Encoding: gzip\r\n"),
            Err(HttpError::TransferCoding)
        );
        assert_eq!(HttpError::TransferCoding.status(), 501);
    }

    #[test]
    fn limits_and_garbage() {
        assert_eq!(req("GET http://h/ HTTP/1.1\r\nA: b\r\n"), Ok(None));
        let many: String = (0..200).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            req(&format!("GET http://h/ HTTP/1.1\r\n{many}\r\n")),
            Err(HttpError::TooLarge)
        );
        let huge = format!("GET http://h/ HTTP/1.1\r\nA: {}", "x".repeat(MAX_HEAD));
        assert_eq!(req(&huge), Err(HttpError::TooLarge));
        assert!(matches!(
            req("GET\0 http://h/ HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn proxy_auth() {
        let with = |v: &str| {
            let (h, _) = req(&format!(
                "GET http://h/ HTTP/1.1\r\nProxy-Authorization: {v}\r\n\r\n"
            ))
            .unwrap()
            .unwrap();
            h.proxy_credentials()
        };
        assert_eq!(
            with("basic YWxpY2U6czNjcjp0"),
            Ok(Some(BasicCredentials {
                user: b"alice".to_vec(),
                password: b"s3cr:t".to_vec()
            }))
        );
        assert_eq!(
            with("BASIC YWxpY2U6czNjcjp0").unwrap().unwrap().user,
            b"alice"
        );
        assert_eq!(with("Bearer abc"), Err(HttpError::Authorization));
        assert_eq!(with("Basic !!!"), Err(HttpError::Authorization));
        assert_eq!(with("Basic YWxpY2U="), Err(HttpError::Authorization));
        let (h, _) = req("GET http://h/ HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.proxy_credentials(), Ok(None));
    }

    #[test]
    fn responses() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nabc";
        let (r, n) = parse_response(text.as_bytes()).unwrap().unwrap();
        assert_eq!(&text[n..], "abc");
        assert_eq!(r.body_length("GET"), BodyLength::Fixed(3));
        assert_eq!(r.body_length("HEAD"), BodyLength::None);
        assert!(!r.server_closes());
        let down = String::from_utf8(r.encode_downstream("zcproxy", true)).unwrap();
        assert!(down.contains("Content-Length: 3\r\n") && down.contains("Connection: close\r\n"));
        assert!(!down.contains("Keep-Alive") && down.contains("Via: 1.1 zcproxy"));
        let (r, _) = parse_response(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.body_length("GET"), BodyLength::UntilClose);
        assert!(r.server_closes());
        let (r, _) = parse_response(b"HTTP/1.1 100 Continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.is_informational());
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Err(UpstreamHttpError::Framing)
        );
        assert!(parse_response(b"HTTQ/1.1 200\r\n\r\n").is_err());
    }

    #[test]
    fn generated_responses() {
        let r = String::from_utf8(simple_response(
            407,
            &[("Proxy-Authenticate", "Basic realm=\"zcproxy\"")],
            "auth",
            true,
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(r.contains("Content-Length: 4\r\n") && r.ends_with("\r\n\r\nauth"));
        assert_eq!(
            simple_response(200, &[], "", false),
            b"HTTP/1.1 200 Connection Established\r\n\r\n"
        );
    }
}
