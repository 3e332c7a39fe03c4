//! One shard per core: a single-threaded io_uring executor pinned to its CPU with its own
//! SO_REUSEPORT listener on the shared address. Nothing on the connection path is shared
//! with another shard except the per-user tunnel counters (touched once per tunnel).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;

use crate::auth::CredentialCache;
use crate::conn;
use crate::live::LivePolicy;
use crate::metrics::{ErrorKind, ShardMetrics};
use crate::relay::buf_pool::BufPool;
use crate::relay::pipe_pool::PipePool;
use crate::relay::{self, RelayEnv};
use crate::sessions::{PolicyRef, Sessions};
use crate::shared::Shared;

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    policy: RefCell<PolicyRef>,
    pub pipes: RefCell<PipePool>,
    pub bufs: RefCell<BufPool>,
    pub creds: RefCell<CredentialCache>,
    pub sessions: Sessions,
    active: Cell<usize>,
}

impl Shard {
    pub fn metrics(&self) -> &ShardMetrics {
        &self.shared.metrics[self.id]
    }

    /// The policy in force for new work; a session keeps the one it last refreshed to.
    pub fn policy(&self) -> PolicyRef {
        self.policy.borrow().clone()
    }

    /// Puts `new` in force: later connections and requests use it, cached credentials of
    /// users it changed are forgotten, and live sessions it no longer allows are closed.
    fn install(&self, new: Arc<LivePolicy>) {
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
}

/// Counts a connection as active on its shard for as long as it lives.
struct ActiveGuard(Rc<Shard>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

/// Binds one SO_REUSEPORT listener (the kernel spreads connections across them).
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Swaps in each policy the control thread publishes, as soon as the doorbell rings.
async fn follow_policy(shard: Rc<Shard>) {
    let mailbox = shard.shared.bus.mailbox(shard.id);
    while mailbox.rung().await {
        let latest = mailbox.latest();
        if !Arc::ptr_eq(&latest, &shard.policy()) {
            shard.install(latest);
        }
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, stop: flume::Receiver<()>) {
    let max = shard.shared.config.limits.max_connections_per_core;
    let mut last_warning: Option<Instant> = None;
    // One stop future for the shard's life: registering a fresh channel waiter on every
    // accept would take the channel's lock once per connection.
    let mut stopped = std::pin::pin!(stop.recv_async());
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = &mut stopped => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                shard.metrics().accepted.inc();
                if shard.active.get() >= max {
                    shard.metrics().error(ErrorKind::ConnectionLimit);
                    continue;
                }
                shard.active.set(shard.active.get() + 1);
                let guard = ActiveGuard(shard.clone());
                monoio::spawn(async move {
                    conn::serve(&guard.0, stream, peer).await;
                    drop(guard);
                });
            }
            Err(e) if crate::relay::sys::is_spurious(&e) => {}
            Err(e) => {
                shard.metrics().error(ErrorKind::Accept);
                if is_resource_exhaustion(&e) {
                    // Out of descriptors: back off instead of spinning, and say so (at most
                    // once a second) so an operator can raise the limit.
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        tracing::warn!(core = shard.id, error = %e, "accept failed; backing off");
                        last_warning = Some(Instant::now());
                    }
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    // Draining: live tunnels get until the deadline to finish on their own.
    let deadline = Instant::now() + shard.shared.config.timeouts.drain();
    while shard.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        core = shard.id,
        remaining = shard.active.get(),
        "shard stopped"
    );
}

type ShardRuntime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// The shard's executor. IORING_SETUP_COOP_TASKRUN lets the kernel run io_uring completion
/// work at the shard's next syscall instead of interrupting it: measured +13% tunnels/s and
/// -13% CPU per tunnel here (docs/benchmarks.md). Kernels before 5.19 refuse the flag; the
/// shard then starts without it.
fn build_runtime(pool: DefaultThreadPool) -> io::Result<ShardRuntime> {
    let builder = |coop: bool, pool: DefaultThreadPool| {
        let mut urb = io_uring::IoUring::builder();
        if coop {
            urb.setup_coop_taskrun();
        }
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .uring_builder(urb)
            .attach_thread_pool(Box::new(pool))
            .build()
    };
    builder(true, pool.clone()).or_else(|e| {
        tracing::debug!(error = %e, "io_uring without COOP_TASKRUN");
        builder(false, pool)
    })
}

fn run_shard(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    stop: flume::Receiver<()>,
    pool: DefaultThreadPool,
) -> io::Result<()> {
    let limits = &shared.config.limits;
    let shard = Rc::new(Shard {
        id,
        policy: RefCell::new(Rc::new(shared.bus.mailbox(id).latest())),
        pipes: RefCell::new(PipePool::new(limits.pipe_pool_per_core, limits.pipe_size)),
        // Copy buffers are kept under the same bound as idle pipes.
        bufs: RefCell::new(BufPool::new(limits.pipe_pool_per_core, relay::COPY_BUF)),
        creds: RefCell::new(CredentialCache::new(limits.credential_cache_per_core)),
        sessions: Sessions::default(),
        active: Cell::new(0),
        shared: shared.clone(),
    });
    shard
        .metrics()
        .policy_revision
        .set(shard.policy().revision as i64);
    let mut rt = build_runtime(pool)?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        shared
            .lifecycle
            .listening_shards
            .fetch_add(1, Ordering::AcqRel);
        monoio::spawn(follow_policy(shard.clone()));
        accept_loop(shard, listener, stop).await;
        Ok(())
    })
}

/// Starts `shared.cores` shards. Listeners are bound here, before any thread starts, so a
/// taken port fails start-up at once. Dropping the returned sender stops every shard.
/// Running shards. Dropping `stop` stops every shard.
pub struct Shards {
    pub handles: Vec<JoinHandle<io::Result<()>>>,
    pub stop: flume::Sender<()>,
}

pub fn start(shared: Arc<Shared>) -> io::Result<Shards> {
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let listeners = (0..shared.cores)
        .map(|_| bind_listener(shared.config.listen))
        .collect::<io::Result<Vec<_>>>()?;
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let pool = DefaultThreadPool::new(shared.cores.max(2));
    let mut handles = Vec::with_capacity(shared.cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let (shared, stop, pool) = (shared.clone(), stop_rx.clone(), pool.clone());
        let core = (shared.config.pin_cores && !core_ids.is_empty())
            .then(|| core_ids[id % core_ids.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("zcproxy-core-{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                run_shard(id, shared, listener, stop, pool)
            })?;
        handles.push(handle);
    }
    Ok(Shards {
        handles,
        stop: stop_tx,
    })
}
