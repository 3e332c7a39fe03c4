//! SOCKS4/4a driver. SOCKS4 carries no password, so it is served only to clients the
//! policy lets in anonymously.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use policy::Protocol;

use super::bufstream::{BufStream, ReadError};
use super::upstream;
use super::{bind, left, run_tunnel, ProtocolGuard};
use crate::metrics::ErrorKind;
use crate::proto::socks4::{self, Command, Reply};
use crate::proto::socks5::UNSPECIFIED;
use crate::sessions::Session;
use crate::shard::Shard;

const MAX_MESSAGE: usize = 8 + 2 * (socks4::MAX_FIELD + 1);

async fn reply(client: &mut BufStream, code: Reply, bound: SocketAddr) -> bool {
    client
        .write_all(socks4::encode_reply(code, bound).to_vec())
        .await
        .is_ok()
}

pub async fn serve(
    shard: &Shard,
    session: &Session,
    mut client: BufStream,
    started: Instant,
    deadline: Instant,
) {
    let _open = ProtocolGuard::new(shard, Protocol::Socks4);
    let read = client.read_message(MAX_MESSAGE, socks4::parse_request);
    let request = match monoio::time::timeout(left(deadline), read).await {
        Err(_) => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
        Ok(Ok(r)) => r,
        Ok(Err(ReadError::Eof | ReadError::Io(_))) => return,
        Ok(Err(_)) => {
            shard.metrics().error(ErrorKind::ClientProtocol);
            reply(&mut client, Reply::Rejected, UNSPECIFIED).await;
            return;
        }
    };
    let peer = session.client;
    if !session.policy().anonymous_allowed(peer.ip()) {
        shard.metrics().auth_failures.inc();
        tracing::info!(%peer, "SOCKS4 refused: client may not connect anonymously");
        reply(&mut client, Reply::Rejected, UNSPECIFIED).await;
        return;
    }
    match request.command {
        Command::Connect => {
            match upstream::open(shard, session, Protocol::Socks4, &request.target).await {
                Ok(opened) => {
                    let bound = opened.stream.local_addr().unwrap_or(UNSPECIFIED);
                    if reply(&mut client, Reply::Granted, bound).await {
                        run_tunnel(shard, client, opened.stream, started).await;
                    }
                }
                Err(_) => {
                    reply(&mut client, Reply::Rejected, UNSPECIFIED).await;
                }
            }
        }
        Command::Bind => {
            let Ok(pending) = bind::listen(shard, session, Protocol::Socks4, &request.target).await
            else {
                reply(&mut client, Reply::Rejected, UNSPECIFIED).await;
                return;
            };
            if !reply(&mut client, Reply::Granted, pending.bound).await {
                return;
            }
            match pending
                .accept(shard, shard.shared.config.timeouts.bind_accept())
                .await
            {
                Ok((inbound, from)) => {
                    let host = request.target.host_name();
                    session.established(Protocol::Socks4, host, from, inbound.as_raw_fd());
                    if reply(&mut client, Reply::Granted, from).await {
                        run_tunnel(shard, client, inbound, started).await;
                    }
                }
                Err(_) => {
                    reply(&mut client, Reply::Rejected, UNSPECIFIED).await;
                }
            }
        }
    }
}
