//! QUIC variable-length integers (RFC 9000 §16), as used by HTTP/3 frames and capsules: the
//! two high bits of the first byte give the length (1, 2, 4 or 8 bytes), the rest is the
//! value, big-endian. Values go up to 2^62 - 1.

/// The largest value a variable-length integer holds.
pub const MAX: u64 = (1 << 62) - 1;

/// Decodes one integer from the front of `buf`: `None` if `buf` holds only part of it,
/// else the value and how many bytes it took.
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let value = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |v, b| (v << 8) | u64::from(*b));
    Some((value, len))
}

/// How many bytes `value` takes (`value` must be at most [`MAX`]).
pub fn size(value: u64) -> usize {
    match value {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends `value` in its shortest form. Values above [`MAX`] are a caller's bug; they are
/// clamped to it rather than written corrupt.
pub fn encode(value: u64, out: &mut Vec<u8>) {
    let value = value.min(MAX);
    let len = size(value);
    let tag = (len.trailing_zeros() as u64) << (8 * len - 2);
    let bytes = (value | tag).to_be_bytes();
    out.extend_from_slice(&bytes[8 - len..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_9000_examples() {
        // RFC 9000 Appendix A.1.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode(bytes), Some((value, bytes.len())));
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes);
        }
        // A non-shortest form decodes too (RFC 9000 allows it).
        assert_eq!(decode(&[0x40, 0x25]), Some((37, 2)));
    }

    #[test]
    fn truncated_input_asks_for_more() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0xc2, 0x19, 0x7c]), None);
        assert_eq!(decode(&[0x40]), None);
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for v in [0, 63, 64, 16_383, 16_384, 1_073_741_823, 1_073_741_824, MAX] {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(out.len(), size(v));
            assert_eq!(decode(&out), Some((v, out.len())));
        }
        let mut out = Vec::new();
        encode(u64::MAX, &mut out);
        assert_eq!(decode(&out), Some((MAX, 8)));
    }
}
