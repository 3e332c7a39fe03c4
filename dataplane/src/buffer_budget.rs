//! The per-core budget for bytes that HTTP/2 and HTTP/3 tunnel streams can make the proxy
//! hold. A TCP tunnel holds at most a pipe; a multiplexed connection holds whatever its
//! streams' windows let the client send ahead of upstreams that do not read (and what waits
//! to go back to a client that does not read). Windows bound each stream and connection;
//! this bounds their sum on a core, so a few clients with many streams cannot take the
//! machine's memory.
//!
//! What is counted is a commitment, not a measurement: a stream is charged, when it opens,
//! what it could come to hold, and a connection never more than it could hold in all. A
//! stream that would take the core past its budget is refused before anything is done for
//! it; the client may retry it later or elsewhere.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use crate::metrics::Gauge;

struct Inner {
    limit: Cell<u64>,
    committed: Cell<u64>,
    gauge: Arc<Gauge>,
}

impl Inner {
    fn set(&self, v: u64) {
        self.committed.set(v);
        self.gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}

/// A core's budget. Cheap to clone (shard-local `Rc`).
#[derive(Clone)]
pub struct BufferBudget(Rc<Inner>);

impl BufferBudget {
    /// `limit` bytes in all; `gauge` shows what is committed.
    pub fn new(limit: u64, gauge: Arc<Gauge>) -> BufferBudget {
        BufferBudget(Rc::new(Inner {
            limit: Cell::new(limit),
            committed: Cell::new(0),
            gauge,
        }))
    }

    /// A new limit for streams opened from now on (those open keep their commitment).
    pub fn set_limit(&self, limit: u64) {
        self.0.limit.set(limit);
    }

    /// Bytes committed to open streams now.
    pub fn committed(&self) -> u64 {
        self.0.committed.get()
    }

    /// A connection's account, which never commits more than `cap` bytes of the budget
    /// however many streams it opens.
    pub fn connection(&self, cap: u64) -> ConnShare {
        ConnShare(Rc::new(Share {
            budget: self.0.clone(),
            cap,
            streams: Cell::new(0),
            charged: Cell::new(0),
        }))
    }
}

struct Share {
    budget: Rc<Inner>,
    cap: u64,
    /// What the connection's open streams were charged, summed.
    streams: Cell<u64>,
    /// What of that the core's budget carries: at most `cap`.
    charged: Cell<u64>,
}

impl Share {
    /// Moves the connection's streams to `total`; refused (nothing changed) when that would
    /// take the core past its limit.
    fn resize(&self, total: u64) -> bool {
        let want = total.min(self.cap);
        let core = &self.budget;
        let others = core.committed.get() - self.charged.get();
        if want > self.charged.get() && others + want > core.limit.get() {
            return false;
        }
        core.set(others + want);
        self.charged.set(want);
        self.streams.set(total);
        true
    }
}

/// One connection's part of its core's budget.
#[derive(Clone)]
pub struct ConnShare(Rc<Share>);

impl ConnShare {
    /// Charges a stream `bytes` for as long as the returned charge lives; `None` when the
    /// core's budget has no room for it.
    pub fn charge(&self, bytes: u64) -> Option<StreamCharge> {
        let total = self.0.streams.get().checked_add(bytes)?;
        self.0.resize(total).then(|| StreamCharge {
            share: self.0.clone(),
            bytes,
        })
    }
}

/// A stream's commitment, given back when the stream is done.
pub struct StreamCharge {
    share: Rc<Share>,
    bytes: u64,
}

impl Drop for StreamCharge {
    fn drop(&mut self) {
        let total = self.share.streams.get() - self.bytes;
        // Shrinking always fits.
        self.share.resize(total);
    }
}

/// The budget when `limits.tunnel_buffer_per_core` is 0: a quarter of physical memory,
/// shared by `cores`.
pub fn default_limit(cores: usize) -> u64 {
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let total = u64::try_from(pages).unwrap_or(0) * u64::try_from(page).unwrap_or(0);
    // Where sysconf cannot tell: 1 GiB per core.
    let total = if total == 0 {
        (cores as u64) << 32
    } else {
        total
    };
    total / 4 / cores.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_refused_past_the_budget_and_a_connection_never_commits_past_its_cap() {
        let gauge = Arc::new(Gauge::default());
        let budget = BufferBudget::new(100, gauge.clone());
        let a = budget.connection(50);
        let b = budget.connection(1000);
        let a1 = a.charge(30).unwrap();
        let a2 = a.charge(30).unwrap();
        assert_eq!(
            budget.committed(),
            50,
            "a connection is charged at most its cap"
        );
        let a3 = a
            .charge(30)
            .expect("past its cap a connection costs the core nothing more");
        let b1 = b.charge(50).unwrap();
        assert_eq!(budget.committed(), 100);
        assert!(b.charge(1).is_none(), "the core's budget is spent");
        assert_eq!(budget.committed(), 100, "a refusal changes nothing");
        drop(a3);
        drop(a2);
        assert_eq!(budget.committed(), 80, "a's one stream of 30, b's 50");
        let b2 = b.charge(20).unwrap();
        assert_eq!(gauge.get(), 100);
        drop((a1, b1, b2));
        assert_eq!(budget.committed(), 0);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn the_default_is_a_share_of_memory() {
        let one = default_limit(1);
        assert!(one >= 16 << 20, "{one}");
        assert_eq!(default_limit(4), one / 4);
    }
}
