//! State shared by all shards and the admin thread. Read-mostly: shards write only their own
//! metrics block; the per-user tunnel counters (in the policy) are touched once per tunnel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Config, Limits};
use crate::live::status::PolicyStatus;
use crate::live::PolicyBus;
use crate::metrics::ShardMetrics;
use crate::resolver::Resolver;
use crate::workers::{release_memory, WorkerPool};

#[derive(Default)]
pub struct Lifecycle {
    listening_shards: AtomicUsize,
    pub draining: AtomicBool,
}

/// Counts a shard as listening for as long as it is alive: dropped when its accept loop ends,
/// when it fails, and while a panic unwinds its thread, so `/readyz` never counts a dead shard.
pub struct Listening<'a>(&'a Lifecycle);

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0.listening_shards.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lifecycle {
    pub fn listening(&self) -> Listening<'_> {
        self.listening_shards.fetch_add(1, Ordering::AcqRel);
        Listening(self)
    }

    pub fn listening_shards(&self) -> usize {
        self.listening_shards.load(Ordering::Acquire)
    }
}

/// What every core hands work to that must not run on it: name resolution (its own
/// thread, [`crate::resolver`]) and password checks (a pool, [`crate::workers`]).
pub struct Workers {
    pub resolver: Resolver,
    pub passwords: WorkerPool,
}

pub struct Shared {
    pub config: Config,
    pub cores: usize,
    pub metrics: Box<[ShardMetrics]>,
    pub lifecycle: Lifecycle,
    /// Where each shard picks up new policies.
    pub bus: Arc<PolicyBus>,
    pub policy_status: Arc<PolicyStatus>,
    pub workers: Workers,
    /// QUIC's server configuration (TLS identity, ALPN h3), when QUIC is on.
    pub quic: Option<Arc<quinn_proto::ServerConfig>>,
    /// TLS to the proxy on the TCP port (same identity as QUIC), when on.
    pub tls_tcp: Option<Arc<rustls::ServerConfig>>,
    /// The kernel accepts the `tls` ULP (probed at start).
    pub ktls: bool,
    /// The CONNECT-UDP URI template, parsed once (`quic.udp_template`).
    pub udp_template: proto::masque::Template,
    /// The limits in force: `config.limits` at start, then as reloaded (see reload.rs).
    limits: arc_swap::ArcSwap<Limits>,
    /// The XDP program and its link, when QUIC runs on AF_XDP (set as the shards start).
    pub xdp: std::sync::OnceLock<Arc<crate::packet_io::af_xdp::XdpPlane>>,
}

impl Shared {
    pub fn new(
        config: Config,
        bus: Arc<PolicyBus>,
        policy_status: Arc<PolicyStatus>,
    ) -> std::io::Result<Shared> {
        let cores = config.core_count();
        let limits = &config.limits;
        let password_threads = match limits.password_threads {
            0 => cores,
            n => n,
        };
        // Queues: a few waiting jobs per thread; past that a request is refused at once.
        let workers = Workers {
            resolver: Resolver::start(&config.resolver)?,
            // At most `password_threads` Argon2 blocks exist at once, and none while idle.
            passwords: WorkerPool::new(
                "argon2",
                password_threads,
                4 * password_threads,
                Some(release_memory),
            )?,
        };
        // Checked by Config::validate; the default stands in for a config never validated.
        let udp_template =
            proto::masque::Template::parse(&config.quic.udp_template).unwrap_or_default();
        Ok(Shared {
            limits: arc_swap::ArcSwap::from_pointee(config.limits.clone()),
            xdp: std::sync::OnceLock::new(),
            udp_template,
            config,
            cores,
            metrics: (0..cores).map(|_| ShardMetrics::default()).collect(),
            lifecycle: Lifecycle::default(),
            bus,
            policy_status,
            workers,
            quic: None,
            tls_tcp: None,
            ktls: false,
        })
    }

    /// The limits in force now.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// Puts `limits` in force; each core applies them at its next mailbox ring.
    pub fn set_limits(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
    }

    /// Every core listens, the proxy is not draining, and (unless configured otherwise) the
    /// policy is not stale.
    pub fn is_ready(&self) -> bool {
        self.lifecycle.listening_shards() == self.cores
            && !self.lifecycle.draining.load(Ordering::Acquire)
            && (self.config.control.ready_while_stale || !self.policy_status.is_stale())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_dies_is_no_longer_counted() {
        let lifecycle = Arc::new(Lifecycle::default());
        let alive = lifecycle.listening();
        let l = lifecycle.clone();
        let died = std::thread::spawn(move || {
            let _listening = l.listening();
            panic!("shard failure");
        })
        .join();
        assert!(died.is_err());
        assert_eq!(lifecycle.listening_shards(), 1);
        drop(alive);
        assert_eq!(lifecycle.listening_shards(), 0);
    }
}
