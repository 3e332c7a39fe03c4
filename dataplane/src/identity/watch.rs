//! Reloading the certificate files when they change (a renewed certificate, a Kubernetes
//! secret update) without a restart. Polls the files' metadata: no inotify, and it follows
//! the symlink swaps secrets are updated with.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::{Identity, Origin};

/// What identifies a version of a file cheaply: modification time, size and inode.
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Checks the files every `every` and reloads the identity when either changed; a file that
/// fails to load is logged and the certificate in use stays. `None` for a generated
/// identity (nothing to watch) or `every` of zero.
pub fn spawn_reloader(identity: Arc<Identity>, every: Duration) -> Option<JoinHandle<()>> {
    let Origin::Files { pairs, .. } = identity.origin().clone() else {
        return None;
    };
    if every.is_zero() {
        return None;
    }
    let stamps = move || {
        pairs
            .iter()
            .map(|p| (stamp(&p.cert), stamp(&p.key)))
            .collect::<Vec<_>>()
    };
    // Taken now, not when the thread first runs: a change made in between must count.
    let mut seen = stamps();
    let handle = std::thread::Builder::new()
        .name("zcproxy-tls-reload".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let now = stamps();
            if now == seen {
                continue;
            }
            seen = now;
            match identity.reload() {
                Ok(true) => tracing::info!(
                    sha256 = %identity.fingerprint(),
                    "TLS certificate reloaded"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays")
                }
            }
        })
        .ok()?;
    Some(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
        let g = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Written as a secret update would be: new files renamed over the old ones.
        for (path, text) in [(&cert, g.cert.pem()), (&key, g.signing_key.serialize_pem())] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        let fp = super::super::fingerprint(
            &rustls::sign::CertifiedKey::from_der(
                vec![g.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(g.signing_key.serialize_der().into()),
                &rustls::crypto::ring::default_provider(),
            )
            .unwrap(),
        );
        (cert, key, fp)
    }

    #[test]
    fn changed_files_are_put_in_use_and_broken_ones_are_not() {
        let dir = std::env::temp_dir().join(format!("zcproxy-tls-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, first) = pair(&dir, "one.example");
        let identity = Arc::new(Identity::from_files(cert.clone(), key).unwrap());
        assert_eq!(identity.fingerprint(), first);
        let _reloader = spawn_reloader(identity.clone(), Duration::from_millis(20)).unwrap();

        let (_, _, second) = pair(&dir, "two.example");
        let waited = std::time::Instant::now();
        while identity.fingerprint() != second && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(identity.fingerprint(), second);

        std::fs::write(&cert, "garbage").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            identity.fingerprint(),
            second,
            "a broken file leaves the certificate in use"
        );
        assert!(identity.reload().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
