//! Where a reply goes on the wire: the MAC address (and VLAN tags) the peer's frames came
//! from, i.e. the next hop toward it, learned from every frame received. A QUIC server only
//! sends to addresses it has heard from (a migrating client speaks first), so a miss is
//! rare: the kernel's neighbour table answers it, and a miss there is remembered for a
//! moment so that a peer nobody knows does not cost a netlink dump per packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proto::packet::Vlan;

use crate::packet_io::Hop;

/// Peers remembered at most; past it the table starts again (it refills from the next
/// frame of each peer).
const MAX_PEERS: usize = 1 << 16;
/// How long a peer the neighbour table did not know is not asked for again.
const MISS_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Peers {
    known: HashMap<IpAddr, Hop>,
    missed: HashMap<IpAddr, Instant>,
}

impl Peers {
    /// A frame came from `ip` through `hop`.
    pub fn learn(&mut self, ip: IpAddr, hop: Hop) {
        if self.known.get(&ip) == Some(&hop) {
            return;
        }
        if self.known.len() >= MAX_PEERS {
            self.known.clear();
        }
        self.known.insert(ip, hop);
        self.missed.remove(&ip);
    }

    /// The hop toward `ip`: learned, else `ask` (the neighbour table, untagged), unless
    /// it was asked in vain a moment ago.
    pub fn hop(&mut self, ip: IpAddr, ask: impl FnOnce() -> Option<[u8; 6]>) -> Option<Hop> {
        if let Some(hop) = self.known.get(&ip) {
            return Some(*hop);
        }
        let now = Instant::now();
        if self.missed.get(&ip).is_some_and(|at| now < *at + MISS_FOR) {
            return None;
        }
        match ask() {
            Some(mac) => {
                let hop = Hop {
                    mac,
                    vlan: Vlan::Untagged,
                };
                self.learn(ip, hop);
                Some(hop)
            }
            None => {
                if self.missed.len() >= MAX_PEERS {
                    self.missed.clear();
                }
                self.missed.insert(ip, now);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_hops_win_and_a_miss_is_not_asked_again_at_once() {
        let mut peers = Peers::default();
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        let hop = Hop {
            mac: [2, 0, 0, 0, 0, 2],
            vlan: Vlan::Tagged(7),
        };
        let mut asked = 0;
        assert_eq!(
            peers.hop(ip, || {
                asked += 1;
                None
            }),
            None
        );
        assert_eq!(
            peers.hop(ip, || {
                asked += 1;
                None
            }),
            None
        );
        assert_eq!(asked, 1, "a miss is remembered");
        peers.learn(ip, hop);
        assert_eq!(peers.hop(ip, || unreachable!()), Some(hop));
        let other: IpAddr = "198.18.0.3".parse().unwrap();
        let found = peers.hop(other, || Some([2, 0, 0, 0, 0, 3]));
        assert_eq!(found.map(|h| (h.mac[5], h.vlan)), Some((3, Vlan::Untagged)));
    }
}
