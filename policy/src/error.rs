use thiserror::Error;

/// A policy document that cannot be used. Always the fault of whoever wrote the document.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("invalid host pattern {0:?}: expected a DNS name or \"*.suffix\"")]
    HostPattern(String),
    #[error(
        "invalid port range {0:?}: expected \"N\" or \"LOW-HIGH\" with 1 <= LOW <= HIGH <= 65535"
    )]
    PortRange(String),
    #[error("duplicate user name {0:?}")]
    DuplicateUser(String),
    #[error("invalid user name {0:?}: 1-255 bytes, no ':' and no control characters")]
    UserName(String),
    #[error("user {user:?}: password hash is not an Argon2 PHC string: {reason}")]
    PasswordHash { user: String, reason: String },
    #[error("password hashing failed: {0}")]
    Hashing(String),
}
