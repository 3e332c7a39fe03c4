//! State shared by all shards and the admin thread. Read-mostly: shards write only their own
//! metrics block; the per-user tunnel counters (in the policy) are touched once per tunnel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::live::status::PolicyStatus;
use crate::live::PolicyBus;
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
    /// Where each shard picks up new policies.
    pub bus: Arc<PolicyBus>,
    pub policy_status: Arc<PolicyStatus>,
}

impl Shared {
    pub fn new(config: Config, bus: Arc<PolicyBus>, policy_status: Arc<PolicyStatus>) -> Shared {
        let cores = config.core_count();
        Shared {
            config,
            cores,
            metrics: (0..cores).map(|_| ShardMetrics::default()).collect(),
            lifecycle: Lifecycle::default(),
            bus,
            policy_status,
        }
    }

    /// Every core listens, the proxy is not draining, and (unless configured otherwise) the
    /// policy is not stale.
    pub fn is_ready(&self) -> bool {
        self.lifecycle.listening_shards.load(Ordering::Acquire) == self.cores
            && !self.lifecycle.draining.load(Ordering::Acquire)
            && (self.config.control.ready_while_stale || !self.policy_status.is_stale())
    }
}
