//! TLS to the proxy on the TCP port: the handshake within the client's handshake deadline,
//! counted by outcome; what comes out is a stream whose plaintext is served like any other
//! client of the port.

use std::sync::Arc;
use std::time::Instant;

use proto::tls_hello::{self, Hello, HelloError, HelloReader, Peek};

use super::left;
use crate::metrics::ErrorKind;
use crate::rt;
use crate::shard::Shard;
use crate::stream::tls::HandshakeError;
use crate::stream::BufStream;

/// Terminates TLS on `client` (whose first bytes, a ClientHello's, are buffered); `None`
/// when the handshake fails or runs past `deadline`.
pub async fn accept(
    shard: &Shard,
    mut client: BufStream,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
) -> Option<BufStream> {
    let started = Instant::now();
    // The whole ClientHello first: bytes that are none are turned away before rustls
    // allocates a connection for them, and the name and protocols asked for are logged.
    match rt::timeout(left(deadline), whole_hello(&mut client)).await {
        Ok(Ok(hello)) => {
            tracing::debug!(sni = ?hello.server_name, alpn = ?hello.alpn, tls13 = hello.offers_tls13, "ClientHello");
        }
        Ok(Err(why)) => {
            tracing::debug!(reason = %why, "not a ClientHello");
            if matches!(why, NoHello::Refused(_)) {
                // A fatal decode_error alert (RFC 8446 §6.2), best effort.
                let _ = client.stream().try_write(&[21, 3, 3, 0, 2, 2, 50]);
                shard.metrics().error(ErrorKind::ClientProtocol);
                shard.metrics().tls.not_client_hello();
            } else {
                shard.metrics().tls.handshake_failed(&HandshakeError::Eof);
            }
            return None;
        }
        Err(_) => {
            shard.metrics().tls.handshake_timed_out();
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            return None;
        }
    }
    let (stream, early) = client.into_parts();
    match rt::timeout(left(deadline), stream.accept_tls(config, &early)).await {
        Ok(Ok(stream)) => {
            if let Some(info) = stream.tls_info() {
                shard.metrics().tls.handshake_done(&info, started.elapsed());
            }
            Some(BufStream::new(stream))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            shard.metrics().tls.handshake_failed(&e);
            if matches!(e, HandshakeError::Tls(_)) {
                shard.metrics().error(ErrorKind::ClientProtocol);
            }
            None
        }
        Err(_) => {
            shard.metrics().tls.handshake_timed_out();
            shard.metrics().error(ErrorKind::HandshakeTimeout);
            None
        }
    }
}

/// Why no ClientHello came.
#[derive(Debug, thiserror::Error)]
enum NoHello {
    #[error("{0}")]
    Refused(#[from] HelloError),
    #[error("the client closed or failed before its ClientHello was complete")]
    Closed,
}

/// Reads until the buffered bytes hold a whole ClientHello, and looks at it.
async fn whole_hello(client: &mut BufStream) -> Result<Hello, NoHello> {
    let mut reader = HelloReader::default();
    loop {
        match reader.peek(client.buffered())? {
            Peek::Hello(hello) => return Ok(hello),
            // Records of a few bytes each could stretch a bounded hello: bound the bytes too.
            Peek::NeedMore if client.buffered().len() > 4 * tls_hello::MAX_HELLO => {
                return Err(HelloError::TooLarge.into())
            }
            Peek::NeedMore => match client.read_more().await {
                Ok(n) if n > 0 => {}
                _ => return Err(NoHello::Closed),
            },
        }
    }
}
