//! HTTP's view of a failure: a status code and a `Proxy-Status` header (RFC 9209).

use super::failure::{Failure, FailureKind};

/// The RFC 9209 §2.3 error types zcproxy sends (only those; the RFC has more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    DnsError,
    DestinationIpProhibited,
    DestinationIpUnroutable,
    ConnectionRefused,
    ConnectionTerminated,
    ConnectionTimeout,
    HttpRequestError,
    HttpProtocolError,
    HttpResponseTimeout,
    ProxyInternalError,
}

impl ProxyError {
    /// The token as RFC 9209 spells it.
    pub fn token(self) -> &'static str {
        use ProxyError::*;
        match self {
            DnsError => "dns_error",
            DestinationIpProhibited => "destination_ip_prohibited",
            DestinationIpUnroutable => "destination_ip_unroutable",
            ConnectionRefused => "connection_refused",
            ConnectionTerminated => "connection_terminated",
            ConnectionTimeout => "connection_timeout",
            HttpRequestError => "http_request_error",
            HttpProtocolError => "http_protocol_error",
            HttpResponseTimeout => "http_response_timeout",
            ProxyInternalError => "proxy_internal_error",
        }
    }
}

/// How HTTP answers a failure: status, and the Proxy-Status error type where RFC 9209 has
/// one (authentication and limits are plain 407 / 429).
pub fn http_answer(kind: FailureKind) -> (u16, Option<ProxyError>) {
    use FailureKind::*;
    match kind {
        Malformed | AddressType => (400, Some(ProxyError::HttpRequestError)),
        Unsupported => (501, Some(ProxyError::HttpRequestError)),
        AuthRequired | AuthFailed | Revoked => (407, None),
        Denied => (403, Some(ProxyError::DestinationIpProhibited)),
        UserLimit => (429, None),
        HandshakeTimeout => (408, None),
        Dns => (502, Some(ProxyError::DnsError)),
        ConnectionRefused => (502, Some(ProxyError::ConnectionRefused)),
        NetworkUnreachable | HostUnreachable => (502, Some(ProxyError::DestinationIpUnroutable)),
        ConnectTimeout => (504, Some(ProxyError::ConnectionTimeout)),
        UpstreamClosed => (502, Some(ProxyError::ConnectionTerminated)),
        UpstreamProtocol => (502, Some(ProxyError::HttpProtocolError)),
        ResponseTimeout => (504, Some(ProxyError::HttpResponseTimeout)),
        Internal => (500, Some(ProxyError::ProxyInternalError)),
    }
}

/// The challenge sent with a 407.
pub const PROXY_AUTHENTICATE: &str = "Basic realm=\"zcproxy\"";

/// An HTTP answer to `failure` from the proxy named `via`, for any HTTP version: the status
/// and the header fields that go with it (`Proxy-Authenticate` on a 407, `Proxy-Status`
/// where RFC 9209 has an error type).
pub fn answer(via: &str, failure: &Failure) -> (u16, Vec<(&'static str, String)>) {
    let (status, error) = http_answer(failure.kind);
    let mut fields = Vec::new();
    if status == 407 {
        fields.push(("Proxy-Authenticate", PROXY_AUTHENTICATE.to_string()));
    }
    if let Some(e) = error {
        fields.push(("Proxy-Status", header_value(via, e, failure)));
    }
    (status, fields)
}

/// The `Proxy-Status` header value naming this proxy (`via`), the error type and details.
pub fn header_value(via: &str, error: ProxyError, failure: &Failure) -> String {
    // RFC 8941 string: only printable ASCII, with `"` and `\` escaped.
    let details: String = failure
        .detail
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("{via}; error={}; details=\"{details}\"", error.token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_statuses_and_tokens() {
        assert_eq!(
            http_answer(FailureKind::Denied),
            (403, Some(ProxyError::DestinationIpProhibited))
        );
        assert_eq!(
            http_answer(FailureKind::ConnectTimeout),
            (504, Some(ProxyError::ConnectionTimeout))
        );
        assert_eq!(http_answer(FailureKind::AuthFailed), (407, None));
        assert_eq!(
            http_answer(FailureKind::HostUnreachable)
                .1
                .map(ProxyError::token),
            Some("destination_ip_unroutable")
        );
    }

    #[test]
    fn details_are_a_valid_structured_field_string() {
        let f = Failure::new(FailureKind::Dns, "no \"such\" host \\ é\r\n");
        assert_eq!(
            header_value("zcproxy", ProxyError::DnsError, &f),
            r#"zcproxy; error=dns_error; details="no \"such\" host \\ ""#
        );
    }
}
