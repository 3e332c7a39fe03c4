//! `Proxy-Authorization: Basic` (RFC 9110 §11.1, RFC 7617).

use base64::Engine;

use super::HttpError;

/// `Proxy-Authorization: Basic` credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

/// `Basic` credentials from a Proxy-Authorization value (scheme name case-insensitive,
/// RFC 9110 §11.1; RFC 7617 user-pass).
pub fn parse_basic(value: &[u8]) -> Result<BasicCredentials, HttpError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| HttpError::Authorization)?
        .trim();
    let (scheme, token) = value.split_once(' ').ok_or(HttpError::Authorization)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(HttpError::Authorization);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| HttpError::Authorization)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::Authorization)?;
    Ok(BasicCredentials {
        user: decoded[..colon].to_vec(),
        password: decoded[colon + 1..].to_vec(),
    })
}
