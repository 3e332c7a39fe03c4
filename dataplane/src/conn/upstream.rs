//! Opening the upstream side of a tunnel: per-user tunnel limit, resolution, policy check
//! on every resolved address, connect. Shared by every protocol.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use monoio::net::TcpStream;
use policy::{CompiledPolicy, Protocol, Request, UserId};

use crate::auth::{self, AuthError, CacheOutcome};
use crate::dial::{self, DialError};
use crate::live::{LivePolicy, TunnelPermit};
use crate::metrics::ErrorKind;
use crate::proto::TargetAddr;
use crate::sessions::Session;
use crate::shard::Shard;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("user is at their tunnel limit")]
    UserLimit,
    /// The user was deleted, disabled or re-keyed since they authenticated.
    #[error("credentials revoked")]
    Revoked,
    #[error(transparent)]
    Dial(#[from] DialError),
}

pub struct Opened {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Held for the tunnel's lifetime.
    pub permit: Option<TunnelPermit>,
}

/// Checks credentials against the session's policy, records who the session is, and counts
/// the outcome.
pub async fn authenticate(
    shard: &Shard,
    session: &Session,
    user: &[u8],
    password: &[u8],
) -> Result<UserId, AuthError> {
    let policy = session.policy();
    match auth::authenticate(&policy, &shard.creds, user, password).await {
        Ok((id, outcome)) => {
            if let CacheOutcome::Hit = outcome {
                shard.metrics().credential_cache_hits.inc();
            }
            session.authenticated(id);
            Ok(id)
        }
        Err(e) => {
            shard.metrics().auth_failures.inc();
            tracing::info!(user = %String::from_utf8_lossy(user), reason = %e, "authentication failed");
            Err(e)
        }
    }
}

/// Takes one of the user's tunnel slots when the user has a limit.
pub fn take_permit(
    shard: &Shard,
    policy: &LivePolicy,
    user: Option<UserId>,
) -> Result<Option<TunnelPermit>, OpenError> {
    let Some(id) = user else { return Ok(None) };
    match policy.acquire(id) {
        Some(p) => Ok(Some(p)),
        None => {
            shard.metrics().error(ErrorKind::UserLimit);
            Err(OpenError::UserLimit)
        }
    }
}

/// Resolves `target` and keeps the addresses the policy lets this request use.
pub async fn permitted_addresses(
    policy: &CompiledPolicy,
    user: Option<UserId>,
    protocol: Protocol,
    client: SocketAddr,
    target: &TargetAddr,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, DialError> {
    let addrs = dial::resolve(target, deadline).await?;
    let req = Request {
        protocol,
        client: client.ip(),
        host: target.host_name(),
        port: target.port(),
    };
    dial::permitted(policy, user, &req, &addrs)
}

/// Counts a failure to reach or admit an upstream under the right metric.
pub fn count_dial_error(shard: &Shard, e: &DialError) {
    match e.metric() {
        Some(kind) => shard.metrics().error(kind),
        None => shard.metrics().acl_denies.inc(),
    }
}

/// Moves the session onto the shard's current policy before it opens anything.
pub fn current_policy(
    shard: &Shard,
    session: &Session,
) -> Result<crate::sessions::PolicyRef, OpenError> {
    session.refresh(&shard.policy()).map_err(|_| {
        shard.metrics().auth_failures.inc();
        OpenError::Revoked
    })?;
    Ok(session.policy())
}

/// Whether the session's policy still lets it use an upstream connection it already has
/// (HTTP keep-alive reuse), without resolving again.
pub fn may_reuse(
    session: &Session,
    protocol: Protocol,
    target: &TargetAddr,
    peer: SocketAddr,
) -> bool {
    let req = Request {
        protocol,
        client: session.client.ip(),
        host: target.host_name(),
        port: target.port(),
    };
    dial::permitted(&session.policy(), session.user(), &req, &[peer]).is_ok()
}

/// Resolves `target`, applies the policy to every address and connects.
pub async fn open(
    shard: &Shard,
    session: &Session,
    protocol: Protocol,
    target: &TargetAddr,
) -> Result<Opened, OpenError> {
    let policy = current_policy(shard, session)?;
    let (user, client) = (session.user(), session.client);
    let permit = take_permit(shard, &policy, user)?;
    let started = Instant::now();
    let deadline = started + shard.shared.config.timeouts.connect();
    let result = async {
        let allowed =
            permitted_addresses(&policy, user, protocol, client, target, deadline).await?;
        dial::connect(&allowed, deadline).await
    }
    .await;
    match result {
        Ok((stream, peer)) => {
            shard.metrics().connect_seconds.observe(started.elapsed());
            session.established(protocol, target.host_name(), peer, stream.as_raw_fd());
            Ok(Opened {
                stream,
                peer,
                permit,
            })
        }
        Err(e) => {
            count_dial_error(shard, &e);
            tracing::debug!(%client, %target, error = %e, "upstream not opened");
            Err(e.into())
        }
    }
}
