//! Destination names of one association: resolved off the shard (the resolver threads),
//! the answers kept for `dns_cache_secs`, failures for a few seconds; datagrams to a name
//! being resolved wait (a bounded few) and go once the answer is in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long a name that did not resolve is answered "no" without asking again.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Datagrams that may wait for names of one association, all names together.
pub const MAX_WAITING: usize = 64;

/// A datagram waiting for its destination's name: the port and the payload.
pub type Waiting = (u16, Vec<u8>);

enum Entry {
    Resolved { ips: Rc<[IpAddr]>, until: Instant },
    Failed { until: Instant },
    Pending { waiting: Vec<Waiting> },
}

/// The answer for a datagram to a name.
pub enum Lookup {
    Ready(Rc<[IpAddr]>),
    /// Being resolved: the datagram waits.
    Queued,
    /// The name does not resolve.
    Failed,
    /// Too many datagrams already waiting: this one is dropped.
    Full,
}

pub struct Names {
    map: HashMap<Rc<str>, Entry>,
    /// Names to start resolving, and who to tell.
    requests: Vec<Rc<str>>,
    waker: Option<Waker>,
    waiting: usize,
    ttl: Duration,
    max_entries: usize,
}

impl Names {
    pub fn new(ttl: Duration, max_entries: usize) -> Names {
        Names {
            map: HashMap::new(),
            requests: Vec::new(),
            waker: None,
            waiting: 0,
            ttl,
            max_entries,
        }
    }

    /// The addresses of `host`, or the datagram (`port`, `payload`) queued until they are
    /// known.
    pub fn lookup(&mut self, host: &Rc<str>, port: u16, payload: &[u8], now: Instant) -> Lookup {
        match self.map.get_mut(host) {
            Some(Entry::Resolved { ips, until }) if *until > now => {
                return Lookup::Ready(ips.clone())
            }
            Some(Entry::Failed { until }) if *until > now => return Lookup::Failed,
            Some(Entry::Pending { waiting }) => {
                if self.waiting >= MAX_WAITING {
                    return Lookup::Full;
                }
                waiting.push((port, payload.to_vec()));
                self.waiting += 1;
                return Lookup::Queued;
            }
            _ => {}
        }
        if self.waiting >= MAX_WAITING {
            return Lookup::Full;
        }
        if self.map.len() >= self.max_entries {
            self.map.retain(|_, e| match e {
                Entry::Resolved { until, .. } | Entry::Failed { until } => *until > now,
                Entry::Pending { .. } => true,
            });
            if self.map.len() >= self.max_entries {
                return Lookup::Full;
            }
        }
        self.map.insert(
            host.clone(),
            Entry::Pending {
                waiting: vec![(port, payload.to_vec())],
            },
        );
        self.waiting += 1;
        self.requests.push(host.clone());
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Lookup::Queued
    }

    /// Names to start resolving; `waker` is woken when more come.
    pub fn take_requests(&mut self, waker: &Waker) -> Vec<Rc<str>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
        std::mem::take(&mut self.requests)
    }

    /// Records the answer for `host` and hands back the datagrams that waited for it.
    pub fn complete(
        &mut self,
        host: &Rc<str>,
        ips: Option<Vec<IpAddr>>,
        now: Instant,
    ) -> (Option<Rc<[IpAddr]>>, Vec<Waiting>) {
        let entry = match &ips {
            Some(ips) if !ips.is_empty() => Entry::Resolved {
                ips: ips.as_slice().into(),
                until: now + self.ttl,
            },
            _ => Entry::Failed {
                until: now + NEGATIVE_TTL.min(self.ttl.max(Duration::from_secs(1))),
            },
        };
        let resolved = match &entry {
            Entry::Resolved { ips, .. } => Some(ips.clone()),
            _ => None,
        };
        let waiting = match self.map.insert(host.clone(), entry) {
            Some(Entry::Pending { waiting }) => waiting,
            _ => Vec::new(),
        };
        self.waiting -= waiting.len().min(self.waiting);
        (resolved, waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Nop;
    impl Wake for Nop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn names_resolve_once_and_datagrams_wait_for_them() {
        let waker = Waker::from(Arc::new(Nop));
        let t0 = Instant::now();
        let mut names = Names::new(Duration::from_secs(60), 8);
        let host: Rc<str> = "echo.test".into();
        assert!(matches!(names.lookup(&host, 7, b"one", t0), Lookup::Queued));
        assert!(matches!(names.lookup(&host, 8, b"two", t0), Lookup::Queued));
        // One resolution for both datagrams.
        assert_eq!(names.take_requests(&waker), vec![host.clone()]);
        assert!(names.take_requests(&waker).is_empty());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (ips, waiting) = names.complete(&host, Some(vec![ip]), t0);
        assert_eq!(&*ips.unwrap(), &[ip]);
        assert_eq!(waiting, vec![(7, b"one".to_vec()), (8, b"two".to_vec())]);
        assert!(matches!(names.lookup(&host, 7, b"x", t0), Lookup::Ready(_)));
        // Expired: asked again.
        assert!(matches!(
            names.lookup(&host, 7, b"x", t0 + Duration::from_secs(61)),
            Lookup::Queued
        ));
        let bad: Rc<str> = "nx.test".into();
        names.lookup(&bad, 1, b"", t0);
        names.complete(&bad, None, t0);
        assert!(matches!(names.lookup(&bad, 1, b"", t0), Lookup::Failed));
    }

    #[test]
    fn waiting_datagrams_are_bounded() {
        let t0 = Instant::now();
        let mut names = Names::new(Duration::from_secs(60), 1000);
        let mut full = 0;
        for i in 0..MAX_WAITING + 10 {
            let host: Rc<str> = format!("h{}.test", i % 3).into();
            if matches!(names.lookup(&host, 1, b"x", t0), Lookup::Full) {
                full += 1;
            }
        }
        assert_eq!(full, 10);
    }
}
