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

#[cfg(test)]
mod tests {
    use super::*;

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
