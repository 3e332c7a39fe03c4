//! Argon2id password hashing (PHC strings).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::PolicyError;

/// Hashes `password` with Argon2id and the crate's default (OWASP) parameters.
pub fn hash(password: &str) -> Result<String, PolicyError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PolicyError::Hashing(e.to_string()))
}

/// Checks that `phc` is a parseable Argon2 PHC string.
pub fn validate_phc(user: &str, phc: &str) -> Result<(), PolicyError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PolicyError::PasswordHash {
        user: user.to_string(),
        reason: e.to_string(),
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(PolicyError::PasswordHash {
            user: user.to_string(),
            reason: format!("algorithm {} is not Argon2", parsed.algorithm),
        });
    }
    Ok(())
}

/// Verifies `password` against a PHC string. Constant-time in the password by construction
/// of Argon2; a malformed hash verifies nothing.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        validate_phc("u", &h).unwrap();
        assert!(verify(&h, b"s3cret"));
        assert!(!verify(&h, b"s3cret "));
        assert!(!verify("garbage", b"s3cret"));
        assert!(validate_phc("u", "$pbkdf2$x").is_err());
    }
}
