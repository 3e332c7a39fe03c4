//! ClientHello peeks from clients: never a panic, the same answer however much of the
//! input arrived (a cut either needs more or already answers as the whole does), the same
//! answer from the resumable reader fed the input as it grows, and a built hello for any
//! name and protocols read back as built.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::tls_hello::{build, peek, HelloReader, Peek};

fuzz_target!(|data: &[u8]| {
    let whole = peek(data);
    for cut in 0..data.len() {
        match peek(&data[..cut]) {
            Ok(Peek::NeedMore) => {}
            // An answer from a prefix is final: more bytes cannot change it.
            early => {
                assert_eq!(early, whole, "cut at {cut}");
                break;
            }
        }
    }
    // The reader that resumes where it stopped answers as a fresh look at the same bytes.
    let mut reader = HelloReader::default();
    let step = 1 + data.first().map_or(0, |b| usize::from(b % 13));
    let mut end = 0;
    loop {
        end = (end + step).min(data.len());
        let resumed = reader.peek(&data[..end]);
        if resumed != Ok(Peek::NeedMore) || end == data.len() {
            assert_eq!(resumed, peek(&data[..end]), "resumed at {end}");
            break;
        }
    }
    if let Ok(Peek::Hello(h)) = &whole {
        assert!(h.alpn.iter().all(|p| !p.is_empty()));
        assert!(h.server_name.as_ref().is_none_or(|n| !n.is_empty()));
    }
    // Round trip: names and protocols taken from the input.
    let name: String = data
        .iter()
        .take(60)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let protocols: Vec<&[u8]> = data.chunks(7).filter(|c| !c.is_empty()).take(5).collect();
    let record = build((!name.is_empty()).then_some(name.as_str()), &protocols, data.len() % 2 == 0);
    let Ok(Peek::Hello(h)) = peek(&record) else {
        panic!("built hello not read back");
    };
    assert_eq!(h.server_name.as_deref(), (!name.is_empty()).then_some(name.as_str()));
    assert_eq!(h.alpn, protocols.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
});
