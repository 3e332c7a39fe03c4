//! The hand-over checked against a stand-in for the kernel's record layer: a real rustls
//! client and our server session complete a handshake and exchange a CONNECT, the session
//! is taken out of rustls, and records built (and opened) with ring from nothing but the
//! `crypto_info` structures the kernel would get must be what the client reads (and
//! sent). Where this kernel has TLS, the real hand-over runs too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use ring::aead;
use rustls::crypto::ring as provider;
use rustls::SupportedCipherSuite;

use super::*;
use crate::identity::test_support;
use crate::stream::tls::{blocking, Tls};
use crate::sys;

/// A connected pair: our server session (handshake done, nothing exchanged yet) on a
/// non-blocking socket, and a rustls client offering only `suite`.
fn session(
    suite: SupportedCipherSuite,
    extractable: bool,
) -> (
    Tls,
    TcpStream,
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) {
    let (identity, pem) = test_support::identity("ktls");
    let config = Arc::new(identity.tcp_server_config(false, None, extractable));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..provider::default_provider()
        };
        let versions: &[&rustls::SupportedProtocolVersion] = &[suite.version()];
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(root_store(&pem))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let conn =
            rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        tls
    });
    let (socket, _) = listener.accept().unwrap();
    socket.set_nonblocking(true).unwrap();
    let tls = Tls::start(config, &[]).unwrap();
    blocking::handshake(&tls, socket.as_raw_fd());
    (tls, socket, client.join().unwrap())
}

fn root_store(pem: &std::path::Path) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn read_all(tls: &Tls, fd: RawFd, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    let mut at = 0;
    while at < len {
        match tls.try_read(fd, &mut got[at..]) {
            Ok(0) => panic!("closed early"),
            Ok(n) => at += n,
            Err(e) if sys::would_block(&e) => sys::wait_ready(fd, false),
            Err(e) => panic!("{e}"),
        }
    }
    got
}

fn write_all(tls: &Tls, fd: RawFd, data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        match tls.try_write(fd, &data[at..]) {
            Ok(n) => at += n,
            Err(e) if sys::would_block(&e) => sys::wait_ready(fd, true),
            Err(e) => panic!("{e}"),
        }
    }
    blocking::flush(tls, fd);
}

/// The CONNECT exchange before a hand-over; the client has read the answer (and with it
/// any session tickets).
fn connect_exchange(
    tls: &Tls,
    fd: RawFd,
    client: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) {
    let request = b"CONNECT example.com:443 HTTP/1.1\r\n\r\n";
    client.write_all(request).unwrap();
    assert_eq!(read_all(tls, fd, request.len()), request);
    let answer = b"HTTP/1.1 200 Connection established\r\n\r\n";
    write_all(tls, fd, answer);
    let mut got = vec![0; answer.len()];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, answer);
}

/// The kernel's record layer, from a crypto_info alone.
struct StandIn {
    key: aead::LessSafeKey,
    nonce_base: Vec<u8>,
    seq: u64,
    tls13: bool,
    gcm: bool,
}

impl StandIn {
    fn new(info: &CryptoInfo, tls13: bool) -> StandIn {
        let (nonce_base, key, seq) = info.nonce_and_key();
        let (alg, gcm) = match info {
            CryptoInfo::Aes128Gcm(_) => (&aead::AES_128_GCM, true),
            CryptoInfo::Aes256Gcm(_) => (&aead::AES_256_GCM, true),
            CryptoInfo::Chacha20Poly1305(_) => (&aead::CHACHA20_POLY1305, false),
        };
        StandIn {
            key: aead::LessSafeKey::new(aead::UnboundKey::new(alg, &key).unwrap()),
            nonce_base,
            seq,
            tls13,
            gcm,
        }
    }

    /// TLS 1.2 GCM sends the nonce's last 8 bytes in the record; the rest XOR the
    /// sequence number into the whole base (RFC 8446 §5.3, RFC 7905).
    fn nonce(&self, explicit: Option<&[u8]>) -> aead::Nonce {
        let mut n: [u8; 12] = self.nonce_base[..].try_into().unwrap();
        match explicit {
            Some(e) => n[4..].copy_from_slice(e),
            None => {
                for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                    *b ^= s;
                }
            }
        }
        aead::Nonce::assume_unique_for_key(n)
    }

    fn tls12_aad(&self, content_type: u8, len: usize) -> Vec<u8> {
        let mut aad = self.seq.to_be_bytes().to_vec();
        aad.extend_from_slice(&[content_type, 3, 3]);
        aad.extend_from_slice(&(len as u16).to_be_bytes());
        aad
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let record = if self.tls13 {
            let mut body = [plaintext, &[23]].concat();
            let len = body.len() + 16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            self.key
                .seal_in_place_append_tag(self.nonce(None), aead::Aad::from(header), &mut body)
                .unwrap();
            [&header[..], &body].concat()
        } else {
            let explicit = self.seq.to_be_bytes();
            let nonce = self.nonce(self.gcm.then_some(&explicit[..]));
            let aad = self.tls12_aad(23, plaintext.len());
            let mut body = plaintext.to_vec();
            self.key
                .seal_in_place_append_tag(nonce, aead::Aad::from(aad), &mut body)
                .unwrap();
            let prefix: &[u8] = if self.gcm { &explicit } else { &[] };
            let len = prefix.len() + body.len();
            [&[23, 3, 3, (len >> 8) as u8, len as u8][..], prefix, &body].concat()
        };
        self.seq += 1;
        record
    }

    fn open(&mut self, record: &[u8]) -> Vec<u8> {
        let (header, body) = record.split_at(5);
        let plaintext = if self.tls13 {
            let mut body = body.to_vec();
            let inner = self
                .key
                .open_in_place(self.nonce(None), aead::Aad::from(header), &mut body)
                .expect("the client's record opens with the RX crypto_info")
                .to_vec();
            let end = inner.iter().rposition(|b| *b != 0).unwrap();
            assert_eq!(inner[end], 23, "application data");
            inner[..end].to_vec()
        } else {
            let (explicit, sealed) = if self.gcm {
                body.split_at(8)
            } else {
                (&[][..], body)
            };
            let nonce = self.nonce(self.gcm.then_some(explicit));
            let aad = self.tls12_aad(header[0], sealed.len() - 16);
            let mut sealed = sealed.to_vec();
            self.key
                .open_in_place(nonce, aead::Aad::from(aad), &mut sealed)
                .expect("the client's record opens with the RX crypto_info")
                .to_vec()
        };
        self.seq += 1;
        plaintext
    }
}

/// One record from a blocking socket.
fn read_record(socket: &mut TcpStream) -> Vec<u8> {
    let mut header = [0; 5];
    socket.read_exact(&mut header).unwrap();
    let mut body = vec![0; usize::from(u16::from_be_bytes([header[3], header[4]]))];
    socket.read_exact(&mut body).unwrap();
    [&header[..], &body].concat()
}

const SUITES: [SupportedCipherSuite; 5] = [
    provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
    provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
    provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// For every cipher the kernel takes, in TLS 1.3 and 1.2: after a CONNECT, the session's
/// keys and sequence numbers as crypto_info carry the tunnel both ways — records sealed
/// with the TX one are read by the client, the client's records open with the RX one.
#[test]
fn the_crypto_info_carries_the_session_on_both_ways() {
    for suite in SUITES {
        let (tls, socket, mut client) = session(suite, true);
        let fd = socket.as_raw_fd();
        connect_exchange(&tls, fd, &mut client);
        assert_eq!(tls.held_bytes(), 0, "nothing held after the CONNECT");
        assert!(kernel_cipher(&tls.cipher_suite().unwrap()));
        let tls13 = tls.info().tls13;
        assert_eq!(tls13, suite.tls13().is_some());
        let (secrets, _kernel) = tls.into_kernel().unwrap();
        let tx = CryptoInfo::new(tls13, secrets.tx.0, &secrets.tx.1).unwrap();
        let rx = CryptoInfo::new(tls13, secrets.rx.0, &secrets.rx.1).unwrap();

        let mut kernel_tx = StandIn::new(&tx, tls13);
        let mut raw = socket.try_clone().unwrap();
        raw.set_nonblocking(false).unwrap();
        for message in [&b"from the kernel, first"[..], &[7u8; 3000][..]] {
            raw.write_all(&kernel_tx.seal(message)).unwrap();
            let mut got = vec![0; message.len()];
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, message, "{:?}", suite.suite());
        }

        let mut kernel_rx = StandIn::new(&rx, tls13);
        for message in [&b"to the kernel"[..], &[9u8; 5000][..]] {
            client.write_all(message).unwrap();
            client.flush().unwrap();
            assert_eq!(
                kernel_rx.open(&read_record(&mut raw)),
                message,
                "{:?}",
                suite.suite()
            );
        }
    }
}

/// A client that sent tunnel bytes before the CONNECT's answer has records in user space:
/// the hand-over is refused and the session goes on in rustls with nothing lost. Without
/// secret extraction it is refused as well.
#[test]
fn a_session_with_bytes_in_user_space_stays_in_rustls() {
    let (tls, socket, mut client) = session(SUITES[0], true);
    let fd = socket.as_raw_fd();
    client.write_all(b"CONNECT h:1 HTTP/1.1\r\n\r\n").unwrap();
    client.write_all(b"early tunnel bytes").unwrap();
    client.flush().unwrap();
    // Both records are on the socket before the server reads.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(read_all(&tls, fd, 24), b"CONNECT h:1 HTTP/1.1\r\n\r\n");
    assert!(tls.held_bytes() > 0);
    let (kept, why) = match hand_over(fd, Box::new(tls)) {
        Ok(_) => panic!("handed over with bytes held"),
        Err(e) => e,
    };
    assert!(matches!(why, HandOverError::Buffered), "{why}");
    let tls = kept.expect("the session survives");
    assert_eq!(read_all(&tls, fd, 18), b"early tunnel bytes");
    write_all(&tls, fd, b"still rustls");
    let mut got = [0; 12];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still rustls");

    let (tls, socket, mut client) = session(SUITES[0], false);
    connect_exchange(&tls, socket.as_raw_fd(), &mut client);
    let Err((Some(_), HandOverError::NotExtractable)) =
        hand_over(socket.as_raw_fd(), Box::new(tls))
    else {
        panic!("handed over without extraction enabled");
    };
}

/// The real hand-over: where the kernel has no TLS (these machines) the session stays in
/// rustls and keeps working; where it has, the tunnel runs on kernel TLS both ways and the
/// client's close_notify reads as end of stream.
#[test]
fn the_hand_over_runs_or_leaves_a_working_session() {
    for suite in [SUITES[0], SUITES[3]] {
        let (tls, socket, mut client) = session(suite, true);
        let fd = socket.as_raw_fd();
        connect_exchange(&tls, fd, &mut client);
        match hand_over(fd, Box::new(tls)) {
            Err((Some(tls), HandOverError::Ulp(e))) => {
                assert!(
                    probe().is_err(),
                    "the probe said yes, the hand-over no: {e}"
                );
                write_all(&tls, fd, b"copied");
                let mut got = [0; 6];
                client.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"copied");
            }
            Ok(kernel) => {
                let mut sent = 0;
                while sent < 6 {
                    match kernel.try_write(fd, &b"kernel"[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if sys::would_block(&e) => sys::wait_ready(fd, true),
                        Err(e) => panic!("{e}"),
                    }
                }
                let mut got = [0; 6];
                client.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"kernel");
                client.write_all(b"back").unwrap();
                client.conn.send_close_notify();
                client.flush().unwrap();
                let mut buf = [0; 16];
                let mut read = Vec::new();
                loop {
                    match kernel.try_read(fd, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                        Err(e) if sys::would_block(&e) => sys::wait_ready(fd, false),
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(read, b"back");
            }
            Err((_, e)) => panic!("{e}"),
        }
    }
}
