//! SOCKS4/4a driver. SOCKS4 carries no password, so it is served only to clients the
//! policy lets in anonymously.

use std::net::SocketAddr;
use std::time::Instant;

use policy::Protocol;
use proto::socks4::{self, Command, Reply};
use proto::socks5::UNSPECIFIED;
use proto::Failure;

use super::{bind, left, run_tunnel, ProtocolGuard};
use crate::admission;
use crate::context::Shard;
use crate::metrics::ErrorKind;
use crate::rt;
use crate::sessions::Session;
use crate::stream::{BufStream, ReadError};

const MAX_MESSAGE: usize = 8 + 2 * (socks4::MAX_FIELD + 1);

async fn reply(client: &mut BufStream, code: Reply, bound: SocketAddr) -> bool {
    client
        .write_all(&socks4::encode_reply(code, bound))
        .await
        .is_ok()
}

async fn refuse(client: &mut BufStream, failure: &Failure) {
    reply(client, Reply::for_failure(failure.kind), UNSPECIFIED).await;
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
    let request = match rt::timeout(left(deadline), read).await {
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
    let principal = match admission::anonymous(shard, peer.ip()) {
        Ok(p) => p,
        Err(f) => {
            tracing::info!(%peer, "SOCKS4 refused: client may not connect anonymously");
            return refuse(&mut client, &f).await;
        }
    };
    let target = &request.target;
    match request.command {
        Command::Connect => {
            match admission::admit(shard, session, &principal, Protocol::Socks4, target).await {
                Ok(admitted) => {
                    let bound = admitted.stream.local_addr().unwrap_or(UNSPECIFIED);
                    if reply(&mut client, Reply::Granted, bound).await {
                        let _permit = admitted.permit;
                        run_tunnel(shard, client, admitted.stream, started).await;
                    }
                }
                Err(f) => refuse(&mut client, &f).await,
            }
        }
        Command::Bind => {
            let pending =
                match bind::listen(shard, session, &principal, Protocol::Socks4, target).await {
                    Ok(p) => p,
                    Err(f) => return refuse(&mut client, &f).await,
                };
            if !reply(&mut client, Reply::Granted, pending.bound).await {
                return;
            }
            let wait = shard.shared.config.timeouts.bind_accept();
            match pending
                .accept(shard, session, &principal, Protocol::Socks4, target, wait)
                .await
            {
                Ok((inbound, from, _permit)) => {
                    if reply(&mut client, Reply::Granted, from).await {
                        run_tunnel(shard, client, inbound, started).await;
                    }
                }
                Err(f) => refuse(&mut client, &f).await,
            }
        }
    }
}
