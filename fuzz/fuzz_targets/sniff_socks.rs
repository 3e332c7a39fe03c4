//! Sniffing and every SOCKS parser on arbitrary bytes: no panic, consumed <= input, and a
//! message parsed from a prefix is the same when more bytes follow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{sniff, socks4, socks5};

fn stable<T: PartialEq + std::fmt::Debug, E: PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) {
    if let Ok(Some((value, n))) = parse(data) {
        assert!(n <= data.len());
        let again = parse(&data[..n]).expect("prefix parses");
        assert_eq!(again, Some((value, n)));
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = sniff::sniff(data);
    stable(data, socks5::parse_greeting);
    stable(data, socks5::parse_user_pass);
    stable(data, socks5::parse_request);
    stable(data, socks4::parse_request);
});
