//! TLS to the proxy on the TCP port: the handshake within the client's handshake deadline,
//! counted by outcome; what comes out is a stream whose plaintext is served like any other
//! client of the port.

use std::sync::Arc;
use std::time::Instant;

use super::left;
use crate::context::Shard;
use crate::metrics::ErrorKind;
use crate::rt;
use crate::stream::tls::HandshakeError;
use crate::stream::BufStream;

/// Terminates TLS on `client` (whose first bytes, a ClientHello's, are buffered); `None`
/// when the handshake fails or runs past `deadline`.
pub async fn accept(
    shard: &Shard,
    client: BufStream,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
) -> Option<BufStream> {
    let (stream, early) = client.into_parts();
    let started = Instant::now();
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
