//! State shared by all shards and the admin thread. Read-mostly: shards write only their own
//! metrics block; the per-user tunnel counters are touched once per tunnel, not per byte.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use policy::UserId;

use crate::config::Config;
use crate::metrics::ShardMetrics;

#[derive(Default)]
pub struct Lifecycle {
    pub listening_shards: AtomicUsize,
    pub draining: AtomicBool,
}

pub struct Shared {
    pub config: Config,
    pub cores: usize,
    pub metrics: Box<[ShardMetrics]>,
    pub lifecycle: Lifecycle,
    pub user_tunnels: Arc<UserTunnels>,
}

impl Shared {
    pub fn new(config: Config, users: usize) -> Shared {
        let cores = config.core_count();
        Shared {
            config,
            cores,
            metrics: (0..cores).map(|_| ShardMetrics::default()).collect(),
            lifecycle: Lifecycle::default(),
            user_tunnels: Arc::new(UserTunnels::new(users)),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.lifecycle.listening_shards.load(Ordering::Acquire) == self.cores
            && !self.lifecycle.draining.load(Ordering::Acquire)
    }
}

/// Open tunnels per user across all shards, for `max_tunnels`.
pub struct UserTunnels {
    counts: Box<[AtomicU32]>,
}

impl UserTunnels {
    pub fn new(users: usize) -> UserTunnels {
        UserTunnels {
            counts: (0..users).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Takes one tunnel slot for `user`, or `None` when the user is at `max`.
    pub fn acquire(self: &Arc<Self>, user: UserId, max: Option<u32>) -> Option<TunnelPermit> {
        let slot = self.counts.get(user.0 as usize)?;
        let before = slot.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|m| before >= m) {
            slot.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(TunnelPermit {
            owner: self.clone(),
            user,
        })
    }

    pub fn open(&self, user: UserId) -> u32 {
        self.counts
            .get(user.0 as usize)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

pub struct TunnelPermit {
    owner: Arc<UserTunnels>,
    user: UserId,
}

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        if let Some(c) = self.owner.counts.get(self.user.0 as usize) {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_released() {
        let t = Arc::new(UserTunnels::new(1));
        let a = t.acquire(UserId(0), Some(2)).unwrap();
        let _b = t.acquire(UserId(0), Some(2)).unwrap();
        assert!(t.acquire(UserId(0), Some(2)).is_none());
        assert_eq!(t.open(UserId(0)), 2);
        drop(a);
        assert!(t.acquire(UserId(0), Some(2)).is_some());
        assert!(t.acquire(UserId(7), None).is_none());
    }
}
