//! CONNECT-UDP targets (RFC 9298 §2-3): the URI template a proxy publishes and the target
//! a request's `:path` names through it.
//!
//! A template is a path (and optional query) with the two variables `{target_host}` and
//! `{target_port}`, e.g. the default `/.well-known/masque/udp/{target_host}/{target_port}/`
//! or `/masque?h={target_host}&p={target_port}`. A full `https://authority/...` template is
//! accepted; only its path and query are matched, since that is what `:path` carries.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::target::{valid_host_name, TargetAddr};

/// The template RFC 9298 §3 suggests, and the one clients use when told only the proxy.
pub const DEFAULT_TEMPLATE: &str = "/.well-known/masque/udp/{target_host}/{target_port}/";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("a template must be a path (or an https URI) naming {{target_host}} and {{target_port}} once each")]
    Variables,
    #[error("the variables of a template must be separated by literal text")]
    Adjacent,
    #[error("a template must start with '/' or https://")]
    NotAPath,
}

/// Why a request path does not name a UDP target. Both are the client's fault: a path that
/// is not this proxy's template is a 404, a template match with a bad host or port a 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetError {
    #[error("the path does not match the proxy's CONNECT-UDP template")]
    NoMatch,
    #[error("target_host is not a host name or an IP address")]
    Host,
    #[error("target_port is not a port number (1-65535)")]
    Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Host,
    Port,
}

/// A parsed CONNECT-UDP URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        let path = match template.strip_prefix("https://") {
            Some(rest) => rest
                .find('/')
                .map(|i| &rest[i..])
                .ok_or(TemplateError::NotAPath)?,
            None if template.starts_with('/') => template,
            None => return Err(TemplateError::NotAPath),
        };
        let mut parts = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            let next = [("{target_host}", Part::Host), ("{target_port}", Part::Port)]
                .into_iter()
                .filter_map(|(name, part)| rest.find(name).map(|i| (i, name.len(), part)))
                .min_by_key(|(i, _, _)| *i);
            match next {
                Some((0, len, part)) => {
                    if matches!(parts.last(), Some(Part::Host | Part::Port)) {
                        return Err(TemplateError::Adjacent);
                    }
                    parts.push(part);
                    rest = &rest[len..];
                }
                Some((i, _, _)) => {
                    parts.push(Part::Literal(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
            }
        }
        let count = |p: &Part| parts.iter().filter(|q| *q == p).count();
        if count(&Part::Host) != 1 || count(&Part::Port) != 1 {
            return Err(TemplateError::Variables);
        }
        Ok(Template { parts })
    }

    /// The target `path` (a request's `:path`) names, if it is an expansion of this template.
    pub fn target(&self, path: &str) -> Result<TargetAddr, TargetError> {
        let (mut host, mut port) = (None, None);
        let mut rest = path;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(lit) => {
                    rest = rest
                        .strip_prefix(lit.as_str())
                        .ok_or(TargetError::NoMatch)?;
                }
                Part::Host | Part::Port => {
                    // A variable runs to the next literal (parse() keeps them apart) or,
                    // last in the template, to the end of the path.
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(lit)) => rest.find(lit.as_str()),
                        _ => Some(rest.len()),
                    }
                    .ok_or(TargetError::NoMatch)?;
                    let value = &rest[..end];
                    if value.is_empty() || value.contains(['/', '?', '&', '#']) {
                        return Err(TargetError::NoMatch);
                    }
                    if *part == Part::Host {
                        host = Some(value);
                    } else {
                        port = Some(value);
                    }
                    rest = &rest[end..];
                }
            }
        }
        if !rest.is_empty() {
            return Err(TargetError::NoMatch);
        }
        let port = parse_port(port.ok_or(TargetError::NoMatch)?)?;
        let host = percent_decode(host.ok_or(TargetError::NoMatch)?).ok_or(TargetError::Host)?;
        target_from(&host, port)
    }
}

impl Default for Template {
    fn default() -> Self {
        Template::parse(DEFAULT_TEMPLATE).expect("the default template parses")
    }
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::Port);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::Port),
        Ok(p) => Ok(p),
    }
}

/// Decodes `%XX` escapes (percent-encoding, from the rust-url project); `None` for a result
/// that is not ASCII. A malformed escape stays as it is, and its `%` then fails the host
/// name check.
fn percent_decode(text: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()?;
    decoded.is_ascii().then(|| decoded.into_owned())
}

/// RFC 9298 §3: a host name, an IPv4 literal, or an IPv6 literal (its colons were
/// percent-encoded; brackets are not part of it, though tolerated).
fn target_from(host: &str, port: u16) -> Result<TargetAddr, TargetError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(TargetAddr::Ip(SocketAddr::new(ip, port)));
    }
    if bare.contains(':') || !valid_host_name(bare.as_bytes()) {
        return Err(TargetError::Host);
    }
    Ok(TargetAddr::Domain(bare.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> TargetAddr {
        TargetAddr::Ip(s.parse().unwrap())
    }

    #[test]
    fn the_default_template_names_hosts_and_addresses() {
        let t = Template::default();
        let cases = [
            (
                "/.well-known/masque/udp/192.0.2.6/443/",
                Ok(ip("192.0.2.6:443")),
            ),
            (
                "/.well-known/masque/udp/2001%3Adb8%3A%3A42/53/",
                Ok(ip("[2001:db8::42]:53")),
            ),
            (
                "/.well-known/masque/udp/2001%3adb8%3a%3a42/53/",
                Ok(ip("[2001:db8::42]:53")),
            ),
            (
                "/.well-known/masque/udp/Example.COM/8443/",
                Ok(TargetAddr::Domain("example.com".into(), 8443)),
            ),
            ("/.well-known/masque/udp/h/0/", Err(TargetError::Port)),
            // A malformed escape, and one that decodes to a non-ASCII name.
            (
                "/.well-known/masque/udp/ex%zzample/53/",
                Err(TargetError::Host),
            ),
            ("/.well-known/masque/udp/ex%4/53/", Err(TargetError::Host)),
            (
                "/.well-known/masque/udp/%C3%A9t%C3%A9/53/",
                Err(TargetError::Host),
            ),
            ("/.well-known/masque/udp/h/65536/", Err(TargetError::Port)),
            ("/.well-known/masque/udp/h/+53/", Err(TargetError::Port)),
            (
                "/.well-known/masque/udp/h/0053/",
                Ok(TargetAddr::Domain("h".into(), 53)),
            ),
            ("/.well-known/masque/udp/ex%2/53/", Err(TargetError::Host)),
            ("/.well-known/masque/udp/a%20b/53/", Err(TargetError::Host)),
            ("/.well-known/masque/udp/a%3Ab/53/", Err(TargetError::Host)),
            ("/.well-known/masque/udp/%C3%A9/53/", Err(TargetError::Host)),
            ("/.well-known/masque/udp//53/", Err(TargetError::NoMatch)),
            ("/.well-known/masque/udp/h/53", Err(TargetError::NoMatch)),
            ("/.well-known/masque/udp/h/53/x", Err(TargetError::NoMatch)),
            ("/.well-known/masque/udp/a/b/53/", Err(TargetError::NoMatch)),
            ("/index.html", Err(TargetError::NoMatch)),
            ("", Err(TargetError::NoMatch)),
        ];
        for (path, want) in cases {
            assert_eq!(t.target(path), want, "{path}");
        }
    }

    #[test]
    fn configured_templates_with_a_query_or_an_authority() {
        let q = Template::parse("/masque?h={target_host}&p={target_port}").unwrap();
        assert_eq!(q.target("/masque?h=10.0.0.1&p=53"), Ok(ip("10.0.0.1:53")));
        assert_eq!(
            q.target("/masque?h=10.0.0.1&p=53&x=1"),
            Err(TargetError::NoMatch)
        );
        assert_eq!(
            q.target("/masque?p=53&h=10.0.0.1"),
            Err(TargetError::NoMatch)
        );
        let full =
            Template::parse("https://proxy.example:4433/udp/{target_port}/{target_host}").unwrap();
        assert_eq!(
            full.target("/udp/53/dns.example"),
            Ok(TargetAddr::Domain("dns.example".into(), 53))
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for (t, e) in [
            ("/udp/{target_host}", TemplateError::Variables),
            (
                "/udp/{target_host}/{target_host}/{target_port}",
                TemplateError::Variables,
            ),
            ("/udp/{target_host}{target_port}", TemplateError::Adjacent),
            ("udp/{target_host}/{target_port}", TemplateError::NotAPath),
            ("https://proxy.example", TemplateError::NotAPath),
        ] {
            assert_eq!(Template::parse(t), Err(e), "{t}");
        }
    }
}
