//! Credential checks with a per-shard cache.
//!
//! Argon2id costs tens of milliseconds of CPU and ~19 MiB by design. It runs on its own
//! bounded worker pool, never on a shard thread and never in the resolver's pool. A success is
//! remembered per shard under a keyed BLAKE3 hash of user, password and stored hash (so a
//! changed password misses the cache). Concurrent checks of the same credentials on a shard
//! share one run: a burst of handshakes by one user costs one Argon2 run per shard, not one
//! per handshake until the first finishes. A shard runs at most `password_checks_per_core`
//! verifications at once; past that a check is refused at once (a storm of bogus credentials
//! costs the attacker, not the other users).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};

use policy::{CompiledPolicy, UserId};
use thiserror::Error;

use crate::workers::WorkerPool;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("user is disabled")]
    Disabled,
    #[error("wrong password")]
    BadPassword,
    #[error("credential check could not run")]
    Internal,
    #[error("too many credential checks in progress")]
    Overloaded,
}

type Fingerprint = [u8; 32];

/// Where a verification in progress stands.
#[derive(Clone)]
enum Outcome {
    Running,
    Done(Result<bool, AuthError>),
    /// The check that ran it was cancelled (handshake deadline, revocation) before the end.
    Abandoned,
}

/// One verification in progress on this shard, awaited by every identical check.
struct Pending {
    outcome: RefCell<Outcome>,
    waiters: RefCell<Vec<Waker>>,
}

pub struct CredentialCache {
    key: [u8; 32],
    /// Fingerprint -> user name, so one user's entries can be dropped when they change.
    verified: HashMap<Fingerprint, Box<str>>,
    capacity: usize,
    inflight: RefCell<HashMap<Fingerprint, Rc<Pending>>>,
    /// Argon2 jobs of this shard queued or running on the pool. A job holds its slot until
    /// it ends on the pool's thread, not until the check that queued it is dropped: a client
    /// that cancels checks (an h2 RST_STREAM) cannot get more than `max_running` jobs going.
    running: Arc<AtomicUsize>,
    max_running: usize,
}

impl CredentialCache {
    pub fn new(capacity: usize, max_running: usize) -> CredentialCache {
        let mut key = [0u8; 32];
        // A fixed key would only make cache keys predictable, not wrong; carry on regardless.
        let _ = getrandom::getrandom(&mut key);
        CredentialCache {
            key,
            verified: HashMap::new(),
            capacity,
            inflight: RefCell::new(HashMap::new()),
            running: Arc::new(AtomicUsize::new(0)),
            max_running: max_running.max(1),
        }
    }

    /// How many verifications may run at once from now on (a reload).
    pub fn set_max_running(&mut self, max: usize) {
        self.max_running = max.max(1);
    }

    fn fingerprint(&self, user: &[u8], password: &[u8], phc: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for part in [user, password, phc.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        *h.finalize().as_bytes()
    }

    fn contains(&self, fp: &[u8; 32]) -> bool {
        self.verified.contains_key(fp)
    }

    fn insert(&mut self, fp: [u8; 32], user: &str) {
        if self.verified.len() >= self.capacity {
            // Crude but bounded: a full cache starts over rather than tracking recency.
            self.verified.clear();
        }
        self.verified.insert(fp, user.into());
    }

    /// Forgets what was verified for these users (deleted, disabled or re-keyed).
    pub fn forget(&mut self, users: &HashSet<&str>) {
        if !users.is_empty() {
            self.verified.retain(|_, u| !users.contains(&**u));
        }
    }
}

/// A hash to verify against for unknown users, so that a wrong user name costs as much time
/// as a wrong password (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| policy::password::hash("zcproxy-decoy").unwrap_or_default())
}

/// Makes the decoy hash before any shard runs: hashing it is an Argon2 run, which must not
/// stall the first shard to meet an unknown user (~25 ms during which it serves no one).
pub fn prepare() {
    decoy_hash();
}

pub enum CacheOutcome {
    Hit,
    /// Answered by a verification another handshake had already started.
    Shared,
    Miss,
}

/// Ends the run on drop, so that a leader cancelled mid-way (handshake deadline, revocation,
/// a reset stream) does not leave its waiters hanging: they are woken and one of them runs
/// it again. A job not yet started is told to skip its Argon2 run.
struct Leader<'a> {
    cache: &'a RefCell<CredentialCache>,
    fp: Fingerprint,
    pending: Rc<Pending>,
    cancelled: Arc<AtomicBool>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let cache = self.cache.borrow();
        cache.inflight.borrow_mut().remove(&self.fp);
        // A leader that finished set the outcome before dropping; still running means cancelled.
        {
            let mut outcome = self.pending.outcome.borrow_mut();
            if matches!(*outcome, Outcome::Running) {
                *outcome = Outcome::Abandoned;
                self.cancelled.store(true, Ordering::Release);
            }
        }
        for w in self.pending.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

enum Join {
    Lead(Rc<Pending>, Slot),
    Wait(Rc<Pending>),
}

/// What a credential check uses of its shard.
pub struct AuthEnv<'a> {
    pub cache: &'a RefCell<CredentialCache>,
    pub pool: &'a WorkerPool,
    /// Counts Argon2id runs (on the pool's threads).
    pub verifications: &'a Arc<AtomicU64>,
}

/// A shard's slot for one Argon2 job, given back when the job is done with (run, skipped,
/// or dropped unrun by a stopped pool).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Verifies `password` against `phc` once per shard for identical concurrent checks.
async fn verify(
    env: &AuthEnv<'_>,
    fp: Fingerprint,
    phc: &str,
    password: &[u8],
) -> Result<(bool, CacheOutcome), AuthError> {
    let cache = env.cache;
    loop {
        let join = {
            let c = cache.borrow();
            let mut inflight = c.inflight.borrow_mut();
            match inflight.get(&fp) {
                Some(p) => Join::Wait(p.clone()),
                None if c.running.load(Ordering::Acquire) >= c.max_running => {
                    return Err(AuthError::Overloaded)
                }
                None => {
                    let p = Rc::new(Pending {
                        outcome: RefCell::new(Outcome::Running),
                        waiters: RefCell::new(Vec::new()),
                    });
                    inflight.insert(fp, p.clone());
                    c.running.fetch_add(1, Ordering::AcqRel);
                    Join::Lead(p, Slot(c.running.clone()))
                }
            }
        };
        match join {
            Join::Wait(p) => {
                let outcome = poll_fn(|cx| match &*p.outcome.borrow() {
                    Outcome::Running => {
                        p.waiters.borrow_mut().push(cx.waker().clone());
                        Poll::Pending
                    }
                    other => Poll::Ready(other.clone()),
                })
                .await;
                match outcome {
                    Outcome::Done(o) => return o.map(|ok| (ok, CacheOutcome::Shared)),
                    // The leader was cancelled: try again (perhaps as the leader).
                    _ => continue,
                }
            }
            Join::Lead(pending, slot) => {
                let cancelled = Arc::new(AtomicBool::new(false));
                let leader = Leader {
                    cache,
                    fp,
                    pending,
                    cancelled: cancelled.clone(),
                };
                let (phc, password) = (phc.to_string(), password.to_vec());
                let runs = env.verifications.clone();
                let job = move || {
                    let _slot = slot;
                    // Nobody waits for it any more: the queue slot is all it costs.
                    if cancelled.load(Ordering::Acquire) {
                        return None;
                    }
                    runs.fetch_add(1, Ordering::Relaxed);
                    Some(policy::password::verify(&phc, &password))
                };
                let result = match env.pool.run(job).await {
                    Ok(Some(ok)) => Ok(ok),
                    // Skipped only once cancelled, and then nobody awaits this.
                    Ok(None) => Err(AuthError::Internal),
                    Err(e) => {
                        tracing::warn!(error = %e, "credential check not run");
                        Err(AuthError::Overloaded)
                    }
                };
                *leader.pending.outcome.borrow_mut() = Outcome::Done(result.clone());
                drop(leader);
                return result.map(|ok| (ok, CacheOutcome::Miss));
            }
        }
    }
}

pub async fn authenticate(
    env: &AuthEnv<'_>,
    policy: &CompiledPolicy,
    user: &[u8],
    password: &[u8],
) -> Result<(UserId, CacheOutcome), AuthError> {
    let cache = env.cache;
    let found = std::str::from_utf8(user)
        .ok()
        .and_then(|name| policy.user_by_name(name));
    let Some((id, entry)) = found else {
        let fp = cache.borrow().fingerprint(user, password, decoy_hash());
        verify(env, fp, decoy_hash(), password).await?;
        return Err(AuthError::UnknownUser);
    };
    let fp = cache
        .borrow()
        .fingerprint(user, password, &entry.password_hash);
    let outcome = if cache.borrow().contains(&fp) {
        CacheOutcome::Hit
    } else {
        match verify(env, fp, &entry.password_hash, password).await? {
            (true, outcome) => {
                cache.borrow_mut().insert(fp, &entry.name);
                outcome
            }
            (false, _) => return Err(AuthError::BadPassword),
        }
    };
    if !entry.enabled {
        return Err(AuthError::Disabled);
    }
    Ok((id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_every_part() {
        let c = CredentialCache::new(2, 1);
        let a = c.fingerprint(b"u", b"p", "h");
        assert_ne!(a, c.fingerprint(b"u", b"p", "h2"));
        assert_ne!(a, c.fingerprint(b"up", b"", "h"));
        assert_ne!(a, CredentialCache::new(2, 1).fingerprint(b"u", b"p", "h"));
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = CredentialCache::new(2, 1);
        for i in 0..5u8 {
            c.insert([i; 32], "u");
            assert!(c.verified.len() <= 2);
        }
        assert!(c.contains(&[4; 32]));
    }

    /// A check cancelled while its Argon2 run is under way (handshake deadline, revocation)
    /// must not leave an identical check waiting for it forever: that one runs it itself.
    #[test]
    fn a_cancelled_leader_hands_the_check_to_its_waiter() {
        use std::future::Future;
        let phc = policy::password::hash("pw").unwrap();
        let cache = RefCell::new(CredentialCache::new(8, 2));
        let pool = WorkerPool::new("test", 1, 4, None).unwrap();
        let verifications = Arc::new(AtomicU64::new(0));
        let env = AuthEnv {
            cache: &cache,
            pool: &pool,
            verifications: &verifications,
        };
        let fp = cache.borrow().fingerprint(b"u", b"pw", &phc);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let mut leader = Box::pin(verify(&env, fp, &phc, b"pw"));
            let mut waiter = Box::pin(verify(&env, fp, &phc, b"pw"));
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(leader.as_mut().poll(&mut cx).is_pending());
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
            drop(leader);
            let patience = std::time::Duration::from_secs(30);
            tokio::time::timeout(patience, waiter)
                .await
                .expect("the waiter took the check over")
        });
        assert!(matches!(outcome, Ok((true, CacheOutcome::Miss))));
        // The cancelled leader's job had not started (one pool thread, the waiter's queued
        // behind it) or ran: one or two Argon2 runs, and every slot given back.
        let runs = verifications.load(Ordering::Relaxed);
        assert!((1..=2).contains(&runs), "{runs} runs");
        assert_eq!(cache.borrow().running.load(Ordering::Acquire), 0);
        assert!(cache.borrow().inflight.borrow().is_empty());
    }

    #[test]
    fn forgetting_a_user_keeps_the_others() {
        let mut c = CredentialCache::new(10, 1);
        c.insert([1; 32], "alice");
        c.insert([2; 32], "alice");
        c.insert([3; 32], "bob");
        c.forget(&HashSet::from(["alice"]));
        assert_eq!(c.verified.len(), 1);
        assert!(c.contains(&[3; 32]));
    }
}
