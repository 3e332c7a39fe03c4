//! The certificates in use and which one a handshake gets: the one whose names cover the
//! client's SNI, else the default one (the first configured), or none where unknown names
//! are refused (the client gets a handshake alert).

use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::certs::Loaded;

#[derive(Debug)]
pub struct CertSet {
    default: Loaded,
    more: Vec<Loaded>,
    refuse_unknown: bool,
}

impl CertSet {
    pub fn new(default: Loaded, more: Vec<Loaded>, refuse_unknown: bool) -> CertSet {
        CertSet {
            default,
            more,
            refuse_unknown,
        }
    }

    /// Whether `other` holds the same certificates (a reload that changed nothing).
    pub fn same_certificates(&self, other: &CertSet) -> bool {
        let certs = |s: &CertSet| {
            std::iter::once(&s.default)
                .chain(&s.more)
                .map(|l| l.key.cert.clone())
                .collect::<Vec<_>>()
        };
        certs(self) == certs(other)
    }

    pub fn default_key(&self) -> &Arc<CertifiedKey> {
        &self.default.key
    }

    /// The certificate for a handshake that named `sni` (`None`: no SNI, as clients that
    /// reach the proxy by address send).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = sni else {
            return Some(self.default.key.clone());
        };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        let covers = |c: &&Loaded| c.names.iter().any(|n| name_matches(n, &sni));
        if let Some(c) = std::iter::once(&self.default)
            .chain(&self.more)
            .find(covers)
        {
            return Some(c.key.clone());
        }
        (!self.refuse_unknown).then(|| self.default.key.clone())
    }
}

/// Whether a certificate name (`example.com`, or `*.example.com` for exactly one more
/// label, RFC 6125 §6.4.3) covers `host` (lower case).
fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(names: &[&str]) -> Loaded {
        let g = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
        let key = CertifiedKey::from_der(
            vec![g.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(g.signing_key.serialize_der().into()),
            &rustls::crypto::ring::default_provider(),
        )
        .unwrap();
        Loaded {
            key: Arc::new(key),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn the_name_picks_the_certificate_and_unknown_names_get_the_default_or_nothing() {
        let (a, b, c) = (
            loaded(&["proxy.example"]),
            loaded(&["*.corp.example", "corp.example"]),
            loaded(&["other.example"]),
        );
        let keys = [a.key.clone(), b.key.clone(), c.key.clone()];
        let set = CertSet::new(a.clone(), vec![b.clone(), c.clone()], false);
        let pick = |sni| {
            set.select(sni)
                .map(|k| keys.iter().position(|x| Arc::ptr_eq(x, &k)))
        };
        assert_eq!(pick(None), Some(Some(0)));
        assert_eq!(pick(Some("proxy.example")), Some(Some(0)));
        assert_eq!(pick(Some("EU.Corp.Example.")), Some(Some(1)));
        assert_eq!(pick(Some("corp.example")), Some(Some(1)));
        assert_eq!(
            pick(Some("a.b.corp.example")),
            Some(Some(0)),
            "one label only"
        );
        assert_eq!(pick(Some("other.example")), Some(Some(2)));
        assert_eq!(pick(Some("unknown.example")), Some(Some(0)));
        let strict = CertSet::new(a, vec![b, c], true);
        assert!(strict.select(Some("unknown.example")).is_none());
        assert!(strict.select(Some("x.corp.example")).is_some());
        assert!(strict.select(None).is_some(), "no SNI: the default");
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(name_matches("*.a.example", "b.a.example"));
        assert!(!name_matches("*.a.example", "a.example"));
        assert!(!name_matches("*.a.example", ".a.example"));
        assert!(!name_matches("*.a.example", "c.b.a.example"));
        assert!(name_matches("a.example", "a.example"));
        assert!(!name_matches("a.example", "b.example"));
    }
}
