//! SOCKS BIND: the proxy listens for one inbound connection from the host the client named
//! (typically the data connection of active-mode FTP) and splices it to the client.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use policy::Protocol;

use super::upstream::{self, OpenError};
use crate::dial::DialError;
use crate::live::TunnelPermit;
use crate::metrics::ErrorKind;
use crate::proto::TargetAddr;
use crate::sessions::Session;
use crate::shard::Shard;

pub struct PendingBind {
    listener: TcpListener,
    pub bound: SocketAddr,
    expected: Vec<IpAddr>,
    pub permit: Option<TunnelPermit>,
}

/// The local address this host would use to reach `peer` (no packet is sent).
fn local_ip_towards(peer: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().map_err(io::Error::other)?,
        SocketAddr::V6(_) => "[::]:0".parse().map_err(io::Error::other)?,
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

/// Checks the policy for the host that is to connect in, and opens a listener for it.
pub async fn listen(
    shard: &Shard,
    session: &Session,
    protocol: Protocol,
    target: &TargetAddr,
) -> Result<PendingBind, OpenError> {
    let policy = upstream::current_policy(shard, session)?;
    let (user, client) = (session.user(), session.client);
    let permit = upstream::take_permit(shard, &policy, user)?;
    let deadline = Instant::now() + shard.shared.config.timeouts.connect();
    let allowed = upstream::permitted_addresses(&policy, user, protocol, client, target, deadline)
        .await
        .inspect_err(|e| upstream::count_dial_error(shard, e))?;
    let first = allowed[0];
    let ip = local_ip_towards(first).map_err(|e| OpenError::Dial(DialError::Other(e)))?;
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| OpenError::Dial(DialError::Other(e)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| OpenError::Dial(DialError::Other(e)))?;
    Ok(PendingBind {
        listener,
        bound,
        expected: allowed
            .iter()
            .map(|a| policy::address::canonical(a.ip()))
            .collect(),
        permit,
    })
}

impl PendingBind {
    /// Waits for the expected host to connect. Connections from anyone else are closed.
    pub async fn accept(
        &self,
        shard: &Shard,
        wait: Duration,
    ) -> Result<(TcpStream, SocketAddr), DialError> {
        let deadline = Instant::now() + wait;
        loop {
            let accepted =
                monoio::time::timeout(super::left(deadline), self.listener.accept()).await;
            match accepted {
                Err(_) => return Err(DialError::Timeout),
                Ok(Ok((stream, peer))) => {
                    if self
                        .expected
                        .contains(&policy::address::canonical(peer.ip()))
                    {
                        super::bufstream::prepare(&stream);
                        return Ok((stream, peer));
                    }
                    tracing::info!(%peer, bound = %self.bound, "BIND: unexpected peer refused");
                    shard.metrics().acl_denies.inc();
                }
                Ok(Err(e)) if crate::relay::sys::is_spurious(&e) => {}
                Ok(Err(e)) => {
                    shard.metrics().error(ErrorKind::Accept);
                    return Err(DialError::Other(e));
                }
            }
        }
    }
}
