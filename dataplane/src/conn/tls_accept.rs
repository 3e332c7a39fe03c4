//! TLS to the proxy on the TCP port: the handshake within the session's handshake deadline,
//! counted by outcome; what comes out is a stream whose plaintext is served like any other
//! client of the port.

use std::sync::Arc;
use std::time::Instant;

use proto::tls_hello::{self, Hello, HelloError, HelloReader, Peek};

use crate::metrics::ErrorKind;
use crate::shard::Shard;
use crate::stream::tls::HandshakeError;
use crate::stream::{BufStream, Expired};

/// Terminates TLS on `client` (whose first bytes, a ClientHello's, are buffered); `None`
/// when the handshake fails or runs past the deadline (every wait of the stream is bounded
/// by its session's).
pub async fn accept(
    shard: &Shard,
    mut client: BufStream,
    config: Arc<rustls::ServerConfig>,
) -> Option<BufStream> {
    let started = Instant::now();
    // The whole ClientHello first: bytes that are none are turned away before rustls
    // allocates a connection for them, and the name and protocols asked for are logged.
    match whole_hello(&mut client).await {
        Ok(hello) => {
            tracing::debug!(sni = ?hello.server_name, alpn = ?hello.alpn, tls13 = hello.offers_tls13, "ClientHello");
        }
        Err(NoHello::Expired) => {
            timed_out(shard);
            return None;
        }
        Err(why) => {
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
    }
    let (stream, early) = client.into_parts();
    match stream.accept_tls(config, &early).await {
        Ok(stream) => {
            if let Some(info) = stream.tls_info() {
                shard.metrics().tls.handshake_done(&info, started.elapsed());
            }
            Some(BufStream::new(stream))
        }
        Err(HandshakeError::Io(e)) if Expired::of(&e).is_some() => {
            timed_out(shard);
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            shard.metrics().tls.handshake_failed(&e);
            if matches!(e, HandshakeError::Tls(_)) {
                shard.metrics().error(ErrorKind::ClientProtocol);
            }
            None
        }
    }
}

fn timed_out(shard: &Shard) {
    shard.metrics().tls.handshake_timed_out();
    shard.metrics().error(ErrorKind::HandshakeTimeout);
}

/// Why no ClientHello came.
#[derive(Debug, thiserror::Error)]
enum NoHello {
    #[error("{0}")]
    Refused(#[from] HelloError),
    #[error("the client closed or failed before its ClientHello was complete")]
    Closed,
    #[error("no whole ClientHello within the handshake deadline")]
    Expired,
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
                Err(e) if Expired::of(&e).is_some() => return Err(NoHello::Expired),
                _ => return Err(NoHello::Closed),
            },
        }
    }
}
