//! CONNECT-UDP input from clients: capsule streams cut at arbitrary points (every step
//! consumes what it says and no more, the same datagrams come out however the bytes arrive,
//! and the buffer never has to grow past the decoder's bound), request paths matched
//! against the default and a query template, and QUIC DATAGRAM frame payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::capsule::{Decoder, Step};
use proto::{http_datagram, masque};

fn datagrams(data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut dec = Decoder::new(256);
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.next(&buf) {
                Step::NeedMore => break,
                Step::Datagram { payload, consumed } => {
                    assert!(consumed <= buf.len() && payload.len() <= 256);
                    out.push(payload.to_vec());
                    buf.drain(..consumed);
                }
                Step::Skip { consumed, .. } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    buf.drain(..consumed);
                }
            }
        }
        assert!(buf.len() <= dec.max_buffered() + chunk);
    }
    out
}

fuzz_target!(|input: (u8, &[u8])| {
    let (chunk, data) = input;
    assert_eq!(datagrams(data, data.len().max(1)), datagrams(data, usize::from(chunk.max(1))));

    if let Ok(path) = std::str::from_utf8(data) {
        for template in [masque::DEFAULT_TEMPLATE, "/m?h={target_host}&p={target_port}"] {
            if let Ok(target) = masque::Template::parse(template).unwrap().target(path) {
                assert_ne!(target.port(), 0);
            }
        }
        let _ = masque::Template::parse(path);
    }
    if let Some((stream, payload)) = http_datagram::from_quic(data) {
        assert_eq!(stream % 4, 0);
        let _ = http_datagram::udp_payload(payload);
    }
});
