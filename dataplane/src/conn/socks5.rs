//! SOCKS5 driver: the IO around `proto::socks5::handshake::Handshake` (greeting, optional
//! username/password, request), then CONNECT, BIND or UDP ASSOCIATE through the admission
//! gate.

use std::net::SocketAddr;
use std::time::Instant;

use policy::Protocol;
use proto::socks5::handshake::{Handshake, Step};
use proto::socks5::{self, Command, Reply};
use proto::Failure;

use super::socks_commands::{self, SocksClient};
use super::socks_udp;
use super::{handshake, ProtocolGuard};
use crate::admission::{self, Principal};
use crate::metrics::ErrorKind;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::{BufStream, ReadError};

/// Bound on any single SOCKS5 message (the largest, user/password, is 513 bytes).
const MAX_MESSAGE: usize = 1024;

/// A client connection and where its handshake stands.
struct Client {
    stream: BufStream,
    hs: Handshake,
}

impl Client {
    /// Reads the next handshake message. A malformed one is counted and answered where
    /// SOCKS5 has a reply for it.
    async fn next(&mut self, shard: &Shard) -> Result<Step, ()> {
        let Client { stream, hs } = self;
        match stream.read_message(MAX_MESSAGE, |b| hs.receive(b)).await {
            Ok(step) => Ok(step),
            Err(e) => {
                if !matches!(e, ReadError::Eof | ReadError::Io(_)) {
                    shard.metrics().error(ErrorKind::ClientProtocol);
                }
                if let ReadError::Protocol(p) = &e {
                    if let Some(bytes) = hs.reject(p) {
                        let _ = stream.write_all(&bytes).await;
                    }
                }
                Err(())
            }
        }
    }

    /// Sends what the machine handed out; an out-of-turn answer is a driver bug, logged.
    async fn send<B: AsRef<[u8]>, E: std::fmt::Display>(&mut self, bytes: Result<B, E>) -> bool {
        match bytes {
            Ok(b) => self.stream.write_all(b.as_ref()).await.is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "SOCKS5 driver");
                false
            }
        }
    }

    async fn reply(&mut self, code: Reply, bound: SocketAddr) -> bool {
        let bytes = self.hs.reply(code, bound);
        self.send(bytes).await
    }

    async fn refuse(&mut self, failure: &Failure) {
        self.reply(Reply::for_failure(failure.kind), socks5::UNSPECIFIED)
            .await;
    }
}

impl SocksClient for Client {
    async fn granted(&mut self, addr: SocketAddr) -> bool {
        self.reply(Reply::Succeeded, addr).await
    }
    async fn refused(&mut self, failure: &Failure) {
        self.refuse(failure).await
    }
    fn into_stream(self) -> BufStream {
        self.stream
    }
}

/// Greeting, method choice and authentication, under the policy in force.
async fn authenticate(
    shard: &Shard,
    session: &Session,
    client: &mut Client,
) -> Result<Principal, ()> {
    let peer = session.client;
    let Step::Greeting(greeting) = client.next(shard).await? else {
        return Err(());
    };
    let policy = shard.policy();
    // Prefer credentials when the client has them and there are users: per-user rules and
    // limits then apply even to clients that could have gone anonymous.
    // A verified client certificate already says who the client is.
    let method = if greeting.no_auth && session.certified().is_some() {
        socks5::METHOD_NO_AUTH
    } else if greeting.user_pass && policy.has_users() {
        socks5::METHOD_USER_PASS
    } else if greeting.no_auth && policy.anonymous_allowed(peer.ip()) {
        socks5::METHOD_NO_AUTH
    } else if greeting.user_pass {
        socks5::METHOD_USER_PASS
    } else {
        socks5::METHOD_NONE_ACCEPTABLE
    };
    drop(policy);
    let selection = client.hs.choose_method(method);
    if !client.send(selection).await {
        return Err(());
    }
    match method {
        socks5::METHOD_NO_AUTH => admission::anonymous(shard, session).map_err(drop),
        socks5::METHOD_USER_PASS => {
            let Step::Credentials(creds) = client.next(shard).await? else {
                return Err(());
            };
            let result = admission::authenticate(shard, &creds.user, &creds.password).await;
            let status = client.hs.credentials_checked(result.is_ok());
            client.send(status).await;
            result.map_err(drop)
        }
        _ => {
            shard.metrics().auth_failures.inc();
            Err(())
        }
    }
}

pub async fn serve(shard: &Shard, session: &Session, stream: BufStream, started: Instant) {
    let _open = ProtocolGuard::new(shard, Protocol::Socks5);
    let mut client = Client {
        stream,
        hs: Handshake::default(),
    };
    let steps = async {
        let principal = authenticate(shard, session, &mut client).await.ok()?;
        match client.next(shard).await.ok()? {
            Step::Request(request) => Some((principal, request)),
            _ => None,
        }
    };
    let Some((principal, request)) = handshake(shard, session, steps).await else {
        return;
    };
    let cmd = socks_commands::Command {
        principal: &principal,
        protocol: Protocol::Socks5,
        target: &request.target,
        started,
    };
    match request.command {
        Command::Connect => socks_commands::connect(shard, session, cmd, client).await,
        Command::Bind => socks_commands::bind(shard, session, cmd, client).await,
        Command::UdpAssociate => {
            let local = client.stream.stream().local_addr();
            socks_udp::associate(shard, session, &principal, &request.target, local, client).await
        }
    }
}
