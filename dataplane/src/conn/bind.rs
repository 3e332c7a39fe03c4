//! SOCKS BIND: the proxy listens for one inbound connection from the host the client named
//! (typically the data connection of active-mode FTP) and relays it to the client.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;

use policy::Protocol;
use proto::{Failure, FailureKind, TargetAddr};

use crate::admission::{self, Principal};
use crate::live::TunnelPermit;
use crate::metrics::ErrorKind;
use crate::rt::{self, TcpListener};
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::Stream;

pub struct PendingBind {
    listener: TcpListener,
    pub bound: SocketAddr,
    expected: Vec<IpAddr>,
    pub permit: Option<TunnelPermit>,
    /// What the grant of the inbound connection will name.
    principal: Principal,
    protocol: Protocol,
    target: TargetAddr,
}

/// The local address this host would use to reach `peer` (no packet is sent).
fn local_ip_towards(peer: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

fn internal(e: io::Error) -> Failure {
    Failure::new(FailureKind::Internal, format!("BIND listener: {e}"))
}

/// Asks the gate about the host that is to connect in, and opens a listener for it.
pub async fn listen(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    protocol: Protocol,
    target: &TargetAddr,
) -> Result<PendingBind, Failure> {
    let authorized = admission::authorize(shard, session, principal, protocol, target).await?;
    // The gate never lets an empty address list through; say so rather than index blindly.
    let first = *authorized
        .addrs
        .first()
        .ok_or_else(|| Failure::new(FailureKind::Internal, "no address to bind towards"))?;
    let ip = local_ip_towards(first).map_err(internal)?;
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).map_err(internal)?;
    let bound = listener.local_addr().map_err(internal)?;
    admission::record_grant(session, principal, protocol, target, first);
    Ok(PendingBind {
        listener,
        bound,
        expected: authorized
            .addrs
            .iter()
            .map(|a| policy::address::canonical(a.ip()))
            .collect(),
        permit: authorized.permit,
        principal: principal.clone(),
        protocol,
        target: target.clone(),
    })
}

impl PendingBind {
    /// Waits (up to `timeouts.bind_accept_secs`) for the expected host to connect;
    /// connections from anyone else are closed. The listener closes as soon as the one
    /// connection is taken (or the wait ends).
    pub async fn accept(
        self,
        shard: &Shard,
        session: &Session,
    ) -> Result<(Stream, SocketAddr, Option<TunnelPermit>), Failure> {
        let deadline = Instant::now() + shard.shared.config.timeouts.bind_accept();
        loop {
            let accepted = rt::timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.listener.accept(),
            )
            .await;
            match accepted {
                Err(_) => {
                    shard.metrics().failure(FailureKind::ConnectTimeout);
                    return Err(Failure::new(
                        FailureKind::ConnectTimeout,
                        "no inbound connection in time",
                    ));
                }
                Ok(Ok((socket, peer))) => {
                    if self
                        .expected
                        .contains(&policy::address::canonical(peer.ip()))
                    {
                        let (principal, target) = (&self.principal, &self.target);
                        admission::record_grant(session, principal, self.protocol, target, peer);
                        let stream = admission::session_stream(session, socket);
                        return Ok((stream, peer, self.permit));
                    }
                    tracing::info!(%peer, bound = %self.bound, "BIND: unexpected peer refused");
                    shard.metrics().acl_denies.inc();
                }
                Ok(Err(e)) if crate::sys::is_spurious(&e) => {}
                Ok(Err(e)) => {
                    shard.metrics().error(ErrorKind::Accept);
                    return Err(internal(e));
                }
            }
        }
    }
}
