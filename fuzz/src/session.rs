//! The session target: an HTTP/3 server `Session` on an in-memory pair of
//! quiche connections (the approach of `crate/src/h3/tests.rs`). The client
//! has no session of its own: it is a raw QUIC peer whose every byte comes
//! from the fuzz input, on the control stream, the QPACK streams, other
//! unidirectional streams, request streams and datagrams. The server side
//! plays a well-behaved JS application: it answers, writes, grants credit,
//! resets and opens WebTransport streams on the requests it was told about.
//!
//! Input: one byte of options (limits), then operations until the input
//! ends. After each operation packets move both ways and the server takes a
//! turn, as the driver does. A connection error ends the run (the driver
//! closes the connection).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use boring::pkey::PKey;
use boring::ssl::{SslContextBuilder, SslMethod};
use boring::x509::X509;
use h3node::bridge::EventKind;
use h3node::h3::frame;
use h3node::h3::session::{first_local_ids, Limits, QConn, Role, Session};
use h3node::tls::generate_dev_cert;
use quiche::Shutdown;
use tokio_quiche::buf_factory::BufFactory;

use crate::{read_fields, Input};

thread_local! {
    /// quiche configurations are reusable across connections: the TLS
    /// context (and its certificate) is made once per process.
    static CONFIGS: RefCell<Option<(quiche::Config, quiche::Config)>> = const { RefCell::new(None) };
}

fn config(server: bool) -> quiche::Config {
    let mut cfg = if server {
        // The project's development certificate, loaded the way
        // `tls::Identity` does (its context builder is crate-private).
        let cert = generate_dev_cert(1, &[]).unwrap();
        let mut b = SslContextBuilder::new(SslMethod::tls()).unwrap();
        b.set_certificate(&X509::from_pem(cert.cert_pem.as_bytes()).unwrap())
            .unwrap();
        b.set_private_key(&PKey::private_key_from_pem(cert.key_pem.as_bytes()).unwrap())
            .unwrap();
        quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, b).unwrap()
    } else {
        let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
        c.verify_peer(false);
        c
    };
    cfg.set_application_protos(&[b"h3"]).unwrap();
    cfg.set_initial_max_data(10_000_000);
    cfg.set_initial_max_stream_data_bidi_local(1_000_000);
    cfg.set_initial_max_stream_data_bidi_remote(1_000_000);
    cfg.set_initial_max_stream_data_uni(1_000_000);
    cfg.set_initial_max_streams_bidi(100);
    cfg.set_initial_max_streams_uni(10);
    cfg.enable_dgram(true, 100, 100);
    cfg
}

/// Client unidirectional streams: 2, 6 and 10 get a stream-type prefix on
/// their first write (control, QPACK encoder, QPACK decoder); the rest are
/// written as the input says.
const UNI: [u64; 10] = [2, 6, 10, 14, 18, 22, 26, 30, 34, 38];
const UNI_PREFIX: [Option<u8>; 3] = [Some(0x00), Some(0x02), Some(0x03)];
/// Client bidirectional (request) streams used.
const BIDI: u64 = 12;

struct Pipe {
    client: QConn,
    server: QConn,
    s: Session,
    buf: Vec<u8>,
    /// Client streams already written to (their prefix was sent).
    opened: HashSet<u64>,
    /// Request streams the server was told about (a Headers event), in order.
    requests: Vec<u64>,
    /// Per stream: a Data event with FIN was seen.
    data_fin: HashSet<u64>,
    /// Per stream: header sections seen (Headers, Trailers).
    sections: HashMap<u64, u32>,
    /// Next server-initiated stream ids (bidi, uni) for open_stream.
    next_local: (u64, u64),
    /// Raw QUIC mode: streams come as StreamOpen events, not requests.
    raw: bool,
    failed: bool,
}

impl Pipe {
    fn new(limits: Limits) -> Option<Self> {
        let (ca, sa): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let (client, server) = CONFIGS.with(|c| {
            let mut c = c.borrow_mut();
            let (cc, sc) = c.get_or_insert_with(|| (config(false), config(true)));
            let client = quiche::connect_with_buffer_factory::<BufFactory>(
                None,
                &quiche::ConnectionId::from_ref(&[1; 16]),
                ca,
                sa,
                cc,
            )
            .unwrap();
            let server = quiche::accept_with_buf_factory::<BufFactory>(
                &quiche::ConnectionId::from_ref(&[2; 16]),
                None,
                sa,
                ca,
                sc,
            )
            .unwrap();
            (client, server)
        });
        let raw = limits.raw;
        let mut p = Pipe {
            client,
            server,
            s: Session::new(Role::Server, 1, limits),
            buf: vec![0; 65535],
            opened: HashSet::new(),
            requests: Vec::new(),
            data_fin: HashSet::new(),
            sections: HashMap::new(),
            next_local: first_local_ids(Role::Server, raw),
            raw,
            failed: false,
        };
        p.advance();
        assert!(p.client.is_established() && p.server.is_established());
        if p.s.start(&mut p.server).is_err() {
            return None;
        }
        p.turn();
        Some(p)
    }

    /// Moves packets both ways until neither side has anything to send;
    /// the client throws away what it receives on streams.
    fn advance(&mut self) {
        loop {
            let mut moved = false;
            for to_server in [true, false] {
                let (from, to) = if to_server {
                    (&mut self.client, &mut self.server)
                } else {
                    (&mut self.server, &mut self.client)
                };
                while let Ok((n, info)) = from.send(&mut self.buf) {
                    let _ = to.recv(
                        &mut self.buf[..n],
                        quiche::RecvInfo {
                            from: info.from,
                            to: info.to,
                        },
                    );
                    moved = true;
                }
            }
            let readable: Vec<u64> = self.client.readable().collect();
            for id in readable {
                while let Ok((n, fin)) = self.client.stream_recv(id, &mut self.buf) {
                    if fin || n == 0 {
                        break;
                    }
                    moved = true;
                }
            }
            while self.client.dgram_recv(&mut self.buf).is_ok() {}
            if !moved {
                break;
            }
        }
    }

    /// One server turn, as the driver runs it: reads, stopped streams,
    /// flush, then packets move.
    fn turn(&mut self) {
        if self.failed {
            return;
        }
        let r = self.s.process_reads(&mut self.server);
        self.s.poll_stopped(&mut self.server);
        self.s.flush(&mut self.server);
        self.check_events();
        if let Err(e) = r {
            let _ = self.server.close(true, e.code.code(), e.reason.as_bytes());
            self.failed = true;
        }
        self.advance();
    }

    /// Invariants on the events the server hands to JS.
    fn check_events(&mut self) {
        for ev in std::mem::take(&mut self.s.events) {
            let id = ev.stream;
            match ev.kind {
                k if k == EventKind::Headers as u32 => {
                    assert_eq!(id % 4, 0, "request headers on a non-request stream {id}");
                    let n = self.sections.entry(id).or_default();
                    assert_eq!(*n, 0, "second Headers event on stream {id}");
                    *n += 1;
                    assert!(
                        !self.data_fin.contains(&id),
                        "Headers after the end of stream {id}"
                    );
                    assert!(ev
                        .headers
                        .as_ref()
                        .is_some_and(|h| h.parts().len() % 2 == 0));
                    self.requests.push(id);
                }
                k if k == EventKind::Trailers as u32 => {
                    assert_eq!(id % 4, 0, "trailers on a non-request stream {id}");
                    let n = self.sections.entry(id).or_default();
                    assert_eq!(
                        *n, 1,
                        "Trailers on stream {id} without exactly one head before"
                    );
                    *n += 1;
                }
                k if k == EventKind::StreamOpen as u32 && self.raw => {
                    self.requests.push(id);
                }
                k if k == EventKind::Data as u32 => {
                    assert!(
                        !self.data_fin.contains(&id),
                        "Data after the end of stream {id}"
                    );
                    if ev.fin {
                        self.data_fin.insert(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// Writes on a client stream; the first write on 2, 6 or 10 carries
    /// its stream type.
    fn write(&mut self, stream: u64, bytes: &[u8], fin: bool) {
        let mut out = Vec::with_capacity(bytes.len() + 1);
        if self.opened.insert(stream) {
            if let Some(i) = UNI.iter().position(|&u| u == stream) {
                if let Some(Some(t)) = UNI_PREFIX.get(i) {
                    out.push(*t);
                }
            }
        }
        out.extend_from_slice(bytes);
        let _ = self.client.stream_send(stream, &out, fin);
    }

    fn request(&self, sel: u8) -> Option<u64> {
        if self.requests.is_empty() {
            return None;
        }
        Some(self.requests[usize::from(sel) % self.requests.len()])
    }
}

/// A stream the client writes on: a unidirectional one, a request stream,
/// or a stream the server opened (server-initiated bidi, ids 1, 5, ...).
fn stream_of(sel: u8) -> u64 {
    let k = u64::from(sel & 0x3f) % (UNI.len() as u64 + BIDI + 4);
    if k < UNI.len() as u64 {
        UNI[k as usize]
    } else if k < UNI.len() as u64 + BIDI {
        4 * (k - UNI.len() as u64)
    } else {
        1 + 4 * (k - UNI.len() as u64 - BIDI)
    }
}

fn limits(opts: u8) -> Limits {
    let mut l = Limits {
        webtransport: opts & 1 == 0,
        datagrams: opts & 2 == 0,
        enable_connect_protocol: opts & 4 == 0,
        raw: opts & 0x80 != 0 && opts & 0x40 != 0,
        ..Limits::default()
    };
    if opts & 8 != 0 {
        l.max_field_section_size = 200;
        l.max_header_count = 6;
        l.stream_read_window = 16;
        l.max_wt_sessions = 1;
        l.max_buffered_streams = 1;
    }
    l
}

fn headers_frame(fields: &[quiche::h3::Header]) -> Vec<u8> {
    use quiche::h3::NameValue;
    let size: usize = fields
        .iter()
        .map(|f| f.name().len() + f.value().len() + 16)
        .sum();
    let mut block = vec![0; 2 * size + 64];
    let n = quiche::h3::qpack::Encoder::new()
        .encode(fields, &mut block)
        .expect("buffer sized for the block");
    let mut out = Vec::with_capacity(n + 16);
    frame::put_frame_header(&mut out, frame::HEADERS, n as u64);
    out.extend_from_slice(&block[..n]);
    out
}

/// The session fuzz target (see the module docs).
pub fn session(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(mut p) = Pipe::new(limits(input.byte())) else {
        return;
    };
    let mut ops = 0;
    while !input.is_empty() && !p.failed && ops < 64 {
        ops += 1;
        let op = input.byte();
        match op % 8 {
            // Raw bytes on a stream.
            0 | 1 => {
                let sel = input.byte();
                let bytes = input.chunk();
                p.write(stream_of(sel), bytes, sel & 0x80 != 0);
            }
            // A HEADERS frame (static-table QPACK) on a request stream.
            2 => {
                let sel = input.byte();
                let n = usize::from(input.byte() % 16);
                let mut sub = Input::new(input.take(n * 8));
                let fields = read_fields(&mut sub, 16);
                let f = headers_frame(&fields);
                p.write(4 * (u64::from(sel & 0x7f) % BIDI), &f, sel & 0x80 != 0);
            }
            // A DATA frame on a request stream (length may lie).
            3 => {
                let sel = input.byte();
                let bytes = input.chunk();
                let mut f = Vec::new();
                let len = if sel & 0x40 != 0 {
                    u64::from(input.byte())
                } else {
                    bytes.len() as u64
                };
                frame::put_frame_header(&mut f, frame::DATA, len);
                f.extend_from_slice(bytes);
                p.write(stream_of(sel), &f, sel & 0x80 != 0);
            }
            // The client resets a stream or stops the server's sending.
            4 => {
                let sel = input.byte();
                let code = input.uint(input_code_len(sel));
                let how = if sel & 0x80 != 0 {
                    Shutdown::Read
                } else {
                    Shutdown::Write
                };
                let _ = p
                    .client
                    .stream_shutdown(stream_of(sel), how, code & ((1 << 62) - 1));
            }
            // A datagram (quarter stream id varint, then payload).
            5 => {
                let bytes = input.chunk();
                let _ = p.client.dgram_send(bytes);
            }
            // The server application acts on a request it saw.
            6 | 7 => {
                let what = input.byte();
                let sel = input.byte();
                app(&mut p, what, sel, &mut input);
            }
            _ => unreachable!(),
        }
        p.advance();
        p.turn();
    }
    // The driver keeps turning while packets flow: one more turn, then
    // shutdown paths (GOAWAY) on a live connection.
    p.turn();
    if !p.failed {
        p.s.goaway();
        p.turn();
    }
}

fn input_code_len(sel: u8) -> usize {
    // Codes: 1 byte (small H3 codes) or 8 (WebTransport range).
    if sel & 0x40 != 0 {
        8
    } else {
        1
    }
}

/// A well-behaved application command on a request the server reported.
fn app(p: &mut Pipe, what: u8, sel: u8, input: &mut Input<'_>) {
    let Some(stream) = p.request(sel) else {
        return;
    };
    // Raw QUIC streams carry bytes only: no header sections, sessions or
    // HTTP datagrams.
    let what = if p.raw && matches!(what % 9, 0 | 5 | 6) {
        what - what % 9 + 1
    } else {
        what
    };
    match what % 9 {
        0 => {
            let status = ["200", "204", "404", "103", "500"][usize::from(sel) % 5];
            let fields = vec![":status".to_string(), status.to_string()];
            p.s.send_headers(&mut p.server, stream, &fields, what & 0x80 != 0);
        }
        1 => {
            let bytes = input.chunk().to_vec();
            p.s.write(stream, bytes, what & 0x80 != 0);
        }
        2 => {
            let n = input.uint(2);
            p.s.grant(stream, n);
        }
        3 => p.s.reset(&mut p.server, stream, input.uint(1)),
        4 => p.s.stop_sending(&mut p.server, stream, input.uint(1)),
        5 => {
            let code = input.uint(4) as u32;
            let reason = String::from_utf8_lossy(input.chunk()).into_owned();
            p.s.close_session(&mut p.server, stream, code, &reason);
        }
        6 => {
            let data = input.chunk().to_vec();
            p.s.send_datagram(&mut p.server, stream, data);
        }
        7 => {
            // A server-initiated stream, in a WebTransport session or not.
            let bidi = what & 0x80 != 0;
            let id = if bidi {
                &mut p.next_local.0
            } else {
                &mut p.next_local.1
            };
            let this = *id;
            *id += 4;
            // Outside raw QUIC, the application only opens streams in a
            // WebTransport session.
            let session = (!p.raw).then_some(stream);
            p.s.open_stream(&mut p.server, this, session);
            let bytes = input.chunk().to_vec();
            p.s.write(this, bytes, what & 0x20 != 0);
        }
        _ => p.s.goaway(),
    }
}
