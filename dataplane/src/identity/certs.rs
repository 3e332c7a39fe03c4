//! Certificates and keys: read from PEM files, or generated (self-signed) when the operator
//! configured none, and the SHA-256 fingerprint clients can pin or compare.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use thiserror::Error;

/// Why no certificate could be had. Always the operator's to fix (a path, a file, a key).
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: unusable private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: the certificate is not valid now (valid from {not_before} to {not_after})")]
    NotValidNow {
        path: PathBuf,
        not_before: String,
        not_after: String,
    },
    #[error("{path}: unreadable certificate: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("no certificate configured")]
    NoPairs,
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("cannot write the generated certificate to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate chain with its key, and the names its leaf is valid for.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names (lower case, `*.` wildcards kept) of the subjectAltName, or the subject's
    /// common name for a certificate without one.
    pub names: Vec<String>,
}

/// Reads a PEM certificate chain (leaf first) and its private key, and checks they belong
/// together and that the leaf is valid now (an expired certificate fails here, not in
/// every client's handshake).
pub fn load(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| TlsError::Read {
            path,
            reason: e.to_string(),
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(cert))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    };
    let names = leaf_names(leaf, cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(read_err(key))?;
    let key = CertifiedKey::from_der(chain, private, &default_provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(Loaded { key, names })
}

/// Checks the leaf's validity period against the clock and reads the names it is for.
fn leaf_names(leaf: &CertificateDer<'_>, path: &Path) -> Result<Vec<String>, TlsError> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| TlsError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        return Err(TlsError::NotValidNow {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = subject_common_name(&parsed) {
            names.push(cn.to_ascii_lowercase());
        }
    }
    Ok(names)
}

/// The subject's common name (CN) of a DER certificate, if it has one.
pub fn leaf_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    subject_common_name(&cert)
}

/// The subject's common name (CN), if it has one in a readable string type.
pub fn subject_common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// A self-signed certificate for the names a local client would use to reach `listen`
/// (localhost, the loopback addresses and the listen address itself), and its PEM.
pub fn generate(listen: SocketAddr) -> Result<(Arc<CertifiedKey>, String), TlsError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let pem = generated.cert.pem();
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let certified =
        CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &default_provider())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((Arc::new(certified), pem))
}

/// Writes `pem` to `path` whole or not at all (a reader never sees half a certificate).
pub fn write_pem(path: &Path, pem: &str) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, pem).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The SHA-256 fingerprint of the leaf certificate, as `openssl x509 -fingerprint -sha256`
/// prints it (upper-case hex pairs joined by colons).
pub fn fingerprint(key: &CertifiedKey) -> String {
    let Some(leaf) = key.cert.first() else {
        return String::new();
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zcproxy-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn generated_certificates_load_back_from_pem_with_the_same_fingerprint() {
        let (key, pem) = generate("127.0.0.1:1080".parse().unwrap()).unwrap();
        let dir = scratch("roundtrip");
        let cert_path = dir.join("cert.pem");
        write_pem(&cert_path, &pem).unwrap();
        assert!(std::fs::read_to_string(&cert_path)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let fp = fingerprint(&key);
        assert_eq!(fp.len(), 95);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'));
        let chain: Vec<_> = CertificateDer::pem_file_iter(&cert_path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain[0], key.cert[0]);
        let names = leaf_names(&chain[0], &cert_path).unwrap();
        assert_eq!(names, ["localhost"], "IP addresses are not DNS names");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = scratch("bad");
        let (_, a_pem) = generate("127.0.0.1:1".parse().unwrap()).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &a_pem).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(
            matches!(load(&cert, &key), Err(TlsError::Key { .. })),
            "mismatched key"
        );
        // Expired, and not valid yet: refused with the period in the message.
        for (from, to) in [((2001, 1, 1), (2002, 1, 1)), ((2090, 1, 1), (2091, 1, 1))] {
            let mut params = rcgen::CertificateParams::new(vec!["old.example".into()]).unwrap();
            params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
            params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
            let signing = rcgen::KeyPair::generate().unwrap();
            let expired = params.self_signed(&signing).unwrap();
            std::fs::write(&cert, expired.pem()).unwrap();
            std::fs::write(&key, signing.serialize_pem()).unwrap();
            let e = load(&cert, &key).unwrap_err();
            assert!(matches!(e, TlsError::NotValidNow { .. }), "{e}");
            assert!(e.to_string().contains(&from.0.to_string()), "{e}");
        }
        assert!(matches!(
            load(&dir.join("none.pem"), &key),
            Err(TlsError::Read { .. })
        ));
        std::fs::write(&cert, "not a certificate\n").unwrap();
        assert!(matches!(
            load(&cert, &key),
            Err(TlsError::NoCertificate { .. })
        ));
        std::fs::write(&cert, other.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let loaded = load(&cert, &key).expect("the matching pair loads");
        assert_eq!(loaded.names, ["x"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
