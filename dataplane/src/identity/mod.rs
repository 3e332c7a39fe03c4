//! The proxy's TLS identity: one certificate and key shared by every TLS listener (QUIC, and
//! TLS over TCP), from PEM files that are reloaded when they change, or generated at start
//! when none are configured (so the quick start needs no certificate made by hand).

mod certs;
mod sni;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sni::CertSet;

pub use certs::{fingerprint, leaf_common_name, TlsError};
pub use watch::spawn_reloader;

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the certificates in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The default pair first, then the ones chosen by SNI.
    Files {
        pairs: Vec<Pair>,
        refuse_unknown_names: bool,
    },
    /// Generated at start; the certificate (not the key) was written to this file.
    Generated { written_to: PathBuf },
}

#[derive(Debug)]
pub struct Identity {
    current: ArcSwap<CertSet>,
    origin: Origin,
}

impl Identity {
    /// The certificate chain and key in these PEM files (reloaded by [`spawn_reloader`]).
    pub fn from_files(cert: PathBuf, key: PathBuf) -> Result<Identity, TlsError> {
        Identity::from_pairs(vec![Pair { cert, key }], false)
    }

    /// Several certificates: the first is the default, each other one serves the names
    /// it carries (SNI); a name none carries gets the default, or an alert when
    /// `refuse_unknown_names`.
    pub fn from_pairs(pairs: Vec<Pair>, refuse_unknown_names: bool) -> Result<Identity, TlsError> {
        let set = load_set(&pairs, refuse_unknown_names)?;
        Ok(Identity {
            current: ArcSwap::new(Arc::new(set)),
            origin: Origin::Files {
                pairs,
                refuse_unknown_names,
            },
        })
    }

    /// A self-signed certificate for the names local clients use to reach `listen`, written
    /// (the certificate only) into `dir` for clients to trust.
    pub fn generate(listen: SocketAddr, dir: &Path) -> Result<Identity, TlsError> {
        let (key, pem) = certs::generate(listen)?;
        let path = dir.join(format!("zcproxy-{}.pem", listen.port()));
        certs::write_pem(&path, &pem)?;
        let loaded = certs::Loaded {
            key,
            names: vec!["localhost".into()],
        };
        Ok(Identity {
            current: ArcSwap::new(Arc::new(CertSet::new(loaded, Vec::new(), false))),
            origin: Origin::Generated { written_to: path },
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The default certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load().default_key().clone()
    }

    /// SHA-256 fingerprint of the default certificate in use.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.current.load().default_key())
    }

    /// Reads the configured files again and puts them in use for every handshake from now
    /// on; `Ok(false)` when they hold what is already in use. A generated identity has
    /// nothing to reload. On error the certificate in use stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Origin::Files {
            pairs,
            refuse_unknown_names,
        } = &self.origin
        else {
            return Ok(false);
        };
        let fresh = load_set(pairs, *refuse_unknown_names)?;
        if fresh.same_certificates(&self.current.load()) {
            return Ok(false);
        }
        self.current.store(Arc::new(fresh));
        Ok(true)
    }

    /// A rustls server configuration that answers every handshake with the certificate in
    /// use at that moment, offering `alpn` (e.g. `h3`, or `h2` and `http/1.1`).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> rustls::ServerConfig {
        self.server_config_verifying(alpn, None)
    }

    fn server_config_verifying(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3");
        let builder = match clients {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// The configuration of TLS on the TCP port: ALPN `h2` (when `h2` is served) preferred
    /// over `http/1.1`, TLS 1.3 preferred over 1.2, sessions resumable by ticket (stateless,
    /// keys rotated by rustls) or from a per-process cache, and client certificates checked
    /// against `clients` where one is given; with `kernel_tls`, session secrets may be
    /// handed to the kernel (stream/ktls.rs).
    pub fn tcp_server_config(
        self: &Arc<Self>,
        h2: bool,
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
        kernel_tls: bool,
    ) -> rustls::ServerConfig {
        let alpn: &[&[u8]] = if h2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        let mut config = self.server_config_verifying(alpn, clients);
        match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => config.ticketer = t,
            Err(e) => tracing::warn!(error = %e, "TLS session tickets off"),
        }
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
        config.enable_secret_extraction = kernel_tls;
        config
    }
}

#[derive(Debug)]
struct Resolver(Arc<Identity>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().select(hello.server_name())
    }
}

/// A verifier of client certificates issued by the CAs in `bundle` (PEM). Clients without
/// one are let through to the other ways of authenticating unless `required`.
pub fn client_verifier(
    bundle: &Path,
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let read = |e: rustls::pki_types::pem::Error| TlsError::Read {
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(bundle).map_err(read)? {
        roots
            .add(cert.map_err(read)?)
            .map_err(|e| TlsError::Parse {
                path: bundle.to_path_buf(),
                reason: e.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: bundle.to_path_buf(),
        });
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| TlsError::Parse {
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads every pair; one that fails fails the whole set (start-up or the reload).
fn load_set(pairs: &[Pair], refuse_unknown_names: bool) -> Result<CertSet, TlsError> {
    let mut loaded = pairs
        .iter()
        .map(|p| certs::load(&p.cert, &p.key))
        .collect::<Result<Vec<_>, _>>()?;
    if loaded.is_empty() {
        return Err(TlsError::NoPairs);
    }
    let default = loaded.remove(0);
    Ok(CertSet::new(default, loaded, refuse_unknown_names))
}

/// A generated identity and a client that trusts it, for tests of what runs over TLS.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    /// An identity generated into a fresh directory named after `tag`, and the PEM file a
    /// client trusts it by.
    pub fn identity(tag: &str) -> (Arc<Identity>, PathBuf) {
        // Tests run in parallel: one directory per call.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("zcproxy-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let identity =
            Arc::new(Identity::generate("127.0.0.1:4433".parse().unwrap(), &dir).unwrap());
        let Origin::Generated { written_to } = identity.origin().clone() else {
            panic!("generated");
        };
        (identity, written_to)
    }

    pub fn trusting(pem_file: &Path, alpn: &[u8]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pem_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::trusting;
    use super::*;
    use rustls::pki_types::CertificateDer;

    /// Drives a client and a server connection against each other in memory.
    fn handshake(
        server: rustls::ServerConfig,
        client: rustls::ClientConfig,
        name: &'static str,
    ) -> Result<(Option<Vec<u8>>, CertificateDer<'static>), rustls::Error> {
        let mut c = rustls::ClientConnection::new(Arc::new(client), name.try_into().unwrap())?;
        let mut s = rustls::ServerConnection::new(Arc::new(server))?;
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.clear();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            buf.clear();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        let peer = c.peer_certificates().unwrap()[0].clone().into_owned();
        Ok((c.alpn_protocol().map(<[u8]>::to_vec), peer))
    }

    /// A client that trusts the file the proxy wrote completes a handshake for localhost and
    /// 127.0.0.1, gets the ALPN the listener offers and sees the fingerprint that was logged.
    #[test]
    fn a_generated_identity_is_trusted_through_the_file_it_wrote() {
        let dir = std::env::temp_dir().join(format!("zcproxy-tls-id-{}", std::process::id()));
        let identity =
            Arc::new(Identity::generate("127.0.0.1:4433".parse().unwrap(), &dir).unwrap());
        let Origin::Generated { written_to } = identity.origin().clone() else {
            panic!("generated");
        };
        assert_eq!(written_to, dir.join("zcproxy-4433.pem"));
        for name in ["localhost", "127.0.0.1"] {
            let (alpn, peer) = handshake(
                identity.server_config(&[b"h3"]),
                trusting(&written_to, b"h3"),
                name,
            )
            .unwrap();
            assert_eq!(alpn.as_deref(), Some(&b"h3"[..]));
            assert_eq!(peer, identity.current().cert[0]);
        }
        // A name the certificate does not carry fails, as it must.
        assert!(handshake(
            identity.server_config(&[b"h3"]),
            trusting(&written_to, b"h3"),
            "example.com"
        )
        .is_err());
        assert!(!identity.reload().unwrap(), "nothing to reload");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
