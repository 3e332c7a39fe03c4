//! The live connections of one shard, and what each one was allowed on: who authenticated
//! (and with which password hash) and where its tunnel goes. When a new policy arrives the
//! shard re-checks every session against it and closes, with a reset, those it no longer
//! allows: a deleted or disabled user, a changed password, a destination now denied.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use policy::{Decision, Protocol, Request, UserId};

use crate::live::LivePolicy;

/// The policy a connection works with; a shard-local handle (no shared refcount traffic).
pub type PolicyRef = Rc<Arc<LivePolicy>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the user's credentials were revoked by a policy change")]
pub struct Revoked;

struct Identity {
    name: String,
    password_hash: String,
}

struct Target {
    protocol: Protocol,
    host: Option<String>,
    port: u16,
    addr: IpAddr,
}

pub struct Session {
    pub client: SocketAddr,
    policy: RefCell<PolicyRef>,
    user: Cell<Option<UserId>>,
    identity: RefCell<Option<Identity>>,
    target: RefCell<Option<Target>>,
    fds: Cell<[Option<RawFd>; 2]>,
    killed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Session {
    /// The policy this connection's decisions use.
    pub fn policy(&self) -> PolicyRef {
        self.policy.borrow().clone()
    }

    /// The authenticated user, as an id in [`Session::policy`].
    pub fn user(&self) -> Option<UserId> {
        self.user.get()
    }

    pub fn authenticated(&self, id: UserId) {
        let policy = self.policy();
        if let Some(u) = policy.user(id) {
            *self.identity.borrow_mut() = Some(Identity {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
            });
            self.user.set(Some(id));
        }
    }

    /// Starts over for the next request of a keep-alive connection: a new identity and
    /// destination under `current`.
    pub fn restart(&self, current: PolicyRef) {
        *self.policy.borrow_mut() = current;
        self.user.set(None);
        *self.identity.borrow_mut() = None;
        *self.target.borrow_mut() = None;
    }

    /// Moves the session onto the shard's current policy (between requests of a keep-alive
    /// connection, and before opening an upstream), re-finding its user by name.
    pub fn refresh(&self, current: &PolicyRef) -> Result<(), Revoked> {
        if Rc::ptr_eq(&self.policy.borrow(), current) {
            return Ok(());
        }
        let user = match &*self.identity.borrow() {
            Some(identity) => Some(find(current, identity).ok_or(Revoked)?),
            None => None,
        };
        *self.policy.borrow_mut() = current.clone();
        self.user.set(user);
        Ok(())
    }

    pub fn client_socket(&self, fd: RawFd) {
        let mut fds = self.fds.get();
        fds[0] = Some(fd);
        self.fds.set(fds);
    }

    /// Records where the tunnel (or the current forwarded request) goes.
    pub fn established(
        &self,
        protocol: Protocol,
        host: Option<&str>,
        peer: SocketAddr,
        upstream_fd: RawFd,
    ) {
        *self.target.borrow_mut() = Some(Target {
            protocol,
            host: host.map(str::to_string),
            port: peer.port(),
            addr: peer.ip(),
        });
        let mut fds = self.fds.get();
        fds[1] = Some(upstream_fd);
        self.fds.set(fds);
    }

    /// Whether `new` still allows everything this session was allowed.
    fn allowed_by(&self, new: &LivePolicy) -> bool {
        let user = match &*self.identity.borrow() {
            Some(identity) => match find(new, identity) {
                Some(id) => Some(id),
                None => return false,
            },
            // Anonymous: the client's network must still be let in without credentials.
            None => {
                if !new.anonymous_allowed(self.client.ip()) {
                    return false;
                }
                None
            }
        };
        match &*self.target.borrow() {
            None => true,
            Some(t) => {
                let req = Request {
                    protocol: t.protocol,
                    client: self.client.ip(),
                    host: t.host.as_deref(),
                    port: t.port,
                };
                new.decide(user, &req, t.addr) == Decision::Allow
            }
        }
    }

    fn kill(&self) {
        // A reset, not a FIN: a peer must not take a cut-off transfer for a complete one.
        for fd in self.fds.get().into_iter().flatten() {
            crate::relay::sys::abort_on_close(fd);
        }
        self.killed.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves once a policy change has revoked this session.
    pub async fn revoked(&self) {
        poll_fn(|cx| {
            if self.killed.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// The user `identity` names in `policy`, if it still exists, is enabled and has the same
/// password hash.
fn find(policy: &LivePolicy, identity: &Identity) -> Option<UserId> {
    let (id, u) = policy.user_by_name(&identity.name)?;
    (u.enabled && u.password_hash == identity.password_hash).then_some(id)
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
    pub fn register(&self, client: SocketAddr, policy: PolicyRef) -> SessionGuard<'_> {
        let id = self.next.get();
        self.next.set(id + 1);
        let session = Rc::new(Session {
            client,
            policy: RefCell::new(policy),
            user: Cell::new(None),
            identity: RefCell::new(None),
            target: RefCell::new(None),
            fds: Cell::new([None, None]),
            killed: Cell::new(false),
            waker: Cell::new(None),
        });
        self.live.borrow_mut().insert(id, session.clone());
        SessionGuard {
            owner: self,
            id,
            session,
        }
    }

    /// Closes every session `new` no longer allows; returns how many.
    pub fn revoke_disallowed(&self, new: &LivePolicy) -> usize {
        let doomed: Vec<Rc<Session>> = self
            .live
            .borrow()
            .values()
            .filter(|s| !s.killed.get() && !s.allowed_by(new))
            .cloned()
            .collect();
        for s in &doomed {
            s.kill();
        }
        doomed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Compiler;
    use policy::{PolicyDoc, Rule, User};

    fn policy(compiler: &mut Compiler, hash: &str, enabled: bool, rules: Vec<Rule>) -> PolicyRef {
        let doc = PolicyDoc {
            users: vec![User {
                name: "alice".into(),
                password_hash: hash.into(),
                enabled,
                max_tunnels: None,
                rules: vec![],
            }],
            rules,
            ..PolicyDoc::default()
        };
        Rc::new(Arc::new(compiler.compile(&doc).unwrap()))
    }

    fn allow(net: &str) -> Vec<Rule> {
        vec![Rule::allow_destination(net.parse().unwrap())]
    }

    #[test]
    fn changes_revoke_exactly_the_sessions_they_concern() {
        let mut c = Compiler::new(vec![]);
        let h1 = policy::password::hash("one").unwrap();
        let h2 = policy::password::hash("two").unwrap();
        let v1 = policy(&mut c, &h1, true, allow("127.0.0.0/8"));
        let sessions = Sessions::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:80".parse().unwrap();

        let s = sessions.register(client, v1.clone());
        s.authenticated(v1.user_by_name("alice").unwrap().0);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.established(
            Protocol::Socks5,
            None,
            upstream,
            std::os::fd::AsRawFd::as_raw_fd(&sock),
        );
        // Same user, same hash, destination still allowed: untouched.
        assert_eq!(sessions.revoke_disallowed(&v1), 0);
        // The destination is no longer allowed (loopback is protected without the rule).
        let v2 = policy(&mut c, &h1, true, vec![]);
        assert_eq!(sessions.revoke_disallowed(&v2), 1);
        assert!(s.killed.get());
        drop(s);
        assert!(sessions.live.borrow().is_empty());

        for (hash, enabled) in [(&h2, true), (&h1, false)] {
            let s = sessions.register(client, v1.clone());
            s.authenticated(v1.user_by_name("alice").unwrap().0);
            let changed = policy(&mut c, hash, enabled, allow("127.0.0.0/8"));
            assert_eq!(sessions.revoke_disallowed(&changed), 1);
            assert_eq!(s.refresh(&changed), Err(Revoked));
        }
    }

    #[test]
    fn refresh_remaps_the_user_onto_the_new_policy() {
        let mut c = Compiler::new(vec![]);
        let h = policy::password::hash("one").unwrap();
        let v1 = policy(&mut c, &h, true, vec![]);
        let s = Sessions::default();
        let s = s.register("127.0.0.1:1".parse().unwrap(), v1.clone());
        s.authenticated(UserId(0));
        let v2 = policy(&mut c, &h, true, allow("10.0.0.0/8"));
        s.refresh(&v2).unwrap();
        assert!(Rc::ptr_eq(&s.policy(), &v2));
        assert_eq!(s.user(), v2.user_by_name("alice").map(|(id, _)| id));
    }
}
