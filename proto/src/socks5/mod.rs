//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), sans-IO.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use thiserror::Error;

pub mod addr;
pub mod handshake;
pub mod udp;

use crate::failure::FailureKind;
use crate::target::TargetAddr;

pub const VERSION: u8 = 5;
pub const METHOD_NO_AUTH: u8 = 0x00;
pub const METHOD_USER_PASS: u8 = 0x02;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const USER_PASS_VERSION: u8 = 1;

/// Reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

impl Reply {
    /// The reply a client gets for a failure (RFC 1928 §6 has no code for authentication or
    /// limits: those are "not allowed by ruleset").
    pub fn for_failure(kind: FailureKind) -> Reply {
        use FailureKind::*;
        match kind {
            Denied | UserLimit | Revoked | AuthRequired | AuthFailed => Reply::NotAllowed,
            Dns | HostUnreachable => Reply::HostUnreachable,
            ConnectionRefused => Reply::ConnectionRefused,
            NetworkUnreachable => Reply::NetworkUnreachable,
            ConnectTimeout | ResponseTimeout => Reply::TtlExpired,
            Unsupported => Reply::CommandNotSupported,
            AddressType => Reply::AddressTypeNotSupported,
            Malformed | HandshakeTimeout | UpstreamClosed | UpstreamProtocol | Internal => {
                Reply::GeneralFailure
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

/// Everything a client can get wrong in a SOCKS5 handshake.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Socks5Error {
    #[error("client spoke SOCKS version {0}, expected 5")]
    Version(u8),
    #[error("client offered no authentication method")]
    NoMethods,
    #[error("client used username/password sub-negotiation version {0}, expected 1")]
    AuthVersion(u8),
    #[error("client sent an empty user name")]
    EmptyUser,
    #[error("client asked for unknown command {0}")]
    Command(u8),
    #[error("client used unknown address type {0}")]
    AddressType(u8),
    #[error("client sent a non-zero reserved byte")]
    Reserved,
    #[error("client sent an invalid destination host name")]
    HostName,
    #[error("client sent a message before the proxy answered the previous one")]
    Unexpected,
}

impl Socks5Error {
    pub fn failure(&self) -> FailureKind {
        match self {
            Socks5Error::Command(_) => FailureKind::Unsupported,
            Socks5Error::AddressType(_) => FailureKind::AddressType,
            _ => FailureKind::Malformed,
        }
    }

    /// The reply code a client gets for this error.
    pub fn reply(&self) -> Reply {
        Reply::for_failure(self.failure())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub no_auth: bool,
    pub user_pass: bool,
}

pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::Version(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let end = 2 + n as usize;
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    Ok(Some((
        Greeting {
            no_auth: methods.contains(&METHOD_NO_AUTH),
            user_pass: methods.contains(&METHOD_USER_PASS),
        },
        end,
    )))
}

pub fn method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// RFC 1929 credentials. The password is kept as bytes: it is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

pub fn parse_user_pass(buf: &[u8]) -> Result<Option<(Credentials, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != USER_PASS_VERSION {
        return Err(Socks5Error::AuthVersion(ver));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    if ulen == 0 {
        return Err(Socks5Error::EmptyUser);
    }
    let uend = 2 + ulen as usize;
    let Some(user) = buf.get(2..uend) else {
        return Ok(None);
    };
    let Some(&plen) = buf.get(uend) else {
        return Ok(None);
    };
    let pend = uend + 1 + plen as usize;
    let Some(password) = buf.get(uend + 1..pend) else {
        return Ok(None);
    };
    Ok(Some((
        Credentials {
            user: user.to_vec(),
            password: password.to_vec(),
        },
        pend,
    )))
}

/// RFC 1929 status: 0 success, anything else failure (and the server closes).
pub fn user_pass_status(ok: bool) -> [u8; 2] {
    [USER_PASS_VERSION, if ok { 0 } else { 1 }]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: TargetAddr,
}

pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::Version(ver));
    }
    let Some(&cmd) = buf.get(1) else {
        return Ok(None);
    };
    let Some(&rsv) = buf.get(2) else {
        return Ok(None);
    };
    // The address type is checked before the command so that a client learns the most
    // specific reply code; both are client errors.
    let Some((target, used)) = addr::parse(&buf[3..])? else {
        return Ok(None);
    };
    let end = 3 + used;
    let command = match cmd {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        other => return Err(Socks5Error::Command(other)),
    };
    if rsv != 0 {
        return Err(Socks5Error::Reserved);
    }
    Ok(Some((Request { command, target }, end)))
}

/// A reply carrying the bound address (the proxy's side of the upstream connection for
/// CONNECT, the listening address for BIND).
pub fn encode_reply(reply: Reply, bound: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[VERSION, reply as u8, 0]);
    addr::encode_socket(bound, &mut out);
    out
}

/// The all-zero IPv4 address used in failure replies.
pub const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_reply_codes() {
        use FailureKind::*;
        for (kind, reply) in [
            (ConnectionRefused, Reply::ConnectionRefused),
            (NetworkUnreachable, Reply::NetworkUnreachable),
            (HostUnreachable, Reply::HostUnreachable),
            (Dns, Reply::HostUnreachable),
            (ConnectTimeout, Reply::TtlExpired),
            (Denied, Reply::NotAllowed),
            (Revoked, Reply::NotAllowed),
            (UserLimit, Reply::NotAllowed),
            (Unsupported, Reply::CommandNotSupported),
            (AddressType, Reply::AddressTypeNotSupported),
            (Internal, Reply::GeneralFailure),
        ] {
            assert_eq!(Reply::for_failure(kind), reply, "{kind:?}");
        }
    }

    #[test]
    fn greeting() {
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        let (g, n) = parse_greeting(&[5, 2, 0, 2, 0xaa]).unwrap().unwrap();
        assert_eq!(n, 4);
        assert!(g.no_auth && g.user_pass);
        let (g, _) = parse_greeting(&[5, 1, 2]).unwrap().unwrap();
        assert!(!g.no_auth && g.user_pass);
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(Socks5Error::NoMethods));
    }

    #[test]
    fn user_pass() {
        let msg = [1, 5, b'a', b'l', b'i', b'c', b'e', 3, b'p', b'w', b'd'];
        for cut in 0..msg.len() {
            assert_eq!(parse_user_pass(&msg[..cut]), Ok(None), "cut {cut}");
        }
        let (c, n) = parse_user_pass(&msg).unwrap().unwrap();
        assert_eq!(
            (c.user.as_slice(), c.password.as_slice(), n),
            (&b"alice"[..], &b"pwd"[..], 11)
        );
        assert!(!format!("{c:?}").contains("pwd"));
        assert_eq!(
            parse_user_pass(&[1, 1, b'a', 0])
                .unwrap()
                .unwrap()
                .0
                .password,
            b""
        );
        assert_eq!(
            parse_user_pass(&[2, 1, b'a', 0]),
            Err(Socks5Error::AuthVersion(2))
        );
        assert_eq!(parse_user_pass(&[1, 0, 0]), Err(Socks5Error::EmptyUser));
    }

    #[test]
    fn requests() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        for cut in 0..v4.len() {
            assert_eq!(parse_request(&v4[..cut]), Ok(None));
        }
        let (r, n) = parse_request(&v4).unwrap().unwrap();
        assert_eq!(n, 10);
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, TargetAddr::Ip("127.0.0.1:8080".parse().unwrap()));

        let mut v6 = vec![5, 2, 0, 4];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        let (r, n) = parse_request(&v6).unwrap().unwrap();
        assert_eq!((r.command, n), (Command::Bind, 22));
        assert_eq!(r.target, TargetAddr::Ip("[::1]:80".parse().unwrap()));

        let mut d = vec![5, 1, 0, 3, 11];
        d.extend_from_slice(b"example.com");
        d.extend_from_slice(&[1, 187]);
        let (r, _) = parse_request(&d).unwrap().unwrap();
        assert_eq!(r.target, TargetAddr::Domain("example.com".into(), 443));

        assert_eq!(
            parse_request(&[5, 9, 0, 1, 1, 2, 3, 4, 0, 80]),
            Err(Socks5Error::Command(9))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 7]),
            Err(Socks5Error::AddressType(7))
        );
        assert_eq!(
            parse_request(&[5, 1, 1, 1, 1, 2, 3, 4, 0, 80]),
            Err(Socks5Error::Reserved)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(Socks5Error::HostName)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 2, b'a', b' ', 0, 80]),
            Err(Socks5Error::HostName)
        );
        assert_eq!(Socks5Error::Command(9).reply(), Reply::CommandNotSupported);
        assert_eq!(
            Socks5Error::AddressType(7).reply(),
            Reply::AddressTypeNotSupported
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(Reply::Succeeded, "10.0.0.1:1080".parse().unwrap()),
            vec![5, 0, 0, 1, 10, 0, 0, 1, 0x04, 0x38]
        );
        let r = encode_reply(Reply::HostUnreachable, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!((r[1], r[3], r.len()), (4, 4, 22));
        let mapped = encode_reply(Reply::Succeeded, "[::ffff:1.2.3.4]:5".parse().unwrap());
        assert_eq!(mapped, vec![5, 0, 0, 1, 1, 2, 3, 4, 0, 5]);
    }
}
