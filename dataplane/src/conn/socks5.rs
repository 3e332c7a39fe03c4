//! SOCKS5 driver: greeting, optional username/password, request, then CONNECT or BIND.

use std::net::SocketAddr;
use std::time::Instant;

use policy::Protocol;
use proto::socks5::{self, Command, Reply, Socks5Error};
use proto::Failure;

use super::{bind, left, run_tunnel, ProtocolGuard};
use crate::admission::{self, Principal};
use crate::context::Shard;
use crate::metrics::ErrorKind;
use crate::sessions::Session;
use crate::stream::{BufStream, ReadError};

/// Bound on any single SOCKS5 message (the largest, user/password, is 513 bytes).
const MAX_MESSAGE: usize = 1024;

async fn reply(client: &mut BufStream, code: Reply, bound: SocketAddr) -> bool {
    client
        .write_all(&socks5::encode_reply(code, bound))
        .await
        .is_ok()
}

async fn refuse(client: &mut BufStream, failure: &Failure) {
    reply(
        client,
        Reply::for_failure(failure.kind),
        socks5::UNSPECIFIED,
    )
    .await;
}

fn count_read_error(shard: &Shard, e: &ReadError<Socks5Error>) {
    if !matches!(e, ReadError::Eof | ReadError::Io(_)) {
        shard.metrics().error(ErrorKind::ClientProtocol);
    }
}

/// Method selection and authentication, under the policy in force.
async fn authenticate(
    shard: &Shard,
    session: &Session,
    client: &mut BufStream,
) -> Result<Principal, ()> {
    let peer = session.client;
    let greeting = client
        .read_message(MAX_MESSAGE, socks5::parse_greeting)
        .await
        .map_err(|e| count_read_error(shard, &e))?;
    let policy = shard.policy();
    // Prefer credentials when the client has them and there are users: per-user rules and
    // limits then apply even to clients that could have gone anonymous.
    let method = if greeting.user_pass && policy.has_users() {
        socks5::METHOD_USER_PASS
    } else if greeting.no_auth && policy.anonymous_allowed(peer.ip()) {
        socks5::METHOD_NO_AUTH
    } else if greeting.user_pass {
        socks5::METHOD_USER_PASS
    } else {
        socks5::METHOD_NONE_ACCEPTABLE
    };
    drop(policy);
    client
        .write_all(&socks5::method_selection(method))
        .await
        .map_err(|_| ())?;
    match method {
        socks5::METHOD_NO_AUTH => admission::anonymous(shard, peer.ip()).map_err(drop),
        socks5::METHOD_USER_PASS => {
            let creds = client
                .read_message(MAX_MESSAGE, socks5::parse_user_pass)
                .await
                .map_err(|e| count_read_error(shard, &e))?;
            let result = admission::authenticate(shard, &creds.user, &creds.password).await;
            let _ = client
                .write_all(&socks5::user_pass_status(result.is_ok()))
                .await;
            result.map_err(drop)
        }
        _ => {
            shard.metrics().auth_failures.inc();
            Err(())
        }
    }
}

pub async fn serve(
    shard: &Shard,
    session: &Session,
    mut client: BufStream,
    started: Instant,
    deadline: Instant,
) {
    let _open = ProtocolGuard::new(shard, Protocol::Socks5);
    let handshake = async {
        let user = authenticate(shard, session, &mut client).await?;
        let request = match client
            .read_message(MAX_MESSAGE, socks5::parse_request)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                count_read_error(shard, &e);
                if let ReadError::Protocol(p) = &e {
                    reply(&mut client, p.reply(), socks5::UNSPECIFIED).await;
                }
                return Err(());
            }
        };
        Ok((user, request))
    };
    let (principal, request) = match monoio::time::timeout(left(deadline), handshake).await {
        Ok(Ok(v)) => v,
        Ok(Err(())) => return,
        Err(_) => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
    };
    let target = &request.target;
    match request.command {
        Command::Connect => {
            match admission::admit(shard, session, &principal, Protocol::Socks5, target).await {
                Ok(admitted) => {
                    let bound = admitted.stream.local_addr().unwrap_or(socks5::UNSPECIFIED);
                    if reply(&mut client, Reply::Succeeded, bound).await {
                        let _permit = admitted.permit;
                        run_tunnel(shard, client, admitted.stream, started).await;
                    }
                }
                Err(f) => refuse(&mut client, &f).await,
            }
        }
        Command::Bind => {
            let pending =
                match bind::listen(shard, session, &principal, Protocol::Socks5, target).await {
                    Ok(p) => p,
                    Err(f) => return refuse(&mut client, &f).await,
                };
            if !reply(&mut client, Reply::Succeeded, pending.bound).await {
                return;
            }
            let wait = shard.shared.config.timeouts.bind_accept();
            match pending
                .accept(shard, session, &principal, Protocol::Socks5, target, wait)
                .await
            {
                Ok((inbound, from, _permit)) => {
                    if reply(&mut client, Reply::Succeeded, from).await {
                        run_tunnel(shard, client, inbound, started).await;
                    }
                }
                Err(f) => refuse(&mut client, &f).await,
            }
        }
        Command::UdpAssociate => {
            reply(&mut client, Reply::CommandNotSupported, socks5::UNSPECIFIED).await;
        }
    }
}
