//! Ethernet II headers (destination MAC, source MAC, ethertype) with at most two VLAN
//! tags: one 802.1Q tag (TPID 0x8100), or an 802.1ad service tag (TPID 0x88a8) over an
//! 802.1Q customer tag. Other stacks (0x8100 over 0x8100, a lone 0x88a8 tag, three tags)
//! are refused: a reply built from the parsed [`Vlan`] would not carry the same tags.

use super::PacketError;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer tag).
pub const TPID_8021AD: u16 = 0x88a8;
/// An untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// One VLAN tag: TPID and TCI.
pub const TAG_LEN: usize = 4;

/// A MAC address, as on the wire.
pub type Mac = [u8; 6];

/// The VLAN tags of a frame, as TCI values (priority 3 bits, drop eligible 1, VLAN ID 12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Vlan {
    #[default]
    Untagged,
    /// One 802.1Q tag.
    Tagged(u16),
    /// An 802.1ad service tag (`outer`) over an 802.1Q customer tag (`inner`).
    QinQ { outer: u16, inner: u16 },
}

impl Vlan {
    /// The bytes the tags take in the Ethernet header.
    pub const fn tags_len(self) -> usize {
        match self {
            Vlan::Untagged => 0,
            Vlan::Tagged(_) => TAG_LEN,
            Vlan::QinQ { .. } => 2 * TAG_LEN,
        }
    }
}

/// A parsed Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub dst: Mac,
    pub src: Mac,
    pub vlan: Vlan,
    /// The ethertype after the tags.
    pub ethertype: u16,
    /// Where the network-layer header starts.
    pub len: usize,
}

fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The TCI of the tag at `at` and the ethertype that follows it.
fn tag(frame: &[u8], at: usize) -> Result<(u16, u16), PacketError> {
    let t = frame
        .get(at..)
        .and_then(|t| t.first_chunk::<TAG_LEN>())
        .ok_or(PacketError::Truncated)?;
    Ok((be16([t[0], t[1]]), be16([t[2], t[3]])))
}

fn is_tpid(ethertype: u16) -> bool {
    ethertype == TPID_8021Q || ethertype == TPID_8021AD
}

pub(super) fn parse(frame: &[u8]) -> Result<Header, PacketError> {
    let h = frame
        .first_chunk::<HEADER_LEN>()
        .ok_or(PacketError::Truncated)?;
    let (mut dst, mut src) = ([0u8; 6], [0u8; 6]);
    dst.copy_from_slice(&h[..6]);
    src.copy_from_slice(&h[6..12]);
    let first = be16([h[12], h[13]]);
    let (vlan, ethertype) = match first {
        TPID_8021Q => {
            let (tci, next) = tag(frame, HEADER_LEN)?;
            if is_tpid(next) {
                return Err(PacketError::BadVlan);
            }
            (Vlan::Tagged(tci), next)
        }
        TPID_8021AD => {
            let (outer, next) = tag(frame, HEADER_LEN)?;
            if next != TPID_8021Q {
                return Err(PacketError::BadVlan);
            }
            let (inner, next) = tag(frame, HEADER_LEN + TAG_LEN)?;
            if is_tpid(next) {
                return Err(PacketError::BadVlan);
            }
            (Vlan::QinQ { outer, inner }, next)
        }
        other => (Vlan::Untagged, other),
    };
    Ok(Header {
        dst,
        src,
        vlan,
        ethertype,
        len: HEADER_LEN + vlan.tags_len(),
    })
}

/// Writes the header into `out`, which is exactly `HEADER_LEN + vlan.tags_len()` long.
pub(super) fn write(out: &mut [u8], dst: &Mac, src: &Mac, vlan: Vlan, ethertype: u16) {
    debug_assert_eq!(out.len(), HEADER_LEN + vlan.tags_len());
    out[..6].copy_from_slice(dst);
    out[6..12].copy_from_slice(src);
    let mut put = |at: usize, v: u16| out[at..at + 2].copy_from_slice(&v.to_be_bytes());
    match vlan {
        Vlan::Untagged => put(12, ethertype),
        Vlan::Tagged(tci) => {
            put(12, TPID_8021Q);
            put(14, tci);
            put(16, ethertype);
        }
        Vlan::QinQ { outer, inner } => {
            put(12, TPID_8021AD);
            put(14, outer);
            put(16, TPID_8021Q);
            put(18, inner);
            put(20, ethertype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: Mac = [0x02, 0, 0, 0, 0, 1];
    const SRC: Mac = [0x02, 0, 0, 0, 0, 2];

    fn header(vlan: Vlan) -> Vec<u8> {
        let mut h = vec![0; HEADER_LEN + vlan.tags_len()];
        write(&mut h, &DST, &SRC, vlan, ETHERTYPE_IPV6);
        h
    }

    #[test]
    fn every_tagging_reads_back() {
        for vlan in [
            Vlan::Untagged,
            Vlan::Tagged(0xe00a),
            Vlan::QinQ {
                outer: 100,
                inner: 0x2fff,
            },
        ] {
            let h = header(vlan);
            assert_eq!(
                parse(&h),
                Ok(Header {
                    dst: DST,
                    src: SRC,
                    vlan,
                    ethertype: ETHERTYPE_IPV6,
                    len: h.len(),
                })
            );
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Err(PacketError::Truncated), "{cut}");
            }
        }
    }

    #[test]
    fn only_the_two_standard_stacks_are_accepted() {
        let bad = |tpids: &[u16]| {
            let mut h = vec![0u8; 12];
            for t in tpids {
                h.extend_from_slice(&t.to_be_bytes());
                h.extend_from_slice(&[0, 7]);
            }
            h.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            parse(&h)
        };
        assert!(bad(&[TPID_8021Q]).is_ok());
        assert!(bad(&[TPID_8021AD, TPID_8021Q]).is_ok());
        for stack in [
            &[TPID_8021Q, TPID_8021Q][..],
            &[TPID_8021Q, TPID_8021AD],
            &[TPID_8021AD],
            &[TPID_8021AD, TPID_8021AD],
            &[TPID_8021AD, TPID_8021Q, TPID_8021Q],
        ] {
            assert_eq!(bad(stack), Err(PacketError::BadVlan), "{stack:x?}");
        }
    }
}
