//! The last good snapshot on disk, so that a proxy started while the control plane is down
//! can serve the policy it last knew rather than none.

use std::io;
use std::path::Path;

use policy::PolicyDoc;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("policy cache {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("policy cache {path} is not a policy document: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

pub fn load(path: &Path) -> Result<PolicyDoc, CacheError> {
    let text = std::fs::read(path).map_err(|source| CacheError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| CacheError::Parse {
        path: path.display().to_string(),
        source,
    })
}

/// Writes atomically (temporary file, fsync, rename): a crash leaves the old or the new
/// document, never half of one. The file holds password hashes: owner-only permissions.
pub fn store(path: &Path, doc: &PolicyDoc) -> Result<(), CacheError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(doc).map_err(|e| err(io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear_errors() {
        let dir = std::env::temp_dir().join(format!("zc-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.json");
        let doc = PolicyDoc {
            revision: 42,
            ..PolicyDoc::default()
        };
        store(&path, &doc).unwrap();
        assert_eq!(load(&path).unwrap(), doc);
        std::fs::write(&path, b"{\"revision\": \"x\"}").unwrap();
        assert!(matches!(load(&path), Err(CacheError::Parse { .. })));
        assert!(matches!(
            load(&dir.join("missing.json")),
            Err(CacheError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
