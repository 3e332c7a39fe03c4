//! The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
//! the data taken as big-endian 16-bit words. Summed eight bytes at a time into a `u64`
//! with end-around carry and folded to 16 bits at the end: since 2^16 ≡ 1 (mod 0xffff),
//! a sum of wider big-endian words folds to the same value as the sum of its 16-bit words
//! (RFC 1071 §2(C)). Incremental updates follow RFC 1624.

/// A running ones' complement sum. Pieces are added in order; every piece but the last
/// must have an even length (an odd piece pads its last byte with a zero, so a piece after
/// it would be added one byte out of place).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum(u64);

impl Sum {
    pub const fn new() -> Sum {
        Sum(0)
    }

    /// Adds a 64-bit word with end-around carry: the carry out of bit 63 is worth 2^64,
    /// which is ≡ 1, so it is added back at the bottom (this cannot carry again).
    #[inline]
    fn add_u64(self, w: u64) -> Sum {
        let (s, carry) = self.0.overflowing_add(w);
        Sum(s + u64::from(carry))
    }

    /// Adds `data` as big-endian 16-bit words; an odd last byte is the high byte of a word
    /// whose low byte is zero.
    #[inline]
    pub fn add_bytes(self, data: &[u8]) -> Sum {
        let mut sum = self;
        let (words, rest) = data.as_chunks::<8>();
        for w in words {
            sum = sum.add_u64(u64::from_be_bytes(*w));
        }
        // At most 7 bytes left: as one zero-padded big-endian word of 8, the bytes keep
        // their position relative to the start (an even offset), hence their weight.
        let mut tail = [0u8; 8];
        if let Some(dst) = tail.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        sum.add_u64(u64::from_be_bytes(tail))
    }

    /// Adds one 16-bit word.
    #[inline]
    pub fn add_u16(self, w: u16) -> Sum {
        self.add_u64(u64::from(w))
    }

    /// Adds a 32-bit value as two 16-bit words.
    #[inline]
    pub fn add_u32(self, w: u32) -> Sum {
        self.add_u64(u64::from(w))
    }

    /// The sum folded to 16 bits, not complemented. It is never 0 unless every word added
    /// was 0: a non-zero multiple of 0xffff folds to 0xffff ("negative zero").
    #[inline]
    pub fn fold(self) -> u16 {
        let s = self.0;
        let s = (s & 0xffff_ffff) + (s >> 32);
        let s = (s & 0xffff_ffff) + (s >> 32);
        let s = (s & 0xffff) + (s >> 16);
        let s = (s & 0xffff) + (s >> 16);
        s as u16
    }

    /// The checksum to write: the complement of the folded sum.
    #[inline]
    pub fn finish(self) -> u16 {
        !self.fold()
    }
}

/// The checksum of `data` on its own (an IPv4 header with its checksum field zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    Sum::new().add_bytes(data).finish()
}

/// Whether `data`, checksum field included, sums to negative zero: the receiver's check.
pub fn verifies(data: &[u8]) -> bool {
    Sum::new().add_bytes(data).fold() == 0xffff
}

/// The checksum after one 16-bit word covered by it changes from `old` to `new`, without
/// summing the rest again (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`), e.g. for a TTL
/// decrement or a rewritten port.
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !Sum::new()
        .add_u16(!checksum)
        .add_u16(!old)
        .add_u16(new)
        .fold()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook algorithm: 16-bit words into a u32, carries folded, complemented.
    fn naive(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (carries folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Sum::new().add_bytes(&data).fold(), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn a_known_ipv4_header() {
        // 192.168.0.1 → 192.168.0.199, UDP, TTL 64, DF: checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies(&h));
        h[10..12].fill(0);
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&[0xb8, 0x61]);
        h[15] ^= 1;
        assert!(!verifies(&h));
    }

    #[test]
    fn every_length_and_alignment_agrees_with_the_naive_sum() {
        for n in 0..300 {
            let data = bytes(n, n as u32);
            assert_eq!(checksum(&data), naive(&data), "length {n}");
        }
        // All ones: the largest words, the most carries.
        for n in [8, 64, 65_535, 65_536, 1 << 20] {
            let data = vec![0xff; n];
            assert_eq!(checksum(&data), naive(&data), "length {n}");
        }
    }

    #[test]
    fn pieces_add_up_to_the_whole() {
        let data = bytes(1501, 7);
        let whole = Sum::new().add_bytes(&data).fold();
        for split in (0..data.len()).step_by(2) {
            let (a, b) = data.split_at(split);
            assert_eq!(
                Sum::new().add_bytes(a).add_bytes(b).fold(),
                whole,
                "split {split}"
            );
        }
        let words = Sum::new()
            .add_u16(u16::from_be_bytes([data[0], data[1]]))
            .add_u32(u32::from_be_bytes([data[2], data[3], data[4], data[5]]))
            .add_bytes(&data[6..]);
        assert_eq!(words.fold(), whole);
    }

    #[test]
    fn fold_keeps_negative_zero_apart_from_zero() {
        assert_eq!(Sum::new().fold(), 0);
        assert_eq!(Sum::new().add_bytes(&[0; 40]).fold(), 0);
        assert_eq!(Sum::new().add_u16(0xffff).fold(), 0xffff);
        assert_eq!(Sum::new().add_u16(0x8000).add_u16(0x7fff).fold(), 0xffff);
        assert_eq!(
            Sum::new()
                .add_bytes(&[0xff; 8])
                .add_bytes(&[0xff; 8])
                .fold(),
            0xffff
        );
    }

    #[test]
    fn incremental_update_matches_summing_again() {
        let mut data = bytes(64, 3);
        for (i, new) in [
            (0usize, 0x0000u16),
            (10, 0xffff),
            (20, 0x1234),
            (62, 0xfffe),
        ] {
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            let updated = update(before, old, new);
            // Equal as ones' complement numbers (0 and 0xffff are both zero).
            assert!(
                updated == after || (updated | after) == 0xffff && (updated & after) == 0,
                "{i}: {updated:#x} vs {after:#x}"
            );
        }
    }
}
