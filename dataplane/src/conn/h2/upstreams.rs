//! Upstream connections kept alive between the plain-HTTP requests of one HTTP/2 connection
//! (a browser sends every `http://` request of a page on streams of one connection): a
//! request reuses an idle connection to its origin opened for the same user, once the
//! policy in force still allows it, instead of dialling again — as the HTTP/1.1 forward path
//! keeps its one upstream between requests.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto::TargetAddr;

use crate::admission;
use crate::live::TunnelPermit;
use crate::principal::Principal;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::BufStream;
use policy::Protocol;

/// Idle upstream connections one HTTP/2 connection keeps (the oldest goes first).
const MAX_IDLE: usize = 16;

/// An upstream connection between two requests.
pub(super) struct Kept {
    pub principal: Principal,
    pub target: TargetAddr,
    pub peer: SocketAddr,
    pub conn: BufStream,
    /// The user's connection slot, held as long as the connection is.
    _permit: Option<TunnelPermit>,
    since: Instant,
}

impl Kept {
    pub fn new(
        principal: Principal,
        target: TargetAddr,
        peer: SocketAddr,
        conn: BufStream,
        permit: Option<TunnelPermit>,
    ) -> Kept {
        Kept {
            principal,
            target,
            peer,
            conn,
            _permit: permit,
            since: Instant::now(),
        }
    }

    /// Whether the origin may have closed it: anything to read on an idle HTTP/1.1
    /// connection (bytes or the end) means it cannot carry another exchange.
    fn closed(&self) -> bool {
        if !self.conn.buffered().is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(self.conn.stream().try_read(&mut probe), Err(e) if crate::sys::would_block(&e))
    }
}

#[derive(Default)]
pub(in crate::conn) struct Upstreams {
    idle: RefCell<Vec<Kept>>,
}

impl Upstreams {
    /// An idle connection to `target` opened for `principal`, if one is still open and the
    /// policy in force still lets `principal` reach it (the grant is recorded on `session`,
    /// whose revocation then resets it).
    pub(super) fn take(
        &self,
        shard: &Shard,
        session: &Session,
        principal: &Principal,
        target: &TargetAddr,
        idle_timeout: Duration,
    ) -> Option<Kept> {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|k| k.since.elapsed() < idle_timeout);
        let mut kept = loop {
            let at = idle
                .iter()
                .rposition(|k| &k.principal == principal && &k.target == target)?;
            let kept = idle.remove(at);
            if !kept.closed() {
                break kept;
            }
        };
        if !admission::readmit(shard, session, principal, Protocol::Http, target, kept.peer) {
            return None;
        }
        kept.conn
            .rebind(session.revoke_handle(), session.deadlines());
        Some(kept)
    }

    /// Closes the idle connection kept longest for `principal`, giving back its tunnel
    /// slot; whether there was one. An idle upstream must not keep its user from a tunnel
    /// they ask for now.
    pub(super) fn evict(&self, principal: &Principal) -> bool {
        let mut idle = self.idle.borrow_mut();
        match idle.iter().position(|k| &k.principal == principal) {
            Some(at) => {
                idle.remove(at);
                true
            }
            None => false,
        }
    }

    /// Keeps `kept` for a later request.
    pub(super) fn put(&self, mut kept: Kept) {
        kept.since = Instant::now();
        let mut idle = self.idle.borrow_mut();
        if idle.len() == MAX_IDLE {
            idle.remove(0);
        }
        idle.push(kept);
    }
}
