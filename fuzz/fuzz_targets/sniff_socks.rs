//! Sniffing, every SOCKS parser and the SOCKS5 handshake machine on arbitrary bytes: no
//! panic, consumed <= input, a message parsed from a prefix is the same when more bytes
//! follow, and the machine never hands out a success it was not given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::socks5::handshake::{Handshake, Step};
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

/// Runs the machine over `data`, answering each step from the first byte: the method to
/// choose, whether credentials hold, the reply code.
fn handshake(data: &[u8]) {
    let Some((&choices, mut rest)) = data.split_first() else {
        return;
    };
    let mut hs = Handshake::default();
    let bound = socks5::UNSPECIFIED;
    while let Ok(Some((step, n))) = hs.receive(rest) {
        assert!(n <= rest.len());
        rest = &rest[n..];
        match step {
            Step::Greeting(_) => {
                let _ = hs.choose_method([0, 2, 0xff][(choices % 3) as usize]);
            }
            Step::Credentials(c) => {
                assert!(!c.user.is_empty());
                let _ = hs.credentials_checked(choices & 4 != 0);
            }
            Step::Request(request) => {
                let bind = request.command == socks5::Command::Bind;
                let code = if choices & 8 != 0 {
                    socks5::Reply::Succeeded
                } else {
                    socks5::Reply::NotAllowed
                };
                let reply = hs.reply(code, bound).expect("a reply is owed");
                assert_eq!(reply[1], code as u8);
                // BIND owes a second reply before the tunnel starts.
                assert_eq!(hs.is_done(), code == socks5::Reply::Succeeded && !bind);
                return;
            }
        }
    }
    assert!(!hs.is_done());
}

fuzz_target!(|data: &[u8]| {
    let _ = sniff::sniff(data);
    stable(data, socks5::parse_greeting);
    stable(data, socks5::parse_user_pass);
    stable(data, socks5::parse_request);
    stable(data, socks5::addr::parse);
    stable(data, socks4::parse_request);
    handshake(data);
});
