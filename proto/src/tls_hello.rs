//! A look at a TLS ClientHello before any TLS library sees it (RFC 8446 §4.1.2, RFC 5246
//! §7.4.1.2): the server name (SNI, RFC 6066 §3), the ALPN protocols offered (RFC 7301)
//! and whether TLS 1.3 is offered. Sans-IO: it reads the bytes a client sent so far and
//! says what it found, that it needs more, or why the bytes are no ClientHello. The
//! handshake message may span several records; it is bounded by [`MAX_HELLO`].

use thiserror::Error;

/// Largest ClientHello looked at (post-quantum key shares make 2 KiB common; 16 KiB is a
/// full record and well past any client seen).
pub const MAX_HELLO: usize = 16 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const TLS13: u16 = 0x0304;

/// What a ClientHello says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The host name asked for, as sent (ASCII, not validated further).
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's order of preference.
    pub alpn: Vec<Vec<u8>>,
    pub offers_tls13: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// More bytes are needed; the hello is at least this long in all.
    NeedMore,
    Hello(Hello),
}

/// Why the bytes are not a ClientHello this proxy will look at. The client is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HelloError {
    #[error("not a TLS handshake record")]
    NotHandshake,
    #[error("the first handshake message is not a ClientHello")]
    NotClientHello,
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Looks at the first bytes a client sent on a TLS connection (all of them, from the
/// start). For bytes that arrive in pieces, [`HelloReader`] does the same without reading
/// the records it has seen again.
pub fn peek(bytes: &[u8]) -> Result<Peek, HelloError> {
    HelloReader::default().peek(bytes)
}

/// Reassembles the ClientHello from the records of a growing buffer, remembering how far
/// it got: each call reads only the records completed since the last one (a hello sent in
/// 1-byte records costs linear, not quadratic, time).
#[derive(Debug, Default)]
pub struct HelloReader {
    /// The handshake message so far, from the fragments of the records read.
    message: Vec<u8>,
    /// Bytes of the buffer those records took.
    consumed: usize,
}

impl HelloReader {
    /// Looks at `bytes`: everything the client sent so far, from the start (it must begin
    /// with what earlier calls were given).
    pub fn peek(&mut self, bytes: &[u8]) -> Result<Peek, HelloError> {
        let mut rest = bytes.get(self.consumed..).unwrap_or_default();
        loop {
            let Some(header) = rest.get(..5) else {
                return Ok(Peek::NeedMore);
            };
            if header[0] != RECORD_HANDSHAKE || header[1] != 3 {
                return Err(HelloError::NotHandshake);
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len == 0 {
                return Err(HelloError::Malformed("empty record"));
            }
            let Some(fragment) = rest.get(5..5 + len) else {
                return Ok(Peek::NeedMore);
            };
            self.message.extend_from_slice(fragment);
            self.consumed += 5 + len;
            rest = &rest[5 + len..];
            let message = &self.message;
            if message[0] != CLIENT_HELLO {
                return Err(HelloError::NotClientHello);
            }
            if message.len() >= 4 {
                let body = usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]);
                if body + 4 > MAX_HELLO {
                    return Err(HelloError::TooLarge);
                }
                if message.len() >= body + 4 {
                    return client_hello(&message[4..body + 4]).map(Peek::Hello);
                }
            }
        }
    }
}

/// A cursor over a handshake body that fails instead of reading past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn client_hello(body: &[u8]) -> Result<Hello, HelloError> {
    let mut r = Reader(body);
    r.take(2, "version")?;
    r.take(32, "random")?;
    let session = r.vec8("session id")?;
    if session.len() > 32 {
        return Err(HelloError::Malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher suites"));
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(HelloError::Malformed("no compression method"));
    }
    let mut hello = Hello::default();
    // A TLS 1.2 hello may end here: no extensions.
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader(r.vec16("extensions")?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut seen = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16("extension type")?;
        let data = exts.vec16("extension")?;
        // RFC 8446 §4.2: one extension of a type at most.
        if seen.contains(&kind) {
            return Err(HelloError::Malformed("duplicate extension"));
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = server_name(data)?,
            EXT_ALPN => hello.alpn = alpn(data)?,
            EXT_SUPPORTED_VERSIONS => {
                let mut v = Reader(data);
                let list = v.vec8("supported versions")?;
                if list.len() % 2 != 0 || !v.is_empty() {
                    return Err(HelloError::Malformed("supported versions"));
                }
                hello.offers_tls13 = list
                    .chunks_exact(2)
                    .any(|p| u16::from_be_bytes([p[0], p[1]]) == TLS13);
            }
            _ => {}
        }
    }
    Ok(hello)
}

fn server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16("server name list")?);
    if !outer.is_empty() {
        return Err(HelloError::Malformed("server name extension"));
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8("server name type")?;
        let value = list.vec16("server name")?;
        // Type 0 is host_name, the only one defined; one of each type at most.
        if kind == 0 {
            if name.is_some() {
                return Err(HelloError::Malformed("two host names"));
            }
            if value.is_empty() || !value.iter().all(|b| b.is_ascii_graphic()) {
                return Err(HelloError::Malformed("host name not printable ASCII"));
            }
            name = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    Ok(name)
}

fn alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, HelloError> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16("ALPN list")?);
    if !outer.is_empty() {
        return Err(HelloError::Malformed("ALPN extension"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let p = list.vec8("ALPN protocol")?;
        if p.is_empty() {
            return Err(HelloError::Malformed("empty ALPN protocol"));
        }
        protocols.push(p.to_vec());
    }
    if protocols.is_empty() {
        return Err(HelloError::Malformed("empty ALPN list"));
    }
    Ok(protocols)
}

/// Builds a ClientHello record (for tests and the fuzz target's seeds).
pub fn build(server_name: Option<&str>, alpn: &[&[u8]], tls13: bool) -> Vec<u8> {
    fn push16(out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut exts = Vec::new();
    if let Some(name) = server_name {
        let mut entry = vec![0u8];
        push16(&mut entry, name.as_bytes());
        let mut list = Vec::new();
        push16(&mut list, &entry);
        exts.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
        push16(&mut exts, &list);
    }
    if !alpn.is_empty() {
        let mut names = Vec::new();
        for p in alpn {
            names.push(p.len() as u8);
            names.extend_from_slice(p);
        }
        let mut list = Vec::new();
        push16(&mut list, &names);
        exts.extend_from_slice(&EXT_ALPN.to_be_bytes());
        push16(&mut exts, &list);
    }
    if tls13 {
        exts.extend_from_slice(&EXT_SUPPORTED_VERSIONS.to_be_bytes());
        push16(&mut exts, &[2, 0x03, 0x04]);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    push16(&mut body, &[0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    push16(&mut body, &exts);
    let mut message = vec![CLIENT_HELLO];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![RECORD_HANDSHAKE, 3, 1];
    push16(&mut record, &message);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_name_the_protocols_and_the_version() {
        let record = build(Some("proxy.example"), &[b"h2", b"http/1.1"], true);
        let want = Hello {
            server_name: Some("proxy.example".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            offers_tls13: true,
        };
        assert_eq!(peek(&record), Ok(Peek::Hello(want.clone())));
        // Any cut short of the whole needs more; nothing past it is read.
        for cut in 0..record.len() {
            assert_eq!(peek(&record[..cut]), Ok(Peek::NeedMore), "cut at {cut}");
        }
        let mut more = record.clone();
        more.extend_from_slice(b"application data");
        assert_eq!(peek(&more), Ok(Peek::Hello(want)));
        let bare = build(None, &[], false);
        assert_eq!(peek(&bare), Ok(Peek::Hello(Hello::default())));
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let record = build(Some("split.example"), &[b"h2"], true);
        let message = &record[5..];
        let mut split = Vec::new();
        for part in message.chunks(10) {
            split.extend_from_slice(&[22, 3, 3]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let Ok(Peek::Hello(h)) = peek(&split) else {
            panic!("not reassembled")
        };
        assert_eq!(h.server_name.as_deref(), Some("split.example"));
    }

    #[test]
    fn a_hello_fed_byte_by_byte_in_one_byte_records_reads_each_record_once() {
        let record = build(Some("slow.example"), &[b"h2"], true);
        let mut split = Vec::new();
        for b in &record[5..] {
            split.extend_from_slice(&[22, 3, 3, 0, 1, *b]);
        }
        let mut reader = HelloReader::default();
        let mut found = None;
        for end in 1..=split.len() {
            match reader.peek(&split[..end]) {
                Ok(Peek::NeedMore) => {}
                Ok(Peek::Hello(h)) => {
                    found = Some((end, h));
                    break;
                }
                Err(e) => panic!("at {end}: {e}"),
            }
            // Only whole records are taken, each once.
            assert_eq!(reader.consumed, end / 6 * 6);
            assert_eq!(reader.message.len(), end / 6);
        }
        let (end, h) = found.expect("the hello completes");
        assert_eq!(end, split.len());
        assert_eq!(h.server_name.as_deref(), Some("slow.example"));
    }

    #[test]
    fn other_bytes_are_refused_with_a_reason() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotHandshake));
        assert_eq!(
            peek(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Err(HelloError::NotClientHello)
        );
        assert_eq!(
            peek(&[22, 3, 1, 0, 0]),
            Err(HelloError::Malformed("empty record"))
        );
        let mut huge = vec![22, 3, 1, 0, 4, 1, 0x01, 0, 0];
        huge[4] = 4;
        assert_eq!(peek(&huge), Err(HelloError::TooLarge));
        // A truncated extension block.
        let mut record = build(Some("a.example"), &[], false);
        let last = record.len() - 1;
        record.truncate(last);
        let len = (record.len() - 5) as u16;
        record[3..5].copy_from_slice(&len.to_be_bytes());
        let body = (len - 4) as u32;
        record[6..9].copy_from_slice(&body.to_be_bytes()[1..]);
        assert!(matches!(peek(&record), Err(HelloError::Malformed(_))));
    }
}
