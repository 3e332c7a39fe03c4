//! SOCKS5 driver: greeting, optional username/password, request, then CONNECT or BIND.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use policy::{Protocol, UserId};

use super::bufstream::{BufStream, ReadError};
use super::upstream::{self, OpenError};
use super::{bind, left, run_tunnel, ProtocolGuard};
use crate::metrics::ErrorKind;
use crate::proto::socks5::{self, Command, Reply, Socks5Error};
use crate::sessions::Session;
use crate::shard::Shard;

/// Bound on any single SOCKS5 message (the largest, user/password, is 513 bytes).
const MAX_MESSAGE: usize = 1024;

async fn reply(client: &mut BufStream, code: Reply, bound: SocketAddr) -> bool {
    client
        .write_all(socks5::encode_reply(code, bound))
        .await
        .is_ok()
}

fn count_read_error(shard: &Shard, e: &ReadError<Socks5Error>) {
    if !matches!(e, ReadError::Eof | ReadError::Io(_)) {
        shard.metrics().error(ErrorKind::ClientProtocol);
    }
}

fn open_reply(e: &OpenError) -> Reply {
    match e {
        OpenError::UserLimit | OpenError::Revoked => Reply::NotAllowed,
        OpenError::Dial(d) => d.socks5_reply(),
    }
}

/// Method selection and authentication. `Ok(None)`: anonymous.
async fn authenticate(
    shard: &Shard,
    session: &Session,
    client: &mut BufStream,
) -> Result<Option<UserId>, ()> {
    let peer = session.client;
    let greeting = client
        .read_message(MAX_MESSAGE, socks5::parse_greeting)
        .await
        .map_err(|e| count_read_error(shard, &e))?;
    let policy = session.policy();
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
    client
        .write_all(socks5::method_selection(method).to_vec())
        .await
        .map_err(|_| ())?;
    match method {
        socks5::METHOD_NO_AUTH => Ok(None),
        socks5::METHOD_USER_PASS => {
            let creds = client
                .read_message(MAX_MESSAGE, socks5::parse_user_pass)
                .await
                .map_err(|e| count_read_error(shard, &e))?;
            let result = upstream::authenticate(shard, session, &creds.user, &creds.password).await;
            let _ = client
                .write_all(socks5::user_pass_status(result.is_ok()).to_vec())
                .await;
            result.map(Some).map_err(|_| ())
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
    let (_user, request) = match monoio::time::timeout(left(deadline), handshake).await {
        Ok(Ok(v)) => v,
        Ok(Err(())) => return,
        Err(_) => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
    };
    match request.command {
        Command::Connect => {
            match upstream::open(shard, session, Protocol::Socks5, &request.target).await {
                Ok(opened) => {
                    let bound = opened.stream.local_addr().unwrap_or(socks5::UNSPECIFIED);
                    if reply(&mut client, Reply::Succeeded, bound).await {
                        let _permit = opened.permit;
                        run_tunnel(shard, client, opened.stream, started).await;
                    }
                }
                Err(e) => {
                    reply(&mut client, open_reply(&e), socks5::UNSPECIFIED).await;
                }
            }
        }
        Command::Bind => {
            let pending =
                match bind::listen(shard, session, Protocol::Socks5, &request.target).await {
                    Ok(p) => p,
                    Err(e) => {
                        reply(&mut client, open_reply(&e), socks5::UNSPECIFIED).await;
                        return;
                    }
                };
            if !reply(&mut client, Reply::Succeeded, pending.bound).await {
                return;
            }
            let wait = shard.shared.config.timeouts.bind_accept();
            match pending.accept(shard, wait).await {
                Ok((inbound, from)) => {
                    let host = request.target.host_name();
                    session.established(Protocol::Socks5, host, from, inbound.as_raw_fd());
                    if reply(&mut client, Reply::Succeeded, from).await {
                        run_tunnel(shard, client, inbound, started).await;
                    }
                }
                Err(e) => {
                    reply(&mut client, e.socks5_reply(), socks5::UNSPECIFIED).await;
                }
            }
        }
        Command::UdpAssociate => {
            reply(&mut client, Reply::CommandNotSupported, socks5::UNSPECIFIED).await;
        }
    }
}
