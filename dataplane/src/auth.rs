//! Credential checks with a per-shard cache.
//!
//! Argon2id costs tens of milliseconds of CPU by design. It runs on the blocking pool, never
//! on a shard thread, and a success is remembered per shard under a keyed BLAKE3 hash of
//! user, password and stored hash (so a changed password misses the cache), which turns a
//! burst of handshakes by one user into one Argon2 run per shard.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use policy::{CompiledPolicy, UserId};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("user is disabled")]
    Disabled,
    #[error("wrong password")]
    BadPassword,
    #[error("credential check could not run")]
    Internal,
}

pub struct CredentialCache {
    key: [u8; 32],
    /// Fingerprint -> user name, so one user's entries can be dropped when they change.
    verified: HashMap<[u8; 32], Box<str>>,
    capacity: usize,
}

impl CredentialCache {
    pub fn new(capacity: usize) -> CredentialCache {
        let mut key = [0u8; 32];
        // A fixed key would only make cache keys predictable, not wrong; carry on regardless.
        let _ = getrandom::getrandom(&mut key);
        CredentialCache {
            key,
            verified: HashMap::new(),
            capacity,
        }
    }

    fn fingerprint(&self, user: &[u8], password: &[u8], phc: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for part in [user, password, phc.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        *h.finalize().as_bytes()
    }

    fn contains(&self, fp: &[u8; 32]) -> bool {
        self.verified.contains_key(fp)
    }

    fn insert(&mut self, fp: [u8; 32], user: &str) {
        if self.verified.len() >= self.capacity {
            // Crude but bounded: a full cache starts over rather than tracking recency.
            self.verified.clear();
        }
        self.verified.insert(fp, user.into());
    }

    /// Forgets what was verified for these users (deleted, disabled or re-keyed).
    pub fn forget(&mut self, users: &HashSet<&str>) {
        if !users.is_empty() {
            self.verified.retain(|_, u| !users.contains(&**u));
        }
    }
}

/// A hash to verify against for unknown users, so that a wrong user name costs as much time
/// as a wrong password (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| policy::password::hash("zcproxy-decoy").unwrap_or_default())
}

async fn verify_off_shard(phc: String, password: Vec<u8>) -> Result<bool, AuthError> {
    monoio::spawn_blocking(move || policy::password::verify(&phc, &password))
        .await
        .map_err(|_| AuthError::Internal)
}

pub enum CacheOutcome {
    Hit,
    Miss,
}

pub async fn authenticate(
    policy: &CompiledPolicy,
    cache: &std::cell::RefCell<CredentialCache>,
    user: &[u8],
    password: &[u8],
) -> Result<(UserId, CacheOutcome), AuthError> {
    let found = std::str::from_utf8(user)
        .ok()
        .and_then(|name| policy.user_by_name(name));
    let Some((id, entry)) = found else {
        let _ = verify_off_shard(decoy_hash().to_string(), password.to_vec()).await;
        return Err(AuthError::UnknownUser);
    };
    let fp = cache
        .borrow()
        .fingerprint(user, password, &entry.password_hash);
    let outcome = if cache.borrow().contains(&fp) {
        CacheOutcome::Hit
    } else if verify_off_shard(entry.password_hash.clone(), password.to_vec()).await? {
        cache.borrow_mut().insert(fp, &entry.name);
        CacheOutcome::Miss
    } else {
        return Err(AuthError::BadPassword);
    };
    if !entry.enabled {
        return Err(AuthError::Disabled);
    }
    Ok((id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_every_part() {
        let c = CredentialCache::new(2);
        let a = c.fingerprint(b"u", b"p", "h");
        assert_ne!(a, c.fingerprint(b"u", b"p", "h2"));
        assert_ne!(a, c.fingerprint(b"up", b"", "h"));
        assert_ne!(a, CredentialCache::new(2).fingerprint(b"u", b"p", "h"));
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = CredentialCache::new(2);
        for i in 0..5u8 {
            c.insert([i; 32], "u");
            assert!(c.verified.len() <= 2);
        }
        assert!(c.contains(&[4; 32]));
    }

    #[test]
    fn forgetting_a_user_keeps_the_others() {
        let mut c = CredentialCache::new(10);
        c.insert([1; 32], "alice");
        c.insert([2; 32], "alice");
        c.insert([3; 32], "bob");
        c.forget(&HashSet::from(["alice"]));
        assert_eq!(c.verified.len(), 1);
        assert!(c.contains(&[3; 32]));
    }
}
