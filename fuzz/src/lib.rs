//! The fuzz targets of h3node, as plain functions of `&[u8]`.
//!
//! Each `fuzz_targets/<name>.rs` binary hands libFuzzer's input to the
//! function of the same name here; `tests/corpus.rs` replays the seed
//! corpus and the saved regressions through the same functions under a
//! plain `cargo test`. Every function panics when an invariant breaks, so a
//! panic is a finding.

pub mod session;

// With the instrumentation flags every object calls the SanitizerCoverage
// hooks libFuzzer defines: the tests (`scripts/fuzz.sh replay`) link it too.
#[cfg(feature = "libfuzzer")]
extern crate libfuzzer_sys;

use h3node::h3::{frame, headers, wt};
use quiche::h3::Header;

pub use session::session;

/// A forgiving reader over the fuzz input: running out yields zeros and
/// empty slices, never an error, so every input means something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was taken.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 at the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes as a little-endian integer (missing bytes are 0).
    pub fn uint(&mut self, n: usize) -> u64 {
        (0..n).fold(0, |acc, i| acc | u64::from(self.byte()) << (8 * i))
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.byte() as usize;
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

const VARINT_MAX: u64 = (1 << 62) - 1;

/// Varints and frame headers (`frame.rs`).
///
/// Invariants: a parsed varint uses exactly the length its first byte
/// announces, and re-encodes (minimally) to the same value; every strict
/// prefix of an encoding is "need more"; put→get round-trips; a frame
/// header is two varints; GOAWAY's single varint must fill the payload.
pub fn frame(data: &[u8]) {
    // Parsing arbitrary bytes.
    match frame::get_varint(data) {
        Some((v, n)) => {
            assert_eq!(n, 1 << (data[0] >> 6), "varint length");
            assert!(v <= VARINT_MAX);
            let mut out = Vec::new();
            frame::put_varint(&mut out, v);
            assert!(out.len() <= n, "re-encoding is longer than the input");
            assert_eq!(frame::get_varint(&out), Some((v, out.len())));
        }
        None => assert!(data.is_empty() || data.len() < 1 << (data[0] >> 6)),
    }
    match frame::get_frame_header(data) {
        Some((ty, len, hl)) => {
            let (t, a) = frame::get_varint(data).unwrap();
            let (l, b) = frame::get_varint(&data[a..]).unwrap();
            assert_eq!((ty, len, hl), (t, l, a + b));
            let mut out = Vec::new();
            frame::put_frame_header(&mut out, ty, len);
            assert_eq!(
                frame::get_frame_header(&out),
                Some((ty, len, frame::varint_len(ty) + frame::varint_len(len)))
            );
        }
        None => {
            let whole = frame::get_varint(data)
                .and_then(|(_, a)| frame::get_varint(&data[a..]))
                .is_some();
            assert!(!whole, "two whole varints but no frame header");
        }
    }
    let single = frame::parse_single_varint(data);
    let expect = frame::get_varint(data).and_then(|(v, n)| (n == data.len()).then_some(v));
    assert_eq!(single, expect);

    // Encoding values taken from the input.
    let mut input = Input::new(data);
    while !input.is_empty() {
        let v = input.uint(8) & VARINT_MAX;
        let mut out = Vec::new();
        frame::put_varint(&mut out, v);
        assert_eq!(out.len(), frame::varint_len(v));
        assert_eq!(frame::get_varint(&out), Some((v, out.len())));
        for cut in 0..out.len() {
            assert_eq!(frame::get_varint(&out[..cut]), None, "prefix {cut} of {v}");
        }
        out.extend_from_slice(b"tail");
        assert_eq!(frame::get_varint(&out), Some((v, frame::varint_len(v))));
        let _ = frame::is_reserved_h2_frame(v);
        let _ = frame::setting::is_reserved_h2(v);
    }
}

/// SETTINGS payloads (`frame.rs`).
///
/// Invariants: what parses re-encodes with `settings_frame` and parses back
/// to the same pairs (the encoding is never longer than the input); a
/// payload cut inside its last pair does not parse; pairs taken from the
/// input round-trip through `settings_frame` → `parse_settings`.
pub fn settings(data: &[u8]) {
    if let Some(pairs) = frame::parse_settings(data) {
        let f = frame::settings_frame(&pairs);
        let (ty, len, hl) = frame::get_frame_header(&f).expect("frame header");
        assert_eq!(ty, frame::SETTINGS);
        assert_eq!(hl + len as usize, f.len());
        assert!(len as usize <= data.len());
        assert_eq!(frame::parse_settings(&f[hl..]).as_ref(), Some(&pairs));
        if let Some(last) = pairs.last() {
            // Cutting the last pair anywhere but at a pair boundary fails.
            let mut enc = Vec::new();
            frame::put_varint(&mut enc, last.0);
            frame::put_varint(&mut enc, last.1);
            let payload = &f[hl..];
            for cut in 1..enc.len() {
                assert!(frame::parse_settings(&payload[..payload.len() - cut]).is_none());
            }
        }
    }
    let mut input = Input::new(data);
    let mut pairs = Vec::new();
    while !input.is_empty() && pairs.len() < 64 {
        pairs.push((input.uint(8) & VARINT_MAX, input.uint(8) & VARINT_MAX));
    }
    let f = frame::settings_frame(&pairs);
    let (ty, len, hl) = frame::get_frame_header(&f).expect("frame header");
    assert_eq!((ty, hl + len as usize), (frame::SETTINGS, f.len()));
    assert_eq!(frame::parse_settings(&f[hl..]), Some(pairs));
}

/// The capsule reader and the WebTransport code mapping (`wt.rs`).
///
/// The first input byte picks a split pattern, the rest is the capsule
/// stream. Invariants: fed in one chunk or in pieces, the reader yields the
/// same capsules and the same error (no more input is fed after an error,
/// as the session resets the stream); a CLOSE capsule built by
/// `close_capsule` reads back; `h3_to_app` inverts `app_to_h3`.
pub fn capsule(data: &[u8]) {
    let mut input = Input::new(data);
    let pattern = input.byte();
    let wire = input.rest();

    let mut whole = Vec::new();
    let whole_res = wt::CapsuleReader::default().push(wire, &mut whole);

    let mut split = Vec::new();
    let mut r = wt::CapsuleReader::default();
    let mut split_res = Ok(());
    let mut rest = wire;
    let mut i = 0usize;
    while !rest.is_empty() {
        // Piece sizes cycle through a pattern derived from the first byte,
        // including empty pieces.
        let n = match pattern & 0x3 {
            0 => 1,
            1 => (usize::from(pattern >> 2) + i) % 7,
            2 => usize::from(wire[i % wire.len()]),
            _ => usize::from(pattern >> 2) + 1,
        }
        .min(rest.len());
        // Empty pieces are fed too, but never twice in a row.
        let n = if n == 0 && i % 2 == 1 { 1 } else { n };
        let (a, b) = rest.split_at(n);
        rest = b;
        i += 1;
        split_res = r.push(a, &mut split);
        if split_res.is_err() {
            break;
        }
    }
    if wire.is_empty() {
        split_res = r.push(&[], &mut split);
    }
    assert_eq!(whole, split, "capsules depend on how the bytes were split");
    assert_eq!(
        whole_res, split_res,
        "errors depend on how the bytes were split"
    );

    // close_capsule reads back.
    let code = u32::from_le_bytes([
        pattern,
        wire.first().copied().unwrap_or(0),
        wire.get(1).copied().unwrap_or(0),
        wire.get(2).copied().unwrap_or(0),
    ]);
    let reason = String::from_utf8_lossy(wire);
    let c = wt::close_capsule(code, &reason);
    let mut out = Vec::new();
    wt::CapsuleReader::default().push(&c, &mut out).unwrap();
    match out.as_slice() {
        [wt::Capsule::Close {
            code: c2,
            reason: r2,
        }] => {
            assert_eq!(*c2, code);
            assert!(r2.len() <= wt::MAX_REASON);
            assert!(reason.starts_with(r2.as_str()));
        }
        other => panic!("close_capsule read back as {other:?}"),
    }

    // Code mapping.
    for w in wire.chunks(8) {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        let h = u64::from_le_bytes(b) & VARINT_MAX;
        if let Some(n) = wt::h3_to_app(h) {
            assert_eq!(wt::app_to_h3(n), h);
        }
        let n = h as u32;
        let h = wt::app_to_h3(n);
        assert!(h <= VARINT_MAX);
        assert_eq!(wt::h3_to_app(h), Some(n));
        assert_ne!((h - 0x21) % 0x1f, 0, "{n} maps onto a GREASE code point");
    }
}

/// Names the header fuzzer (and the session target) pick by index.
pub const NAMES: &[&[u8]] = &[
    b":method",
    b":scheme",
    b":path",
    b":authority",
    b":protocol",
    b":status",
    b"content-length",
    b"host",
    b"te",
    b"connection",
    b"transfer-encoding",
    b"content-type",
    b"x-a",
    b":other",
    b"X-Upper",
    b"sec-webtransport-http3-draft02",
];

/// Values picked by index.
pub const VALUES: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"CONNECT",
    b"https",
    b"http",
    b"/",
    b"example",
    b"webtransport",
    b"connect-udp",
    b"trailers",
    b"0",
    b"5",
    b"5, 5",
    b"5,6",
    b"200",
    b"103",
    b"18446744073709551616",
    b"",
    b"1",
];

/// Reads a field list: per field, a name (a dictionary index when the
/// length byte has its top bit set, else that many raw bytes) and a value
/// (likewise).
pub fn read_fields(input: &mut Input<'_>, max: usize) -> Vec<Header> {
    let mut fields = Vec::new();
    while !input.is_empty() && fields.len() < max {
        let name = pick(input, NAMES);
        let value = pick(input, VALUES);
        fields.push(Header::new(name, value));
    }
    fields
}

fn pick<'a>(input: &mut Input<'a>, dict: &[&'a [u8]]) -> &'a [u8] {
    let b = input.byte();
    if b & 0x80 != 0 {
        dict[usize::from(b & 0x7f) % dict.len()]
    } else {
        input.take(usize::from(b))
    }
}

/// Every content-length value in `fields`, each comma-separated element
/// parsed on its own (`None` for one that is not a plain decimal u64).
fn content_lengths(fields: &[Header]) -> Vec<Option<u64>> {
    use quiche::h3::NameValue;
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.name() == b"content-length") {
        for part in f.value().split(|&b| b == b',') {
            // OWS is SP / HTAB (RFC 9110 §5.6.3), nothing else.
            let part = trim_ows(part);
            let ok = !part.is_empty() && part.iter().all(u8::is_ascii_digit);
            out.push(
                ok.then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                    .flatten(),
            );
        }
    }
    out
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Request, response and trailer validation (`headers.rs`).
///
/// Invariants checked against a second reading of the same fields: an
/// accepted section has its pseudo-headers first and only known ones, and
/// regular fields that pass the trailer rules; the content-length reported
/// is the one every content-length element agrees on; `:status` is three
/// digits; `to_js_string` keeps UTF-8 and maps other bytes one to one.
pub fn headers(data: &[u8]) {
    use quiche::h3::NameValue;
    let mut input = Input::new(data);
    let fields = read_fields(&mut input, 64);
    let regular: Vec<Header> = fields
        .iter()
        .filter(|f| !f.name().starts_with(b":"))
        .cloned()
        .collect();
    let pseudo_first = fields
        .iter()
        .skip_while(|f| f.name().starts_with(b":"))
        .all(|f| !f.name().starts_with(b":"));
    let lengths = content_lengths(&fields);
    let agreed = match lengths.first() {
        Some(&Some(n)) if lengths.iter().all(|&l| l == Some(n)) => Some(n),
        _ => None,
    };

    let trailers = headers::check_trailers(&fields);
    if trailers.is_ok() {
        assert!(
            regular.len() == fields.len(),
            "pseudo-header in accepted trailers"
        );
        for f in &fields {
            assert!(!f.name().is_empty());
            assert!(!f.name().iter().any(u8::is_ascii_uppercase));
            assert!(!f
                .value()
                .iter()
                .any(|&c| c == 0 || c == b'\r' || c == b'\n'));
        }
    }

    if let Ok(head) = headers::check_request(&fields) {
        assert!(pseudo_first);
        assert!(headers::check_trailers(&regular).is_ok());
        assert!(!head.method.is_empty());
        let method = fields.iter().find(|f| f.name() == b":method").unwrap();
        assert_eq!(head.method.as_bytes(), method.value());
        assert_eq!(head.content_length, agreed);
        if lengths.is_empty() {
            assert_eq!(head.content_length, None);
        } else {
            assert!(agreed.is_some());
        }
        for f in fields.iter().filter(|f| f.name().starts_with(b":")) {
            assert!(matches!(
                f.name(),
                b":method" | b":scheme" | b":path" | b":authority" | b":protocol"
            ));
        }
        if head.protocol.is_some() {
            assert_eq!(head.method, "CONNECT");
        }
    }

    if let Ok((status, cl)) = headers::check_response(&fields) {
        assert!(pseudo_first);
        assert!(headers::check_trailers(&regular).is_ok());
        assert!(status <= 999);
        let s = fields.iter().find(|f| f.name() == b":status").unwrap();
        assert_eq!(s.value(), format!("{status:03}").as_bytes());
        assert_eq!(cl, agreed);
        if !lengths.is_empty() {
            assert!(agreed.is_some());
        }
    }

    for f in &fields {
        for b in [f.name(), f.value()] {
            let s = headers::to_js_string(b);
            match std::str::from_utf8(b) {
                Ok(u) => assert_eq!(s, u),
                Err(_) => assert!(s
                    .chars()
                    .map(|c| c as u32)
                    .eq(b.iter().map(|&c| u32::from(c)))),
            }
        }
    }
}

/// QPACK field section decoding (`h3/section.rs`) against quiche's decoder,
/// read as the session used to read it (a non-zero first byte fails; a
/// section that only fails the size limit is `H3_EXCESSIVE_LOAD`). The input
/// is the HEADERS payload itself; the first byte picks the size limit. Both
/// decoders accept the same sections, with the same fields in the same
/// order, and fail the same ones.
pub fn section(data: &[u8]) {
    use h3node::h3::error::H3Code;
    use h3node::h3::section;
    use quiche::h3::{qpack, NameValue};
    let Some((&pick, block)) = data.split_first() else {
        return;
    };
    let max = if pick & 0x80 == 0 {
        u64::MAX
    } else {
        u64::from(pick & 0x7f) * 16
    };
    let reference = || -> Result<Vec<(Vec<u8>, Vec<u8>)>, H3Code> {
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
    };
    let ours = section::decode(block, max).map(|s| {
        s.fields()
            .iter()
            .map(|f| (f.name().to_vec(), f.value().to_vec()))
            .collect::<Vec<_>>()
    });
    let want = reference();
    // The one intended difference: a prefixed integer past 2^62 fails here;
    // quiche reads it with its high bits shifted out. Such an integer takes
    // at least nine continuation bytes, eight of them with the top bit set.
    let long_int = block.windows(8).any(|w| w.iter().all(|&b| b & 0x80 != 0));
    if long_int && ours == Err(H3Code::QpackDecompressionFailed) {
        return;
    }
    assert_eq!(ours, want, "block {block:02x?}, limit {max}");
    // What JS receives: the parts, each as `to_js_string` reads it. Only
    // for sections without NUL, which the checks of `headers.rs` refuse
    // before a section goes to JS.
    if let Ok(s) = section::decode(block, max) {
        let want: Vec<String> = s
            .fields()
            .iter()
            .flat_map(|f| [f.name().to_vec(), f.value().to_vec()])
            .map(|b| h3node::h3::headers::to_js_string(&b))
            .collect();
        if !want.iter().any(|p| p.contains('\0')) {
            let joined = s.into_fields();
            assert_eq!(joined.parts(), want);
        }
    }
}
