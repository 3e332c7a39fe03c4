//! SOCKS4/4a driver. SOCKS4 carries no password, so it is served only to clients the
//! policy lets in anonymously.

use std::net::SocketAddr;
use std::time::Instant;

use policy::Protocol;
use proto::socks4::{self, Command, Reply};
use proto::socks5::UNSPECIFIED;
use proto::Failure;

use super::socks_commands::{self, SocksClient};
use super::ProtocolGuard;
use crate::admission;
use crate::metrics::ErrorKind;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::{BufStream, Expired, ReadError};

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

/// A SOCKS4 client after its request.
struct Client(BufStream);

impl SocksClient for Client {
    async fn granted(&mut self, addr: SocketAddr) -> bool {
        reply(&mut self.0, Reply::Granted, addr).await
    }
    async fn refused(&mut self, failure: &Failure) {
        refuse(&mut self.0, failure).await
    }
    fn into_stream(self) -> BufStream {
        self.0
    }
}

pub async fn serve(shard: &Shard, session: &Session, mut client: BufStream, started: Instant) {
    let _open = ProtocolGuard::new(shard, Protocol::Socks4);
    // Its only wait is the stream's, bounded by the session's handshake deadline.
    let request = match client
        .read_message(MAX_MESSAGE, socks4::parse_request)
        .await
    {
        Err(ReadError::Io(e)) if Expired::of(&e).is_some() => {
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return;
        }
        Ok(r) => r,
        Err(ReadError::Eof | ReadError::Io(_)) => return,
        Err(_) => {
            shard.metrics().error(ErrorKind::ClientProtocol);
            reply(&mut client, Reply::Rejected, UNSPECIFIED).await;
            return;
        }
    };
    let peer = session.client;
    let principal = match admission::anonymous(shard, session) {
        Ok(p) => p,
        Err(f) => {
            tracing::info!(%peer, "SOCKS4 refused: client may not connect anonymously");
            return refuse(&mut client, &f).await;
        }
    };
    let cmd = socks_commands::Command {
        principal: &principal,
        protocol: Protocol::Socks4,
        target: &request.target,
        started,
    };
    let client = Client(client);
    match request.command {
        Command::Connect => socks_commands::connect(shard, session, cmd, client).await,
        Command::Bind => socks_commands::bind(shard, session, cmd, client).await,
    }
}
