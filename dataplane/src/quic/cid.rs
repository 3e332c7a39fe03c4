//! Connection IDs that name the shard owning the connection (see `steer`): the shard's
//! number in the first byte, random bytes after it.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};

use super::steer::CID_LEN;

#[derive(Debug)]
pub struct ShardCids {
    shard: u8,
}

impl ShardCids {
    /// `shard` below [`super::steer::MAX_SHARDS`] (config validation keeps cores there).
    pub fn new(shard: usize) -> ShardCids {
        ShardCids { shard: shard as u8 }
    }
}

impl ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.shard;
        // The OS generator only fails when the kernel has none to give; an ID that is
        // guessable is then still unique enough to route, and the handshake keys protect it.
        let _ = getrandom::getrandom(&mut bytes[1..]);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::steer::owner;
    use super::*;

    #[test]
    fn issued_ids_point_at_their_shard() {
        for shard in [0, 1, 5] {
            let mut gen = ShardCids::new(shard);
            let a = gen.generate_cid();
            let b = gen.generate_cid();
            assert_ne!(a, b);
            let mut short = vec![0x40];
            short.extend_from_slice(&a);
            assert_eq!(owner(&short, 6), Some(shard));
        }
    }
}
