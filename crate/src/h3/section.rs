//! Decoding a received QPACK field section (RFC 9204 §4.5) straight into
//! the form JS takes it in: names and values joined with NUL in one buffer.
//!
//! We advertise a dynamic table capacity of 0, so a valid section refers to
//! the static table only; any reference to the dynamic table, and a
//! Required Insert Count other than 0, is `QPACK_DECOMPRESSION_FAILED`.
//! Decoding this way costs one buffer per section (and one per
//! Huffman-coded string) where quiche's decoder allocates a name and a value
//! per field line. `tests.rs` checks it against quiche's decoder.

use quiche::h3::HeaderRef;

use super::error::H3Code;
use crate::bridge::Fields;

/// Bytes a field adds to a section's size beyond its name and value
/// (RFC 9114 §4.2.2).
const FIELD_OVERHEAD: u64 = 32;

/// A decoded field section: names and values in order, each followed by a
/// NUL except the last.
#[derive(Debug, Default)]
pub struct Section {
    buf: Vec<u8>,
    /// `[start, end)` of each name and value in `buf`, alternating.
    spans: Vec<(u32, u32)>,
}

impl Section {
    /// The fields, borrowed (for the checks of `headers.rs`).
    pub fn fields(&self) -> Vec<HeaderRef<'_>> {
        self.spans
            .chunks_exact(2)
            .map(|p| HeaderRef::new(self.part(p[0]), self.part(p[1])))
            .collect()
    }

    fn part(&self, (start, end): (u32, u32)) -> &[u8] {
        &self.buf[start as usize..end as usize]
    }

    /// The section as JS takes it. Valid UTF-8 is kept; a name or value
    /// that is not is read byte per character (as `to_js_string` does). The
    /// checks of `headers.rs` refuse NUL in names and values, so the
    /// separators stay unambiguous.
    pub fn into_fields(self) -> Fields {
        match String::from_utf8(self.buf) {
            Ok(joined) => Fields::from_joined(joined),
            Err(e) => {
                let buf = e.into_bytes();
                let mut out = String::with_capacity(buf.len() * 2);
                for (i, &(start, end)) in self.spans.iter().enumerate() {
                    if i > 0 {
                        out.push('\0');
                    }
                    super::headers::push_js_str(&mut out, &buf[start as usize..end as usize]);
                }
                Fields::from_joined(out)
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if !self.spans.is_empty() {
            self.buf.push(0);
        }
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        self.spans.push((start, self.buf.len() as u32));
    }
}

/// Why a section could not be decoded.
fn failed<T>() -> Result<T, H3Code> {
    Err(H3Code::QpackDecompressionFailed)
}

/// Decodes `block`, a HEADERS frame's payload. A section whose size
/// (RFC 9114 §4.2.2) exceeds `max_size` is `H3_EXCESSIVE_LOAD` (when it is
/// otherwise well-formed); a malformed one is `QPACK_DECOMPRESSION_FAILED`.
pub fn decode(block: &[u8], max_size: u64) -> Result<Section, H3Code> {
    let mut r = Reader { b: block, at: 0 };
    // Required Insert Count: our table holds nothing, so it must be 0.
    if r.int(8)? != 0 {
        return failed();
    }
    // Delta Base (with its sign bit): meaningless without a dynamic table.
    r.int(7)?;
    let mut out = Section {
        // A static-table reference (one or two bytes) stands for up to
        // about 40 bytes of name and value; with `* 2` the buffer grew once
        // per request.
        buf: Vec::with_capacity(block.len() * 4 + 64),
        spans: Vec::with_capacity(16),
    };
    let mut size: u64 = 0;
    let mut too_large = false;
    while !r.done() {
        let first = r.peek()?;
        let (name, value): (Str, Str) = if first & 0x80 != 0 {
            // Indexed field line; T (0x40) set means the static table.
            if first & 0x40 == 0 {
                return failed();
            }
            let (n, v) = static_entry(r.int(6)?)?;
            (Str::Static(n), Str::Static(v))
        } else if first & 0x40 != 0 {
            // Literal field line with name reference; T is 0x10.
            if first & 0x10 == 0 {
                return failed();
            }
            let (n, _) = static_entry(r.int(4)?)?;
            (Str::Static(n), r.string(7)?)
        } else if first & 0x20 != 0 {
            // Literal field line with literal name; H of the name is 0x08.
            (r.string(3)?, r.string(7)?)
        } else {
            // Post-base references: the dynamic table.
            return failed();
        };
        let (name, value) = (name.bytes(), value.bytes());
        size = size.saturating_add(name.len() as u64 + value.len() as u64 + FIELD_OVERHEAD);
        if size > max_size {
            // Keep reading: a malformed rest is still a decoding failure.
            too_large = true;
            continue;
        }
        out.push(name);
        out.push(value);
    }
    if too_large {
        return Err(H3Code::ExcessiveLoad);
    }
    Ok(out)
}

/// A string of a field line: from the static table, the block, or decoded
/// from Huffman code.
enum Str<'a> {
    Static(&'static [u8]),
    Raw(&'a [u8]),
    Decoded(Vec<u8>),
}

impl Str<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Str::Static(b) => b,
            Str::Raw(b) => b,
            Str::Decoded(v) => v,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.b.len()
    }

    fn peek(&self) -> Result<u8, H3Code> {
        self.b
            .get(self.at)
            .copied()
            .ok_or(H3Code::QpackDecompressionFailed)
    }

    fn byte(&mut self) -> Result<u8, H3Code> {
        let v = self.peek()?;
        self.at += 1;
        Ok(v)
    }

    /// A prefixed integer (RFC 7541 §5.1) whose prefix is the low `bits`
    /// bits of the current byte. Values past 2^62 are refused.
    fn int(&mut self, bits: u32) -> Result<u64, H3Code> {
        let mask = ((1u16 << bits) - 1) as u8;
        let mut v = u64::from(self.byte()? & mask);
        if v < u64::from(mask) {
            return Ok(v);
        }
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift > 56 {
                return failed();
            }
            v += u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        if v > (1 << 62) {
            return failed();
        }
        Ok(v)
    }

    /// A string literal whose length has a `bits`-bit prefix; the Huffman
    /// flag is the bit above the prefix.
    fn string(&mut self, bits: u32) -> Result<Str<'a>, H3Code> {
        let huffman = self.peek()? & (1 << bits) != 0;
        let len = self.int(bits)?;
        let end = self
            .at
            .checked_add(usize::try_from(len).map_err(|_| H3Code::QpackDecompressionFailed)?)
            .filter(|&e| e <= self.b.len())
            .ok_or(H3Code::QpackDecompressionFailed)?;
        let raw = &self.b[self.at..end];
        self.at = end;
        if !huffman {
            return Ok(Str::Raw(raw));
        }
        octets::Octets::with_slice(raw)
            .get_huffman_decoded()
            .map(Str::Decoded)
            .map_err(|_| H3Code::QpackDecompressionFailed)
    }
}

fn static_entry(i: u64) -> Result<(&'static [u8], &'static [u8]), H3Code> {
    usize::try_from(i)
        .ok()
        .and_then(|i| STATIC.get(i))
        .copied()
        .ok_or(H3Code::QpackDecompressionFailed)
}

/// The QPACK static table (RFC 9204 Appendix A).
pub(super) const STATIC: [(&[u8], &[u8]); 99] = [
    (b":authority", b""),
    (b":path", b"/"),
    (b"age", b"0"),
    (b"content-disposition", b""),
    (b"content-length", b"0"),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"referer", b""),
    (b"set-cookie", b""),
    (b":method", b"CONNECT"),
    (b":method", b"DELETE"),
    (b":method", b"GET"),
    (b":method", b"HEAD"),
    (b":method", b"OPTIONS"),
    (b":method", b"POST"),
    (b":method", b"PUT"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"103"),
    (b":status", b"200"),
    (b":status", b"304"),
    (b":status", b"404"),
    (b":status", b"503"),
    (b"accept", b"*/*"),
    (b"accept", b"application/dns-message"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"accept-ranges", b"bytes"),
    (b"access-control-allow-headers", b"cache-control"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-allow-origin", b"*"),
    (b"cache-control", b"max-age=0"),
    (b"cache-control", b"max-age=2592000"),
    (b"cache-control", b"max-age=604800"),
    (b"cache-control", b"no-cache"),
    (b"cache-control", b"no-store"),
    (b"cache-control", b"public, max-age=31536000"),
    (b"content-encoding", b"br"),
    (b"content-encoding", b"gzip"),
    (b"content-type", b"application/dns-message"),
    (b"content-type", b"application/javascript"),
    (b"content-type", b"application/json"),
    (b"content-type", b"application/x-www-form-urlencoded"),
    (b"content-type", b"image/gif"),
    (b"content-type", b"image/jpeg"),
    (b"content-type", b"image/png"),
    (b"content-type", b"text/css"),
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-type", b"text/plain"),
    (b"content-type", b"text/plain;charset=utf-8"),
    (b"range", b"bytes=0-"),
    (b"strict-transport-security", b"max-age=31536000"),
    (
        b"strict-transport-security",
        b"max-age=31536000; includesubdomains",
    ),
    (
        b"strict-transport-security",
        b"max-age=31536000; includesubdomains; preload",
    ),
    (b"vary", b"accept-encoding"),
    (b"vary", b"origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-xss-protection", b"1; mode=block"),
    (b":status", b"100"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"302"),
    (b":status", b"400"),
    (b":status", b"403"),
    (b":status", b"421"),
    (b":status", b"425"),
    (b":status", b"500"),
    (b"accept-language", b""),
    (b"access-control-allow-credentials", b"FALSE"),
    (b"access-control-allow-credentials", b"TRUE"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-allow-methods", b"get"),
    (b"access-control-allow-methods", b"get, post, options"),
    (b"access-control-allow-methods", b"options"),
    (b"access-control-expose-headers", b"content-length"),
    (b"access-control-request-headers", b"content-type"),
    (b"access-control-request-method", b"get"),
    (b"access-control-request-method", b"post"),
    (b"alt-svc", b"clear"),
    (b"authorization", b""),
    (
        b"content-security-policy",
        b"script-src 'none'; object-src 'none'; base-uri 'none'",
    ),
    (b"early-data", b"1"),
    (b"expect-ct", b""),
    (b"forwarded", b""),
    (b"if-range", b""),
    (b"origin", b""),
    (b"purpose", b"prefetch"),
    (b"server", b""),
    (b"timing-allow-origin", b"*"),
    (b"upgrade-insecure-requests", b"1"),
    (b"user-agent", b""),
    (b"x-forwarded-for", b""),
    (b"x-frame-options", b"deny"),
    (b"x-frame-options", b"sameorigin"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use quiche::h3::{qpack, Header, NameValue};

    /// quiche's decoder, read the way the session read it before this
    /// module: a failure that passes without the size limit is
    /// `H3_EXCESSIVE_LOAD`.
    type Decoded = Result<Vec<(Vec<u8>, Vec<u8>)>, H3Code>;

    fn reference(block: &[u8], max: u64) -> Decoded {
        if block.first().is_some_and(|&b| b != 0) {
            return Err(H3Code::QpackDecompressionFailed);
        }
        let mut d = qpack::Decoder::new();
        match d.decode(block, max) {
            Ok(h) => Ok(h
                .iter()
                .map(|f| (f.name().to_vec(), f.value().to_vec()))
                .collect()),
            Err(qpack::Error::HeaderListTooLarge) => match d.decode(block, u64::MAX) {
                Ok(_) => Err(H3Code::ExcessiveLoad),
                Err(_) => Err(H3Code::QpackDecompressionFailed),
            },
            Err(_) => Err(H3Code::QpackDecompressionFailed),
        }
    }

    fn ours(block: &[u8], max: u64) -> Decoded {
        decode(block, max).map(|s| {
            s.fields()
                .iter()
                .map(|f| (f.name().to_vec(), f.value().to_vec()))
                .collect()
        })
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// `min` plus fewer than `extra` bytes from `alphabet`.
        fn bytes(&mut self, min: usize, extra: u64, alphabet: &[u8]) -> Vec<u8> {
            let len = min + self.below(extra) as usize;
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
                .collect()
        }
    }

    fn random_fields(r: &mut Rng) -> Vec<Header> {
        let text: Vec<u8> = (0x20..0x7f).collect();
        let any: Vec<u8> = (0..=255).collect();
        (0..r.below(20))
            .map(|_| {
                let (name, value) = match r.below(4) {
                    // A static entry, whole or with another value.
                    0 | 1 => {
                        let (n, v) = STATIC[r.below(99) as usize];
                        let v = if r.below(2) == 0 {
                            v.to_vec()
                        } else {
                            r.bytes(0, 40, &text)
                        };
                        (n.to_vec(), v)
                    }
                    2 => (
                        r.bytes(1, 30, b"abcdefghijklmnopqrstuvwxyz-_0123456789"),
                        r.bytes(0, 300, &text),
                    ),
                    _ => (r.bytes(1, 10, &any), r.bytes(0, 50, &any)),
                };
                Header::new(&name, &value)
            })
            .collect()
    }

    fn encode(fields: &[Header]) -> Vec<u8> {
        let size: usize = fields
            .iter()
            .map(|f| f.name().len() + f.value().len() + 16)
            .sum();
        let mut out = vec![0; size + 64];
        let n = qpack::Encoder::new().encode(fields, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn the_static_table_is_the_one_quiche_decodes() {
        let mut d = qpack::Decoder::new();
        for (i, (name, value)) in STATIC.iter().enumerate() {
            let line = if i < 63 {
                vec![0xc0 | i as u8]
            } else {
                vec![0xff, i as u8 - 63]
            };
            let block = [&[0u8, 0][..], &line].concat();
            let h = d.decode(&block, u64::MAX).unwrap();
            assert_eq!((h[0].name(), h[0].value()), (*name, *value), "entry {i}");
        }
    }

    #[test]
    fn sections_quiche_encodes_decode_as_quiche_decodes_them() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..3000 {
            let fields = random_fields(&mut r);
            let block = encode(&fields);
            let max = if round % 3 == 0 {
                r.below(2000)
            } else {
                u64::MAX
            };
            let want = reference(&block, max);
            assert_eq!(
                ours(&block, max),
                want,
                "round {round}: {block:02x?} max {max}"
            );
            if max == u64::MAX {
                let got = want.unwrap();
                // The encoder lowercases names.
                let expect: Vec<_> = fields
                    .iter()
                    .map(|f| (f.name().to_ascii_lowercase(), f.value().to_vec()))
                    .collect();
                assert_eq!(got, expect, "round {round}");
            }
        }
    }

    #[test]
    fn damaged_and_random_sections_fail_as_quiche_fails_them() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let any: Vec<u8> = (0..=255).collect();
        for round in 0..20000 {
            let mut block = if round % 2 == 0 {
                encode(&random_fields(&mut r))
            } else {
                let mut b = vec![0, 0];
                b.extend(r.bytes(0, 40, &any));
                b
            };
            // Flip, cut or extend.
            match r.below(3) {
                0 if block.len() > 2 => {
                    let i = 2 + r.below(block.len() as u64 - 2) as usize;
                    block[i] ^= 1 << r.below(8);
                }
                1 => block.truncate(r.below(block.len() as u64 + 1) as usize),
                _ => block.extend(r.bytes(0, 4, &any)),
            }
            assert_eq!(
                ours(&block, 4096),
                reference(&block, 4096),
                "round {round}: {block:02x?}"
            );
        }
    }

    #[test]
    fn dynamic_table_references_and_a_nonzero_insert_count_fail() {
        for block in [
            &[0x01, 0x00][..],         // Required Insert Count 1
            &[0x00, 0x00, 0x80],       // indexed, dynamic
            &[0x00, 0x00, 0x10],       // indexed, post-base
            &[0x00, 0x00, 0x40, 0x00], // literal, dynamic name
            &[0x00, 0x00, 0x00, 0x00], // literal, post-base name
            &[0x00, 0x00, 0xff, 0x24], // static index 99
            &[0x00],                   // no Delta Base
        ] {
            assert_eq!(
                decode(block, u64::MAX).unwrap_err(),
                H3Code::QpackDecompressionFailed,
                "{block:02x?}"
            );
        }
    }

    #[test]
    fn a_section_is_handed_to_js_joined_and_other_bytes_read_as_latin1() {
        let block = encode(&[
            Header::new(b":status", b"200"),
            Header::new(b"x", b"caf\xc3\xa9"),
        ]);
        assert_eq!(
            decode(&block, u64::MAX)
                .unwrap()
                .into_fields()
                .into_joined(),
            ":status\x00200\x00x\x00café"
        );
        let block = encode(&[Header::new(b"x", b"\xff"), Header::new(b"y", b"\xc3\xa9")]);
        assert_eq!(
            decode(&block, u64::MAX)
                .unwrap()
                .into_fields()
                .into_joined(),
            "x\x00\u{ff}\x00y\x00é"
        );
    }
}
