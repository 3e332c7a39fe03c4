//! The one deadline policy of a session: every wait of a connection, of an HTTP/2 or HTTP/3
//! stream and of a UDP flow is bounded by the same clock, set once when the session starts.
//!
//! - **Handshake**: from the first byte until the session's request is admitted, every wait
//!   ends by one deadline (slowloris); a keep-alive connection starts a new one per request.
//! - **Idle**: after the handshake, the session ends once nothing moved for the idle timeout.
//!   Whoever moves bytes touches the clock: both directions of a tunnel share one.
//! - **Busy**: a multiplexed connection with streams open is not idle though its own clock
//!   sees nothing move (its streams have their own clocks); a client's PINGs do not touch it.
//! - **Per operation**: one write waiting on a peer that takes nothing ends after the idle
//!   timeout even while the session is busy ([`Deadlines::within_op`]).
//!
//! Drivers never start timers of their own for these: they ask the session's `Deadlines`.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt;

/// Why a wait was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Expired {
    #[error("the handshake ran past the handshake timeout")]
    Handshake,
    #[error("nothing moved for the idle timeout")]
    Idle,
}

impl Expired {
    /// The expiry an IO error stands for, if it is one (a wait of a stream given up on).
    pub fn of(e: &std::io::Error) -> Option<Expired> {
        e.get_ref()?.downcast_ref::<Expired>().copied()
    }
}

impl From<Expired> for std::io::Error {
    fn from(e: Expired) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// A session's clock; clones share it (a tunnel's two streams, a kept-alive upstream).
#[derive(Clone)]
pub struct Deadlines(Rc<Clock>);

struct Clock {
    handshake: Duration,
    idle: Duration,
    /// Set while a handshake runs: every wait ends by then.
    handshake_by: Cell<Option<Instant>>,
    /// When something last moved.
    last: Cell<Instant>,
    /// Work in progress that keeps the session from being idle (streams of a connection).
    busy: Cell<u32>,
}

impl Deadlines {
    /// A session starting its handshake now.
    pub fn new(handshake: Duration, idle: Duration) -> Deadlines {
        let now = Instant::now();
        Deadlines(Rc::new(Clock {
            handshake,
            idle,
            handshake_by: Cell::new(Some(now + handshake)),
            last: Cell::new(now),
            busy: Cell::new(0),
        }))
    }

    pub fn idle(&self) -> Duration {
        self.0.idle
    }

    /// The handshake is over (the session is admitted): from now on only idleness ends it.
    pub fn handshake_over(&self) {
        self.0.handshake_by.set(None);
        self.touch();
    }

    /// A new handshake starts now (the next request of a keep-alive connection, once its
    /// first byte arrived).
    pub fn next_handshake(&self) {
        self.0
            .handshake_by
            .set(Some(Instant::now() + self.0.handshake));
    }

    pub fn in_handshake(&self) -> bool {
        self.0.handshake_by.get().is_some()
    }

    /// Something moved.
    pub fn touch(&self) {
        self.0.last.set(Instant::now());
    }

    /// Marks work in progress until the guard drops (then the idle period starts afresh).
    pub fn busy(&self) -> Busy {
        self.0.busy.set(self.0.busy.get() + 1);
        Busy(self.clone())
    }

    /// Whether work is in progress (see [`Deadlines::busy`]).
    pub fn is_busy(&self) -> bool {
        self.0.busy.get() > 0
    }

    /// When the session expires as things stand now, and why; `None` while it is busy.
    pub fn limit(&self) -> Option<(Instant, Expired)> {
        if let Some(by) = self.0.handshake_by.get() {
            return Some((by, Expired::Handshake));
        }
        (self.0.busy.get() == 0).then(|| (self.0.last.get() + self.0.idle, Expired::Idle))
    }

    /// Whether the session has expired by now, and why.
    pub fn expired_now(&self) -> Option<Expired> {
        self.limit()
            .filter(|(at, _)| *at <= Instant::now())
            .map(|(_, why)| why)
    }

    /// Resolves once the session has expired (handshake deadline passed, or idle). Touches
    /// and phase changes made meanwhile are seen: the wait re-checks when its timer ends.
    pub async fn expired(&self) -> Expired {
        self.expired_or(None).await
    }

    /// As [`Deadlines::expired`], or at `op_by` for one operation, whichever comes first.
    async fn expired_or(&self, op_by: Option<Instant>) -> Expired {
        loop {
            let limit = match (self.limit(), op_by) {
                (Some((at, _)), Some(op)) if op < at => Some((op, Expired::Idle)),
                (Some(l), _) => Some(l),
                (None, Some(op)) => Some((op, Expired::Idle)),
                (None, None) => None,
            };
            let now = Instant::now();
            match limit {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => rt::sleep(at - now).await,
                // Busy: look again after an idle period (the guard's drop restarts it).
                None => rt::sleep(self.0.idle).await,
            }
        }
    }

    /// Runs `work` unless the session expires first.
    pub async fn within<F: Future>(&self, work: F) -> Result<F::Output, Expired> {
        race(pin!(work), pin!(self.expired_or(None))).await
    }

    /// Runs one operation: unless the session expires first, and for at most the idle
    /// timeout whatever else moves (a peer that takes nothing holds nothing forever).
    pub async fn within_op<F: Future>(&self, work: F) -> Result<F::Output, Expired> {
        let by = Instant::now() + self.0.idle;
        race(pin!(work), pin!(self.expired_or(Some(by)))).await
    }
}

async fn race<F: Future>(
    work: std::pin::Pin<&mut F>,
    expiry: std::pin::Pin<&mut impl Future<Output = Expired>>,
) -> Result<F::Output, Expired> {
    match rt::race(work, expiry).await {
        rt::Either::Left(v) => Ok(v),
        rt::Either::Right(why) => Err(why),
    }
}

/// Work in progress on a session: see [`Deadlines::busy`].
pub struct Busy(Deadlines);

impl Drop for Busy {
    fn drop(&mut self) {
        let clock = &self.0 .0;
        clock.busy.set(clock.busy.get().saturating_sub(1));
        clock.last.set(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(40);

    fn run<F: Future>(f: F) -> F::Output {
        rt::build_runtime(crate::config::IoDriver::Auto)
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn the_handshake_deadline_bounds_every_wait_until_it_is_over() {
        run(async {
            let d = Deadlines::new(SHORT, Duration::from_secs(60));
            let slow = rt::sleep(Duration::from_secs(5));
            assert_eq!(d.within(slow).await, Err(Expired::Handshake));
            d.handshake_over();
            assert!(!d.in_handshake());
            assert_eq!(d.limit().map(|l| l.1), Some(Expired::Idle));
            assert_eq!(d.within(async { 7 }).await, Ok(7));
        });
    }

    #[test]
    fn idleness_counts_from_the_last_touch_seen_by_every_waiter() {
        run(async {
            let d = Deadlines::new(SHORT, SHORT * 3);
            d.handshake_over();
            let started = Instant::now();
            let toucher = {
                let d = d.clone();
                async move {
                    for _ in 0..4 {
                        rt::sleep(SHORT).await;
                        d.touch();
                    }
                    std::future::pending::<()>().await
                }
            };
            // Touched every SHORT for 4 SHORTs: expires 3 SHORTs after the last touch.
            assert_eq!(d.within(toucher).await, Err(Expired::Idle));
            assert!(started.elapsed() >= SHORT * 7, "{:?}", started.elapsed());
        });
    }

    #[test]
    fn a_busy_session_is_not_idle_but_one_stalled_operation_still_ends() {
        run(async {
            let d = Deadlines::new(SHORT, SHORT * 2);
            d.handshake_over();
            let busy = d.busy();
            assert!(d.limit().is_none());
            let stalled = std::future::pending::<()>();
            let started = Instant::now();
            assert_eq!(d.within_op(stalled).await, Err(Expired::Idle));
            assert!(started.elapsed() >= SHORT * 2);
            // Busy for longer than idle: `within` waits on.
            let done = async {
                rt::sleep(SHORT * 4).await;
                1
            };
            assert_eq!(d.within(done).await, Ok(1));
            drop(busy);
            let (at, why) = d.limit().expect("idle again");
            assert_eq!(why, Expired::Idle);
            assert!(at > Instant::now() + SHORT, "the idle period starts afresh");
        });
    }

    #[test]
    fn a_new_handshake_per_request_of_a_kept_alive_connection() {
        run(async {
            let d = Deadlines::new(SHORT, Duration::from_secs(60));
            d.handshake_over();
            d.next_handshake();
            assert!(d.in_handshake());
            let slow = rt::sleep(Duration::from_secs(5));
            assert_eq!(d.within(slow).await, Err(Expired::Handshake));
        });
    }
}
