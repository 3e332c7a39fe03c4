//! The live connections of one shard and what each one is allowed on right now (its grant).
//!
//! A grant is recorded once, by the admission gate, when a connection is let through to a
//! destination. While an HTTP keep-alive connection waits for its next request only the
//! principal stays: the destination is asked for again with the next request. When a new
//! policy arrives the shard re-checks every grant and revokes exactly the sessions whose
//! principal or destination it no longer allows. A session without a grant (still in its
//! handshake) is never revoked by a change: it is checked against the policy in force when it
//! asks the gate.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use policy::{Decision, Protocol, Request};

use crate::live::LivePolicy;
use crate::principal::Principal;
use crate::revoke::RevokeHandle;
use crate::stream::Deadlines;

/// The policy a connection works with; a shard-local handle (no shared refcount traffic).
pub type PolicyRef = Rc<Arc<LivePolicy>>;

/// What the gate let a session do.
#[derive(Debug, Clone)]
pub struct Grant {
    pub principal: Principal,
    /// None between two requests of a keep-alive connection.
    pub destination: Option<Destination>,
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub protocol: Protocol,
    pub host: Option<Box<str>>,
    pub port: u16,
    pub addr: IpAddr,
}

impl Grant {
    fn allowed_by(&self, client: IpAddr, new: &LivePolicy) -> bool {
        let Ok(user) = self.principal.resolve(new, client) else {
            return false;
        };
        let Some(d) = &self.destination else {
            return true;
        };
        let req = Request {
            protocol: d.protocol,
            client,
            host: d.host.as_deref(),
            port: d.port,
        };
        new.decide(user, &req, d.addr) == Decision::Allow
    }
}

pub struct Session {
    pub client: SocketAddr,
    /// The user a verified TLS client certificate names (its subject's CN), who the
    /// session is unless a request brings credentials of its own.
    certified: RefCell<Option<Rc<str>>>,
    grant: RefCell<Option<Grant>>,
    revoke: RevokeHandle,
    /// The session's one deadline policy: every wait of its work is bounded by it.
    deadlines: Deadlines,
}

impl Session {
    pub fn set_certified(&self, user: Option<Rc<str>>) {
        *self.certified.borrow_mut() = user;
    }

    pub fn certified(&self) -> Option<Rc<str>> {
        self.certified.borrow().clone()
    }

    /// Records what the session was let through to; its handshake is over.
    pub fn grant(&self, grant: Grant) {
        *self.grant.borrow_mut() = Some(grant);
        self.deadlines.handshake_over();
    }

    /// Between two requests of a keep-alive connection: the principal stays (a change that
    /// revokes it closes the connection), the destination is asked for again.
    pub fn clear_destination(&self) {
        if let Some(g) = self.grant.borrow_mut().as_mut() {
            g.destination = None;
        }
    }

    /// The handle that ends this connection; sockets opened for it close with a reset
    /// once it has fired.
    pub fn revoke_handle(&self) -> &RevokeHandle {
        &self.revoke
    }

    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Runs `work` within the session's deadlines (the handshake's while one runs).
    pub async fn within<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, crate::stream::Expired> {
        self.deadlines.within(work).await
    }

    /// Resolves once a policy change has revoked this session.
    pub async fn revoked(&self) {
        self.revoke.revoked().await
    }

    /// Runs `work` to its end unless a policy change revokes the session first (`None`;
    /// `work` is then dropped unfinished, and its sockets close with a reset).
    pub async fn unless_revoked<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let work = std::pin::pin!(work);
        let revoked = std::pin::pin!(self.revoked());
        match crate::rt::race(work, revoked).await {
            crate::rt::Either::Left(v) => Some(v),
            crate::rt::Either::Right(()) => None,
        }
    }

    fn allowed_by(&self, new: &LivePolicy) -> bool {
        match &*self.grant.borrow() {
            None => true,
            Some(g) => g.allowed_by(self.client.ip(), new),
        }
    }
}

#[derive(Default)]
pub struct Sessions {
    next: Cell<u64>,
    live: RefCell<HashMap<u64, Rc<Session>>>,
}

/// Keeps a session registered for as long as its connection lives.
pub struct SessionGuard<'a> {
    owner: &'a Sessions,
    id: u64,
    session: Rc<Session>,
}

impl std::ops::Deref for SessionGuard<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.owner.live.borrow_mut().remove(&self.id);
    }
}

impl Sessions {
    /// A new session of `client`, starting its handshake under `deadlines`.
    pub fn register(&self, client: SocketAddr, deadlines: Deadlines) -> SessionGuard<'_> {
        let id = self.next.get();
        self.next.set(id + 1);
        let session = Rc::new(Session {
            client,
            certified: RefCell::new(None),
            grant: RefCell::new(None),
            revoke: RevokeHandle::default(),
            deadlines,
        });
        self.live.borrow_mut().insert(id, session.clone());
        SessionGuard {
            owner: self,
            id,
            session,
        }
    }

    /// Revokes every session whose grant `new` no longer allows; returns how many.
    pub fn revoke_disallowed(&self, new: &LivePolicy) -> usize {
        let doomed: Vec<Rc<Session>> = self
            .live
            .borrow()
            .values()
            .filter(|s| !s.revoke.is_revoked() && !s.allowed_by(new))
            .cloned()
            .collect();
        for s in &doomed {
            s.revoke.revoke();
        }
        doomed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines::new(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(300),
        )
    }
    use crate::live::Compiler;
    use policy::{PolicyDoc, Rule, User};

    fn policy(c: &mut Compiler, users: &[(&str, &str, bool)], rules: Vec<Rule>) -> LivePolicy {
        let doc = PolicyDoc {
            users: users
                .iter()
                .map(|(name, hash, enabled)| User {
                    name: name.to_string(),
                    password_hash: hash.to_string(),
                    enabled: *enabled,
                    max_tunnels: None,
                    rules: vec![],
                })
                .collect(),
            rules,
            ..PolicyDoc::default()
        };
        c.compile(&doc).unwrap()
    }

    fn allow(net: &str) -> Vec<Rule> {
        vec![Rule::allow_destination(net.parse().unwrap())]
    }

    fn grant(principal: Principal) -> Grant {
        Grant {
            principal,
            destination: Some(Destination {
                protocol: Protocol::Socks5,
                host: None,
                port: 80,
                addr: "127.0.0.1".parse().unwrap(),
            }),
        }
    }

    const CLIENT: &str = "127.0.0.1:5000";

    #[test]
    fn changes_revoke_exactly_the_sessions_they_concern() {
        let mut c = Compiler::new(vec![]);
        let h1 = policy::password::hash("one").unwrap();
        let h2 = policy::password::hash("two").unwrap();
        let v1 = policy(&mut c, &[("alice", &h1, true)], allow("127.0.0.0/8"));
        let sessions = Sessions::default();
        let alice = Principal::user("alice", &h1);

        let s = sessions.register(CLIENT.parse().unwrap(), deadlines());
        s.grant(grant(alice.clone()));
        // Same user, same hash, destination still allowed: untouched.
        assert_eq!(sessions.revoke_disallowed(&v1), 0);
        // The destination is no longer allowed (loopback is protected without the rule).
        let v2 = policy(&mut c, &[("alice", &h1, true)], vec![]);
        assert_eq!(sessions.revoke_disallowed(&v2), 1);
        assert!(s.revoke.is_revoked());
        drop(s);
        assert!(sessions.live.borrow().is_empty());

        for (hash, enabled) in [(&h2, true), (&h1, false)] {
            let s = sessions.register(CLIENT.parse().unwrap(), deadlines());
            s.grant(grant(alice.clone()));
            let changed = policy(&mut c, &[("alice", hash, enabled)], allow("127.0.0.0/8"));
            assert_eq!(sessions.revoke_disallowed(&changed), 1);
            assert_eq!(
                alice.resolve(&changed, s.client.ip()),
                Err(proto::FailureKind::Revoked)
            );
        }
    }

    /// The defect an operator saw: with users defined, every policy change closed sessions
    /// still in their handshake and keep-alive connections between requests, because they
    /// had no identity and were judged as anonymous clients.
    #[test]
    fn sessions_without_a_grant_survive_any_change() {
        let mut c = Compiler::new(vec![]);
        let h = policy::password::hash("one").unwrap();
        let v1 = policy(&mut c, &[("alice", &h, true)], allow("127.0.0.0/8"));
        let sessions = Sessions::default();
        let handshaking = sessions.register(CLIENT.parse().unwrap(), deadlines());
        let between_requests = sessions.register(CLIENT.parse().unwrap(), deadlines());
        between_requests.grant(grant(Principal::user("alice", &h)));
        between_requests.clear_destination();
        let working = sessions.register(CLIENT.parse().unwrap(), deadlines());
        working.grant(grant(Principal::user("alice", &h)));
        // 150 other users appear, one at a time.
        let mut users: Vec<(String, bool)> = vec![];
        for i in 0..150 {
            users.push((format!("user{i}"), true));
            let mut all = vec![("alice", h.as_str(), true)];
            all.extend(users.iter().map(|(n, e)| (n.as_str(), h.as_str(), *e)));
            let v = policy(&mut c, &all, allow("127.0.0.0/8"));
            assert_eq!(sessions.revoke_disallowed(&v), 0, "change {i}");
        }
        assert!(!handshaking.revoke.is_revoked());
        assert!(!between_requests.revoke.is_revoked());
        assert!(!working.revoke.is_revoked());
        // Deleting the user does close her keep-alive connection between requests.
        let gone = policy(&mut c, &[], allow("127.0.0.0/8"));
        assert_eq!(sessions.revoke_disallowed(&gone), 2);
        assert!(between_requests.revoke.is_revoked());
        assert!(!handshaking.revoke.is_revoked());
        drop(v1);
    }

    #[test]
    fn anonymous_grants_follow_the_anonymous_networks() {
        let mut c = Compiler::new(vec![]);
        let open = policy(&mut c, &[], allow("127.0.0.0/8"));
        let sessions = Sessions::default();
        let s = sessions.register(CLIENT.parse().unwrap(), deadlines());
        assert_eq!(Principal::Anonymous.resolve(&open, s.client.ip()), Ok(None));
        s.grant(grant(Principal::Anonymous));
        assert_eq!(sessions.revoke_disallowed(&open), 0);
        // The first user ends the implicit loopback anonymity.
        let h = policy::password::hash("one").unwrap();
        let closed = policy(&mut c, &[("alice", &h, true)], allow("127.0.0.0/8"));
        assert_eq!(sessions.revoke_disallowed(&closed), 1);
    }
}
