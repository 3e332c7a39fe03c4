//! Live policy: how a policy document becomes the immutable policy each shard enforces, and
//! how a new one reaches every shard without a lock on the connection path.
//!
//! One writer (start-up, then the control thread) compiles a document once into a
//! [`LivePolicy`] and [`PolicyBus::publish`]es it: each shard has a mailbox holding the latest
//! `Arc` (an `ArcSwap`: lock-free load and store) and a doorbell. The shard's watcher task
//! wakes on the doorbell, swaps its policy between connections, and closes the live tunnels
//! the new policy no longer allows (see `sessions`).

pub mod cache;
pub mod control;
pub mod status;
pub mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use policy::{CompiledPolicy, PolicyDoc, PolicyError, UserId};

/// A compiled policy plus the per-user counters of open tunnels and SOCKS5 UDP associations
/// (shared by every shard, kept across policy versions by user name so limits hold while
/// users change).
pub struct LivePolicy {
    pub compiled: CompiledPolicy,
    counters: Box<[UserSlots]>,
}

/// What one user has open across every shard.
#[derive(Clone, Default)]
struct UserSlots {
    tunnels: Arc<AtomicU32>,
    associations: Arc<AtomicU32>,
}

/// Takes one slot of `counter` unless `max` are taken.
fn take(counter: &Arc<AtomicU32>, max: Option<u32>) -> Option<TunnelPermit> {
    let before = counter.fetch_add(1, Ordering::AcqRel);
    if max.is_some_and(|m| before >= m) {
        counter.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(TunnelPermit {
        counter: counter.clone(),
    })
}

impl Deref for LivePolicy {
    type Target = CompiledPolicy;
    fn deref(&self) -> &CompiledPolicy {
        &self.compiled
    }
}

impl LivePolicy {
    /// Takes one tunnel slot for `user`, or `None` when the user is at `max`.
    pub fn acquire(&self, user: UserId) -> Option<TunnelPermit> {
        let slots = self.counters.get(user.0 as usize)?;
        take(
            &slots.tunnels,
            self.compiled.user(user).and_then(|u| u.max_tunnels),
        )
    }

    /// Takes one SOCKS5 UDP association slot for `user`, or `None` when the user has `max`
    /// open on all cores together.
    pub fn acquire_association(&self, user: UserId, max: u32) -> Option<TunnelPermit> {
        take(&self.counters.get(user.0 as usize)?.associations, Some(max))
    }
}

/// One of a user's tunnel (or association) slots, released on drop.
pub struct TunnelPermit {
    counter: Arc<AtomicU32>,
}

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Compiles documents into [`LivePolicy`]s, carrying each user's tunnel counter over.
pub struct Compiler {
    own_endpoints: Vec<SocketAddr>,
    counters: HashMap<String, UserSlots>,
}

impl Compiler {
    pub fn new(own_endpoints: Vec<SocketAddr>) -> Compiler {
        Compiler {
            own_endpoints,
            counters: HashMap::new(),
        }
    }

    pub fn compile(&mut self, doc: &PolicyDoc) -> Result<LivePolicy, PolicyError> {
        let compiled = CompiledPolicy::compile(doc, &self.own_endpoints)?;
        let mut counters = HashMap::with_capacity(doc.users.len());
        let list = doc
            .users
            .iter()
            .map(|u| {
                let c = self.counters.get(&u.name).cloned().unwrap_or_default();
                counters.insert(u.name.clone(), c.clone());
                c
            })
            .collect();
        // Deleted users drop out; their live permits keep their own counter alive.
        self.counters = counters;
        Ok(LivePolicy {
            compiled,
            counters: list,
        })
    }
}

/// A shard's mailbox: the latest policy and a doorbell that says "look again".
pub struct Mailbox {
    latest: ArcSwap<LivePolicy>,
    doorbell_tx: flume::Sender<()>,
    doorbell_rx: flume::Receiver<()>,
}

impl Mailbox {
    pub fn latest(&self) -> Arc<LivePolicy> {
        self.latest.load_full()
    }

    /// Resolves when a newer policy may be waiting.
    pub async fn rung(&self) -> bool {
        self.doorbell_rx.recv_async().await.is_ok()
    }
}

/// Every shard's mailbox. The writer never waits for a shard.
pub struct PolicyBus {
    mailboxes: Box<[Mailbox]>,
}

impl PolicyBus {
    pub fn new(shards: usize, initial: Arc<LivePolicy>) -> PolicyBus {
        PolicyBus {
            mailboxes: (0..shards)
                .map(|_| {
                    // Capacity one: a pending ring already tells the shard to look.
                    let (tx, rx) = flume::bounded(1);
                    Mailbox {
                        latest: ArcSwap::new(initial.clone()),
                        doorbell_tx: tx,
                        doorbell_rx: rx,
                    }
                })
                .collect(),
        }
    }

    pub fn mailbox(&self, shard: usize) -> &Mailbox {
        &self.mailboxes[shard]
    }

    /// Rings every shard's doorbell without a new policy (limits were reloaded).
    pub fn ring(&self) {
        for m in self.mailboxes.iter() {
            let _ = m.doorbell_tx.try_send(());
        }
    }

    pub fn publish(&self, policy: Arc<LivePolicy>) {
        for m in self.mailboxes.iter() {
            m.latest.store(policy.clone());
            let _ = m.doorbell_tx.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::User;

    fn doc(users: &[(&str, Option<u32>)]) -> PolicyDoc {
        let hash = policy::password::hash("pw").unwrap();
        PolicyDoc {
            users: users
                .iter()
                .map(|(n, max)| User {
                    name: n.to_string(),
                    password_hash: hash.clone(),
                    enabled: true,
                    max_tunnels: *max,
                    rules: vec![],
                })
                .collect(),
            ..PolicyDoc::default()
        }
    }

    fn open_tunnels(p: &LivePolicy, user: UserId) -> u32 {
        p.counters[user.0 as usize].tunnels.load(Ordering::Acquire)
    }

    #[test]
    fn tunnel_counters_follow_users_across_versions() {
        let mut c = Compiler::new(vec![]);
        let v1 = c.compile(&doc(&[("a", Some(1)), ("b", None)])).unwrap();
        let (a1, _) = v1.user_by_name("a").unwrap();
        let permit = v1.acquire(a1).unwrap();
        assert!(v1.acquire(a1).is_none(), "a is at its limit");
        // "a" moves to another index in the next version; its count comes along.
        let v2 = c
            .compile(&doc(&[("b", None), ("c", None), ("a", Some(1))]))
            .unwrap();
        let (a2, _) = v2.user_by_name("a").unwrap();
        assert_ne!(a1, a2);
        assert_eq!(open_tunnels(&v2, a2), 1);
        assert!(v2.acquire(a2).is_none());
        drop(permit);
        assert!(v2.acquire(a2).is_some());
        // Deleted and re-created: a fresh count.
        let _ = c.compile(&doc(&[("b", None)])).unwrap();
        let v4 = c.compile(&doc(&[("a", Some(1))])).unwrap();
        assert_eq!(open_tunnels(&v4, v4.user_by_name("a").unwrap().0), 0);
    }

    #[test]
    fn publish_reaches_every_mailbox_and_rings_once() {
        let mut c = Compiler::new(vec![]);
        let bus = PolicyBus::new(3, Arc::new(c.compile(&PolicyDoc::default()).unwrap()));
        let mut d = PolicyDoc::default();
        for rev in 1..=5 {
            d.revision = rev;
            bus.publish(Arc::new(c.compile(&d).unwrap()));
        }
        for i in 0..3 {
            assert_eq!(bus.mailbox(i).latest().revision, 5);
            assert_eq!(bus.mailbox(i).doorbell_rx.len(), 1, "rings coalesce");
        }
    }
}
