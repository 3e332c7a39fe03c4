//! The per-shard context every driver works with: the shard's policy in force, its pools,
//! credential cache, sessions and metrics. Shard-local (`Rc`/`RefCell`); the runtime loop that
//! owns it lives in `shard.rs`, which is the only module that knows about accepting.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::CredentialCache;
use crate::buffer_budget::{self, BufferBudget};
use crate::live::LivePolicy;
use crate::metrics::ShardMetrics;
use crate::relay::buf_pool::BufPool;
use crate::relay::pipe_pool::PipePool;
use crate::relay::RelayEnv;
use crate::sessions::{PolicyRef, Sessions};
use crate::shared::Shared;
use crate::stream::Deadlines;
use crate::udp::RecvBatch;

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    policy: RefCell<PolicyRef>,
    pub pipes: RefCell<PipePool>,
    pub bufs: RefCell<BufPool>,
    pub creds: RefCell<CredentialCache>,
    pub sessions: Sessions,
    /// What HTTP/2 and HTTP/3 tunnel streams may make the core hold.
    pub buffers: BufferBudget,
    /// SOCKS5 UDP associations open on the core (bounded by
    /// `socks5_udp.max_associations_per_core`).
    pub udp_associations: Cell<usize>,
    active: Cell<usize>,
    /// `limits.max_connections_per_core` in force.
    max_connections: Cell<usize>,
    /// Set when the shard starts draining. A `watch` channel because its waiters take
    /// themselves off its list when dropped: a list of wakers pushed on every poll kept
    /// every h2/h3 connection's task alive until the shard drained.
    draining: tokio::sync::watch::Sender<bool>,
    /// Buffers every UDP association of the shard reads datagrams into, one batch at a
    /// time (allocated on first use: 8 × 64 KiB).
    datagrams: RefCell<Option<Box<RecvBatch>>>,
}

impl Shard {
    pub fn metrics(&self) -> &ShardMetrics {
        &self.shared.metrics[self.id]
    }

    pub fn new(id: usize, shared: Arc<Shared>) -> Shard {
        let limits = &shared.config.limits;
        Shard {
            id,
            policy: RefCell::new(Rc::new(shared.bus.mailbox(id).latest())),
            pipes: RefCell::new(PipePool::new(limits.pipe_pool_per_core, limits.pipe_size)),
            // Copy buffers are kept under the same bound as idle pipes.
            bufs: RefCell::new(BufPool::new(
                limits.pipe_pool_per_core,
                crate::relay::COPY_BUF,
            )),
            creds: RefCell::new(CredentialCache::new(
                limits.credential_cache_per_core,
                limits.password_checks_per_core,
            )),
            sessions: Sessions::default(),
            buffers: BufferBudget::new(
                budget_limit(limits.tunnel_buffer_per_core, shared.cores),
                shared.metrics[id].tunnel_buffer_committed.clone(),
            ),
            udp_associations: Cell::new(0),
            active: Cell::new(0),
            max_connections: Cell::new(limits.max_connections_per_core),
            draining: tokio::sync::watch::Sender::new(false),
            datagrams: RefCell::new(None),
            shared,
        }
    }

    /// Runs `f` over the shard's datagram batch; `f` must not wait (the batch is shared by
    /// every association of the shard), which the borrow enforces.
    pub fn with_datagrams<R>(&self, f: impl FnOnce(&mut RecvBatch) -> R) -> R {
        let mut slot = self.datagrams.borrow_mut();
        let batch = slot.get_or_insert_with(|| {
            Box::new(RecvBatch::new(
                crate::udp::MAX_PAYLOAD + 1,
                proto::socks5::udp::REPLY_ROOM,
            ))
        });
        f(batch)
    }

    /// Starts draining: protocols that can say so (HTTP/3 GOAWAY) tell their clients.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Returns once the shard is draining. Dropping the future before then leaves nothing
    /// behind.
    pub async fn draining(&self) {
        let mut rx = self.draining.subscribe();
        // The sender lives as long as the shard, which outlives every waiter.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// How many tasks wait for the drain now.
    pub fn drain_waiters(&self) -> usize {
        self.draining.receiver_count()
    }

    /// The policy in force: the one every decision (authentication, admission) is made
    /// under when it is made.
    pub fn policy(&self) -> PolicyRef {
        self.policy.borrow().clone()
    }

    /// Puts `new` in force: later connections and requests use it, cached credentials of
    /// users it changed are forgotten, and live sessions it no longer allows are closed.
    pub fn install(&self, new: Arc<LivePolicy>) {
        let old = self.policy();
        let changed: HashSet<&str> = old
            .users()
            .filter(|u| {
                new.user_by_name(&u.name)
                    .is_none_or(|(_, n)| !n.enabled || n.password_hash != u.password_hash)
            })
            .map(|u| u.name.as_str())
            .collect();
        self.creds.borrow_mut().forget(&changed);
        let revoked = self.sessions.revoke_disallowed(&new);
        if revoked > 0 {
            tracing::info!(
                core = self.id,
                revision = new.revision,
                revoked,
                "policy change closed live sessions"
            );
        }
        self.metrics().sessions_revoked.add(revoked as u64);
        self.metrics().policy_revision.set(new.revision as i64);
        *self.policy.borrow_mut() = Rc::new(new);
    }

    /// Puts the limits a core can change while it runs in force (after a reload).
    pub fn apply_limits(&self) {
        let limits = self.shared.limits();
        self.max_connections.set(limits.max_connections_per_core);
        self.creds
            .borrow_mut()
            .set_max_running(limits.password_checks_per_core);
        self.buffers.set_limit(budget_limit(
            limits.tunnel_buffer_per_core,
            self.shared.cores,
        ));
    }

    pub fn relay_env(&self) -> RelayEnv<'_> {
        RelayEnv {
            pipes: &self.pipes,
            bufs: &self.bufs,
            metrics: self.metrics(),
            mode: self.shared.config.relay,
        }
    }

    /// A new session's deadline policy, from the configured timeouts, its handshake
    /// starting now.
    pub fn deadlines(&self) -> Deadlines {
        let t = &self.shared.config.timeouts;
        Deadlines::new(t.handshake(), t.idle())
    }

    /// Registers a new session of `client` (its handshake starting now).
    pub fn session(&self, client: std::net::SocketAddr) -> crate::sessions::SessionGuard<'_> {
        self.sessions.register(client, self.deadlines())
    }

    pub fn active_connections(&self) -> usize {
        self.active.get()
    }

    /// Counts a new connection as active unless the shard is at
    /// `limits.max_connections_per_core`.
    pub fn enter(self: &Rc<Self>) -> Option<ActiveGuard> {
        if self.active.get() >= self.max_connections.get() {
            return None;
        }
        self.active.set(self.active.get() + 1);
        Some(ActiveGuard(self.clone()))
    }
}

/// `limits.tunnel_buffer_per_core`, 0 meaning the machine's share.
fn budget_limit(configured: u64, cores: usize) -> u64 {
    match configured {
        0 => buffer_budget::default_limit(cores),
        n => n,
    }
}

/// Counts a connection as active on its shard for as long as it lives.
pub struct ActiveGuard(Rc<Shard>);

impl ActiveGuard {
    pub fn shard(&self) -> &Shard {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::live::status::{PolicyStatus, Source};
    use crate::live::{Compiler, PolicyBus};
    use std::future::Future;

    /// A shard over the default configuration and an empty policy, for unit tests.
    pub(crate) fn shard() -> Rc<Shard> {
        let policy = Compiler::new(vec![])
            .compile(&policy::PolicyDoc::default())
            .expect("the empty policy compiles");
        let bus = Arc::new(PolicyBus::new(1, Arc::new(policy)));
        let status = Arc::new(PolicyStatus::new(Source::Static, std::time::Duration::ZERO));
        let shared = Shared::new(Config::default(), bus, status).expect("worker pools");
        Rc::new(Shard::new(0, Arc::new(shared)))
    }

    /// Every h2 and h3 connection waits for the drain while it lives: a wait given up on
    /// must leave nothing behind, however often it was polled.
    #[test]
    fn abandoned_drain_waits_leave_no_waiter_behind() {
        let shard = shard();
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..10_000 {
            let mut wait = Box::pin(shard.draining());
            for _ in 0..3 {
                assert!(wait.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(shard.drain_waiters(), 1);
        }
        assert_eq!(shard.drain_waiters(), 0);
        let mut waiting = Box::pin(shard.draining());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        shard.start_draining();
        assert!(waiting.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(shard.draining()).as_mut().poll(&mut cx).is_ready());
        assert_eq!(shard.drain_waiters(), 0);
    }
}
