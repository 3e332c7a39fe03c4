//! The destinations one association sends to (its flows): a datagram to a new destination
//! is checked against the policy once, later ones to it go straight through; replies are
//! relayed only from destinations the client has sent to and that have not expired. A new
//! policy re-checks every flow, and those it no longer allows are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::metrics::socks_udp::UdpDrop;

struct Flow {
    /// The name the client gave, if it sent by name (host rules of the ACL look at it).
    host: Option<Rc<str>>,
    last: Instant,
}

pub struct Flows {
    map: HashMap<SocketAddr, Flow>,
    max: usize,
    /// The policy revision the flows were checked under.
    revision: u64,
}

/// What became of a datagram's destination.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Known already, or allowed now.
    Known,
    Opened,
}

impl Flows {
    pub fn new(max: usize, revision: u64) -> Flows {
        Flows {
            map: HashMap::new(),
            max,
            revision,
        }
    }

    /// Lets a datagram to `dest` (named `host`) through: a known flow under the same name
    /// at once, anything else if `allowed` says so (a new flow only below the limit).
    pub fn admit(
        &mut self,
        dest: SocketAddr,
        host: Option<&Rc<str>>,
        now: Instant,
        allowed: impl FnOnce() -> bool,
    ) -> Result<Admit, UdpDrop> {
        if let Some(flow) = self.map.get_mut(&dest) {
            if flow.host.as_deref() == host.map(|h| &**h) {
                flow.last = now;
                return Ok(Admit::Known);
            }
            // The same address by another name (or none): its own check, the flow kept.
            return if allowed() {
                flow.last = now;
                Ok(Admit::Known)
            } else {
                Err(UdpDrop::Denied)
            };
        }
        if self.map.len() >= self.max {
            return Err(UdpDrop::DestinationLimit);
        }
        if !allowed() {
            return Err(UdpDrop::Denied);
        }
        self.map.insert(
            dest,
            Flow {
                host: host.cloned(),
                last: now,
            },
        );
        Ok(Admit::Opened)
    }

    /// Whether a reply from `src` may go to the client (and keeps its flow alive).
    pub fn reply(&mut self, src: SocketAddr, now: Instant) -> bool {
        match self.map.get_mut(&src) {
            Some(flow) => {
                flow.last = now;
                true
            }
            None => false,
        }
    }

    /// Under policy `revision`, keeps only the flows `keep` allows; returns how many went.
    /// Nothing to do when the revision is the one the flows were checked under.
    pub fn recheck(
        &mut self,
        revision: u64,
        keep: impl Fn(SocketAddr, Option<&str>) -> bool,
    ) -> usize {
        if revision == self.revision {
            return 0;
        }
        self.revision = revision;
        let before = self.map.len();
        self.map
            .retain(|dest, flow| keep(*dest, flow.host.as_deref()));
        before - self.map.len()
    }

    /// Forgets flows quiet for `idle`; returns how many.
    pub fn expire(&mut self, now: Instant, idle: Duration) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, flow| now.saturating_duration_since(flow.last) < idle);
        before - self.map.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn flows_are_checked_once_limited_expired_and_rechecked() {
        let t0 = Instant::now();
        let mut flows = Flows::new(2, 1);
        let (a, b, c) = (
            addr("192.0.2.1:53"),
            addr("192.0.2.2:53"),
            addr("192.0.2.3:53"),
        );
        assert_eq!(flows.admit(a, None, t0, || true), Ok(Admit::Opened));
        // Known: the check is not asked again.
        assert_eq!(flows.admit(a, None, t0, || panic!()), Ok(Admit::Known));
        assert_eq!(flows.admit(b, None, t0, || false), Err(UdpDrop::Denied));
        let name: Rc<str> = "dns.example".into();
        assert_eq!(flows.admit(b, Some(&name), t0, || true), Ok(Admit::Opened));
        // The same address under no name is checked on its own.
        assert_eq!(flows.admit(b, None, t0, || false), Err(UdpDrop::Denied));
        assert_eq!(
            flows.admit(c, None, t0, || true),
            Err(UdpDrop::DestinationLimit)
        );
        assert!(flows.reply(a, t0 + Duration::from_secs(5)));
        assert!(!flows.reply(c, t0));
        // b was last used at t0, a at t0+5 s.
        assert_eq!(
            flows.expire(t0 + Duration::from_secs(10), Duration::from_secs(8)),
            1
        );
        assert!(!flows.reply(b, t0));
        // Same revision: nothing re-checked; a new one drops what it denies.
        assert_eq!(flows.recheck(1, |_, _| false), 0);
        assert_eq!(flows.recheck(2, |d, _| d != a), 1);
        assert_eq!(flows.len(), 0);
    }
}
