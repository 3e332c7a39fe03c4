//! The per-shard context every driver works with: the shard's policy in force, its pools,
//! credential cache, sessions and metrics. Shard-local (`Rc`/`RefCell`); the runtime loop that
//! owns it lives in `shard.rs`, which is the only module that knows about accepting.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::CredentialCache;
use crate::live::LivePolicy;
use crate::metrics::ShardMetrics;
use crate::relay::buf_pool::BufPool;
use crate::relay::pipe_pool::PipePool;
use crate::relay::RelayEnv;
use crate::sessions::{PolicyRef, Sessions};
use crate::shared::Shared;
use crate::udp::RecvBatch;

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    policy: RefCell<PolicyRef>,
    pub pipes: RefCell<PipePool>,
    pub bufs: RefCell<BufPool>,
    pub creds: RefCell<CredentialCache>,
    pub sessions: Sessions,
    active: Cell<usize>,
    /// Set when the shard starts draining; tasks waiting for that are woken.
    draining: Cell<bool>,
    drain_waiters: RefCell<Vec<std::task::Waker>>,
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
            active: Cell::new(0),
            draining: Cell::new(false),
            drain_waiters: RefCell::new(Vec::new()),
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
        self.draining.set(true);
        self.drain_waiters
            .borrow_mut()
            .drain(..)
            .for_each(|w| w.wake());
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Returns once the shard is draining.
    pub async fn draining(&self) {
        std::future::poll_fn(|cx| {
            if self.draining.get() {
                return std::task::Poll::Ready(());
            }
            self.drain_waiters.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
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

    pub fn relay_env(&self) -> RelayEnv<'_> {
        RelayEnv {
            pipes: &self.pipes,
            bufs: &self.bufs,
            metrics: self.metrics(),
            mode: self.shared.config.relay,
            idle: self.shared.config.timeouts.idle(),
        }
    }

    pub fn active_connections(&self) -> usize {
        self.active.get()
    }

    /// Counts a new connection as active unless the shard is at `max`.
    pub fn enter(self: &Rc<Self>, max: usize) -> Option<ActiveGuard> {
        if self.active.get() >= max {
            return None;
        }
        self.active.set(self.active.get() + 1);
        Some(ActiveGuard(self.clone()))
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
