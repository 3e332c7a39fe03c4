//! The control thread: follows the control plane (snapshot over HTTP, change events over
//! NATS) and publishes each new policy to every shard. It runs its own small tokio runtime,
//! because async-nats needs one; shards never wait for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use policy::PolicyDoc;
use tokio::sync::mpsc;

use super::status::{PolicyStatus, ResyncReason, Source};
use super::sync::{Follower, Step};
use super::{cache, Compiler, PolicyBus};
use crate::config::{Control, Fallback};

/// Most events folded into one compile-and-publish when they arrive in a burst.
const BATCH: usize = 4096;
/// The on-disk cache is rewritten at most this often.
const CACHE_EVERY: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("control plane unreachable: {0}")]
    Transport(String),
    #[error("control plane answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("snapshot is not a policy document: {0}")]
    Body(String),
}

/// GET /v1/policy/snapshot with a reader key.
fn fetch_snapshot(url: &str, key: &str, timeout: Duration) -> Result<PolicyDoc, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("{}/v1/policy/snapshot", url.trim_end_matches('/')))
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .map_err(|e| FetchError::Transport(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .map_err(|e| FetchError::Transport(e.to_string()))?;
    if status != 200 {
        let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(FetchError::Status { status, body });
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Body(e.to_string()))
}

/// What start-up ended with: the bus to hand to the shards, or why there is none.
pub type Started = Result<(Arc<PolicyBus>, ControlThread), String>;

pub struct ControlThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Follow {
    cfg: Control,
    key: String,
    status: Arc<PolicyStatus>,
    compiler: Compiler,
    cache_dirty: bool,
    cache_written: Instant,
}

impl Follow {
    async fn fetch(&self) -> Result<PolicyDoc, FetchError> {
        let (url, key, timeout) = (
            self.cfg.url.clone().unwrap_or_default(),
            self.key.clone(),
            self.cfg.request_timeout(),
        );
        tokio::task::spawn_blocking(move || fetch_snapshot(&url, &key, timeout))
            .await
            .map_err(|e| FetchError::Transport(e.to_string()))?
    }

    fn compile(&mut self, doc: &PolicyDoc) -> Option<Arc<super::LivePolicy>> {
        match self.compiler.compile(doc) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::error!(revision = doc.revision, error = %e, "policy does not compile; keeping the last good one");
                None
            }
        }
    }

    fn write_cache(&mut self, doc: &PolicyDoc, force: bool) {
        let Some(path) = &self.cfg.cache_file else {
            return;
        };
        if !(force || self.cache_dirty && self.cache_written.elapsed() >= CACHE_EVERY) {
            return;
        }
        match cache::store(path, doc) {
            Ok(()) => {
                self.cache_dirty = false;
                self.cache_written = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "policy cache not written"),
        }
    }

    /// The fallback document and where it came from, in configured order.
    fn fallback(&self, config_doc: &PolicyDoc) -> Option<(PolicyDoc, Source)> {
        for f in &self.cfg.fallback {
            match f {
                Fallback::Cache => match self.cfg.cache_file.as_deref().map(cache::load) {
                    Some(Ok(doc)) => return Some((doc, Source::Cache)),
                    Some(Err(e)) => tracing::warn!(error = %e, "cached policy unusable"),
                    None => {}
                },
                Fallback::Config => return Some((config_doc.clone(), Source::Config)),
            }
        }
        None
    }
}

/// Starts the control thread and waits (up to `startup_timeout`) for the first snapshot;
/// without one it starts on the configured fallback and keeps trying in the background.
pub fn start(
    cfg: Control,
    key: String,
    own_endpoints: Vec<std::net::SocketAddr>,
    config_doc: PolicyDoc,
    shards: usize,
    status: Arc<PolicyStatus>,
) -> Started {
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<Arc<PolicyBus>, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::Builder::new()
        .name("zcproxy-control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(format!("control runtime: {e}")));
                    return;
                }
            };
            let follow = Follow {
                cfg,
                key,
                status,
                compiler: Compiler::new(own_endpoints),
                cache_dirty: false,
                cache_written: Instant::now(),
            };
            rt.block_on(run(follow, config_doc, shards, started_tx, stop_rx));
        })
        .map_err(|e| format!("control thread: {e}"))?;
    let thread = ControlThread {
        stop: Some(stop_tx),
        handle: Some(handle),
    };
    match started_rx.recv() {
        Ok(Ok(bus)) => Ok((bus, thread)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("control thread ended during start-up".into()),
    }
}

enum Conn {
    Up,
    Down,
    /// Messages were dropped by the client: events may be missing.
    Lost,
}

async fn run(
    mut follow: Follow,
    config_doc: PolicyDoc,
    shards: usize,
    started: std::sync::mpsc::Sender<Result<Arc<PolicyBus>, String>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let (min, max) = follow.cfg.retry();
    let options = async_nats::ConnectOptions::new()
        .name("zcproxy")
        .retry_on_initial_connect()
        .connection_timeout(follow.cfg.request_timeout())
        .reconnect_delay_callback(move |attempts| {
            let exp = min.saturating_mul(1u32 << attempts.min(16) as u32);
            exp.min(max)
        })
        .event_callback(move |event| {
            let tx = conn_tx.clone();
            async move {
                let c = match event {
                    async_nats::Event::Connected => Conn::Up,
                    async_nats::Event::Disconnected | async_nats::Event::Closed => Conn::Down,
                    async_nats::Event::SlowConsumer(_) => Conn::Lost,
                    _ => return,
                };
                let _ = tx.send(c);
            }
        });
    // Subscribe before the first snapshot so no event committed after it can be missed.
    let client = match options.connect(follow.cfg.nats_url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(format!("NATS {}: {e}", follow.cfg.nats_url)));
            return;
        }
    };
    let mut events = match client.subscribe(follow.cfg.subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = started.send(Err(format!("subscribe {}: {e}", follow.cfg.subject)));
            return;
        }
    };

    // Start-up: the first snapshot, or a fallback after startup_timeout.
    let deadline = Instant::now() + follow.cfg.startup_timeout();
    let mut backoff = min;
    let mut first = None;
    while Instant::now() < deadline {
        match follow.fetch().await {
            Ok(doc) => {
                first = Some(doc);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "first policy snapshot failed; retrying");
                follow.status.count_resync_failure();
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
    let (doc, source, synced) = match first {
        Some(doc) => {
            follow.status.count_resync(ResyncReason::Startup);
            (doc, Source::Control, true)
        }
        None => match follow.fallback(&config_doc) {
            Some((doc, source)) => {
                tracing::warn!(
                    source = source.label(),
                    revision = doc.revision,
                    "control plane unreachable at start; serving the fallback policy"
                );
                (doc, source, false)
            }
            None => {
                let _ = started.send(Err(
                    "control plane unreachable and no usable fallback policy (control.fallback)"
                        .into(),
                ));
                return;
            }
        },
    };
    let Some(initial) = follow.compile(&doc) else {
        let _ = started.send(Err(format!(
            "the {} policy does not compile",
            source.label()
        )));
        return;
    };
    follow.status.set_source(source);
    if synced {
        follow.status.mark_synced();
        follow.write_cache(&doc, true);
    }
    let bus = Arc::new(PolicyBus::new(shards, initial));
    if started.send(Ok(bus.clone())).is_err() {
        return;
    }
    let mut follower = Follower::new(doc, synced);
    let mut pending = (!synced).then_some(ResyncReason::Retry);
    let mut next_attempt = Instant::now();
    let mut backoff = min;

    loop {
        if let Some(reason) = pending {
            if Instant::now() >= next_attempt {
                follow.status.count_resync(reason);
                match follow.fetch().await {
                    Ok(doc) => {
                        pending = None;
                        if follower.on_snapshot(doc) == Step::Changed {
                            publish(&mut follow, &mut follower, &bus, &mut pending);
                        }
                        if pending.is_some() {
                            // The snapshot itself does not compile: wait before asking again.
                            next_attempt = Instant::now() + backoff;
                            backoff = (backoff * 2).min(max);
                        } else {
                            backoff = min;
                            follow.status.set_source(Source::Control);
                            follow.status.mark_synced();
                            follow.cache_dirty = true;
                            follow.write_cache(follower.doc(), false);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "policy snapshot failed");
                        follow.status.count_resync_failure();
                        pending = Some(ResyncReason::Retry);
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(max);
                    }
                }
                continue;
            }
        }
        let wake = if pending.is_some() {
            next_attempt.min(Instant::now() + TICK)
        } else {
            Instant::now() + TICK
        };
        tokio::select! {
            biased;
            _ = &mut stop => break,
            c = conn_rx.recv() => match c {
                Some(Conn::Up) => {
                    follow.status.set_connected(true);
                    if let Step::Resync(r) = follower.on_reconnect() {
                        pending = Some(r);
                        next_attempt = Instant::now();
                    }
                }
                Some(Conn::Down) => follow.status.set_connected(false),
                Some(Conn::Lost) => {
                    if let Step::Resync(r) = follower.on_reconnect() {
                        pending = Some(r);
                        next_attempt = Instant::now();
                    }
                }
                None => break,
            },
            msg = events.next() => {
                let Some(first_msg) = msg else {
                    // Only after the client gave up for good: say so, the policy now ages.
                    tracing::error!("policy event subscription ended; serving the last policy");
                    follow.status.set_connected(false);
                    break;
                };
                let mut changed = false;
                let mut handle = |payload: &[u8], follower: &mut Follower| {
                    let (outcome, step) = follower.on_event(payload);
                    follow.status.count_event(outcome);
                    match step {
                        Step::Changed => changed = true,
                        Step::Resync(r) => {
                            pending = Some(r);
                            next_attempt = Instant::now();
                        }
                        Step::Nothing => {}
                    }
                };
                handle(&first_msg.payload, &mut follower);
                // Fold a burst into one compile and publish.
                for _ in 0..BATCH {
                    match events.next().now_or_never() {
                        Some(Some(m)) => handle(&m.payload, &mut follower),
                        _ => break,
                    }
                }
                if changed && pending.is_none() {
                    publish(&mut follow, &mut follower, &bus, &mut pending);
                    if pending.is_none() {
                        follow.status.mark_synced();
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if pending.is_none() && follow.status.connected() {
                    follow.status.mark_synced();
                }
                follow.write_cache(follower.doc(), false);
            }
        }
    }
    follow.write_cache(follower.doc(), false);
}

/// Compiles the follower's document and hands it to every shard; a document that does not
/// compile keeps the last good policy and calls for a snapshot.
fn publish(
    follow: &mut Follow,
    follower: &mut Follower,
    bus: &PolicyBus,
    pending: &mut Option<ResyncReason>,
) {
    match follow.compile(follower.doc()) {
        Some(p) => {
            tracing::debug!(revision = p.revision, "policy published to every core");
            bus.publish(p);
            follow.cache_dirty = true;
        }
        None => {
            if let Step::Resync(r) = follower.on_apply_failed() {
                *pending = Some(r);
            }
        }
    }
}
