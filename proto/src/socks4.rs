//! SOCKS4 and SOCKS4a (CONNECT and BIND), sans-IO.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use thiserror::Error;

use super::failure::FailureKind;
use super::target::{valid_host_name, TargetAddr};

/// Longest USERID or host name we accept; SOCKS4 itself sets no bound.
pub const MAX_FIELD: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Granted = 0x5a,
    Rejected = 0x5b,
    /// Kept for completeness; zcproxy does not use identd.
    IdentdUnreachable = 0x5c,
    IdentdMismatch = 0x5d,
}

impl Reply {
    /// SOCKS4 has one failure code for everything but identd trouble.
    pub fn for_failure(_kind: FailureKind) -> Reply {
        Reply::Rejected
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Socks4Error {
    #[error("client spoke SOCKS version {0}, expected 4")]
    Version(u8),
    #[error("client asked for unknown command {0}")]
    Command(u8),
    #[error("client sent a USERID or host name longer than {MAX_FIELD} bytes")]
    FieldTooLong,
    #[error("client sent an invalid SOCKS4a host name")]
    HostName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: TargetAddr,
    pub user_id: Vec<u8>,
}

/// Reads a NUL-terminated field starting at `from`. `Ok(None)` when the NUL has not arrived.
fn nul_field(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, Socks4Error> {
    let rest = buf.get(from..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == 0) {
        Some(i) if i <= MAX_FIELD => Ok(Some((&rest[..i], from + i + 1))),
        Some(_) => Err(Socks4Error::FieldTooLong),
        None if rest.len() > MAX_FIELD => Err(Socks4Error::FieldTooLong),
        None => Ok(None),
    }
}

pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks4Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != 4 {
        return Err(Socks4Error::Version(ver));
    }
    let Some(&cd) = buf.get(1) else {
        return Ok(None);
    };
    let command = match cd {
        1 => Command::Connect,
        2 => Command::Bind,
        other => return Err(Socks4Error::Command(other)),
    };
    let Some(head) = buf.get(2..8) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([head[0], head[1]]);
    let ip = Ipv4Addr::new(head[2], head[3], head[4], head[5]);
    let Some((user_id, end)) = nul_field(buf, 8)? else {
        return Ok(None);
    };
    let user_id = user_id.to_vec();
    let o = ip.octets();
    // SOCKS4a: 0.0.0.x with x != 0 means "a host name follows the USERID".
    if o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0 {
        let Some((host, end)) = nul_field(buf, end)? else {
            return Ok(None);
        };
        if !valid_host_name(host) {
            return Err(Socks4Error::HostName);
        }
        let host = std::str::from_utf8(host).map_err(|_| Socks4Error::HostName)?;
        return Ok(Some((
            Request {
                command,
                target: TargetAddr::from_host(host, port),
                user_id,
            },
            end,
        )));
    }
    Ok(Some((
        Request {
            command,
            target: TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
            user_id,
        },
        end,
    )))
}

/// A reply; SOCKS4 can only carry an IPv4 address, so anything else is sent as zeros.
pub fn encode_reply(reply: Reply, bound: SocketAddr) -> [u8; 8] {
    let v4 = match bound {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddrV4::new(ip, a.port()),
            None => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
        },
    };
    let p = v4.port().to_be_bytes();
    let ip = v4.ip().octets();
    [0, reply as u8, p[0], p[1], ip[0], ip[1], ip[2], ip[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks4_connect() {
        let msg = [4, 1, 0, 80, 93, 184, 216, 34, b'b', b'o', b'b', 0];
        for cut in 0..msg.len() {
            assert_eq!(parse_request(&msg[..cut]), Ok(None), "cut {cut}");
        }
        let (r, n) = parse_request(&msg).unwrap().unwrap();
        assert_eq!(n, msg.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(
            r.target,
            TargetAddr::Ip("93.184.216.34:80".parse().unwrap())
        );
        assert_eq!(r.user_id, b"bob");
    }

    #[test]
    fn socks4a_host() {
        let mut msg = vec![4, 2, 1, 187, 0, 0, 0, 1, 0];
        msg.extend_from_slice(b"example.org\0");
        for cut in 0..msg.len() {
            assert_eq!(parse_request(&msg[..cut]), Ok(None), "cut {cut}");
        }
        let (r, n) = parse_request(&msg).unwrap().unwrap();
        assert_eq!((r.command, n), (Command::Bind, msg.len()));
        assert_eq!(r.target, TargetAddr::Domain("example.org".into(), 443));
    }

    #[test]
    fn bad_requests() {
        assert_eq!(parse_request(&[5, 1]), Err(Socks4Error::Version(5)));
        assert_eq!(parse_request(&[4, 3]), Err(Socks4Error::Command(3)));
        let mut long = vec![4, 1, 0, 80, 1, 2, 3, 4];
        long.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(parse_request(&long), Err(Socks4Error::FieldTooLong));
        let bad_host = [4, 1, 0, 80, 0, 0, 0, 9, 0, b'a', b'/', 0];
        assert_eq!(parse_request(&bad_host), Err(Socks4Error::HostName));
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(Reply::Granted, "1.2.3.4:258".parse().unwrap()),
            [0, 0x5a, 1, 2, 1, 2, 3, 4]
        );
        assert_eq!(
            encode_reply(Reply::Rejected, "[::1]:0".parse().unwrap())[1],
            0x5b
        );
    }
}
