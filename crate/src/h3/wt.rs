//! WebTransport over HTTP/3 (draft-ietf-webtrans-http3) and the capsule
//! protocol (RFC 9297 §3): constants, the capsule reader and writer, and the
//! mapping of WebTransport application error codes into the HTTP/3 error
//! space. Pure functions only; the session state lives in `session.rs`.

use super::frame;

/// SETTINGS a WebTransport server advertises (identifiers from the drafts
/// each browser speaks; see `docs/webtransport.md`).
pub mod setting {
    /// draft-02 ENABLE_WEBTRANSPORT (Chromium, Firefox, aioquic).
    pub const ENABLE_WEBTRANSPORT: u64 = 0x2b60_3742;
    /// drafts 07–12 WEBTRANSPORT_MAX_SESSIONS.
    pub const MAX_SESSIONS_07: u64 = 0xc671_706a;
    /// drafts 13–14 WT_MAX_SESSIONS.
    pub const MAX_SESSIONS_13: u64 = 0x14e9_cd29;
    /// drafts 15+ WT_ENABLED.
    pub const WT_ENABLED: u64 = 0x2c7c_f000;
    /// The H3_DATAGRAM identifier of draft-ietf-masque-h3-datagram-05,
    /// which Chromium still sends and checks.
    pub const H3_DATAGRAM_DRAFT: u64 = 0xff_d277;
}

/// Capsule types understood here.
pub mod capsule {
    /// CLOSE_WEBTRANSPORT_SESSION: u32 code, then a UTF-8 reason.
    pub const CLOSE_SESSION: u64 = 0x2843;
    /// DRAIN_WEBTRANSPORT_SESSION: no payload.
    pub const DRAIN_SESSION: u64 = 0x78ae;
}

/// Error codes (draft-ietf-webtrans-http3 §9.5).
pub mod code {
    /// A stream arrived for a session that is gone.
    pub const SESSION_GONE: u64 = 0x170d_7b68;
    /// A stream could not be buffered while its session was pending.
    pub const BUFFERED_STREAM_REJECTED: u64 = 0x3994_bd84;
}

/// Longest reason a CLOSE_WEBTRANSPORT_SESSION may carry, in bytes.
pub const MAX_REASON: usize = 1024;
/// Largest capsule payload buffered (CLOSE with the longest reason fits).
const MAX_BUFFERED_CAPSULE: u64 = 4 + MAX_REASON as u64;

const FIRST_APP_CODE: u64 = 0x52e4_a40f_a8db;

/// Maps a WebTransport application error code into the HTTP/3 error space
/// (skipping the reserved GREASE code points).
pub fn app_to_h3(n: u32) -> u64 {
    let n = u64::from(n);
    FIRST_APP_CODE + n + n / 0x1e
}

/// The inverse of [`app_to_h3`]; `None` for codes outside the range or on a
/// GREASE code point.
pub fn h3_to_app(h: u64) -> Option<u32> {
    if !(FIRST_APP_CODE..=app_to_h3(u32::MAX)).contains(&h) || (h - 0x21).is_multiple_of(0x1f) {
        return None;
    }
    let shifted = h - FIRST_APP_CODE;
    u32::try_from(shifted - shifted / 0x1f).ok()
}

/// A capsule the session acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Capsule {
    /// CLOSE_WEBTRANSPORT_SESSION.
    Close {
        /// Application close code.
        code: u32,
        /// Reason (lossily decoded).
        reason: String,
    },
    /// DRAIN_WEBTRANSPORT_SESSION.
    Drain,
}

/// Incremental reader of a capsule sequence (the DATA payload of an
/// accepted WebTransport CONNECT stream). Unknown capsules are skipped
/// without being buffered; known ones are bounded by [`MAX_REASON`].
#[derive(Debug, Default)]
pub struct CapsuleReader {
    buf: Vec<u8>,
    skip: u64,
}

impl CapsuleReader {
    /// Feeds bytes; complete capsules are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Capsule>) -> Result<(), &'static str> {
        loop {
            if self.skip > 0 {
                let n = (self.skip as usize).min(data.len());
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip > 0 {
                    return Ok(());
                }
            }
            self.buf.extend_from_slice(data);
            data = &[];
            let Some((ty, len, hl)) = frame::get_frame_header(&self.buf) else {
                return Ok(());
            };
            let known = matches!(ty, capsule::CLOSE_SESSION | capsule::DRAIN_SESSION);
            if !known {
                let have = (self.buf.len() - hl) as u64;
                let drop = have.min(len) as usize;
                self.skip = len - drop as u64;
                let rest = self.buf.split_off(hl + drop);
                self.buf = Vec::new();
                if rest.is_empty() {
                    return Ok(());
                }
                self.buf = rest;
                continue;
            }
            if len > MAX_BUFFERED_CAPSULE {
                return Err("capsule too large");
            }
            if ((self.buf.len() - hl) as u64) < len {
                return Ok(());
            }
            let payload = &self.buf[hl..hl + len as usize];
            match ty {
                capsule::CLOSE_SESSION => {
                    if payload.len() < 4 {
                        return Err("CLOSE_WEBTRANSPORT_SESSION too short");
                    }
                    let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    let reason = String::from_utf8_lossy(&payload[4..]).into_owned();
                    out.push(Capsule::Close { code, reason });
                }
                _ => {
                    if len != 0 {
                        return Err("DRAIN_WEBTRANSPORT_SESSION with a payload");
                    }
                    out.push(Capsule::Drain);
                }
            }
            self.buf.drain(..hl + len as usize);
            if self.buf.is_empty() {
                return Ok(());
            }
        }
    }
}

/// A CLOSE_WEBTRANSPORT_SESSION capsule (reason cut to [`MAX_REASON`] bytes
/// on a character boundary).
pub fn close_capsule(code: u32, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut out = Vec::with_capacity(16 + reason.len());
    frame::put_varint(&mut out, capsule::CLOSE_SESSION);
    frame::put_varint(&mut out, 4 + reason.len() as u64);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// A DRAIN_WEBTRANSPORT_SESSION capsule.
pub fn drain_capsule() -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    frame::put_varint(&mut out, capsule::DRAIN_SESSION);
    frame::put_varint(&mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_mapping_round_trips_and_skips_grease() {
        for n in (0..100_000u32).chain([u32::MAX - 5, u32::MAX]) {
            let h = app_to_h3(n);
            assert_ne!((h - 0x21) % 0x1f, 0, "n={n} maps onto GREASE");
            assert_eq!(h3_to_app(h), Some(n));
        }
        assert_eq!(h3_to_app(0x100), None);
        assert_eq!(h3_to_app(app_to_h3(u32::MAX) + 1), None);
        // Every GREASE point inside the range is rejected.
        let grease = app_to_h3(29) + 1;
        assert_eq!((grease - 0x21) % 0x1f, 0);
        assert_eq!(h3_to_app(grease), None);
    }

    #[test]
    fn capsules_parse_across_splits_and_skip_unknown() {
        let mut wire = Vec::new();
        // An unknown capsule with a 3000-byte payload, then CLOSE, then DRAIN.
        frame::put_varint(&mut wire, 0x1234);
        frame::put_varint(&mut wire, 3000);
        wire.extend(std::iter::repeat_n(7u8, 3000));
        wire.extend(close_capsule(42, "bye"));
        wire.extend(drain_capsule());
        for step in [1, 2, 5, 64, wire.len()] {
            let mut r = CapsuleReader::default();
            let mut out = Vec::new();
            for part in wire.chunks(step) {
                r.push(part, &mut out).unwrap();
            }
            assert_eq!(
                out,
                vec![
                    Capsule::Close {
                        code: 42,
                        reason: "bye".into()
                    },
                    Capsule::Drain
                ],
                "step {step}"
            );
            assert!(r.buf.len() < 64);
        }
    }

    #[test]
    fn oversized_or_short_close_is_an_error() {
        let mut r = CapsuleReader::default();
        let mut wire = Vec::new();
        frame::put_varint(&mut wire, capsule::CLOSE_SESSION);
        frame::put_varint(&mut wire, 5000);
        assert!(r.push(&wire, &mut Vec::new()).is_err());
        let mut r = CapsuleReader::default();
        assert!(r
            .push(&[0x80, 0x00, 0x28, 0x43, 0x02, 0, 0], &mut Vec::new())
            .is_err());
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let long = "é".repeat(600); // 1200 bytes
        let c = close_capsule(1, &long);
        let mut out = Vec::new();
        CapsuleReader::default().push(&c, &mut out).unwrap();
        let Capsule::Close { reason, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(reason.len(), 1024);
    }
}
