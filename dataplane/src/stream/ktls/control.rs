//! Records kernel TLS does not deliver as data: after the hand-over the kernel decrypts
//! every record but passes alerts and handshake messages up with their type (recvmsg's
//! `TLS_GET_RECORD_TYPE`), and splice(2) refuses them (EINVAL). What each one means for
//! the stream is decided here, without IO.

/// TLS content types (RFC 8446 §5.1).
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// A close_notify alert, as sent (warning level, description 0).
pub const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// A TLS 1.3 KeyUpdate handshake message (RFC 8446 §4.6.3) asking for none in return.
pub const KEY_UPDATE_NOT_REQUESTED: [u8; 5] = [24, 0, 0, 1, 0];

/// What a received record is.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    Data,
    /// The peer closed its side cleanly.
    CloseNotify,
    /// Any other alert: the session is over.
    Alert(u8),
    /// The peer moved to new sending keys (and may ask us to do the same).
    KeyUpdate {
        requested: bool,
    },
    /// Something a client may not send once the handshake is over (or a message the kernel
    /// cut short).
    Unexpected,
}

pub fn classify(content_type: u8, body: &[u8]) -> Record {
    match (content_type, body) {
        (APPLICATION_DATA, _) => Record::Data,
        (ALERT, [_, 0]) => Record::CloseNotify,
        (ALERT, [_, description]) => Record::Alert(*description),
        // Type 24, length 1, request_update 0 or 1.
        (HANDSHAKE, [24, 0, 0, 1, requested @ (0 | 1)]) => Record::KeyUpdate {
            requested: *requested == 1,
        },
        _ => Record::Unexpected,
    }
}

/// A control record of ours waiting to go out before any more data.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub content_type: u8,
    pub body: Vec<u8>,
    /// Sending keys move on once it is out (it is a KeyUpdate).
    pub rekey: bool,
}

/// Our control records in the order they must leave: a KeyUpdate (an answer to the peer's
/// request, or our own at the key's limit) and a close_notify can both be pending; neither
/// may be lost to the other, and nothing follows a close_notify.
#[derive(Debug, Default)]
pub struct Outbox(std::collections::VecDeque<Outgoing>);

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Queues a KeyUpdate unless one is already waiting (one answers any number of
    /// requests) or the session is closing.
    pub fn key_update(&mut self) {
        if !self.0.iter().any(|o| o.rekey || o.content_type == ALERT) {
            self.0.push_back(Outgoing {
                content_type: HANDSHAKE,
                body: KEY_UPDATE_NOT_REQUESTED.to_vec(),
                rekey: true,
            });
        }
    }

    pub fn key_update_pending(&self) -> bool {
        self.0.iter().any(|o| o.rekey)
    }

    /// Queues a close_notify after whatever is waiting.
    pub fn close_notify(&mut self) {
        if !self.0.iter().any(|o| o.content_type == ALERT) {
            self.0.push_back(Outgoing {
                content_type: ALERT,
                body: CLOSE_NOTIFY.to_vec(),
                rekey: false,
            });
        }
    }

    /// The record to send next.
    pub fn front_mut(&mut self) -> Option<&mut Outgoing> {
        self.0.front_mut()
    }

    /// The front record is out.
    pub fn pop(&mut self) -> Option<Outgoing> {
        self.0.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_key_update_keeps_a_close_notify_and_a_close_keeps_the_update() {
        let mut out = Outbox::default();
        out.key_update();
        out.key_update();
        out.close_notify();
        // A request that arrives while the close is queued: nothing follows a close.
        out.key_update();
        out.close_notify();
        let kinds: Vec<(u8, bool)> = std::iter::from_fn(|| out.pop())
            .map(|o| (o.content_type, o.rekey))
            .collect();
        assert_eq!(kinds, [(HANDSHAKE, true), (ALERT, false)]);

        // A requested update while another control record is on its way is still answered.
        let mut out = Outbox::default();
        out.key_update();
        let first = out.pop().unwrap();
        assert!(first.rekey);
        out.key_update();
        assert!(
            out.key_update_pending(),
            "the second request is answered too"
        );
    }

    #[test]
    fn records_are_told_apart() {
        assert_eq!(classify(APPLICATION_DATA, b"GET"), Record::Data);
        assert_eq!(classify(ALERT, &CLOSE_NOTIFY), Record::CloseNotify);
        assert_eq!(classify(ALERT, &[2, 40]), Record::Alert(40));
        assert_eq!(
            classify(HANDSHAKE, &KEY_UPDATE_NOT_REQUESTED),
            Record::KeyUpdate { requested: false }
        );
        assert_eq!(
            classify(HANDSHAKE, &[24, 0, 0, 1, 1]),
            Record::KeyUpdate { requested: true }
        );
        // A bad request_update value, a cut message, another handshake type, a truncated
        // alert, a content type that is none of these.
        for (t, body) in [
            (HANDSHAKE, &[24, 0, 0, 1, 2][..]),
            (HANDSHAKE, &[24, 0, 0, 1][..]),
            (HANDSHAKE, &[4, 0, 0, 1, 0][..]),
            (ALERT, &[2][..]),
            (20, &[1][..]),
        ] {
            assert_eq!(classify(t, body), Record::Unexpected, "{t} {body:?}");
        }
    }
}
