//! Tells the protocols on the shared port apart from the first byte.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Socks5,
    Socks4,
    /// An HTTP/1.x request line starts with an upper-case method token.
    Http,
    /// A TLS ClientHello (record type 22).
    Tls,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SniffError {
    #[error("client sent a first byte 0x{0:02x} that starts no supported protocol")]
    Unknown(u8),
}

pub fn sniff(first: &[u8]) -> Result<Option<Sniffed>, SniffError> {
    match first.first() {
        None => Ok(None),
        Some(0x05) => Ok(Some(Sniffed::Socks5)),
        Some(0x04) => Ok(Some(Sniffed::Socks4)),
        Some(0x16) => Ok(Some(Sniffed::Tls)),
        Some(b) if b.is_ascii_uppercase() => Ok(Some(Sniffed::Http)),
        Some(&b) => Err(SniffError::Unknown(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(sniff(b""), Ok(None));
        assert_eq!(sniff(&[5, 1, 0]), Ok(Some(Sniffed::Socks5)));
        assert_eq!(sniff(&[4, 1]), Ok(Some(Sniffed::Socks4)));
        assert_eq!(sniff(b"GET http://x/ HTTP/1.1"), Ok(Some(Sniffed::Http)));
        assert_eq!(sniff(b"CONNECT x:443 HTTP/1.1"), Ok(Some(Sniffed::Http)));
        assert_eq!(sniff(&[0x16, 3, 1]), Ok(Some(Sniffed::Tls)));
        assert_eq!(sniff(b"get /"), Err(SniffError::Unknown(b'g')));
        assert_eq!(sniff(&[0]), Err(SniffError::Unknown(0)));
    }
}
