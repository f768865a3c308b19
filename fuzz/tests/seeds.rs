//! Writes the hand-made seed corpus under `corpus/<target>/`. Run after
//! changing the input formats:
//! `cargo test --manifest-path fuzz/Cargo.toml --test seeds -- --ignored`.

use std::path::Path;

use h3node::h3::{frame, wt};

fn save(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_varint(&mut out, v);
    out
}

fn frame_bytes(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_frame_header(&mut out, ty, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// Field-list bytes (see `read_fields`): dictionary indices of
/// `h3node_fuzz::NAMES` / `VALUES`, top bit set.
fn dict(pairs: &[(&str, &str)]) -> Vec<u8> {
    let idx = |d: &[&[u8]], s: &str| {
        0x80 | d
            .iter()
            .position(|x| *x == s.as_bytes())
            .unwrap_or_else(|| panic!("{s}")) as u8
    };
    pairs
        .iter()
        .flat_map(|(n, v)| [idx(h3node_fuzz::NAMES, n), idx(h3node_fuzz::VALUES, v)])
        .collect()
}

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "example"),
    (":path", "/"),
];
const POST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "example"),
    (":path", "/"),
    ("content-length", "5"),
    ("content-type", "1"),
    ("x-a", "1"),
    ("x-a", "0"),
];
const CONNECT_WT: &[(&str, &str)] = &[
    (":method", "CONNECT"),
    (":protocol", "webtransport"),
    (":scheme", "https"),
    (":authority", "example"),
    (":path", "/"),
    ("x-a", "1"),
    ("x-a", "0"),
    ("x-a", "5"),
];

/// Session op: raw bytes on the stream `stream_of(sel)` picks.
fn op_write(sel: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0, sel, bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

/// Session op: HEADERS on request stream 4*(sel%12); fields are a
/// multiple of 8 bytes.
fn op_headers(sel: u8, fields: &[(&str, &str)]) -> Vec<u8> {
    let f = dict(fields);
    assert_eq!(f.len() % 8, 0);
    let mut v = vec![2, sel, (f.len() / 8) as u8];
    v.extend(f);
    v
}

fn op_data(sel: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![3, sel & 0xbf, bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

fn settings_payload() -> Vec<u8> {
    let f = frame::settings_frame(&[
        (frame::setting::QPACK_MAX_TABLE_CAPACITY, 0),
        (frame::setting::MAX_FIELD_SECTION_SIZE, 16384),
        (frame::setting::QPACK_BLOCKED_STREAMS, 0),
        (frame::setting::H3_DATAGRAM, 1),
        (wt::setting::ENABLE_WEBTRANSPORT, 1),
        (wt::setting::MAX_SESSIONS_07, 16),
    ]);
    f
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    // frame
    save("frame", "varint-1", &[0x25]);
    save("frame", "varint-2", &[0x7b, 0xbd]);
    save("frame", "varint-4", &[0x9d, 0x7f, 0x3e, 0x7d]);
    save(
        "frame",
        "varint-8",
        &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
    );
    save("frame", "headers-header", &[0x01, 0x40, 0x80]);
    save("frame", "goaway", &[0x07, 0x01, 0x04]);

    // settings
    let s = settings_payload();
    let (_, _, hl) = frame::get_frame_header(&s).unwrap();
    save("settings", "server", &s[hl..]);
    save("settings", "truncated", &s[hl..s.len() - 1]);
    save("settings", "empty", &[]);

    // capsule: first byte = split pattern.
    let mut c = vec![0x05];
    c.extend(wt::close_capsule(42, "bye"));
    c.extend(wt::drain_capsule());
    save("capsule", "close-drain", &c);
    let mut c = vec![0x02];
    c.extend(varint(0x1234));
    c.extend(varint(40));
    c.extend([7u8; 40]);
    c.extend(wt::close_capsule(7, "é"));
    save("capsule", "unknown-then-close", &c);
    let mut c = vec![0x00];
    c.extend(varint(wt::capsule::CLOSE_SESSION));
    c.extend(varint(2));
    c.extend([0, 0]);
    save("capsule", "short-close", &c);

    // headers
    save("headers", "get", &dict(GET));
    save("headers", "post", &dict(POST));
    save("headers", "connect-wt", &dict(CONNECT_WT));
    save(
        "headers",
        "response",
        &dict(&[(":status", "200"), ("content-length", "5, 5")]),
    );
    save(
        "headers",
        "trailers",
        &dict(&[("te", "trailers"), ("x-a", "1")]),
    );
    let mut raw = vec![7];
    raw.extend_from_slice(b":method");
    raw.push(3);
    raw.extend_from_slice(b"GET");
    save("headers", "raw-bytes", &raw);

    // session: options byte, then ops.
    let settings = settings_payload();
    let mut get = vec![0u8];
    get.extend(op_write(0, &settings)); // control stream (2) + SETTINGS
    get.extend(op_headers(0x80, GET)); // GET on stream 0 with FIN
    get.extend([6, 0, 0]); // app: 200 ... (what=0: no fin)
    get.extend([6, 0x88, 0, 3, b'a', b'b', b'c']); // app: write "abc" + fin (0x88 % 9 == 1)
    save("session", "get", &get);

    let mut post = vec![0u8];
    post.extend(op_write(0, &settings));
    post.extend(op_headers(1, POST)); // stream 4
    post.extend(op_data(0x80 | 11, b"hello")); // stream_of(11) = 4, fin
    post.extend([6, 2, 0, 0xff, 0xff]); // grant
    post.extend([6, 0x87, 0]); // 200 + fin (0x87 % 9 == 0)
    save("session", "post", &post);

    let mut w = vec![0u8];
    w.extend(op_write(0, &settings));
    w.extend(op_headers(0, CONNECT_WT)); // session on stream 0
    w.extend([6, 0, 0]); // accept: 200
    let mut uni = varint(0x54);
    uni.extend(varint(0));
    uni.extend_from_slice(b"uni data");
    w.extend(op_write(3 | 0x80, &uni)); // stream 14, fin
    let mut bidi = varint(0x41);
    bidi.extend(varint(0));
    bidi.extend_from_slice(b"bidi data");
    w.extend(op_write(11, &bidi)); // stream 4
    w.extend([5, 3, 0, b'h', b'i']); // datagram on quarter id 0
    w.extend([6, 0x85, 0, 2, b'o', b'k']); // app opens a bidi WT stream (0x85 % 9 == 7)
    let mut caps = wt::drain_capsule();
    caps.extend(wt::close_capsule(5, "done"));
    w.extend(op_data(0x80 | 10, &caps)); // capsules on stream 0, fin
    save("session", "webtransport", &w);

    let mut q = vec![0u8];
    q.extend(op_write(0, &settings));
    q.extend(op_write(1, &[0x20])); // encoder: Set Dynamic Table Capacity 0
    q.extend(op_write(2, &[0x00])); // decoder: Insert Count Increment 0
    q.extend(op_write(4, &[0x21, 0x01, 0x02])); // grease uni type
    q.extend(op_write(0, &frame_bytes(frame::GOAWAY, &varint(0))));
    q.extend(op_write(0, &frame_bytes(frame::MAX_PUSH_ID, &varint(8))));
    save("session", "qpack-goaway", &q);

    let mut r = vec![0xc0u8]; // raw QUIC
    r.extend(op_write(10, b"hello"));
    r.extend([6, 1, 0, 3, b'y', b'o', b'u']);
    r.extend([4, 0x80 | 10, 5]);
    save("session", "raw", &r);
}

/// `section`: a limit byte (top bit clear: no limit), then a HEADERS payload.
#[test]
#[ignore]
fn section_seeds() {
    use quiche::h3::{qpack, Header};
    let encode = |limit: u8, fields: &[Header]| {
        let mut out = vec![0; 4096];
        let n = qpack::Encoder::new().encode(fields, &mut out).unwrap();
        let mut v = vec![limit];
        v.extend_from_slice(&out[..n]);
        v
    };
    let get = [
        Header::new(b":method", b"GET"),
        Header::new(b":scheme", b"https"),
        Header::new(b":authority", b"example.com"),
        Header::new(b":path", b"/index.html?q=1"),
        Header::new(b"user-agent", b"h3node-fuzz"),
        Header::new(b"accept", b"*/*"),
    ];
    save("section", "get", &encode(0, &get));
    save("section", "get-limited", &encode(0x84, &get));
    let response = [
        Header::new(b":status", b"200"),
        Header::new(b"content-type", b"text/plain;charset=utf-8"),
        Header::new(b"x-custom-field", b"caf\xc3\xa9 \xff"),
    ];
    save("section", "response", &encode(0, &response));
    save("section", "empty", &[0, 0, 0]);
    save("section", "dynamic-ref", &[0, 0, 0, 0x80]);
    save("section", "insert-count", &[0, 1, 0, 0xd1]);
}
