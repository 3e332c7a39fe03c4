//! Finds where a chunked HTTP/1.1 body ends (RFC 9112 §7.1): the HTTP/1 path forwards the
//! chunked framing unchanged and only needs the boundary ([`ChunkedDecoder::feed`]); the
//! HTTP/2 path needs the payload without the framing ([`ChunkedDecoder::decode`]).

use thiserror::Error;

const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkedError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk line or extension longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("trailer section longer than {MAX_TRAILERS} bytes")]
    TrailersTooLong,
    #[error("missing CRLF in chunked framing")]
    LineEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeFirst,
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::SizeFirst,
            size: 0,
            line: 0,
            trailers: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes of `buf` are body bytes that can be forwarded now. Stops exactly at the
    /// end of the body; then `is_done()` is true and the rest of `buf` belongs to the next
    /// message.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkedError> {
        self.step(buf, |_| {})
    }

    /// As [`ChunkedDecoder::feed`], appending the chunks' payload (no sizes, extensions or
    /// trailers) to `payload`.
    pub fn decode(&mut self, buf: &[u8], payload: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        self.step(buf, |data| payload.extend_from_slice(data))
    }

    fn step(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                data(&buf[i..i + take]);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::SizeFirst | State::Size => match hex(b) {
                    Some(d) => {
                        if self.size > (u64::MAX >> 8) {
                            return Err(ChunkedError::Size);
                        }
                        self.size = self.size * 16 + d as u64;
                        State::Size
                    }
                    None if self.state == State::SizeFirst => return Err(ChunkedError::Size),
                    None => match b {
                        b'\r' => State::SizeLf,
                        b';' | b' ' | b'\t' => {
                            self.line = 0;
                            State::Extension
                        }
                        _ => return Err(ChunkedError::Size),
                    },
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkedError::LineEnd),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(ChunkedError::LineTooLong);
                        }
                        State::Extension
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::LineEnd);
                    }
                    if self.size == 0 {
                        State::TrailerLineStart
                    } else {
                        State::Data
                    }
                }
                State::DataCr => expect(b, b'\r', State::DataLf)?,
                State::DataLf => expect(b, b'\n', State::SizeFirst)?,
                State::TrailerLineStart => match b {
                    b'\r' => State::EndLf,
                    _ => self.trailer_byte()?,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf => expect(b, b'\n', State::TrailerLineStart)?,
                State::EndLf => expect(b, b'\n', State::Done)?,
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn trailer_byte(&mut self) -> Result<State, ChunkedError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkedError::TrailersTooLong);
        }
        Ok(State::TrailerLine)
    }
}

fn expect(b: u8, want: u8, next: State) -> Result<State, ChunkedError> {
    if b == want {
        Ok(next)
    } else {
        Err(ChunkedError::LineEnd)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn whole_body_at_once() {
        let mut d = ChunkedDecoder::default();
        let n = d.feed(BODY).unwrap();
        assert!(d.is_done());
        assert_eq!(&BODY[n..], b"NEXT");
    }

    #[test]
    fn byte_by_byte() {
        let mut d = ChunkedDecoder::default();
        let mut total = 0;
        for b in BODY.chunks(1) {
            if d.is_done() {
                break;
            }
            total += d.feed(b).unwrap();
        }
        assert_eq!(&BODY[total..], b"NEXT");
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"1\r\nab\r\n",
            b"0\r\n\r\r",
        ] {
            let mut d = ChunkedDecoder::default();
            assert!(d.feed(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"ffffffffffffffffff\r\n"), Err(ChunkedError::Size));
        let mut d = ChunkedDecoder::default();
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        assert_eq!(d.feed(&long), Err(ChunkedError::LineTooLong));
    }

    #[test]
    fn decode_yields_the_payload_however_the_bytes_arrive() {
        let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (mut dec, mut out, mut at) = (ChunkedDecoder::default(), Vec::new(), 0);
            for chunk in body.chunks(piece) {
                if dec.is_done() {
                    break;
                }
                at += dec.decode(chunk, &mut out).unwrap();
            }
            assert!(dec.is_done());
            assert_eq!(out, b"hello, world", "pieces of {piece}");
            assert_eq!(&body[at..], b"NEXT");
        }
    }
}
