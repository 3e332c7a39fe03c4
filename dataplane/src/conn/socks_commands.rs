//! CONNECT and BIND as SOCKS4 and SOCKS5 carry them out: the same steps through the admission
//! gate for both versions, each answering in its own reply format.

use std::net::SocketAddr;
use std::time::Instant;

use policy::Protocol;
use proto::{Failure, TargetAddr};

use super::{bind, run_tunnel};
use crate::admission::{self, Principal};
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::BufStream;

/// A SOCKS client connection after its handshake, as CONNECT and BIND answer it.
pub(super) trait SocksClient {
    /// Sends a success reply naming `addr`; false when the client is gone.
    async fn granted(&mut self, addr: SocketAddr) -> bool;
    /// Sends the version's reply for `failure`.
    async fn refused(&mut self, failure: &Failure);
    /// The connection, to relay once the replies are out.
    fn into_stream(self) -> BufStream;
}

/// What the client asked for, and who it is.
pub(super) struct Command<'a> {
    pub principal: &'a Principal,
    pub protocol: Protocol,
    pub target: &'a TargetAddr,
    pub started: Instant,
}

pub(super) async fn connect(
    shard: &Shard,
    session: &Session,
    cmd: Command<'_>,
    mut client: impl SocksClient,
) {
    match admission::admit(shard, session, cmd.principal, cmd.protocol, cmd.target).await {
        Ok(admitted) => {
            let bound = admitted
                .stream
                .local_addr()
                .unwrap_or(proto::socks5::UNSPECIFIED);
            if client.granted(bound).await {
                let _permit = admitted.permit;
                run_tunnel(shard, client.into_stream(), admitted.stream, cmd.started).await;
            }
        }
        Err(f) => client.refused(&f).await,
    }
}

/// BIND: two replies, the listening address and then the host that connected in.
pub(super) async fn bind(
    shard: &Shard,
    session: &Session,
    cmd: Command<'_>,
    mut client: impl SocksClient,
) {
    let pending = match bind::listen(shard, session, cmd.principal, cmd.protocol, cmd.target).await
    {
        Ok(p) => p,
        Err(f) => return client.refused(&f).await,
    };
    if !client.granted(pending.bound).await {
        return;
    }
    match pending.accept(shard, session).await {
        Ok((inbound, from, _permit)) => {
            if client.granted(from).await {
                run_tunnel(shard, client.into_stream(), inbound, cmd.started).await;
            }
        }
        Err(f) => client.refused(&f).await,
    }
}
