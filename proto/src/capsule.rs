//! The HTTP Capsule Protocol (RFC 9297 §3) over a request stream's data: a sequence of
//! `Type (i), Length (i), Value` records. The proxy acts on DATAGRAM capsules (type 0x00,
//! the fallback for HTTP datagrams when QUIC DATAGRAM frames are not used) and skips every
//! other type, as the RFC requires, without buffering it: an unknown capsule of any length
//! costs no memory. A DATAGRAM capsule longer than the decoder accepts is skipped the same
//! way and reported, so the driver can count the drop.

use thiserror::Error;

use crate::varint;

/// The DATAGRAM capsule type (RFC 9297 §3.5).
pub const DATAGRAM: u64 = 0x00;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CapsuleError {
    /// The stream ended inside a capsule (RFC 9297 §3.3: the stream is malformed).
    #[error("stream ended inside a capsule")]
    Truncated,
}

/// What the bytes at the front of the buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Nothing complete yet: keep the bytes, read more.
    NeedMore,
    /// A whole DATAGRAM capsule: its payload, and how many bytes of the buffer it took.
    Datagram { payload: &'a [u8], consumed: usize },
    /// `consumed` bytes belong to a capsule that is skipped; drop them. `started` says why
    /// on the first part of each skipped capsule (and is `None` on the parts that follow).
    Skip {
        consumed: usize,
        started: Option<Skipped>,
    },
}

/// Why a capsule is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// A type this proxy does not act on (RFC 9297 §3.2: skip it).
    Unknown { kind: u64, len: u64 },
    /// A DATAGRAM capsule longer than the decoder's limit: dropped, as a datagram may be.
    Oversized { len: u64 },
}

/// Reads capsules from a stream's bytes, one step at a time.
#[derive(Debug)]
pub struct Decoder {
    max_datagram: usize,
    /// Bytes still to skip of the capsule being skipped.
    skipping: u64,
}

impl Decoder {
    /// `max_datagram`: the longest DATAGRAM payload that is delivered; longer ones are
    /// skipped. It also bounds what the caller must buffer: a header (at most 16 bytes) plus
    /// this much.
    pub fn new(max_datagram: usize) -> Decoder {
        Decoder {
            max_datagram,
            skipping: 0,
        }
    }

    /// The most bytes a caller ever needs to hold for the next step.
    pub fn max_buffered(&self) -> usize {
        16 + self.max_datagram
    }

    /// Looks at the bytes received and not yet consumed.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Step<'a> {
        if self.skipping > 0 {
            if buf.is_empty() {
                return Step::NeedMore;
            }
            let n = usize::try_from(self.skipping).map_or(buf.len(), |s| s.min(buf.len()));
            self.skipping -= n as u64;
            return Step::Skip {
                consumed: n,
                started: None,
            };
        }
        let Some((kind, a)) = varint::decode(buf) else {
            return Step::NeedMore;
        };
        let Some((len, b)) = varint::decode(&buf[a..]) else {
            return Step::NeedMore;
        };
        let header = a + b;
        let fits = usize::try_from(len).is_ok_and(|l| l <= self.max_datagram);
        if kind == DATAGRAM && fits {
            let end = header + len as usize;
            return match buf.get(header..end) {
                Some(payload) => Step::Datagram {
                    payload,
                    consumed: end,
                },
                None => Step::NeedMore,
            };
        }
        self.skipping = len;
        Step::Skip {
            consumed: header,
            started: Some(if kind == DATAGRAM {
                Skipped::Oversized { len }
            } else {
                Skipped::Unknown { kind, len }
            }),
        }
    }

    /// Checks the state when the stream ends: inside a capsule is an error.
    pub fn finish(&self, unconsumed: &[u8]) -> Result<(), CapsuleError> {
        if self.skipping > 0 || !unconsumed.is_empty() {
            Err(CapsuleError::Truncated)
        } else {
            Ok(())
        }
    }
}

/// Appends a DATAGRAM capsule carrying `payload`.
pub fn encode_datagram(payload: &[u8], out: &mut Vec<u8>) {
    varint::encode(DATAGRAM, out);
    varint::encode(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the decoder over `input` fed `chunk` bytes at a time, as a stream would deliver
    /// it; returns the datagrams and the skip reasons, in order.
    fn drive(input: &[u8], chunk: usize, max: usize) -> (Vec<Vec<u8>>, Vec<Skipped>) {
        let mut dec = Decoder::new(max);
        let (mut buf, mut datagrams, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match dec.next(&buf) {
                    Step::NeedMore => break,
                    Step::Datagram { payload, consumed } => {
                        datagrams.push(payload.to_vec());
                        buf.drain(..consumed);
                    }
                    Step::Skip { consumed, started } => {
                        skipped.extend(started);
                        buf.drain(..consumed);
                    }
                }
                assert!(buf.len() <= dec.max_buffered() + chunk);
            }
        }
        dec.finish(&buf).unwrap();
        (datagrams, skipped)
    }

    #[test]
    fn datagrams_and_unknown_capsules_at_every_split() {
        let mut input = Vec::new();
        encode_datagram(b"\x00hello", &mut input);
        // An unknown capsule (a GREASE type, RFC 9297 §5.4) with a 300-byte value.
        varint::encode(0x29 * 7 + 0x17, &mut input);
        varint::encode(300, &mut input);
        input.extend_from_slice(&[0xaa; 300]);
        encode_datagram(b"", &mut input);
        encode_datagram(&[7; 1000], &mut input);
        for chunk in [1, 2, 3, 7, 64, 5000] {
            let (datagrams, skipped) = drive(&input, chunk, 1500);
            assert_eq!(
                datagrams,
                vec![b"\x00hello".to_vec(), vec![], vec![7; 1000]]
            );
            assert_eq!(
                skipped,
                vec![Skipped::Unknown {
                    kind: 0x29 * 7 + 0x17,
                    len: 300
                }]
            );
        }
    }

    #[test]
    fn oversized_datagrams_are_skipped_without_buffering_them() {
        let mut input = Vec::new();
        encode_datagram(&[1; 70_000], &mut input);
        encode_datagram(b"after", &mut input);
        let (datagrams, skipped) = drive(&input, 4096, 1500);
        assert_eq!(datagrams, vec![b"after".to_vec()]);
        assert_eq!(skipped, vec![Skipped::Oversized { len: 70_000 }]);
    }

    #[test]
    fn a_huge_declared_length_is_skipped_not_allocated() {
        let mut dec = Decoder::new(1500);
        let mut input = Vec::new();
        varint::encode(0x1234, &mut input);
        varint::encode(varint::MAX, &mut input);
        let step = dec.next(&input);
        assert!(
            matches!(step, Step::Skip { started: Some(Skipped::Unknown { len, .. }), .. } if len == varint::MAX)
        );
        assert!(matches!(
            dec.next(&[0; 10]),
            Step::Skip {
                consumed: 10,
                started: None
            }
        ));
        assert_eq!(dec.finish(&[]), Err(CapsuleError::Truncated));
    }

    #[test]
    fn a_stream_ending_inside_a_capsule_is_malformed() {
        let mut input = Vec::new();
        encode_datagram(b"abc", &mut input);
        let mut dec = Decoder::new(1500);
        assert_eq!(dec.next(&input[..3]), Step::NeedMore);
        assert_eq!(dec.finish(&input[..3]), Err(CapsuleError::Truncated));
        assert_eq!(dec.finish(&[]), Ok(()));
    }
}
