//! HTTP/2 clients for the tests: the Rust h2 crate over tokio-rustls (or plain TCP), and a
//! raw frame writer/reader over blocking rustls for input no well-behaved client sends.

#![allow(dead_code)]

use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use rustls::pki_types::pem::PemObject;

/// A rustls client configuration trusting the certificates in `roots`, offering `alpn`.
pub fn tls_config(roots: &[&Path], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    Arc::new(tls_client(roots, alpn))
}

/// The same, to adjust before use.
pub fn tls_client(roots: &[&Path], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for path in roots {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path).unwrap() {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// Client windows large enough that a tunnel is never held back by the client itself.
fn builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(4 << 20)
        .initial_connection_window_size(256 << 20);
    b
}

/// An HTTP/2 connection to the proxy over TLS (ALPN h2), its driver running as a task.
pub async fn open_tls(
    addr: SocketAddr,
    cert: &Path,
) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    open_tls_with(addr, tls_config(&[cert], &[b"h2"])).await
}

/// The same with a client configuration of the caller's (a client certificate, say); it
/// must offer ALPN h2.
pub async fn open_tls_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = builder().handshake(tls).await.unwrap();
    let drive = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send.ready().await.unwrap(), drive)
}

/// An HTTP/2 connection with prior knowledge over plain TCP (no TLS).
pub async fn open_plain(addr: SocketAddr) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = builder().handshake(tcp).await.unwrap();
    let drive = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send.ready().await.unwrap(), drive)
}

/// Sends a CONNECT for `authority` (with Proxy-Authorization `user:password` if given) and
/// waits for the response head.
pub async fn connect(
    client: &mut SendRequest<Bytes>,
    authority: &str,
    creds: Option<&str>,
) -> (Response<RecvStream>, SendStream<Bytes>) {
    let mut req = Request::builder()
        .method("CONNECT")
        .uri(authority)
        .version(http::Version::HTTP_2);
    if let Some(c) = creds {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(c);
        req = req.header("proxy-authorization", format!("Basic {token}"));
    }
    let mut client = client.clone().ready().await.unwrap();
    let (resp, send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    (resp.await.unwrap(), send)
}

/// Sends all of `data` as the window allows (`end`: then ends the stream).
pub async fn send_all(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len().min(1 << 20));
        let room = loop {
            let now = send.capacity();
            if now > 0 {
                break now;
            }
            match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Error::from(h2::Reason::STREAM_CLOSED)),
            }
        };
        let chunk = data.split_to(room.min(data.len()));
        send.send_data(chunk, false)?;
    }
    if end {
        send.send_data(Bytes::new(), true)?;
    }
    Ok(())
}

/// Reads `len` bytes of the stream (or until it ends), releasing the window as it goes.
pub async fn recv_exact(recv: &mut RecvStream, len: usize) -> Result<Vec<u8>, h2::Error> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        match recv.data().await {
            Some(Ok(chunk)) => {
                got.extend_from_slice(&chunk);
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(got)
}

/// A plain-HTTP request on an h2 stream (what a browser sends an HTTPS proxy for an
/// `http://` URL); the response's status, its fields, and its whole body.
pub async fn request(
    client: &h2::client::SendRequest<Bytes>,
    method: &str,
    url: &str,
    creds: Option<&str>,
    body: Option<Bytes>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(c) = creds {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(c);
        req = req.header("proxy-authorization", format!("Basic {token}"));
    }
    let mut client = client.clone().ready().await.unwrap();
    let (resp, mut send) = client
        .send_request(req.body(()).unwrap(), body.is_none())
        .unwrap();
    if let Some(b) = body {
        send_all(&mut send, b, true).await.unwrap();
    }
    let resp = resp.await.unwrap();
    let (parts, mut recv) = resp.into_parts();
    let mut got = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        got.extend_from_slice(&chunk);
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    (parts.status.as_u16(), parts.headers, got)
}
/// A raw HTTP/2 connection over TLS, frame by frame, for input h2 would refuse to send.
pub struct Raw {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;

impl Raw {
    /// Connects over TLS (ALPN h2) and sends `preface` (the real one, or not).
    pub fn open(addr: SocketAddr, cert: &Path, preface: &[u8]) -> Raw {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = rustls::ClientConnection::new(
            tls_config(&[cert], &[b"h2"]),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(preface).unwrap();
        Raw { tls }
    }

    /// Connects and sends the preface and an empty SETTINGS frame.
    pub fn handshake(addr: SocketAddr, cert: &Path) -> Raw {
        let mut raw = Raw::open(addr, cert, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        raw.send(SETTINGS, 0, 0, &[]).unwrap();
        raw
    }

    pub fn send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        self.tls.write_all(&frame(kind, flags, stream, payload))
    }

    /// The next frame: (type, flags, stream, payload); `None` at the end of the connection.
    pub fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.tls.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.tls.read_exact(&mut payload).ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// Reads frames until a GOAWAY (its error code) or the end of the connection (`None`).
    pub fn goaway(&mut self) -> Option<u32> {
        while let Some((kind, _, _, payload)) = self.next() {
            if kind == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
        None
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A CONNECT request's header block for `authority`, HPACK-encoded with literals only
/// (names from the static table: 2 `:method`, 1 `:authority`).
pub fn connect_headers(authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (index, value) in [(2u8, "CONNECT"), (1u8, authority)] {
        // Literal header field without indexing, indexed name (RFC 7541 §6.2.2).
        block.push(index);
        assert!(value.len() < 127);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}
