//! HTTP/1.1 proxy request and response heads (RFC 9110, RFC 9112), parsed with httparse:
//! requests (`request.rs`: targets, the head sent upstream), responses (`response.rs`: the
//! upstream's heads, the proxy's own answers) and `Proxy-Authorization` (`auth.rs`).

mod auth;
mod request;
mod response;

use thiserror::Error;

pub use auth::{parse_basic, BasicCredentials};
pub use request::{absolute_target, connect_target, parse_request, RequestHead, RequestTarget};
pub use response::{parse_response, simple_response, ResponseHead};

/// Largest request or response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 128;

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the proxy's own: never forwarded.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Fixed(u64),
    Chunked,
    /// Response bodies only: delimited by the server closing the connection.
    UntilClose,
}

pub(crate) fn header_values<'a>(
    headers: &'a [Header],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// Comma-separated tokens of every field named `name`, lower-cased.
pub(crate) fn tokens(headers: &[Header], name: &str) -> Vec<String> {
    header_values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Body framing from Transfer-Encoding and Content-Length (RFC 9112 §6.3). Both present, or
/// several different lengths, is refused: that is how requests are smuggled.
pub(crate) fn framing(headers: &[Header]) -> Result<Option<BodyLength>, ()> {
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

pub(crate) fn collect_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect()
}

pub(crate) fn write_forwarded_fields(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetAddr;

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
