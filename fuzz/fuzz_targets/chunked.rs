//! The chunked-body boundary finder: feeding the input in two pieces finds the same end as
//! feeding it at once; decoding consumes exactly what finding the boundary does, and the
//! payload it yields is no longer than what it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::chunked::ChunkedDecoder;

fuzz_target!(|input: (u16, &[u8])| {
    let (split, data) = input;
    let mut whole = ChunkedDecoder::default();
    let whole_result = whole.feed(data);
    let (mut decoder, mut payload) = (ChunkedDecoder::default(), Vec::new());
    let decoded = decoder.decode(data, &mut payload);
    assert_eq!(decoded, whole_result);
    assert_eq!(decoder.is_done(), whole.is_done());
    if let Ok(n) = decoded {
        assert!(payload.len() <= n);
    }
    let split = (split as usize).min(data.len());
    let mut parts = ChunkedDecoder::default();
    let first = parts.feed(&data[..split]);
    match (whole_result, first) {
        (Ok(n), Ok(a)) if a == split && !parts.is_done() => {
            let b = parts.feed(&data[split..]);
            if let Ok(b) = b {
                assert_eq!(n, a + b);
                assert_eq!(whole.is_done(), parts.is_done());
            }
        }
        (Ok(n), Ok(a)) if parts.is_done() => {
            assert_eq!(n, a);
            assert!(whole.is_done());
        }
        _ => {}
    }
});
