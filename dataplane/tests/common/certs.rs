//! Certificates for the TLS tests, made with Debian's openssl: self-signed server
//! certificates, a CA, and client certificates it issues.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed server certificate (and its key) for CN `cn` with subjectAltName `san`.
pub fn self_signed(dir: &Path, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    self_signed_as(dir, cn, san, "critical,CA:FALSE")
}

/// A self-signed CA certificate (and its key) that issues client certificates.
pub fn certificate_authority(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    self_signed_as(dir, cn, "DNS:ca.invalid", "critical,CA:TRUE")
}

fn self_signed_as(dir: &Path, cn: &str, san: &str, constraints: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={cn}"),
        "-addext",
        &format!("subjectAltName={san}"),
        "-addext",
        &format!("basicConstraints={constraints}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// A client certificate for CN `cn` issued by the CA in `ca`/`ca_key`.
pub fn issued(dir: &Path, ca: &Path, ca_key: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key, csr) = (
        dir.join(format!("{cn}.pem")),
        dir.join(format!("{cn}.key")),
        dir.join(format!("{cn}.csr")),
    );
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    let ext = dir.join(format!("{cn}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}
