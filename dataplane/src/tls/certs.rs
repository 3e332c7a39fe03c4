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
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("cannot write the generated certificate to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a PEM certificate chain (leaf first) and its private key, and checks they belong
/// together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
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
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(read_err(key))?;
    CertifiedKey::from_der(chain, private, &default_provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })
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
        assert!(load(&cert, &key).is_ok(), "the matching pair loads");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
