//! HTTP Datagrams (RFC 9297 §2) and their UDP payloads (RFC 9298 §5).
//!
//! In a QUIC DATAGRAM frame an HTTP datagram starts with its request stream's Quarter Stream
//! ID (the stream ID divided by four, RFC 9297 §2.1); in a DATAGRAM capsule it does not (the
//! stream carries it). Either way its payload, for CONNECT-UDP, is a Context ID and the data:
//! context 0 is a whole UDP payload, other contexts belong to extensions the proxy did not
//! negotiate and are dropped (RFC 9298 §4).

use crate::varint;

/// The context carrying UDP payloads (RFC 9298 §4).
pub const UDP_CONTEXT: u64 = 0;

/// Splits a QUIC DATAGRAM frame's payload into the request stream it belongs to and the HTTP
/// datagram payload. `None`: too short to name a stream, or a stream ID past the QUIC limit
/// (RFC 9297 §2.1 makes that a connection error, H3_DATAGRAM_ERROR).
pub fn from_quic(frame: &[u8]) -> Option<(u64, &[u8])> {
    let (quarter, n) = varint::decode(frame)?;
    let stream = quarter.checked_mul(4).filter(|s| *s <= varint::MAX)?;
    Some((stream, &frame[n..]))
}

/// Appends the QUIC DATAGRAM frame payload for `stream_id` (a client-initiated
/// bidirectional stream, so a multiple of four) carrying `payload`.
pub fn to_quic(stream_id: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint::encode(stream_id / 4, out);
    out.extend_from_slice(payload);
}

/// The UDP payload an HTTP datagram payload carries, or `None` for another context (or a
/// payload too short to name one), which the proxy drops.
pub fn udp_payload(payload: &[u8]) -> Option<&[u8]> {
    match varint::decode(payload)? {
        (UDP_CONTEXT, n) => Some(&payload[n..]),
        _ => None,
    }
}

/// Appends an HTTP datagram payload carrying the UDP payload `data` (context 0).
pub fn encode_udp(data: &[u8], out: &mut Vec<u8>) {
    varint::encode(UDP_CONTEXT, out);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_datagrams_name_their_stream() {
        let mut frame = Vec::new();
        let mut payload = Vec::new();
        encode_udp(b"ping", &mut payload);
        to_quic(4 * 70, &payload, &mut frame);
        assert_eq!(frame[..2], [0x40, 70]);
        let (stream, inner) = from_quic(&frame).unwrap();
        assert_eq!(stream, 280);
        assert_eq!(udp_payload(inner), Some(&b"ping"[..]));
        assert_eq!(from_quic(&[]), None);
        assert_eq!(from_quic(&[0x40]), None);
        // A quarter stream ID whose stream ID would pass 2^62 - 1.
        let mut big = Vec::new();
        varint::encode(varint::MAX / 4 + 1, &mut big);
        assert_eq!(from_quic(&big), None);
    }

    #[test]
    fn other_contexts_are_not_udp_payloads() {
        assert_eq!(udp_payload(&[0x00]), Some(&b""[..]));
        assert_eq!(udp_payload(&[0x02, 1, 2]), None);
        assert_eq!(udp_payload(&[0x40, 0x00, 9]), Some(&[9u8][..]));
        assert_eq!(udp_payload(&[]), None);
    }
}
