//! HTTP/3 frame and stream-type constants (RFC 9114 §7, §6.2) and the
//! variable-length integer helpers every parser in this module shares.

/// DATA frame (RFC 9114 §7.2.1).
pub const DATA: u64 = 0x0;
/// HEADERS frame (RFC 9114 §7.2.2).
pub const HEADERS: u64 = 0x1;
/// CANCEL_PUSH frame (RFC 9114 §7.2.3).
pub const CANCEL_PUSH: u64 = 0x3;
/// SETTINGS frame (RFC 9114 §7.2.4).
pub const SETTINGS: u64 = 0x4;
/// PUSH_PROMISE frame (RFC 9114 §7.2.5).
pub const PUSH_PROMISE: u64 = 0x5;
/// GOAWAY frame (RFC 9114 §7.2.6).
pub const GOAWAY: u64 = 0x7;
/// MAX_PUSH_ID frame (RFC 9114 §7.2.7).
pub const MAX_PUSH_ID: u64 = 0xd;
/// WebTransport bidirectional stream signal (draft-ietf-webtrans-http3).
pub const WEBTRANSPORT_STREAM: u64 = 0x41;

/// Frame types reserved because they were HTTP/2 frames (RFC 9114 §7.2.8);
/// receiving one is a connection error of type H3_FRAME_UNEXPECTED.
pub fn is_reserved_h2_frame(ty: u64) -> bool {
    matches!(ty, 0x2 | 0x6 | 0x8 | 0x9)
}

/// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2).
pub mod stream_type {
    /// Control stream.
    pub const CONTROL: u64 = 0x00;
    /// Push stream (server to client only).
    pub const PUSH: u64 = 0x01;
    /// QPACK encoder stream.
    pub const QPACK_ENCODER: u64 = 0x02;
    /// QPACK decoder stream.
    pub const QPACK_DECODER: u64 = 0x03;
    /// WebTransport unidirectional stream (draft-ietf-webtrans-http3).
    pub const WEBTRANSPORT: u64 = 0x54;
}

/// SETTINGS identifiers.
pub mod setting {
    /// QPACK_MAX_TABLE_CAPACITY (RFC 9204).
    pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x1;
    /// SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114).
    pub const MAX_FIELD_SECTION_SIZE: u64 = 0x6;
    /// QPACK_BLOCKED_STREAMS (RFC 9204).
    pub const QPACK_BLOCKED_STREAMS: u64 = 0x7;
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 9220).
    pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x8;
    /// SETTINGS_H3_DATAGRAM (RFC 9297).
    pub const H3_DATAGRAM: u64 = 0x33;

    /// Identifiers that were HTTP/2 settings; receiving one is
    /// H3_SETTINGS_ERROR (RFC 9114 §7.2.4.1).
    pub fn is_reserved_h2(id: u64) -> bool {
        matches!(id, 0x0 | 0x2 | 0x3 | 0x4 | 0x5)
    }
}

/// Number of bytes the varint encoding of `v` takes.
pub fn varint_len(v: u64) -> usize {
    octets::varint_len(v)
}

/// Appends the QUIC varint encoding of `v` to `out`.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let len = varint_len(v);
    let start = out.len();
    out.resize(start + len, 0);
    let mut b = octets::OctetsMut::with_slice(&mut out[start..]);
    b.put_varint_with_len(v, len).expect("sized above");
}

/// Reads one varint from the front of `buf`: `Some((value, bytes_used))`, or
/// `None` when `buf` does not hold the whole integer yet.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = octets::varint_parse_len(first);
    if buf.len() < len {
        return None;
    }
    let mut b = octets::Octets::with_slice(&buf[..len]);
    b.get_varint().ok().map(|v| (v, len))
}

/// Parses a frame header (type, length) from the front of `buf`:
/// `Some((type, length, header_bytes))` or `None` if more bytes are needed.
pub fn get_frame_header(buf: &[u8]) -> Option<(u64, u64, usize)> {
    let (ty, a) = get_varint(buf)?;
    let (len, b) = get_varint(&buf[a..])?;
    Some((ty, len, a + b))
}

/// Appends a frame header for a frame of type `ty` with `len` payload bytes.
pub fn put_frame_header(out: &mut Vec<u8>, ty: u64, len: u64) {
    put_varint(out, ty);
    put_varint(out, len);
}

/// Encodes a SETTINGS frame holding `pairs`.
pub fn settings_frame(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for &(id, value) in pairs {
        put_varint(&mut payload, id);
        put_varint(&mut payload, value);
    }
    let mut out = Vec::with_capacity(payload.len() + 4);
    put_frame_header(&mut out, SETTINGS, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

/// Parses a SETTINGS payload into (identifier, value) pairs; `None` when it
/// is malformed (a truncated varint), which is H3_FRAME_ERROR.
pub fn parse_settings(mut payload: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let (id, a) = get_varint(payload)?;
        let (value, b) = get_varint(&payload[a..])?;
        out.push((id, value));
        payload = &payload[a + b..];
    }
    Some(out)
}

/// Parses a GOAWAY payload: exactly one varint.
pub fn parse_single_varint(payload: &[u8]) -> Option<u64> {
    match get_varint(payload) {
        Some((v, n)) if n == payload.len() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_at_every_length() {
        for v in [
            0u64,
            63,
            64,
            16383,
            16384,
            1 << 29,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(get_varint(&out), Some((v, out.len())));
            // Every strict prefix is "need more".
            for cut in 0..out.len() {
                assert_eq!(get_varint(&out[..cut]), None);
            }
        }
    }

    #[test]
    fn settings_round_trip_and_truncation() {
        let f = settings_frame(&[(setting::MAX_FIELD_SECTION_SIZE, 16384), (0x33, 1)]);
        let (ty, len, hl) = get_frame_header(&f).unwrap();
        assert_eq!(ty, SETTINGS);
        let payload = &f[hl..hl + len as usize];
        assert_eq!(
            parse_settings(payload).unwrap(),
            vec![(6, 16384), (0x33, 1)]
        );
        assert!(parse_settings(&payload[..payload.len() - 1]).is_none());
    }
}
