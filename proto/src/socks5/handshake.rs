//! The server side of a SOCKS5 handshake as a state machine: greeting → method choice →
//! (RFC 1929 credentials → status) → request → reply. It owns no socket and makes no
//! decision: it says what arrived, the caller decides (which method, whether the credentials
//! hold, what the request gets) and sends the bytes it is handed. The same machine serves a
//! plain TCP client, one inside TLS, and the control connection of a UDP association.

use std::net::SocketAddr;

use super::{
    encode_reply, method_selection, parse_greeting, parse_request, parse_user_pass,
    user_pass_status, Command, Credentials, Greeting, Reply, Request, Socks5Error, METHOD_NO_AUTH,
    METHOD_USER_PASS,
};

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The client's methods: answer with [`Handshake::choose_method`].
    Greeting(Greeting),
    /// RFC 1929 credentials: answer with [`Handshake::credentials_checked`].
    Credentials(Credentials),
    /// The request: answer with [`Handshake::reply`].
    Request(Request),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    ChoosingMethod,
    Credentials,
    CheckingCredentials,
    Request,
    Replying,
    /// BIND: the first reply (the listening address) went out; the second names the peer.
    BindListening,
    Done,
    Failed,
}

/// The caller answered out of turn: a bug in the driver, not the client's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SOCKS5 handshake step out of order (in state {0})")]
pub struct OutOfOrder(&'static str);

#[derive(Debug)]
pub struct Handshake {
    state: State,
    command: Option<Command>,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            state: State::Greeting,
            command: None,
        }
    }
}

impl Handshake {
    fn out_of_order(&self) -> OutOfOrder {
        OutOfOrder(match self.state {
            State::Greeting => "greeting",
            State::ChoosingMethod => "choosing method",
            State::Credentials => "credentials",
            State::CheckingCredentials => "checking credentials",
            State::Request => "request",
            State::Replying => "replying",
            State::BindListening => "BIND listening",
            State::Done => "done",
            State::Failed => "failed",
        })
    }

    /// Parses the next client message from `buf`: `Ok(None)` when more bytes are needed,
    /// else the step and the bytes it used. Bytes after a request belong to the tunnel.
    /// A message arriving while an answer is owed is the client's error (it may not
    /// pipeline past a decision).
    pub fn receive(&mut self, buf: &[u8]) -> Result<Option<(Step, usize)>, Socks5Error> {
        let parsed = match self.state {
            State::Greeting => parse_greeting(buf)?.map(|(g, n)| (Step::Greeting(g), n)),
            State::Credentials => parse_user_pass(buf)?.map(|(c, n)| (Step::Credentials(c), n)),
            State::Request => parse_request(buf)?.map(|(r, n)| (Step::Request(r), n)),
            _ => return Err(Socks5Error::Unexpected),
        };
        if let Some((step, _)) = &parsed {
            self.state = match step {
                Step::Greeting(_) => State::ChoosingMethod,
                Step::Credentials(_) => State::CheckingCredentials,
                Step::Request(r) => {
                    self.command = Some(r.command);
                    State::Replying
                }
            };
        }
        Ok(parsed)
    }

    /// The method chosen for the greeting; returns the bytes to send. Any method other than
    /// no-auth or username/password (e.g. 0xff, none acceptable) ends the handshake.
    pub fn choose_method(&mut self, method: u8) -> Result<[u8; 2], OutOfOrder> {
        if self.state != State::ChoosingMethod {
            return Err(self.out_of_order());
        }
        self.state = match method {
            METHOD_NO_AUTH => State::Request,
            METHOD_USER_PASS => State::Credentials,
            _ => State::Failed,
        };
        Ok(method_selection(method))
    }

    /// Whether the credentials held; returns the status bytes to send. A failure ends the
    /// handshake (RFC 1929: the server closes).
    pub fn credentials_checked(&mut self, ok: bool) -> Result<[u8; 2], OutOfOrder> {
        if self.state != State::CheckingCredentials {
            return Err(self.out_of_order());
        }
        self.state = if ok { State::Request } else { State::Failed };
        Ok(user_pass_status(ok))
    }

    /// The reply to the request; returns the bytes to send. Success leaves the connection
    /// to the tunnel; anything else ends it. BIND succeeds with two replies (RFC 1928 §4):
    /// the listening address, then the address of the host that connected.
    pub fn reply(&mut self, reply: Reply, bound: SocketAddr) -> Result<Vec<u8>, OutOfOrder> {
        let first_of_bind = self.command == Some(Command::Bind) && self.state == State::Replying;
        self.state = match (self.state, reply) {
            (State::Replying | State::BindListening, r) if r != Reply::Succeeded => State::Failed,
            (State::Replying, _) if first_of_bind => State::BindListening,
            (State::Replying | State::BindListening, _) => State::Done,
            _ => return Err(self.out_of_order()),
        };
        Ok(encode_reply(reply, bound))
    }

    /// The reply for a request that could not be parsed (the client's error), where the
    /// protocol has one: a SOCKS5 reply is only defined once a request was being read.
    pub fn reject(&mut self, e: &Socks5Error) -> Option<Vec<u8>> {
        let owed = self.state == State::Request;
        self.state = State::Failed;
        owed.then(|| encode_reply(e.reply(), super::UNSPECIFIED))
    }

    /// The tunnel may start: the success reply was handed out.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::METHOD_NONE_ACCEPTABLE;
    use crate::TargetAddr;

    const BOUND: &str = "10.0.0.1:1080";

    #[test]
    fn password_handshake_step_by_step() {
        let mut hs = Handshake::default();
        assert_eq!(hs.receive(&[5, 2]), Ok(None));
        let (step, n) = hs.receive(&[5, 2, 0, 2]).unwrap().unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            step,
            Step::Greeting(Greeting {
                no_auth: true,
                user_pass: true
            })
        );
        // No answer yet: a pipelined message is refused.
        assert_eq!(hs.receive(&[1]), Err(Socks5Error::Unexpected));
        assert_eq!(hs.choose_method(METHOD_USER_PASS), Ok([5, 2]));
        let creds = [1, 1, b'u', 2, b'p', b'w'];
        let (step, n) = hs.receive(&creds).unwrap().unwrap();
        assert_eq!(n, creds.len());
        assert!(matches!(step, Step::Credentials(c) if c.user == b"u" && c.password == b"pw"));
        assert_eq!(hs.credentials_checked(true), Ok([1, 0]));
        let req = [5, 1, 0, 3, 1, b'h', 0, 80, b'x'];
        let (step, n) = hs.receive(&req).unwrap().unwrap();
        assert_eq!(n, req.len() - 1, "the early tunnel byte is left");
        let Step::Request(r) = step else {
            panic!("{step:?}")
        };
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, TargetAddr::Domain("h".into(), 80));
        assert!(!hs.is_done());
        let reply = hs.reply(Reply::Succeeded, BOUND.parse().unwrap()).unwrap();
        assert_eq!(reply[..4], [5, 0, 0, 1]);
        assert!(hs.is_done());
        assert!(hs.reply(Reply::Succeeded, BOUND.parse().unwrap()).is_err());
    }

    #[test]
    fn bind_succeeds_with_two_replies() {
        let mut hs = Handshake::default();
        hs.receive(&[5, 1, 0]).unwrap();
        hs.choose_method(METHOD_NO_AUTH).unwrap();
        hs.receive(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 21])
            .unwrap()
            .unwrap();
        hs.reply(Reply::Succeeded, BOUND.parse().unwrap()).unwrap();
        assert!(!hs.is_done(), "still waiting for the inbound connection");
        hs.reply(Reply::Succeeded, "1.2.3.4:20".parse().unwrap())
            .unwrap();
        assert!(hs.is_done());
    }

    #[test]
    fn refusals_end_the_handshake() {
        let mut hs = Handshake::default();
        hs.receive(&[5, 1, 0]).unwrap();
        assert_eq!(hs.choose_method(METHOD_NONE_ACCEPTABLE), Ok([5, 0xff]));
        assert_eq!(hs.receive(&[5, 1, 0, 1]), Err(Socks5Error::Unexpected));

        let mut hs = Handshake::default();
        hs.receive(&[5, 1, 2]).unwrap();
        hs.choose_method(METHOD_USER_PASS).unwrap();
        hs.receive(&[1, 1, b'u', 0]).unwrap();
        assert_eq!(hs.credentials_checked(false), Ok([1, 1]));
        assert!(hs.receive(&[5, 1, 0, 1, 1, 2, 3, 4, 0, 80]).is_err());

        let mut hs = Handshake::default();
        hs.receive(&[5, 1, 0]).unwrap();
        hs.choose_method(METHOD_NO_AUTH).unwrap();
        let e = hs.receive(&[5, 9, 0, 1, 1, 2, 3, 4, 0, 80]).unwrap_err();
        assert_eq!(hs.reject(&e).unwrap()[1], Reply::CommandNotSupported as u8);
        // Out-of-turn answers are the driver's bug, reported as such.
        let mut hs = Handshake::default();
        assert!(hs.credentials_checked(true).is_err());
        assert!(hs.choose_method(METHOD_NO_AUTH).is_err());
        // Before the request, a bad greeting has no SOCKS5 reply.
        let mut hs = Handshake::default();
        let e = hs.receive(&[4, 1, 0]).unwrap_err();
        assert_eq!(hs.reject(&e), None);
    }
}
