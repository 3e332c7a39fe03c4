//! The admission gate: every protocol's way from "who is this" to "here is your upstream".
//!
//! Authentication yields a [`Principal`]. [`admit`] then does, in this order and in this one
//! place: the principal's standing under the policy in force (a user deleted, disabled or
//! re-keyed since it authenticated is refused) → the user's tunnel limit → name resolution →
//! the ACL on every resolved address → connect, and records the grant in the session once.
//! Failures come back as a protocol-neutral [`Failure`], counted here; each driver maps it to
//! its own codes.

use std::net::SocketAddr;
use std::time::Instant;

use policy::{Protocol, Request, UserId};
use proto::{Failure, FailureKind, TargetAddr};

use crate::auth::{self, AuthEnv, AuthError, CacheOutcome};
use crate::dial;
use crate::live::{LivePolicy, TunnelPermit};
pub use crate::principal::Principal;
use crate::sessions::{Destination, Grant, Session};
use crate::shard::Shard;
use crate::stream::Stream;

pub struct Admitted {
    pub stream: Stream,
    pub peer: SocketAddr,
    /// Held for the tunnel's lifetime.
    pub permit: Option<TunnelPermit>,
}

/// A request the gate let through, before anything was connected.
pub struct Authorized {
    /// The resolved addresses the policy allows, in resolver order.
    pub addrs: Vec<SocketAddr>,
    pub permit: Option<TunnelPermit>,
    pub deadline: Instant,
}

/// What a client is told of every failed authentication, whatever the reason.
pub const AUTH_FAILED: &str = "authentication failed";

fn refuse(shard: &Shard, failure: Failure) -> Failure {
    shard.metrics().failure(failure.kind);
    failure
}

/// Checks credentials under the policy in force and counts the outcome.
pub async fn authenticate(
    shard: &Shard,
    user: &[u8],
    password: &[u8],
) -> Result<Principal, Failure> {
    let policy = shard.policy();
    let env = AuthEnv {
        cache: &shard.creds,
        pool: &shard.shared.workers.passwords,
        verifications: &shard.metrics().password_verifications,
    };
    match auth::authenticate(&env, &policy, user, password).await {
        Ok((id, outcome)) => {
            match outcome {
                CacheOutcome::Hit => shard.metrics().credential_cache_hits.inc(),
                CacheOutcome::Shared => shard.metrics().credential_checks_shared.inc(),
                CacheOutcome::Miss => {}
            }
            let u = policy
                .user(id)
                .ok_or_else(|| Failure::new(FailureKind::Internal, "user vanished"))?;
            Ok(Principal::user(&u.name, &u.password_hash))
        }
        Err(e) => {
            tracing::info!(user = %String::from_utf8_lossy(user), reason = %e, "authentication failed");
            // One answer for an unknown user, a wrong password and a disabled user (the
            // decoy hash makes them cost the same time too); the reason is in the log.
            let failure = match e {
                AuthError::Internal | AuthError::Overloaded => {
                    Failure::new(FailureKind::Internal, e.to_string())
                }
                _ => Failure::new(FailureKind::AuthFailed, AUTH_FAILED),
            };
            Err(refuse(shard, failure))
        }
    }
}

/// The principal of an HTTP request (HTTP/1.1, h2, h3) with this `Proxy-Authorization`
/// value. Credentials count only where the policy has users, as SOCKS5 then asks for them:
/// where it has none, a client that sends some is anonymous (or its certificate's user)
/// like a SOCKS5 client offering both methods.
pub async fn identify(
    shard: &Shard,
    session: &Session,
    proxy_authorization: Option<&[u8]>,
) -> Result<Principal, Failure> {
    let value = match proxy_authorization {
        Some(v) if shard.policy().has_users() => v,
        _ => return anonymous(shard, session),
    };
    match proto::http::parse_basic(value) {
        Ok(creds) => authenticate(shard, &creds.user, &creds.password).await,
        Err(e) => {
            shard.metrics().auth_failures.inc();
            Err(Failure::new(FailureKind::AuthRequired, e.to_string()))
        }
    }
}

/// A client that offered no credentials: the user its TLS client certificate names, else
/// anonymous where the policy in force allows it.
pub fn anonymous(shard: &Shard, session: &Session) -> Result<Principal, Failure> {
    if let Some(name) = session.certified() {
        let principal = Principal::Certified(name.as_ref().into());
        return match principal.resolve(&shard.policy(), session.client.ip()) {
            Ok(_) => Ok(principal),
            Err(_) => {
                tracing::info!(user = %name, "client certificate names no enabled user");
                Err(refuse(
                    shard,
                    Failure::new(
                        FailureKind::AuthFailed,
                        format!("client certificate user {name:?} is unknown or disabled"),
                    ),
                ))
            }
        };
    }
    if shard.policy().anonymous_allowed(session.client.ip()) {
        Ok(Principal::Anonymous)
    } else {
        Err(refuse(
            shard,
            Failure::new(FailureKind::AuthRequired, "credentials required"),
        ))
    }
}

fn standing(
    shard: &Shard,
    policy: &LivePolicy,
    session: &Session,
    principal: &Principal,
) -> Result<Option<UserId>, Failure> {
    principal
        .resolve(policy, session.client.ip())
        .map_err(|kind| refuse(shard, Failure::new(kind, "credentials no longer valid")))
}

/// What the ACL sees of a request (the address is checked separately, once per candidate).
fn acl_request<'a>(session: &Session, protocol: Protocol, target: &'a TargetAddr) -> Request<'a> {
    Request {
        protocol,
        client: session.client.ip(),
        host: target.host_name(),
        port: target.port(),
    }
}

/// Everything short of connecting: standing, tunnel limit, resolution, ACL.
pub async fn authorize(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
) -> Result<Authorized, Failure> {
    authorize_making_room(shard, session, principal, protocol, target, &|| false).await
}

/// [`authorize`], where a user at their tunnel limit may first have `make_room` give back
/// a slot they hold idle (an upstream kept alive between requests); `make_room` says
/// whether it did.
pub async fn authorize_making_room(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
    make_room: &dyn Fn() -> bool,
) -> Result<Authorized, Failure> {
    let policy = shard.policy();
    let user = standing(shard, &policy, session, principal)?;
    let permit = match user {
        Some(id) => {
            let acquired = policy
                .acquire(id)
                .or_else(|| make_room().then(|| policy.acquire(id)).flatten());
            Some(acquired.ok_or_else(|| {
                refuse(
                    shard,
                    Failure::new(FailureKind::UserLimit, "tunnel limit reached"),
                )
            })?)
        }
        None => None,
    };
    let deadline = Instant::now() + shard.shared.config.timeouts.connect();
    let checked = async {
        let addrs = dial::resolve(&shard.shared.workers.resolver, target, deadline).await?;
        dial::permitted(
            &policy,
            user,
            &acl_request(session, protocol, target),
            &addrs,
        )
    };
    match checked.await {
        Ok(addrs) => Ok(Authorized {
            addrs,
            permit,
            deadline,
        }),
        Err(e) => {
            tracing::debug!(client = %session.client, %target, error = %e, "request refused");
            Err(refuse(shard, e.into()))
        }
    }
}

/// Records in the session what it was let through to.
pub fn record_grant(
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
    peer: SocketAddr,
) {
    session.grant(Grant {
        principal: principal.clone(),
        destination: Some(Destination {
            protocol,
            host: target.host_name().map(Box::from),
            port: peer.port(),
            addr: peer.ip(),
        }),
    });
}

/// Wraps a socket opened for `session`: its waits bounded by the session's deadlines,
/// reset if the session is revoked.
pub fn session_stream(session: &Session, socket: crate::rt::TcpStream) -> Stream {
    Stream::new(socket, session.deadlines().clone()).reset_on_revoke(session.revoke_handle())
}

/// The whole gate: authorize, connect to the first allowed address that answers, record the
/// grant.
pub async fn admit(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
) -> Result<Admitted, Failure> {
    admit_making_room(shard, session, principal, protocol, target, &|| false).await
}

/// [`admit`] with [`authorize_making_room`]'s `make_room`.
pub async fn admit_making_room(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
    make_room: &dyn Fn() -> bool,
) -> Result<Admitted, Failure> {
    let started = Instant::now();
    let authorized =
        authorize_making_room(shard, session, principal, protocol, target, make_room).await?;
    match dial::connect(&authorized.addrs, authorized.deadline).await {
        Ok((socket, peer)) => {
            shard.metrics().connect_seconds.observe(started.elapsed());
            record_grant(session, principal, protocol, target, peer);
            Ok(Admitted {
                stream: session_stream(session, socket),
                peer,
                permit: authorized.permit,
            })
        }
        Err(e) => {
            tracing::debug!(client = %session.client, %target, error = %e, "upstream not opened");
            Err(refuse(shard, e.into()))
        }
    }
}

/// Lets a keep-alive connection send another request over the upstream connection it already
/// has (to `peer`), without resolving again, if the policy in force still allows it.
pub fn readmit(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
    peer: SocketAddr,
) -> bool {
    let policy = shard.policy();
    let Ok(user) = principal.resolve(&policy, session.client.ip()) else {
        return false;
    };
    let req = acl_request(session, protocol, target);
    if dial::permitted(&policy, user, &req, &[peer]).is_err() {
        return false;
    }
    record_grant(session, principal, protocol, target, peer);
    true
}

/// What a SOCKS5 UDP association holds while it lives: one of the user's tunnel slots and
/// one of their association slots.
pub struct AssociationPermit {
    pub tunnel: Option<TunnelPermit>,
    pub association: Option<TunnelPermit>,
}

/// Lets a UDP association start: the principal's standing and the user's tunnel and
/// association limits (destinations are checked one by one with [`allows`]). Records a
/// grant without a destination, so a change that revokes the user ends the association.
pub fn associate(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    max_per_user: u32,
) -> Result<AssociationPermit, Failure> {
    let policy = shard.policy();
    let user = standing(shard, &policy, session, principal)?;
    let limit = |what: &str| {
        refuse(
            shard,
            Failure::new(FailureKind::UserLimit, format!("{what} limit reached")),
        )
    };
    let permit = match user {
        Some(id) => AssociationPermit {
            tunnel: Some(policy.acquire(id).ok_or_else(|| limit("tunnel"))?),
            association: Some(
                policy
                    .acquire_association(id, max_per_user)
                    .ok_or_else(|| limit("UDP association"))?,
            ),
        },
        None => AssociationPermit {
            tunnel: None,
            association: None,
        },
    };
    session.grant(Grant {
        principal: principal.clone(),
        destination: None,
    });
    Ok(permit)
}

/// Whether `policy` lets `principal` send `protocol` datagrams to `addr` (named `host` when
/// the client gave a name). Not counted: a caller that checks per datagram counts drops.
pub fn allows(
    policy: &LivePolicy,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    host: Option<&str>,
    addr: SocketAddr,
) -> bool {
    let Ok(user) = principal.resolve(policy, session.client.ip()) else {
        return false;
    };
    let req = Request {
        protocol,
        client: session.client.ip(),
        host,
        port: addr.port(),
    };
    policy.decide(user, &req, addr.ip()) == policy::Decision::Allow
}
