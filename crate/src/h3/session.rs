//! The HTTP/3 session of one connection, sans-IO: it is handed the
//! `quiche::Connection` on every turn of the connection's I/O worker, reads
//! the streams that are readable, writes what JS asked for within QUIC's
//! flow control, and records events for JS.
//!
//! Backpressure, both ways:
//! - Received body bytes are read from QUIC only while JS holds fewer than
//!   `stream_read_window` undelivered bytes of that stream; past that the
//!   stream stays unread, quiche stops extending the peer's flow-control
//!   window, and the peer stops sending.
//! - Body bytes from JS wait in a per-stream queue only until QUIC accepts
//!   them; JS learns how many were accepted (`Sent` events) and keeps its own
//!   outstanding bytes under a high-water mark.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiche::h3::qpack;
use quiche::h3::{HeaderRef, NameValue};
use quiche::Shutdown;

use super::error::{ConnError, ConnResult, H3Code};
use super::frame::{self, setting, stream_type};
use super::headers;
use super::section::{self, Section};
use super::wt::{self, Capsule, CapsuleReader};
use crate::bridge::{DgramStats, Event, EventKind};

/// The quiche connection type tokio-quiche hands to applications.
pub type QConn = tokio_quiche::quic::QuicheConnection;

/// Maps keyed by stream id, hashed by [`IdHasher`].
type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hashes a stream id with one multiplication. Stream ids are chosen by the
/// peer, but a map holds at most the streams this side lets be open at once
/// (`maxStreamsBidi`, `maxStreamsUni`), so even ids picked to collide cost a
/// bounded probe; the default SipHash cost more than the lookups it guarded
/// (measured: 1.4% of all the server process's samples under small
/// requests).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the product's high bits are well mixed (the
        // table's tag bits); folded down, so are the low (its index bits),
        // which for ids that are all multiples of 4 would otherwise be 0.
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Which end of the connection this session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts requests.
    Server,
    /// Sends requests.
    Client,
}

/// Limits of one session. Defaults and units are documented on the JS
/// options that set them (`src/options.ts`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest header section accepted, in bytes (name + value + 32 per
    /// field, RFC 9114 §4.2.2). Advertised as SETTINGS_MAX_FIELD_SECTION_SIZE.
    pub max_field_section_size: u64,
    /// Most fields in one header section.
    pub max_header_count: usize,
    /// Bytes of one stream's body delivered to JS and not yet consumed.
    pub stream_read_window: u64,
    /// Whether SETTINGS_ENABLE_CONNECT_PROTOCOL is sent (server).
    pub enable_connect_protocol: bool,
    /// HTTP/3 datagrams (RFC 9297): advertise H3_DATAGRAM and route
    /// received datagrams to their request stream.
    pub datagrams: bool,
    /// WebTransport: advertise it, accept sessions, carry its streams.
    pub webtransport: bool,
    /// WebTransport sessions open at once on one connection.
    pub max_wt_sessions: u64,
    /// WebTransport streams held (unread) while their session is not yet
    /// accepted, per connection. Beyond it: WT_BUFFERED_STREAM_REJECTED.
    pub max_buffered_streams: usize,
    /// Raw QUIC: no HTTP/3 at all; every stream carries bytes as they come
    /// and datagrams carry no flow id.
    pub raw: bool,
    /// Server: a request's whole header section must arrive within this
    /// time of its stream opening, else the stream is reset
    /// (H3_REQUEST_REJECTED; the application never sees it). `None`: off.
    pub headers_timeout: Option<Duration>,
    /// Server: while a request body is wanted (the application has read
    /// credit left), some of it must arrive within this time, else the
    /// request ends with 408 (or a reset once a response started). CONNECT
    /// tunnels are exempt. `None`: off.
    pub body_timeout: Option<Duration>,
    /// Server: a response with bytes waiting must get some of them accepted
    /// by QUIC (the client reads and extends flow control) within this time,
    /// else the stream is reset (H3_REQUEST_CANCELLED). `None`: off.
    pub send_timeout: Option<Duration>,
    /// Server: request streams the peer may cancel (RESET_STREAM) within
    /// `reset_window`; one more closes the connection with
    /// H3_EXCESSIVE_LOAD (rapid-reset protection). 0: no limit.
    pub max_resets: u32,
    /// The window `max_resets` counts over.
    pub reset_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_field_section_size: 16 * 1024,
            max_header_count: 128,
            stream_read_window: 256 * 1024,
            enable_connect_protocol: true,
            datagrams: true,
            webtransport: true,
            max_wt_sessions: 16,
            max_buffered_streams: 16,
            raw: false,
            headers_timeout: Some(Duration::from_secs(30)),
            body_timeout: Some(Duration::from_secs(30)),
            send_timeout: Some(Duration::from_secs(30)),
            max_resets: 500,
            reset_window: Duration::from_secs(10),
        }
    }
}

/// Largest DATA chunk handed to JS in one event.
const MAX_CHUNK: usize = 64 * 1024;
/// An empty frame of a reserved type (0x21, RFC 9114 §7.2.8), used to carry
/// a FIN that has no data of its own.
const GREASE_EMPTY_FRAME: [u8; 2] = [0x21, 0x00];
/// Largest control-stream frame buffered (SETTINGS and GOAWAY are small).
const MAX_CONTROL_FRAME: u64 = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Expecting a frame header.
    FrameHeader,
    /// Inside a frame's payload with `left` bytes to go.
    Payload { ty: u64, left: u64 },
    /// Inside a frame whose payload is read and thrown away.
    Discard { left: u64 },
    /// Raw bytes with no framing (WebTransport and raw QUIC streams).
    Raw,
    /// Nothing more will be read.
    Done,
}

/// Queued pieces are merged while the result stays this small (bytes);
/// larger ones stay separate so that big bodies are never copied again.
const COALESCE_MAX: usize = 4096;

/// First capacity of a request stream's frame buffer, bytes: a typical
/// HEADERS frame fits. It lives as long as the stream.
const INBUF_FIRST: usize = 512;

/// Spare room a header section's chunk is allocated with, for the DATA frame
/// header and short body that usually follow it (bytes).
const SHORT_BODY_ROOM: usize = 256;

/// Write credit (`Sent`) is held back while more than this many body bytes
/// of the stream still wait in its queue: JS then gets its credit back in
/// pieces of at least its write window minus this (192 KiB of the default
/// 256 KiB) and refills the queue in one turn, instead of being woken for
/// every chunk QUIC accepts. Credit is never held once the queue is this
/// short, so a writer waiting for it is always woken in time.
const SENT_LOW_WATER: u64 = 64 * 1024;

/// One chunk queued for sending: encoded bytes and how many of them are body
/// payload (reported back to JS as write credit). See
/// [`ReqStream::send_front`] for how it reaches quiche.
struct OutChunk {
    bytes: Vec<u8>,
    payload: u64,
}

/// A request stream (bidirectional, client-initiated).
struct ReqStream {
    recv: Recv,
    inbuf: Vec<u8>,
    pos: usize,
    recv_fin: bool,
    headers_seen: bool,
    trailers_seen: bool,
    /// The head was malformed or refused natively: JS never saw it.
    hidden: bool,
    /// Body bytes JS may not see (GET/HEAD, refused requests).
    drop_body: bool,
    content_length: Option<u64>,
    body_received: u64,
    delivered: u64,
    consumed: u64,
    out: VecDeque<OutChunk>,
    /// What quiche has not yet taken of the front chunk of `out`, once it
    /// took part of it (the chunk's own `bytes` are then empty and it takes
    /// no more pieces).
    out_rest: Option<Bytes>,
    out_fin: bool,
    fin_sent: bool,
    send_closed: bool,
    sent_report: u64,
    /// Client only: the request is queued until the peer allows a stream.
    opened: bool,
    /// Client only: the request method is HEAD.
    head_request: bool,
    /// Bytes go out as they are, not in DATA frames.
    raw: bool,
    /// The WebTransport session this stream belongs to.
    wt_session: Option<u64>,
    /// Held unread until its WebTransport session is accepted.
    parked: bool,
    /// The body is a capsule sequence read here, not by JS (an accepted
    /// WebTransport CONNECT stream).
    capsules: Option<Box<CapsuleReader>>,
    /// Server: a response head was queued.
    responded: bool,
    /// A CONNECT request (RFC 9114 §4.4): its "body" is tunnel data, which
    /// may rightly be idle for as long as the tunnel lives.
    tunnel: bool,
    /// The head's event told JS the message ends there (no body, no
    /// trailers): the end needs no event of its own.
    end_told: bool,
    /// When the stream was first seen (headers timeout).
    opened_at: Instant,
    /// Last time stream bytes arrived, or reading resumed (body timeout).
    recv_progress: Instant,
    /// Last time QUIC accepted queued bytes, or bytes were queued on an
    /// empty queue (send timeout).
    send_progress: Instant,
}

impl ReqStream {
    fn new() -> Self {
        let t = Instant::now();
        Self {
            recv: Recv::FrameHeader,
            inbuf: Vec::new(),
            pos: 0,
            recv_fin: false,
            headers_seen: false,
            trailers_seen: false,
            hidden: false,
            drop_body: false,
            content_length: None,
            body_received: 0,
            delivered: 0,
            consumed: 0,
            out: VecDeque::new(),
            out_rest: None,
            out_fin: false,
            fin_sent: false,
            send_closed: false,
            sent_report: 0,
            opened: true,
            head_request: false,
            raw: false,
            wt_session: None,
            parked: false,
            capsules: None,
            responded: false,
            tunnel: false,
            end_told: false,
            opened_at: t,
            recv_progress: t,
            send_progress: t,
        }
    }

    /// A stream carrying raw bytes both ways (or one way: `recv` Done).
    fn raw(recv: Recv, session: Option<u64>) -> Self {
        Self {
            recv,
            raw: true,
            wt_session: session,
            headers_seen: true,
            ..Self::new()
        }
    }

    /// Whether HTTP datagrams (RFC 9297) may flow on this stream: a request
    /// JS knows about that is not (or no longer) a WebTransport session.
    fn is_flow(&self) -> bool {
        !self.raw && self.headers_seen && !self.hidden && self.capsules.is_none()
    }

    fn unparsed(&self) -> &[u8] {
        &self.inbuf[self.pos..]
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.inbuf.len() {
            self.inbuf.clear();
            self.pos = 0;
        }
    }

    fn finished(&self) -> bool {
        self.recv == Recv::Done && (self.send_closed || (self.fin_sent && self.out.is_empty()))
    }

    /// The last queued chunk, if `extra` more bytes may join it: it stays
    /// within [`COALESCE_MAX`] and quiche has taken none of it yet.
    fn joinable(&mut self, extra: usize) -> Option<&mut OutChunk> {
        let taken = self.out_rest.is_some() && self.out.len() == 1;
        self.out
            .back_mut()
            .filter(|last| !taken && last.bytes.len() + extra <= COALESCE_MAX)
    }

    /// Hands the front chunk of `out` (or what quiche left of it) to
    /// quiche. Returns how many bytes it took, and whether that was all.
    /// A small chunk is copied (one allocation of its size; ours is freed
    /// at once instead of living until the peer acknowledges it); a bigger
    /// one is handed over as it is (`stream_send_zc`: no copy, where
    /// `stream_send` would copy it into a new allocation per 4 KiB).
    fn send_front(&mut self, q: &mut QConn, id: u64, fin: bool) -> quiche::Result<(usize, bool)> {
        let Some(chunk) = self.out.front_mut() else {
            return Ok((0, true));
        };
        if self.out_rest.is_none() && chunk.bytes.len() <= COALESCE_MAX {
            let n = q.stream_send(id, &chunk.bytes, fin)?;
            if n < chunk.bytes.len() {
                let mut taken = Bytes::from(std::mem::take(&mut chunk.bytes));
                self.out_rest = Some(taken.split_off(n));
                return Ok((n, false));
            }
            return Ok((n, true));
        }
        let rest = match self.out_rest.take() {
            Some(rest) => rest,
            // No copy: the Vec becomes Bytes in place.
            None => Bytes::from(std::mem::take(&mut chunk.bytes)),
        };
        // quiche drops a buffer it refuses (Done when the connection has no
        // send capacity), so it gets a second handle to the same bytes.
        match q.stream_send_zc(id, rest.clone(), fin) {
            Ok((n, _)) if n < rest.len() => {
                self.out_rest = Some(rest.slice(n..));
                Ok((n, false))
            }
            Ok((n, _)) => Ok((n, true)),
            Err(e) => {
                self.out_rest = Some(rest);
                Err(e)
            }
        }
    }

    /// Forgets everything queued (the stream's sending side is closed).
    fn clear_out(&mut self) {
        self.out.clear();
        self.out_rest = None;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UniKind {
    Unknown,
    Control,
    Encoder,
    Decoder,
    Ignored,
}

/// A peer-initiated unidirectional stream.
struct UniStream {
    kind: UniKind,
    inbuf: Vec<u8>,
    discard: u64,
    settings_seen: bool,
}

/// Outcome of one read from a QUIC stream.
enum Read {
    Got(usize, bool),
    Blocked,
    Reset(u64),
}

thread_local! {
    /// The I/O thread's spare scratch buffer. Sessions on one thread run one
    /// at a time, so one buffer per thread serves all of them.
    static SPARE_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A `MAX_CHUNK`-byte buffer: the thread's spare one, else a new one.
fn spare_scratch() -> Vec<u8> {
    let v = SPARE_SCRATCH.take();
    if v.len() == MAX_CHUNK {
        v
    } else {
        vec![0; MAX_CHUNK]
    }
}

/// Keeps `v` as the thread's spare buffer (cut back to `MAX_CHUNK` if a
/// large header section grew it).
fn keep_scratch(mut v: Vec<u8>) {
    if v.len() >= MAX_CHUNK {
        v.truncate(MAX_CHUNK);
        v.shrink_to(MAX_CHUNK);
        SPARE_SCRATCH.set(v);
    }
}

/// Up to `max` bytes of stream `id`: what `s` has buffered first, else read
/// from QUIC through `scratch`. `Got(bytes.len(), fin)` with the bytes in
/// `out`; `fin` once nothing more will come. `out` gets exactly the bytes
/// read: a 5-byte body is a 5-byte allocation, not a read chunk's worth
/// (the Buffer JS is handed keeps its allocation until it is collected).
fn take(
    q: &mut QConn,
    id: u64,
    s: &mut ReqStream,
    max: usize,
    scratch: &mut [u8],
    out: &mut Vec<u8>,
) -> Read {
    if !s.unparsed().is_empty() {
        let n = max.min(s.unparsed().len());
        out.extend_from_slice(&s.unparsed()[..n]);
        s.advance(n);
        return Read::Got(n, s.recv_fin && s.unparsed().is_empty());
    }
    if s.recv_fin {
        return Read::Got(0, true);
    }
    debug_assert!(!scratch.is_empty(), "scratch buffer not borrowed");
    let n = max.min(scratch.len());
    let buf = &mut scratch[..n];
    let r = recv(q, id, buf);
    if let Read::Got(n, _) = r {
        out.extend_from_slice(&buf[..n]);
    }
    r
}

fn recv(q: &mut QConn, id: u64, buf: &mut [u8]) -> Read {
    match q.stream_recv(id, buf) {
        Ok((n, fin)) => Read::Got(n, fin),
        Err(quiche::Error::StreamReset(code)) => Read::Reset(code),
        Err(_) => Read::Blocked,
    }
}

/// One WebTransport session: its CONNECT stream id is the key.
#[derive(Default)]
struct WtSession {
    /// A 2xx was sent (server) or received (client).
    accepted: bool,
    /// Streams of the session known to JS.
    streams: BTreeSet<u64>,
    /// Streams that arrived before the session was accepted.
    parked: Vec<u64>,
}

/// The first stream ids JS may open, `(bidi, uni)`: the HTTP/3 session
/// opens three unidirectional streams of its own (control, QPACK encoder and
/// decoder) first.
pub fn first_local_ids(role: Role, raw: bool) -> (u64, u64) {
    let (bidi, uni) = match role {
        Role::Server => (1, 3),
        Role::Client => (0, 2),
    };
    (bidi, if raw { uni } else { uni + 12 })
}

/// How long a stopped request stream may stay in quiche once both its
/// halves ended before [`Session::sweep_stopped`] resets it: three probe
/// timeouts of the active path (RFC 9002 §6.2.1, smoothed RTT + 4 RTT
/// variance + the 25 ms max ACK delay), at least 100 ms. Response data not
/// yet acknowledged by then would have been sent three times over.
fn linger(q: &QConn) -> Duration {
    let pto = q
        .path_stats()
        .find(|p| p.active)
        .map_or(Duration::from_millis(100), |p| {
            p.rtt + 4 * p.rttvar + Duration::from_millis(25)
        });
    (3 * pto).max(Duration::from_millis(100))
}

/// The HTTP/3 state of one connection.
pub struct Session {
    role: Role,
    conn: u32,
    limits: Limits,
    streams: IdMap<ReqStream>,
    uni: IdMap<UniStream>,
    control_out: Option<u64>,
    peer_control: Option<u64>,
    peer_encoder: Option<u64>,
    peer_decoder: Option<u64>,
    encoder: qpack::Encoder,
    /// Server: the GOAWAY id sent. Client: the GOAWAY id received.
    goaway: Option<u64>,
    /// Server: highest request stream id accepted so far.
    max_request_id: Option<u64>,
    to_flush: BTreeSet<u64>,
    to_read: BTreeSet<u64>,
    pending_opens: VecDeque<u64>,
    /// Request streams whose FIN was sent but which quiche may still hold
    /// (data not yet acknowledged).
    unacked: BTreeSet<u64>,
    /// Size of `unacked` at which it is next pruned (keeps it bounded by the
    /// streams quiche still holds, not by the connection's lifetime).
    unacked_prune_at: usize,
    next_uni: u64,
    /// Events for JS, taken by the driver after each turn.
    pub events: Vec<Event>,
    /// Read and encode buffer, `MAX_CHUNK` bytes, lent by the thread's
    /// [`spare_scratch`] for a turn and given back by
    /// [`Session::release_scratch`]: an idle connection holds none.
    scratch: Vec<u8>,
    early: bool,
    wt: IdMap<WtSession>,
    /// Streams naming a session not seen yet: `(session, stream)`.
    orphans: Vec<(u64, u64)>,
    /// Streams parked in `wt` sessions and `orphans`.
    buffered: usize,
    /// Recently ended sessions (bounded), so late streams for them are
    /// refused at once rather than parked.
    ended: VecDeque<u64>,
    /// Datagram counters.
    pub dgram: DgramStats,
    /// Stream writes handed to quiche so far (tells a turn that wrote from
    /// one that did not).
    pub writes: u64,
    /// When the stream timers are next checked (server).
    next_check: Option<Instant>,
    /// Server: request streams whose reading we stopped (STOP_SENDING),
    /// with when the peer's end of them was first seen while quiche still
    /// held them (see [`Session::sweep_stopped`]).
    stopped: Vec<(u64, Option<Instant>)>,
    /// Server: the client sent GOAWAY (it is shutting down gracefully).
    pub peer_goaway: bool,
    /// Peer stream resets counted in the current window: `(start, count)`.
    resets: (Instant, u32),
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release_scratch();
    }
}

/// Which stream timer ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timeout {
    Headers,
    Body,
    Send,
}

impl Session {
    /// A new session for connection `conn`.
    pub fn new(role: Role, conn: u32, limits: Limits) -> Self {
        Self {
            role,
            conn,
            limits,
            streams: IdMap::default(),
            uni: IdMap::default(),
            control_out: None,
            peer_control: None,
            peer_encoder: None,
            peer_decoder: None,
            encoder: qpack::Encoder::new(),
            goaway: None,
            max_request_id: None,
            to_flush: BTreeSet::new(),
            to_read: BTreeSet::new(),
            pending_opens: VecDeque::new(),
            unacked: BTreeSet::new(),
            unacked_prune_at: 64,
            next_uni: if role == Role::Server { 3 } else { 2 },
            events: Vec::new(),
            scratch: Vec::new(),
            early: false,
            wt: IdMap::default(),
            orphans: Vec::new(),
            buffered: 0,
            ended: VecDeque::new(),
            dgram: DgramStats::default(),
            writes: 0,
            next_check: None,
            stopped: Vec::new(),
            peer_goaway: false,
            resets: (Instant::now(), 0),
        }
    }

    /// Borrows the thread's scratch buffer for this turn, if not yet held.
    fn ensure_scratch(&mut self) {
        if self.scratch.is_empty() {
            self.scratch = spare_scratch();
        }
    }

    /// Gives the scratch buffer back to the thread at the end of a turn.
    pub fn release_scratch(&mut self) {
        keep_scratch(std::mem::take(&mut self.scratch));
    }

    /// Bytes of scratch buffer this session holds (for tests).
    #[cfg(test)]
    pub(crate) fn scratch_held(&self) -> usize {
        self.scratch.capacity()
    }

    /// When [`Session::check_timers`] next has work to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_check
    }

    /// The shortest stream timeout configured, if any.
    fn min_timeout(&self) -> Option<Duration> {
        let l = &self.limits;
        [l.headers_timeout, l.body_timeout, l.send_timeout]
            .into_iter()
            .flatten()
            .min()
    }

    /// Makes sure the timers are checked by `at`.
    fn arm(&mut self, at: Instant) {
        if self.next_check.is_none_or(|n| at < n) {
            self.next_check = Some(at);
        }
    }

    /// The running timer of request stream `s` and when it runs out. Only
    /// one runs at a time; the headers timer first, then the body timer
    /// while the application wants body bytes; the send timer while a
    /// response has bytes QUIC has not taken.
    fn stream_deadline(&self, id: u64, s: &ReqStream) -> Option<(Instant, Timeout)> {
        if self.role != Role::Server || id & 0x3 != 0 || s.raw || s.capsules.is_some() || s.parked {
            return None;
        }
        let l = &self.limits;
        let mut best: Option<(Instant, Timeout)> = None;
        let mut consider = |at: Option<Instant>, t: Timeout| {
            if let Some(at) = at {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, t));
                }
            }
        };
        if s.recv != Recv::Done {
            if !s.headers_seen {
                if !s.hidden {
                    consider(l.headers_timeout.map(|d| s.opened_at + d), Timeout::Headers);
                }
            } else if !s.tunnel && (s.drop_body || s.delivered - s.consumed < l.stream_read_window)
            {
                consider(l.body_timeout.map(|d| s.recv_progress + d), Timeout::Body);
            }
        }
        if !s.send_closed && !s.out.is_empty() {
            consider(l.send_timeout.map(|d| s.send_progress + d), Timeout::Send);
        }
        best
    }

    /// Server: applies the stream timers that ran out by `now` (see
    /// [`Limits`]) and schedules the next check.
    pub fn check_timers(&mut self, q: &mut QConn, now: Instant) {
        if self.next_check.is_none_or(|n| n > now) {
            return;
        }
        let fallback = self.min_timeout().map(|d| now + d);
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (&id, s) in &self.streams {
            match self.stream_deadline(id, s) {
                Some((at, t)) if at <= now => expired.push((id, t)),
                Some((at, _)) => next = Some(next.map_or(at, |n| n.min(at))),
                // A timer may start later (body wanted, bytes queued): look
                // again after the shortest timeout.
                None if id & 0x3 == 0 && !s.raw => {
                    if let Some(f) = fallback {
                        next = Some(next.map_or(f, |n| n.min(f)));
                    }
                }
                None => {}
            }
        }
        self.next_check = next;
        for (id, t) in expired {
            self.on_timeout(q, id, t);
        }
        self.sweep_stopped(q, now);
    }

    /// Frees request streams quiche 0.30 would keep forever. When we stop
    /// reading a request (STOP_SENDING) and our response's FIN is
    /// acknowledged before the peer's RESET_STREAM arrives (an ACK frame
    /// ahead of the RESET_STREAM in one packet is enough), both halves are
    /// done but quiche frees a stream only on a later ACK of it or a read
    /// of it, and a stream it stopped reading is never readable again
    /// (cloudflare/quiche#1968). The stream then holds one of the client's
    /// request stream credits until the connection closes. So once the
    /// peer's end has arrived and quiche still holds the stream after
    /// [`Session::linger`], a RESET_STREAM (H3_NO_ERROR, final size = the
    /// bytes sent, which the peer already has) gives quiche an ACK to free
    /// it on. A stream still holding unacknowledged response data is freed
    /// by that data's ACK instead; the wait makes sure it had the time.
    fn sweep_stopped(&mut self, q: &mut QConn, now: Instant) {
        if self.stopped.is_empty() {
            return;
        }
        let linger = linger(q);
        let mut i = 0;
        while i < self.stopped.len() {
            let (id, since) = self.stopped[i];
            let gone = matches!(
                q.stream_capacity(id),
                Err(quiche::Error::InvalidStreamState(_))
            );
            if gone {
                self.stopped.swap_remove(i);
                continue;
            }
            // Our response or the peer's upload is still going.
            if self.streams.contains_key(&id) || !q.stream_finished(id) {
                i += 1;
                continue;
            }
            match since {
                Some(t) if now >= t + linger => {
                    let _ = q.stream_shutdown(id, Shutdown::Write, H3Code::NoError.code());
                    self.stopped.swap_remove(i);
                    continue;
                }
                Some(t) => self.arm(t + linger),
                None => {
                    self.stopped[i].1 = Some(now);
                    self.arm(now + linger);
                }
            }
            i += 1;
        }
    }

    fn on_timeout(&mut self, q: &mut QConn, id: u64, t: Timeout) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let text = match t {
            Timeout::Headers => {
                // The application never saw it: just give up on it.
                let _ = q.stream_shutdown(id, Shutdown::Read, H3Code::RequestRejected.code());
                let _ = q.stream_shutdown(id, Shutdown::Write, H3Code::RequestRejected.code());
                self.forget(id);
                return;
            }
            Timeout::Body => "body timeout",
            Timeout::Send => "send timeout",
        };
        let hidden = s.hidden;
        if t == Timeout::Body && !s.responded {
            // RFC 9114 §4.1.1: a complete response before the whole
            // request, then STOP_SENDING with H3_NO_ERROR.
            if !hidden {
                let ev = self.event(EventKind::Reset, id);
                ev.code = H3Code::NoError.code();
                ev.text = Some(text.into());
            }
            let _ = self.refuse(q, id, 408);
            return;
        }
        let code = H3Code::RequestCancelled.code();
        let s = self.streams.get_mut(&id).unwrap();
        if s.recv != Recv::Done {
            let _ = q.stream_shutdown(id, Shutdown::Read, code);
        }
        if !(s.send_closed || s.fin_sent && s.out.is_empty()) {
            let _ = q.stream_shutdown(id, Shutdown::Write, code);
        }
        self.forget(id);
        if !hidden {
            let ev = self.event(EventKind::Reset, id);
            ev.code = code;
            ev.text = Some(text.into());
        }
    }

    /// Server: counts a request stream the peer cancelled; past
    /// `max_resets` in `reset_window` the connection is closed.
    fn count_reset(&mut self, id: u64) -> ConnResult<()> {
        if self.role != Role::Server || id & 0x3 != 0 || self.limits.max_resets == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if now.duration_since(self.resets.0) > self.limits.reset_window {
            self.resets = (now, 0);
        }
        self.resets.1 += 1;
        if self.resets.1 > self.limits.max_resets {
            return Err(ConnError::new(
                H3Code::ExcessiveLoad,
                "too many request streams reset",
            ));
        }
        Ok(())
    }

    fn event(&mut self, kind: EventKind, stream: u64) -> &mut Event {
        self.events.push(Event::new(kind, self.conn, stream));
        self.events.last_mut().unwrap()
    }

    /// Number of request streams still open.
    pub fn active_requests(&self) -> usize {
        self.streams.keys().filter(|&&id| id & 0x2 == 0).count()
    }

    /// Whether every response sent has been fully delivered: quiche drops a
    /// stream once its data is acknowledged and both sides are finished.
    /// Closing the connection before then would discard the unsent tail.
    pub fn all_delivered(&mut self, q: &mut QConn) -> bool {
        self.unacked.retain(|&id| q.stream_capacity(id).is_ok());
        self.unacked.is_empty()
    }

    /// Like [`Session::all_delivered`], but streams the peer is still
    /// sending on do not count: used when closing the connection anyway,
    /// where only finished exchanges are worth waiting for.
    pub fn finished_exchanges_delivered(&mut self, q: &mut QConn) -> bool {
        self.unacked.retain(|&id| q.stream_capacity(id).is_ok());
        let streams = &self.streams;
        self.unacked
            .iter()
            .all(|id| streams.get(id).is_some_and(|s| s.recv != Recv::Done))
    }

    /// Whether a GOAWAY has been sent (server) or received (client).
    pub fn goaway_id(&self) -> Option<u64> {
        self.goaway
    }

    /// Opens the control stream and the QPACK streams and sends SETTINGS.
    pub fn start(&mut self, q: &mut QConn) -> ConnResult<()> {
        if self.limits.raw {
            return Ok(());
        }
        let control = self.open_uni();
        let mut settings = vec![
            (setting::QPACK_MAX_TABLE_CAPACITY, 0),
            (
                setting::MAX_FIELD_SECTION_SIZE,
                self.limits.max_field_section_size,
            ),
            (setting::QPACK_BLOCKED_STREAMS, 0),
        ];
        if self.role == Role::Server && self.limits.enable_connect_protocol {
            settings.push((setting::ENABLE_CONNECT_PROTOCOL, 1));
        }
        if self.limits.datagrams {
            settings.push((setting::H3_DATAGRAM, 1));
            settings.push((wt::setting::H3_DATAGRAM_DRAFT, 1));
        }
        if self.limits.webtransport {
            // Every draft's switch at once: each browser looks for its own.
            settings.push((wt::setting::ENABLE_WEBTRANSPORT, 1));
            if self.role == Role::Server {
                let n = self.limits.max_wt_sessions;
                settings.push((wt::setting::MAX_SESSIONS_07, n));
                settings.push((wt::setting::MAX_SESSIONS_13, n));
                settings.push((wt::setting::WT_ENABLED, 1));
            }
        }
        // A reserved identifier (RFC 9114 §7.2.4.1) keeps peers honest about
        // ignoring unknown settings.
        settings.push((0x1f * 7 + 0x21, 0));
        let mut bytes = Vec::with_capacity(32);
        frame::put_varint(&mut bytes, stream_type::CONTROL);
        bytes.extend_from_slice(&frame::settings_frame(&settings));
        self.control_out = Some(control);
        self.queue(control, bytes, 0, false);
        for ty in [stream_type::QPACK_ENCODER, stream_type::QPACK_DECODER] {
            let id = self.open_uni();
            let mut b = Vec::new();
            frame::put_varint(&mut b, ty);
            self.queue(id, b, 0, false);
        }
        self.flush(q);
        Ok(())
    }

    fn open_uni(&mut self) -> u64 {
        let id = self.next_uni;
        self.next_uni += 4;
        self.streams.insert(
            id,
            ReqStream {
                recv: Recv::Done,
                ..ReqStream::new()
            },
        );
        id
    }

    fn queue(&mut self, id: u64, mut bytes: Vec<u8>, payload: u64, fin: bool) {
        if let Some(s) = self.streams.get_mut(&id) {
            if s.send_closed || s.out_fin {
                return;
            }
            if fin && bytes.is_empty() && s.out.is_empty() {
                // A FIN with nothing to carry it. A bare zero-length FIN was
                // sometimes never delivered (a response ending in a late FIN
                // stalled about one run in ten under load; quiche's
                // `SendBuf::reserve_for_write` reserves nothing once all
                // earlier data is acknowledged, the suspected path). An empty
                // frame of a reserved type carries it instead, and peers ignore
                // it (RFC 9114 §9): with it, 40 runs of the reproducer passed.
                bytes = GREASE_EMPTY_FRAME.to_vec();
            }
            if !bytes.is_empty() {
                if s.out.is_empty() {
                    s.send_progress = Instant::now();
                }
                match s.joinable(bytes.len()) {
                    // Small pieces (a head, a DATA frame header, a short
                    // body) travel as one chunk: one stream_send, not three.
                    Some(last) => {
                        last.bytes.extend_from_slice(&bytes);
                        last.payload += payload;
                    }
                    None => s.out.push_back(OutChunk { bytes, payload }),
                }
            }
            s.out_fin |= fin;
            self.to_flush.insert(id);
        }
    }

    fn encode_headers<S: AsRef<str>>(&mut self, fields: &[S]) -> Vec<u8> {
        self.ensure_scratch();
        // Borrowed, not copied: the QPACK encoder lowercases names itself.
        let list: Vec<HeaderRef> = fields
            .chunks_exact(2)
            .map(|p| HeaderRef::new(p[0].as_ref().as_bytes(), p[1].as_ref().as_bytes()))
            .collect();
        let size: usize = list
            .iter()
            .map(|h| h.name().len() + h.value().len() + 16)
            .sum();
        let block = &mut self.scratch;
        if block.len() < size + 64 {
            block.resize(size + 64, 0);
        }
        let n = self
            .encoder
            .encode(&list, block)
            .expect("buffer sized for the header list");
        // Room for a DATA frame header and a short body too: they are
        // merged into this chunk (`queue`) without growing it.
        let mut out = Vec::with_capacity(n + 8 + SHORT_BODY_ROOM);
        frame::put_frame_header(&mut out, frame::HEADERS, n as u64);
        out.extend_from_slice(&block[..n]);
        out
    }

    // ---- commands from JS -------------------------------------------------

    /// Sends a header section on `stream`. On a client, the first one opens
    /// the request stream.
    pub fn send_headers<S: AsRef<str>>(
        &mut self,
        q: &mut QConn,
        stream: u64,
        fields: &[S],
        fin: bool,
    ) {
        let bytes = self.encode_headers(fields);
        let field = |name: &str| {
            fields
                .chunks_exact(2)
                .find(|p| p[0].as_ref() == name)
                .map(|p| p[1].as_ref())
        };
        if self.role == Role::Client && !self.streams.contains_key(&stream) {
            let mut s = ReqStream::new();
            s.opened = false;
            s.head_request = field(":method") == Some("HEAD");
            self.streams.insert(stream, s);
            self.pending_opens.push_back(stream);
            if self.limits.webtransport && field(":protocol").is_some_and(is_wt_protocol) {
                self.wt.insert(stream, WtSession::default());
            }
        }
        if self.role == Role::Server && self.wt.get(&stream).is_some_and(|w| !w.accepted) {
            let ok = field(":status").is_some_and(|v| v.starts_with('2') && v.len() == 3);
            if ok {
                self.accept_session(stream);
            } else {
                self.end_session(q, stream, None);
            }
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            s.responded = true;
        }
        self.queue(stream, bytes, 0, fin);
        self.open_pending(q);
    }

    /// A WebTransport session was accepted: its parked streams go to JS.
    fn accept_session(&mut self, sid: u64) {
        let Some(w) = self.wt.get_mut(&sid) else {
            return;
        };
        w.accepted = true;
        let parked = std::mem::take(&mut w.parked);
        self.buffered -= parked.len();
        for id in parked {
            if let Some(s) = self.streams.get_mut(&id) {
                s.parked = false;
                self.to_read.insert(id);
                self.wt.get_mut(&sid).unwrap().streams.insert(id);
                self.event(EventKind::StreamOpen, id).code = sid;
            }
        }
    }

    /// Ends WebTransport session `sid`: its streams are reset with
    /// WT_SESSION_GONE and forgotten. `report` = `(clean, code, reason)`
    /// tells JS how the peer ended it (`None`: JS ended it, or it never
    /// opened).
    fn end_session(&mut self, q: &mut QConn, sid: u64, report: Option<(bool, u32, String)>) {
        let Some(w) = self.wt.remove(&sid) else {
            return;
        };
        if self.ended.len() == 64 {
            self.ended.pop_front();
        }
        self.ended.push_back(sid);
        self.buffered -= w.parked.len();
        for id in w.streams.iter().chain(&w.parked) {
            if let Some(s) = self.streams.remove(id) {
                if s.recv != Recv::Done {
                    let _ = q.stream_shutdown(*id, Shutdown::Read, wt::code::SESSION_GONE);
                }
                if !(s.send_closed || s.fin_sent && s.out.is_empty()) {
                    let _ = q.stream_shutdown(*id, Shutdown::Write, wt::code::SESSION_GONE);
                }
            }
        }
        if let Some((clean, code, reason)) = report {
            let ev = self.event(EventKind::SessionClosed, sid);
            ev.fin = clean;
            ev.code = u64::from(code);
            ev.text = Some(reason);
        }
    }

    /// Opens a stream for JS: raw QUIC, or a WebTransport stream of session
    /// `session` (its 0x41 / 0x54 preface goes first).
    pub fn open_stream(&mut self, q: &mut QConn, id: u64, session: Option<u64>) {
        let bidi = id & 0x2 == 0;
        if let Some(sid) = session {
            if !self.wt.get(&sid).is_some_and(|w| w.accepted) {
                let ev = self.event(EventKind::Reset, id);
                ev.code = wt::code::SESSION_GONE;
                return;
            }
            self.wt.get_mut(&sid).unwrap().streams.insert(id);
        }
        let mut s = ReqStream::raw(if bidi { Recv::Raw } else { Recv::Done }, session);
        s.opened = false;
        self.streams.insert(id, s);
        if let Some(sid) = session {
            let mut preface = Vec::with_capacity(16);
            let ty = if bidi {
                frame::WEBTRANSPORT_STREAM
            } else {
                stream_type::WEBTRANSPORT
            };
            frame::put_varint(&mut preface, ty);
            frame::put_varint(&mut preface, sid);
            self.queue(id, preface, 0, false);
        }
        self.pending_opens.push_back(id);
        self.open_pending(q);
    }

    /// Closes WebTransport session `sid` from JS: CLOSE_WEBTRANSPORT_SESSION
    /// capsule and FIN on the CONNECT stream; its streams are reset.
    pub fn close_session(&mut self, q: &mut QConn, sid: u64, code: u32, reason: &str) {
        if self.wt.contains_key(&sid) {
            self.end_session(q, sid, None);
            self.write(sid, wt::close_capsule(code, reason), true);
        }
    }

    /// Whether HTTP datagrams may flow on `stream`: an accepted WebTransport
    /// session, or a request JS knows about.
    fn flow_open(&self, stream: u64) -> bool {
        match self.wt.get(&stream) {
            Some(w) => w.accepted,
            None => self.streams.get(&stream).is_some_and(ReqStream::is_flow),
        }
    }

    /// Sends `data` as a datagram: on flow `stream` (HTTP/3), or bare (raw
    /// QUIC). When quiche's send queue is full the oldest queued datagram
    /// is dropped to make room.
    pub fn send_datagram(&mut self, q: &mut QConn, stream: u64, data: Vec<u8>) {
        let payload = if self.limits.raw {
            data
        } else {
            if !self.flow_open(stream) {
                self.dgram.dropped_unknown_flow += 1;
                return;
            }
            let mut p = Vec::with_capacity(8 + data.len());
            frame::put_varint(&mut p, stream / 4);
            p.extend_from_slice(&data);
            p
        };
        let mut result = q.dgram_send(&payload);
        if result == Err(quiche::Error::Done) {
            let first = std::cell::Cell::new(true);
            q.dgram_purge_outgoing(|_| first.replace(false));
            self.dgram.dropped_send_queue_full += 1;
            result = q.dgram_send(&payload);
        }
        match result {
            Ok(()) => self.dgram.sent += 1,
            Err(quiche::Error::BufferTooShort) => self.dgram.dropped_too_large += 1,
            Err(_) => self.dgram.dropped_send_queue_full += 1,
        }
    }

    /// Reads every datagram quiche holds and routes it: to a WebTransport
    /// session or a request stream by its quarter stream id (RFC 9297), or
    /// to the connection (raw QUIC). Unroutable ones are counted and dropped.
    pub fn process_datagrams(&mut self, q: &mut QConn) -> ConnResult<()> {
        self.ensure_scratch();
        loop {
            let n = match q.dgram_recv(&mut self.scratch) {
                Ok(n) => n,
                Err(_) => return Ok(()),
            };
            self.dgram.received += 1;
            if self.limits.raw {
                let data = self.scratch[..n].to_vec();
                self.event(EventKind::Datagram, 0).data = Some(data);
                continue;
            }
            let Some((qsid, hl)) = frame::get_varint(&self.scratch[..n]) else {
                return Err(ConnError::new(
                    H3Code::DatagramError,
                    "datagram without a quarter stream id",
                ));
            };
            if qsid >= 1 << 60 {
                return Err(ConnError::new(
                    H3Code::DatagramError,
                    "quarter stream id out of range",
                ));
            }
            let stream = qsid * 4;
            if !self.flow_open(stream) {
                self.dgram.dropped_unknown_flow += 1;
                continue;
            }
            let data = self.scratch[hl..n].to_vec();
            self.event(EventKind::Datagram, stream).data = Some(data);
        }
    }

    fn open_pending(&mut self, q: &mut QConn) {
        // Each stream is created (by its first send) before the next is
        // considered: quiche counts only created streams against the limit.
        // Bidirectional and unidirectional streams have separate limits;
        // within each kind the order is kept.
        let mut blocked = [false, false];
        let mut i = 0;
        while i < self.pending_opens.len() {
            let id = self.pending_opens[i];
            let uni = usize::from(id & 0x2 != 0);
            let left = if uni == 1 {
                q.peer_streams_left_uni()
            } else {
                q.peer_streams_left_bidi()
            };
            if blocked[uni] || left == 0 {
                blocked[uni] = true;
                i += 1;
                continue;
            }
            self.pending_opens.remove(i);
            if let Some(s) = self.streams.get_mut(&id) {
                s.opened = true;
                self.flush_stream(q, id);
                if self.streams.get(&id).is_some_and(|s| !s.opened) {
                    // Hit the limit after all: it went back to the front.
                    blocked[uni] = true;
                    i += 1;
                }
            }
        }
    }

    /// Queues body bytes on `stream` as one DATA frame.
    pub fn write(&mut self, stream: u64, data: Vec<u8>, fin: bool) {
        if self.streams.get(&stream).is_some_and(|s| s.raw) {
            let payload = data.len() as u64;
            if data.is_empty() && fin {
                // Raw streams have no frames to carry a FIN: send it bare.
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.out_fin = true;
                    self.to_flush.insert(stream);
                }
                return;
            }
            self.queue(stream, data, payload, fin);
            return;
        }
        if data.is_empty() {
            self.queue(stream, Vec::new(), 0, fin);
            return;
        }
        let payload = data.len() as u64;
        // The frame header joins the chunk before it when there is room
        // (no allocation of its own); the payload is queued as it came, so
        // a big one is not copied again.
        let joined = self.streams.get_mut(&stream).is_some_and(|s| {
            if s.send_closed || s.out_fin {
                return false;
            }
            match s.joinable(16) {
                Some(last) => {
                    frame::put_frame_header(&mut last.bytes, frame::DATA, payload);
                    true
                }
                None => false,
            }
        });
        if !joined {
            let mut head = Vec::with_capacity(16);
            frame::put_frame_header(&mut head, frame::DATA, payload);
            self.queue(stream, head, 0, false);
        }
        self.queue(stream, data, payload, fin);
    }

    /// JS consumed `bytes` of the body it was given: read more.
    pub fn grant(&mut self, stream: u64, bytes: u64) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if s.delivered - s.consumed >= self.limits.stream_read_window {
                // Reading resumes: the peer was held back by us until now.
                s.recv_progress = Instant::now();
            }
            s.consumed = (s.consumed + bytes).min(s.delivered);
            self.to_read.insert(stream);
        }
    }

    /// Aborts `stream` both ways with `code` (a WebTransport application
    /// code on WebTransport streams; aborting a CONNECT stream ends its
    /// session). On raw and WebTransport streams only the sending half is
    /// reset.
    pub fn reset(&mut self, q: &mut QConn, stream: u64, code: u64) {
        if self.wt.contains_key(&stream) {
            self.end_session(q, stream, None);
        }
        let code = self.wire_code(stream, code);
        if self.streams.get(&stream).is_some_and(|s| s.raw && s.opened) {
            // Raw and WebTransport streams have independent halves: this
            // resets only the sending one (STOP_SENDING is its own command).
            let s = self.streams.get_mut(&stream).unwrap();
            if !(s.send_closed || s.fin_sent && s.out.is_empty()) {
                let _ = q.stream_shutdown(stream, Shutdown::Write, code);
            }
            s.send_closed = true;
            s.clear_out();
            let _ = self.maybe_remove(stream);
            return;
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            if !s.opened {
                // Never reached the wire.
                self.forget(stream);
                self.pending_opens.retain(|&id| id != stream);
                return;
            }
            if !(s.fin_sent && s.out.is_empty()) {
                let _ = q.stream_shutdown(stream, Shutdown::Write, code);
            }
            if s.recv != Recv::Done {
                let _ = q.stream_shutdown(stream, Shutdown::Read, code);
            }
            s.recv = Recv::Done;
            s.send_closed = true;
            s.clear_out();
            self.forget(stream);
        }
    }

    /// Asks the peer to stop sending `stream`'s body.
    pub fn stop_sending(&mut self, q: &mut QConn, stream: u64, code: u64) {
        let code = self.wire_code(stream, code);
        if let Some(s) = self.streams.get_mut(&stream) {
            let stopping = s.recv != Recv::Done;
            if stopping {
                let _ = q.stream_shutdown(stream, Shutdown::Read, code);
                s.recv = Recv::Done;
            }
            let (raw, finished) = (s.raw, s.finished());
            if stopping && !raw {
                self.note_stopped(q, stream);
            }
            if finished {
                self.forget(stream);
            }
        }
    }

    /// Server: remembers a request stream whose reading was just stopped
    /// (STOP_SENDING) while the peer still sends, for
    /// [`Session::sweep_stopped`].
    fn note_stopped(&mut self, q: &QConn, id: u64) {
        if self.role == Role::Server && id & 0x3 == 0 && !q.stream_finished(id) {
            self.stopped.push((id, None));
        }
    }

    /// The code that goes on the wire for `code` given by JS on `stream`.
    fn wire_code(&self, stream: u64, code: u64) -> u64 {
        match self.streams.get(&stream) {
            Some(s) if s.wt_session.is_some() => wt::app_to_h3(code.min(u32::MAX as u64) as u32),
            _ => code,
        }
    }

    /// The code JS sees for `code` received on `stream`: WebTransport
    /// streams report the application code (0 when the peer sent a code
    /// outside the application range, such as WT_SESSION_GONE).
    fn app_code(&self, stream: u64, code: u64) -> u64 {
        match self.streams.get(&stream) {
            Some(s) if s.wt_session.is_some() => wt::h3_to_app(code).map_or(0, u64::from),
            _ => code,
        }
    }

    /// Server: sends GOAWAY; requests on later streams are refused, and
    /// every WebTransport session is asked to drain.
    pub fn goaway(&mut self) {
        if self.role != Role::Server || self.goaway.is_some() {
            return;
        }
        let id = self.max_request_id.map_or(0, |m| m + 4);
        self.goaway = Some(id);
        let mut f = Vec::new();
        frame::put_frame_header(&mut f, frame::GOAWAY, frame::varint_len(id) as u64);
        frame::put_varint(&mut f, id);
        if let Some(c) = self.control_out {
            self.queue(c, f, 0, false);
        }
        let sessions: Vec<u64> = self
            .wt
            .iter()
            .filter(|(_, w)| w.accepted)
            .map(|(&id, _)| id)
            .collect();
        for sid in sessions {
            self.write(sid, wt::drain_capsule(), false);
        }
    }

    // ---- reading ------------------------------------------------------------

    /// Reads every readable stream. Called after packets arrive and after JS
    /// granted credit.
    pub fn process_reads(&mut self, q: &mut QConn) -> ConnResult<()> {
        self.early = q.is_in_early_data();
        self.process_datagrams(q)?;
        if !self.stopped.is_empty() {
            self.sweep_stopped(q, Instant::now());
        }
        let mut ids: Vec<u64> = q.readable().collect();
        loop {
            ids.extend(std::mem::take(&mut self.to_read));
            ids.sort_unstable();
            ids.dedup();
            for id in ids.drain(..) {
                if id & 0x2 == 0 {
                    self.read_bidi(q, id)?;
                } else if self.streams.contains_key(&id) {
                    self.read_stream(q, id)?;
                } else if (id & 0x1 == 0) == (self.role == Role::Server) {
                    self.read_uni(q, id)?;
                }
            }
            // A session accepted during this pass (its 2xx was read after a
            // stream of it, which has a lower id) released parked streams:
            // read them now; no packet may come to trigger another pass.
            if self.to_read.is_empty() {
                break;
            }
        }
        self.open_pending(q);
        Ok(())
    }

    fn read_bidi(&mut self, q: &mut QConn, id: u64) -> ConnResult<()> {
        self.ensure_scratch();
        let client_initiated = id & 0x1 == 0;
        let by_peer = client_initiated == (self.role == Role::Server);
        if !self.streams.contains_key(&id) && by_peer && self.limits.raw {
            if q.stream_finished(id) {
                return self.release_unread(q, id);
            }
            self.streams.insert(id, ReqStream::raw(Recv::Raw, None));
            self.event(EventKind::StreamOpen, id);
        } else if !self.streams.contains_key(&id) && !client_initiated && by_peer {
            // Servers open bidirectional streams only for WebTransport
            // (RFC 9114 §6.1; the 0x41 preface is checked on its first frame).
            if !self.limits.webtransport {
                return Err(ConnError::new(
                    H3Code::StreamCreationError,
                    "server-initiated bidirectional stream",
                ));
            }
            if q.stream_finished(id) {
                return self.release_unread(q, id);
            }
            self.streams.insert(id, ReqStream::new());
        } else if !self.streams.contains_key(&id) {
            if self.role == Role::Client {
                // A stream we no longer track (finished or reset): drain it.
                while let Read::Got(n, _) = recv(q, id, &mut self.scratch) {
                    if n == 0 {
                        break;
                    }
                }
                return Ok(());
            }
            if self.goaway.is_some_and(|g| id >= g) {
                let _ = q.stream_shutdown(id, Shutdown::Read, H3Code::RequestRejected.code());
                let _ = q.stream_shutdown(id, Shutdown::Write, H3Code::RequestRejected.code());
                return Ok(());
            }
            if q.stream_finished(id) {
                return self.release_unread(q, id);
            }
            self.max_request_id = Some(self.max_request_id.map_or(id, |m| m.max(id)));
            let s = ReqStream::new();
            if let Some(d) = self.min_timeout() {
                self.arm(s.opened_at + d);
            }
            self.streams.insert(id, s);
        }
        self.read_stream(q, id)
    }

    /// A peer stream that was reset, or ended with nothing, before it was
    /// read: read its end and, if bidirectional, reset our side too
    /// (H3_REQUEST_CANCELLED, or H3_REQUEST_INCOMPLETE for a bare FIN), or
    /// quiche never frees it and the peer never gets its stream credit back.
    fn release_unread(&mut self, q: &mut QConn, id: u64) -> ConnResult<()> {
        self.ensure_scratch();
        let code = match recv(q, id, &mut self.scratch) {
            Read::Reset(_) => H3Code::RequestCancelled,
            _ => H3Code::RequestIncomplete,
        };
        if id & 0x2 == 0 {
            let _ = q.stream_shutdown(id, Shutdown::Write, code.code());
        }
        if code == H3Code::RequestCancelled {
            self.count_reset(id)?;
        }
        Ok(())
    }

    /// Reads stream `id` (already tracked) as far as its state and JS's
    /// credit allow.
    fn read_stream(&mut self, q: &mut QConn, id: u64) -> ConnResult<()> {
        self.ensure_scratch();
        loop {
            let window = self.limits.stream_read_window;
            let Some(s) = self.streams.get_mut(&id) else {
                return Ok(());
            };
            match s.recv {
                Recv::Done => return Ok(()),
                Recv::FrameHeader => {
                    if let Some((ty, len, hl)) = frame::get_frame_header(s.unparsed()) {
                        s.advance(hl);
                        self.on_frame_start(q, id, ty, len)?;
                        continue;
                    }
                    if s.recv_fin {
                        if s.unparsed().is_empty() {
                            return self.on_request_end(q, id);
                        }
                        return Err(ConnError::new(H3Code::FrameError, "truncated frame header"));
                    }
                    // Two varints take at most 16 bytes: never read past the
                    // header into a payload we may not have credit for.
                    let mut small = [0u8; 16];
                    let want = 16 - s.unparsed().len().min(16);
                    match recv(q, id, &mut small[..want.max(1)]) {
                        Read::Got(n, fin) => {
                            if n > 0 {
                                s.recv_progress = Instant::now();
                            }
                            if s.inbuf.capacity() == 0 {
                                // Room for a typical HEADERS frame at once:
                                // grown from empty it took two reallocations
                                // per request.
                                s.inbuf.reserve(INBUF_FIRST);
                            }
                            s.inbuf.extend_from_slice(&small[..n]);
                            s.recv_fin = fin;
                            if n == 0 && !fin {
                                return Ok(());
                            }
                        }
                        Read::Blocked => return Ok(()),
                        Read::Reset(code) => return self.on_peer_reset(q, id, code),
                    }
                }
                Recv::Raw => {
                    if s.parked {
                        return Ok(()); // its session is not accepted yet
                    }
                    let outstanding = s.delivered - s.consumed;
                    if outstanding >= window {
                        return Ok(()); // wait for JS to consume
                    }
                    let max = (window - outstanding).min(MAX_CHUNK as u64) as usize;
                    let mut chunk = Vec::new();
                    let fin = match take(q, id, s, max, &mut self.scratch, &mut chunk) {
                        Read::Got(_, fin) => fin,
                        Read::Blocked => return Ok(()),
                        Read::Reset(code) => return self.on_peer_reset(q, id, code),
                    };
                    if chunk.is_empty() && !fin {
                        return Ok(());
                    }
                    s.delivered += chunk.len() as u64;
                    if fin {
                        s.recv = Recv::Done;
                        s.recv_fin = true;
                    }
                    let ev = self.event(EventKind::Data, id);
                    ev.fin = fin;
                    if !chunk.is_empty() {
                        ev.data = Some(chunk);
                    }
                    if fin {
                        return self.maybe_remove(id);
                    }
                }
                Recv::Payload {
                    ty: frame::DATA,
                    left,
                } => {
                    if s.capsules.is_some() {
                        return self.read_capsules(q, id, left);
                    }
                    let outstanding = s.delivered - s.consumed;
                    if !s.drop_body && outstanding >= window {
                        return Ok(()); // wait for JS to consume
                    }
                    let credit = if s.drop_body {
                        MAX_CHUNK as u64
                    } else {
                        window - outstanding
                    };
                    let max = left.min(credit).min(MAX_CHUNK as u64) as usize;
                    let mut chunk = Vec::new();
                    let fin = match take(q, id, s, max, &mut self.scratch, &mut chunk) {
                        Read::Got(0, true) => {
                            return Err(ConnError::new(H3Code::FrameError, "truncated DATA frame"));
                        }
                        Read::Got(_, fin) => fin,
                        Read::Blocked => return Ok(()),
                        Read::Reset(code) => return self.on_peer_reset(q, id, code),
                    };
                    s.recv_fin |= fin;
                    let n = chunk.len() as u64;
                    if n == 0 && !fin {
                        return Ok(());
                    }
                    s.recv_progress = Instant::now();
                    let left = left - n;
                    s.recv = if left == 0 {
                        Recv::FrameHeader
                    } else {
                        Recv::Payload {
                            ty: frame::DATA,
                            left,
                        }
                    };
                    s.body_received += n;
                    if s.content_length.is_some_and(|cl| s.body_received > cl) {
                        return self.stream_error(q, id, H3Code::MessageError);
                    }
                    if n > 0 && !s.drop_body {
                        s.delivered += n;
                        let ev = self.event(EventKind::Data, id);
                        ev.data = Some(chunk);
                    }
                }
                Recv::Payload { ty, left } => {
                    // HEADERS (or a control-type frame being rejected): the
                    // whole payload is needed before it can be decoded.
                    let have = s.unparsed().len() as u64;
                    if have >= left {
                        let payload = s.unparsed()[..left as usize].to_vec();
                        s.advance(left as usize);
                        s.recv = Recv::FrameHeader;
                        self.on_frame_payload(q, id, ty, &payload)?;
                        continue;
                    }
                    if s.recv_fin {
                        return Err(ConnError::new(H3Code::FrameError, "truncated frame"));
                    }
                    let want = (left - have).min(MAX_CHUNK as u64) as usize;
                    let buf = &mut self.scratch[..want];
                    match recv(q, id, buf) {
                        Read::Got(n, fin) => {
                            let s = self.streams.get_mut(&id).unwrap();
                            s.inbuf.extend_from_slice(&self.scratch[..n]);
                            s.recv_fin = fin;
                            if n == 0 && !fin {
                                return Ok(());
                            }
                        }
                        Read::Blocked => return Ok(()),
                        Read::Reset(code) => return self.on_peer_reset(q, id, code),
                    }
                }
                Recv::Discard { left } => {
                    let from_buf = (s.unparsed().len() as u64).min(left);
                    s.advance(from_buf as usize);
                    let mut left = left - from_buf;
                    if left > 0 && !s.recv_fin {
                        let want = left.min(MAX_CHUNK as u64) as usize;
                        match recv(q, id, &mut self.scratch[..want]) {
                            Read::Got(n, fin) => {
                                let s = self.streams.get_mut(&id).unwrap();
                                s.recv_fin = fin;
                                left -= n as u64;
                                if n == 0 && !fin {
                                    s.recv = Recv::Discard { left };
                                    return Ok(());
                                }
                            }
                            Read::Blocked => {
                                self.streams.get_mut(&id).unwrap().recv = Recv::Discard { left };
                                return Ok(());
                            }
                            Read::Reset(code) => return self.on_peer_reset(q, id, code),
                        }
                    }
                    let s = self.streams.get_mut(&id).unwrap();
                    if left > 0 && s.recv_fin && s.unparsed().is_empty() {
                        return Err(ConnError::new(H3Code::FrameError, "truncated frame"));
                    }
                    s.recv = if left == 0 {
                        Recv::FrameHeader
                    } else {
                        Recv::Discard { left }
                    };
                }
            }
        }
    }

    /// Reads the DATA payload of a WebTransport CONNECT stream (`left`
    /// bytes of the current frame) as capsules, then goes on reading frames.
    fn read_capsules(&mut self, q: &mut QConn, id: u64, left: u64) -> ConnResult<()> {
        self.ensure_scratch();
        let s = self.streams.get_mut(&id).unwrap();
        let max = left.min(MAX_CHUNK as u64) as usize;
        let mut bytes = Vec::new();
        let (n, fin) = match take(q, id, s, max, &mut self.scratch, &mut bytes) {
            Read::Got(0, true) => {
                return Err(ConnError::new(H3Code::FrameError, "truncated DATA frame"));
            }
            Read::Got(n, fin) => (n, fin),
            Read::Blocked => return Ok(()),
            Read::Reset(code) => return self.on_peer_reset(q, id, code),
        };
        s.recv_fin |= fin;
        if n == 0 && !fin {
            return Ok(());
        }
        let left = left - n as u64;
        s.recv = if left == 0 {
            Recv::FrameHeader
        } else {
            Recv::Payload {
                ty: frame::DATA,
                left,
            }
        };
        let mut caps = Vec::new();
        let parsed = s.capsules.as_mut().unwrap().push(&bytes, &mut caps);
        if parsed.is_err() {
            return self.stream_error(q, id, H3Code::MessageError);
        }
        for c in caps {
            match c {
                Capsule::Close { code, reason } => {
                    // The session is over: answer with our FIN (draft §6).
                    self.end_session(q, id, Some((true, code, reason)));
                    self.write(id, Vec::new(), true);
                }
                Capsule::Drain => {
                    if self.wt.contains_key(&id) {
                        self.event(EventKind::SessionDrain, id);
                    }
                }
            }
        }
        self.read_stream(q, id)
    }

    /// A WebTransport stream named session `sid`: hand it to JS, park it
    /// until the session is accepted, or refuse it.
    fn attach_stream(&mut self, q: &mut QConn, id: u64, sid: u64) {
        let pending_room = self.buffered < self.limits.max_buffered_streams;
        let reject = |q: &mut QConn, code: u64| {
            let _ = q.stream_shutdown(id, Shutdown::Read, code);
            if id & 0x2 == 0 {
                let _ = q.stream_shutdown(id, Shutdown::Write, code);
            }
        };
        match self.wt.get_mut(&sid) {
            Some(w) if w.accepted => {
                w.streams.insert(id);
                self.event(EventKind::StreamOpen, id).code = sid;
            }
            Some(w) if pending_room => {
                w.parked.push(id);
                self.buffered += 1;
                self.streams.get_mut(&id).unwrap().parked = true;
            }
            Some(_) => {
                reject(q, wt::code::BUFFERED_STREAM_REJECTED);
                self.streams.remove(&id);
            }
            None => {
                // A server may see a stream before the CONNECT that opens its
                // session (they travel on different streams).
                // Its CONNECT may be a stream not read yet; a session that
                // ended recently or a stream that is a plain request cannot
                // be it.
                let may_come = self.role == Role::Server
                    && sid & 0x3 == 0
                    && !self.streams.contains_key(&sid)
                    && !self.ended.contains(&sid)
                    && self.goaway.is_none_or(|g| sid < g);
                if may_come && pending_room {
                    self.orphans.push((sid, id));
                    self.buffered += 1;
                    self.streams.get_mut(&id).unwrap().parked = true;
                } else {
                    let code = if may_come {
                        wt::code::BUFFERED_STREAM_REJECTED
                    } else {
                        wt::code::SESSION_GONE
                    };
                    reject(q, code);
                    self.streams.remove(&id);
                }
            }
        }
    }

    fn on_frame_start(&mut self, q: &mut QConn, id: u64, ty: u64, len: u64) -> ConnResult<()> {
        let server = self.role == Role::Server;
        let s = self.streams.get_mut(&id).unwrap();
        let first = !s.headers_seen && s.body_received == 0;
        let server_bidi = id & 0x1 == 1;
        if server_bidi && !server && (ty != frame::WEBTRANSPORT_STREAM || !first) {
            return Err(ConnError::new(
                H3Code::StreamCreationError,
                "server-initiated bidirectional stream is not WebTransport",
            ));
        }
        match ty {
            frame::HEADERS => {
                if s.trailers_seen {
                    return Err(ConnError::new(
                        H3Code::FrameUnexpected,
                        "HEADERS after trailers",
                    ));
                }
                if len > self.limits.max_field_section_size {
                    if server && !s.headers_seen {
                        s.recv = Recv::Discard { left: len };
                        return self.refuse(q, id, 431);
                    }
                    s.recv = Recv::Discard { left: len };
                    return self.stream_error(q, id, H3Code::ExcessiveLoad);
                }
                s.recv = Recv::Payload { ty, left: len };
            }
            frame::DATA => {
                if !s.headers_seen {
                    return Err(ConnError::new(
                        H3Code::FrameUnexpected,
                        "DATA before HEADERS",
                    ));
                }
                if s.trailers_seen {
                    return Err(ConnError::new(
                        H3Code::FrameUnexpected,
                        "DATA after trailers",
                    ));
                }
                s.recv = if len == 0 {
                    Recv::FrameHeader
                } else {
                    Recv::Payload { ty, left: len }
                };
            }
            frame::WEBTRANSPORT_STREAM if first && self.limits.webtransport => {
                // The "length" is the session id; the rest is raw bytes.
                s.raw = true;
                s.recv = Recv::Raw;
                s.headers_seen = true;
                s.wt_session = Some(len);
                self.attach_stream(q, id, len);
            }
            frame::WEBTRANSPORT_STREAM if first && server => {
                // WebTransport is switched off: refuse the stream, keep the
                // connection.
                return self.stream_error(q, id, H3Code::StreamCreationError);
            }
            frame::SETTINGS | frame::GOAWAY | frame::MAX_PUSH_ID | frame::CANCEL_PUSH => {
                return Err(ConnError::new(
                    H3Code::FrameUnexpected,
                    "control frame on request stream",
                ));
            }
            frame::PUSH_PROMISE => {
                return Err(if server {
                    ConnError::new(H3Code::FrameUnexpected, "PUSH_PROMISE from client")
                } else {
                    ConnError::new(H3Code::IdError, "PUSH_PROMISE without MAX_PUSH_ID")
                });
            }
            t if frame::is_reserved_h2_frame(t) => {
                return Err(ConnError::new(
                    H3Code::FrameUnexpected,
                    "reserved HTTP/2 frame type",
                ));
            }
            _ => {
                s.recv = if len == 0 {
                    Recv::FrameHeader
                } else {
                    Recv::Discard { left: len }
                }
            }
        }
        Ok(())
    }

    fn decode(&self, payload: &[u8]) -> Result<Section, H3Code> {
        section::decode(payload, self.limits.max_field_section_size)
    }

    fn on_frame_payload(
        &mut self,
        q: &mut QConn,
        id: u64,
        ty: u64,
        payload: &[u8],
    ) -> ConnResult<()> {
        debug_assert_eq!(ty, frame::HEADERS);
        let section = match self.decode(payload) {
            Ok(f) => f,
            Err(H3Code::QpackDecompressionFailed) => {
                return Err(ConnError::new(
                    H3Code::QpackDecompressionFailed,
                    "QPACK decode failed",
                ));
            }
            Err(code) => {
                let s = self.streams.get_mut(&id).unwrap();
                if self.role == Role::Server && !s.headers_seen {
                    return self.refuse(q, id, 431);
                }
                return self.stream_error(q, id, code);
            }
        };
        let fields = section.fields();
        let s = self.streams.get_mut(&id).unwrap();
        if s.headers_seen {
            // Trailers.
            s.trailers_seen = true;
            if let Err(_why) = headers::check_trailers(&fields) {
                return self.stream_error(q, id, H3Code::MessageError);
            }
            if s.hidden || s.drop_body {
                return Ok(());
            }
            let ev = self.event(EventKind::Trailers, id);
            ev.headers = Some(section.into_fields());
            return Ok(());
        }
        if fields.len() > self.limits.max_header_count {
            if self.role == Role::Server {
                return self.refuse(q, id, 431);
            }
            return self.stream_error(q, id, H3Code::ExcessiveLoad);
        }
        match self.role {
            Role::Server => {
                let head = match headers::check_request(&fields) {
                    Ok(h) => h,
                    Err(_why) => return self.stream_error(q, id, H3Code::MessageError),
                };
                let wt_connect = self.limits.webtransport
                    && head.method == "CONNECT"
                    && head.protocol.as_deref().is_some_and(is_wt_protocol);
                if wt_connect && self.wt.len() as u64 >= self.limits.max_wt_sessions {
                    return self.refuse(q, id, 429);
                }
                let s = self.streams.get_mut(&id).unwrap();
                s.headers_seen = true;
                s.content_length = head.content_length;
                let no_more = s.recv_fin && s.unparsed().is_empty();
                s.end_told = no_more;
                s.drop_body = matches!(head.method.as_str(), "GET" | "HEAD");
                s.tunnel = head.method == "CONNECT";
                let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.orphans)
                    .into_iter()
                    .partition(|&(sid, _)| sid == id);
                self.orphans = others;
                let mine: Vec<u64> = mine.into_iter().map(|(_, stream)| stream).collect();
                if wt_connect {
                    s.capsules = Some(Box::default());
                    let w = WtSession {
                        parked: mine,
                        ..WtSession::default()
                    };
                    self.wt.insert(id, w);
                } else {
                    // Streams that named a plain request as their session.
                    self.buffered -= mine.len();
                    for stream in mine {
                        let _ = q.stream_shutdown(stream, Shutdown::Read, wt::code::SESSION_GONE);
                        let _ = q.stream_shutdown(stream, Shutdown::Write, wt::code::SESSION_GONE);
                        self.streams.remove(&stream);
                    }
                }
                let early = self.early;
                let ev = self.event(EventKind::Headers, id);
                ev.headers = Some(section.into_fields());
                ev.fin = no_more;
                ev.early = early;
            }
            Role::Client => {
                let (status, content_length) = match headers::check_response(&fields) {
                    Ok(r) => r,
                    Err(_why) => return self.stream_error(q, id, H3Code::MessageError),
                };
                if (100..200).contains(&status) {
                    return Ok(()); // informational: the final response follows
                }
                if self.wt.get(&id).is_some_and(|w| !w.accepted) {
                    if (200..300).contains(&status) {
                        self.streams.get_mut(&id).unwrap().capsules = Some(Box::default());
                        self.accept_session(id);
                    } else {
                        self.end_session(q, id, None);
                    }
                }
                let s = self.streams.get_mut(&id).unwrap();
                s.headers_seen = true;
                // content-length of a HEAD, 204 or 304 response describes a
                // body that is not sent (RFC 9110 §8.6).
                s.content_length = if s.head_request || status == 204 || status == 304 {
                    None
                } else {
                    content_length
                };
                let no_more = s.recv_fin && s.unparsed().is_empty();
                s.end_told = no_more;
                let ev = self.event(EventKind::Headers, id);
                ev.headers = Some(section.into_fields());
                ev.fin = no_more;
            }
        }
        Ok(())
    }

    fn on_request_end(&mut self, q: &mut QConn, id: u64) -> ConnResult<()> {
        let s = self.streams.get_mut(&id).unwrap();
        if !s.headers_seen {
            if s.hidden {
                s.recv = Recv::Done;
                return self.maybe_remove(id);
            }
            return self.stream_error(q, id, H3Code::RequestIncomplete);
        }
        if s.content_length.is_some_and(|cl| cl != s.body_received) {
            return self.stream_error(q, id, H3Code::MessageError);
        }
        s.recv = Recv::Done;
        if s.capsules.is_some() {
            // A CONNECT stream ended without CLOSE_WEBTRANSPORT_SESSION:
            // closed with code 0 and no reason (draft §6); our FIN answers.
            if self.wt.contains_key(&id) {
                self.end_session(q, id, Some((true, 0, String::new())));
                self.write(id, Vec::new(), true);
                self.flush_stream(q, id);
            }
            return self.maybe_remove(id);
        }
        if !s.hidden && !s.end_told {
            self.event(EventKind::Data, id).fin = true;
        }
        self.maybe_remove(id)
    }

    fn maybe_remove(&mut self, id: u64) -> ConnResult<()> {
        if self.streams.get(&id).is_some_and(ReqStream::finished) && Some(id) != self.control_out {
            self.forget(id);
        }
        Ok(())
    }

    /// Drops stream `id` and its place in a WebTransport session.
    fn forget(&mut self, id: u64) {
        if let Some(sid) = self.streams.remove(&id).and_then(|s| s.wt_session) {
            if let Some(w) = self.wt.get_mut(&sid) {
                w.streams.remove(&id);
            }
        }
    }

    fn on_peer_reset(&mut self, q: &mut QConn, id: u64, code: u64) -> ConnResult<()> {
        self.count_reset(id)?;
        if self.wt.contains_key(&id) {
            self.end_session(q, id, Some((false, 0, String::new())));
        }
        let code = self.app_code(id, code);
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        s.recv = Recv::Done;
        let hidden = s.hidden || (!s.headers_seen && self.role == Role::Server);
        if !(s.raw || s.send_closed || s.fin_sent && s.out.is_empty()) {
            // The peer gave up on the exchange: so do we (RFC 9114 §4.1.1),
            // which also lets quiche free the stream. (Raw and WebTransport
            // streams keep their sending half.)
            let _ = q.stream_shutdown(id, Shutdown::Write, H3Code::RequestCancelled.code());
            s.send_closed = true;
            s.clear_out();
        }
        if !hidden {
            let ev = self.event(EventKind::Reset, id);
            ev.code = code;
            ev.fin = true;
        }
        self.maybe_remove(id)
    }

    /// Stream error: abort both directions with `code`, tell JS.
    fn stream_error(&mut self, q: &mut QConn, id: u64, code: H3Code) -> ConnResult<()> {
        if self.wt.contains_key(&id) {
            self.end_session(q, id, Some((false, 0, String::new())));
        }
        let _ = q.stream_shutdown(id, Shutdown::Read, code.code());
        let _ = q.stream_shutdown(id, Shutdown::Write, code.code());
        if let Some(s) = self.streams.remove(&id) {
            // A client's fetch is waiting whether or not a head arrived.
            if (s.headers_seen || self.role == Role::Client) && !s.hidden {
                let ev = self.event(EventKind::Reset, id);
                ev.code = code.code();
                ev.fin = false;
            }
        }
        Ok(())
    }

    /// Server: answers a request natively (431) without involving JS, and
    /// asks the client to stop sending the rest (STOP_SENDING, H3_NO_ERROR).
    fn refuse(&mut self, q: &mut QConn, id: u64, status: u16) -> ConnResult<()> {
        let head = self.encode_headers(&[":status".into(), status.to_string()]);
        let s = self.streams.get_mut(&id).unwrap();
        s.hidden = true;
        s.headers_seen = false;
        let _ = q.stream_shutdown(id, Shutdown::Read, H3Code::NoError.code());
        s.recv = Recv::Done;
        self.note_stopped(q, id);
        self.queue(id, head, 0, true);
        self.flush(q);
        Ok(())
    }

    fn read_uni(&mut self, q: &mut QConn, id: u64) -> ConnResult<()> {
        self.ensure_scratch();
        if self.limits.raw {
            if q.stream_finished(id) {
                return self.release_unread(q, id);
            }
            let mut s = ReqStream::raw(Recv::Raw, None);
            s.send_closed = true;
            self.streams.insert(id, s);
            self.event(EventKind::StreamOpen, id);
            return self.read_stream(q, id);
        }
        let st = self.uni.entry(id).or_insert(UniStream {
            kind: UniKind::Unknown,
            inbuf: Vec::new(),
            discard: 0,
            settings_seen: false,
        });
        if st.kind == UniKind::Ignored {
            return self.drain_ignored(q, id);
        }
        let mut fin = false;
        loop {
            // Until the stream type is known, read no further than its
            // preface: a WebTransport stream's data is read under credit.
            let want = if st_kind(&self.uni, id) == UniKind::Unknown {
                16
            } else {
                self.scratch.len()
            };
            match recv(q, id, &mut self.scratch[..want]) {
                Read::Got(n, f) => {
                    let st = self.uni.get_mut(&id).unwrap();
                    let mut data = &self.scratch[..n];
                    if st.discard > 0 {
                        let d = (st.discard as usize).min(data.len());
                        st.discard -= d as u64;
                        data = &data[d..];
                    }
                    if st.kind == UniKind::Encoder {
                        check_encoder_stream(data)?;
                    } else if st.kind == UniKind::Decoder {
                        // Our encoder never uses the dynamic table: the
                        // peer's acknowledgements carry nothing to act on.
                    } else {
                        st.inbuf.extend_from_slice(data);
                    }
                    fin = f;
                    if n == 0 || f {
                        break;
                    }
                    if st_kind(&self.uni, id) == UniKind::Unknown {
                        self.parse_uni(q, id, f)?;
                        if !self.uni.contains_key(&id) {
                            // It became a WebTransport stream (or was refused).
                            return match self.streams.contains_key(&id) {
                                true => self.read_stream(q, id),
                                false => Ok(()),
                            };
                        }
                    }
                }
                Read::Blocked => break,
                Read::Reset(_) => {
                    fin = true;
                    break;
                }
            }
        }
        self.parse_uni(q, id, fin)?;
        if !self.uni.contains_key(&id) {
            return match self.streams.contains_key(&id) {
                true => self.read_stream(q, id),
                false => Ok(()),
            };
        }
        if fin {
            let kind = self.uni.get(&id).map(|s| s.kind);
            if matches!(
                kind,
                Some(UniKind::Control | UniKind::Encoder | UniKind::Decoder)
            ) {
                return Err(ConnError::new(
                    H3Code::ClosedCriticalStream,
                    "critical stream closed",
                ));
            }
            self.uni.remove(&id);
        }
        Ok(())
    }

    /// Discards what an ignored stream has received; once its end (FIN or
    /// reset) is read, quiche frees it and it is forgotten.
    fn drain_ignored(&mut self, q: &mut QConn, id: u64) -> ConnResult<()> {
        match q.stream_discard(id, usize::MAX) {
            Ok((_, false)) | Err(quiche::Error::Done) => Ok(()),
            _ => {
                self.uni.remove(&id);
                Ok(())
            }
        }
    }

    fn parse_uni(&mut self, q: &mut QConn, id: u64, fin: bool) -> ConnResult<()> {
        let server = self.role == Role::Server;
        let st = self.uni.get_mut(&id).unwrap();
        if st.kind == UniKind::Unknown {
            let Some((ty, n)) = frame::get_varint(&st.inbuf) else {
                return Ok(());
            };
            if ty == stream_type::WEBTRANSPORT && self.limits.webtransport {
                let Some((sid, m)) = frame::get_varint(&st.inbuf[n..]) else {
                    return Ok(()); // the session id is still on its way
                };
                let rest = st.inbuf.split_off(n + m);
                self.uni.remove(&id);
                let mut s = ReqStream::raw(Recv::Raw, Some(sid));
                s.send_closed = true;
                s.inbuf = rest;
                s.recv_fin = fin;
                self.streams.insert(id, s);
                self.attach_stream(q, id, sid);
                return Ok(());
            }
            st.inbuf.drain(..n);
            let (slot, kind) = match ty {
                stream_type::CONTROL => (&mut self.peer_control, UniKind::Control),
                stream_type::QPACK_ENCODER => (&mut self.peer_encoder, UniKind::Encoder),
                stream_type::QPACK_DECODER => (&mut self.peer_decoder, UniKind::Decoder),
                stream_type::PUSH if server => {
                    return Err(ConnError::new(
                        H3Code::StreamCreationError,
                        "push stream from client",
                    ));
                }
                stream_type::PUSH => {
                    return Err(ConnError::new(
                        H3Code::IdError,
                        "push stream without MAX_PUSH_ID",
                    ));
                }
                _ => {
                    // Unknown stream types are ignored (RFC 9114 §6.2): their
                    // data is discarded as it arrives, until the end. Not
                    // STOP_SENDING: quiche 0.30 never frees a stream whose
                    // reading was shut down (neither its FIN nor the peer's
                    // reset makes it readable again), so each would cost the
                    // peer one stream of credit for the connection's life
                    // (13 streams ended a connection's use of them).
                    st.kind = UniKind::Ignored;
                    st.inbuf = Vec::new();
                    if fin {
                        self.uni.remove(&id);
                        return Ok(());
                    }
                    return self.drain_ignored(q, id);
                }
            };
            if slot.is_some() {
                return Err(ConnError::new(
                    H3Code::StreamCreationError,
                    "duplicate critical stream",
                ));
            }
            *slot = Some(id);
            st.kind = kind;
            if kind != UniKind::Control {
                let rest = std::mem::take(&mut st.inbuf);
                if kind == UniKind::Encoder {
                    check_encoder_stream(&rest)?;
                }
                return Ok(());
            }
        }
        if st.kind != UniKind::Control {
            return Ok(());
        }
        loop {
            let st = self.uni.get_mut(&id).unwrap();
            let Some((ty, len, hl)) = frame::get_frame_header(&st.inbuf) else {
                return Ok(());
            };
            if !st.settings_seen && ty != frame::SETTINGS {
                return Err(ConnError::new(
                    H3Code::MissingSettings,
                    "first control frame is not SETTINGS",
                ));
            }
            let known = matches!(
                ty,
                frame::SETTINGS | frame::GOAWAY | frame::MAX_PUSH_ID | frame::CANCEL_PUSH
            );
            if !known {
                if matches!(ty, frame::DATA | frame::HEADERS | frame::PUSH_PROMISE)
                    || frame::is_reserved_h2_frame(ty)
                {
                    return Err(ConnError::new(
                        H3Code::FrameUnexpected,
                        "frame not allowed on control stream",
                    ));
                }
                // Unknown frame: skip its payload, buffered or not.
                let have = (st.inbuf.len() - hl) as u64;
                let drop = have.min(len) as usize;
                st.inbuf.drain(..hl + drop);
                st.discard = len - drop as u64;
                continue;
            }
            if len > MAX_CONTROL_FRAME {
                return Err(ConnError::new(
                    H3Code::ExcessiveLoad,
                    "control frame too large",
                ));
            }
            if ((st.inbuf.len() - hl) as u64) < len {
                return Ok(());
            }
            let payload: Vec<u8> = st.inbuf[hl..hl + len as usize].to_vec();
            st.inbuf.drain(..hl + len as usize);
            match ty {
                frame::SETTINGS => {
                    if st.settings_seen {
                        return Err(ConnError::new(H3Code::FrameUnexpected, "second SETTINGS"));
                    }
                    st.settings_seen = true;
                    let pairs = frame::parse_settings(&payload)
                        .ok_or(ConnError::new(H3Code::FrameError, "malformed SETTINGS"))?;
                    let mut seen = BTreeSet::new();
                    for (k, v) in &pairs {
                        if setting::is_reserved_h2(*k) || !seen.insert(*k) {
                            return Err(ConnError::new(
                                H3Code::SettingsError,
                                "invalid or duplicate setting",
                            ));
                        }
                        if *k == setting::H3_DATAGRAM {
                            // RFC 9297 §2.1.1: 0 or 1, and 1 only alongside
                            // the max_datagram_frame_size transport parameter.
                            let dgram_param = q
                                .peer_transport_params()
                                .is_some_and(|p| p.max_datagram_frame_size.is_some());
                            if *v > 1 || (*v == 1 && !dgram_param) {
                                return Err(ConnError::new(
                                    H3Code::SettingsError,
                                    "invalid SETTINGS_H3_DATAGRAM",
                                ));
                            }
                        }
                    }
                }
                frame::GOAWAY => {
                    let gid = frame::parse_single_varint(&payload)
                        .ok_or(ConnError::new(H3Code::FrameError, "malformed GOAWAY"))?;
                    if server {
                        // The client is done with this connection (its id
                        // limits pushes, which we never make): the driver
                        // closes once the requests in flight are answered.
                        self.peer_goaway = true;
                    } else {
                        if gid % 4 != 0 {
                            return Err(ConnError::new(
                                H3Code::IdError,
                                "GOAWAY id not a request stream",
                            ));
                        }
                        if self.goaway.is_some_and(|prev| gid > prev) {
                            return Err(ConnError::new(H3Code::IdError, "GOAWAY id increased"));
                        }
                        self.goaway = Some(gid);
                        self.event(EventKind::GoAway, gid);
                    }
                }
                frame::MAX_PUSH_ID if !server => {
                    return Err(ConnError::new(
                        H3Code::FrameUnexpected,
                        "MAX_PUSH_ID from server",
                    ));
                }
                _ => {}
            }
        }
    }

    // ---- writing ------------------------------------------------------------

    /// Moves queued bytes into QUIC as far as flow control allows.
    pub fn flush(&mut self, q: &mut QConn) {
        let ids: Vec<u64> = std::mem::take(&mut self.to_flush).into_iter().collect();
        for id in ids {
            self.flush_stream(q, id);
        }
    }

    fn flush_stream(&mut self, q: &mut QConn, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !s.opened || s.send_closed {
            return;
        }
        let mut blocked = false;
        let mut stopped = None;
        while !s.out.is_empty() {
            let fin = s.out.len() == 1 && s.out_fin;
            match s.send_front(q, id, fin) {
                Ok((n, all)) => {
                    self.writes += 1;
                    if n > 0 {
                        s.send_progress = Instant::now();
                    }
                    if !all {
                        blocked = true;
                        break;
                    }
                    if let Some(chunk) = s.out.pop_front() {
                        s.sent_report += chunk.payload;
                    }
                    if fin {
                        s.fin_sent = true;
                    }
                }
                Err(quiche::Error::Done) => {
                    // No room, or no stream: quiche answers Done too for a
                    // stream it has already forgotten (the peer stopped it
                    // before we sent anything, and reading its FIN completed
                    // it), which would otherwise wait here forever.
                    match q.stream_capacity(id) {
                        Err(quiche::Error::StreamStopped(code)) => stopped = Some(code),
                        Err(quiche::Error::InvalidStreamState(_)) => {
                            stopped = Some(H3Code::RequestCancelled.code())
                        }
                        _ => blocked = true,
                    }
                    break;
                }
                Err(quiche::Error::StreamStopped(code)) => {
                    stopped = Some(code);
                    break;
                }
                Err(quiche::Error::StreamLimit) => {
                    // Not creatable yet: back to the queue of unopened requests.
                    s.opened = false;
                    self.pending_opens.push_front(id);
                    return;
                }
                Err(_) => {
                    stopped = Some(H3Code::InternalError.code());
                    break;
                }
            }
        }
        if s.out.is_empty() && s.out_fin && !s.fin_sent && stopped.is_none() {
            // A raw stream's FIN with no bytes left to carry it.
            match q.stream_send(id, &[], true) {
                Ok(_) => {
                    s.fin_sent = true;
                    self.writes += 1;
                }
                Err(quiche::Error::StreamStopped(code)) => stopped = Some(code),
                Err(quiche::Error::StreamLimit) => {
                    s.opened = false;
                    self.pending_opens.push_front(id);
                    return;
                }
                Err(_) => blocked = true,
            }
        }
        let fin_now = s.fin_sent && s.out.is_empty();
        let report = if stopped.is_none()
            && !fin_now
            && s.out.iter().map(|c| c.payload).sum::<u64>() > SENT_LOW_WATER
        {
            0
        } else {
            std::mem::take(&mut s.sent_report)
        };
        let hidden = s.hidden;
        let raw = s.raw;
        if let Some(code) = stopped {
            s.send_closed = true;
            s.clear_out();
            let _ = q.stream_shutdown(id, Shutdown::Write, code);
            if !hidden {
                let code = self.app_code(id, code);
                self.event(EventKind::StopSending, id).code = code;
            }
        } else if blocked {
            self.to_flush.insert(id);
        }
        let finished = fin_now && stopped.is_none() && (id & 0x2 == 0 || raw);
        // A server's response that ends here needs one event, not two:
        // Finished carries the bytes Sent would have (JS's write credit no
        // longer matters once the whole body is handed over).
        let merged = finished && self.role == Role::Server && !raw;
        if report > 0 && !hidden && !merged {
            self.event(EventKind::Sent, id).code = report;
        }
        if finished {
            self.unacked.insert(id);
            if self.unacked.len() >= self.unacked_prune_at {
                self.unacked.retain(|&id| q.stream_capacity(id).is_ok());
                self.unacked_prune_at = (self.unacked.len() * 2).max(64);
            }
            if !hidden {
                self.event(EventKind::Finished, id).code = if merged { report } else { 0 };
            }
        }
        let _ = self.maybe_remove(id);
    }

    /// Checks streams waiting on JS for a STOP_SENDING from the peer, which
    /// quiche only reports on the next send attempt.
    pub fn poll_stopped(&mut self, q: &mut QConn) {
        let server = self.role == Role::Server;
        let mut stopped = Vec::new();
        for (&id, s) in &self.streams {
            let candidate = (id & 0x2 == 0 && s.headers_seen) || (s.raw && s.opened);
            if candidate && !s.send_closed && !s.fin_sent && s.out.is_empty() {
                match q.stream_writable(id, 0) {
                    Err(quiche::Error::StreamStopped(code)) => stopped.push((id, code)),
                    // A request quiche has forgotten: the client stopped it
                    // before we sent anything, and reading its FIN then
                    // completed it (the code is gone with it). Not raw or
                    // WebTransport streams: quiche creates those of ours
                    // only when they first send.
                    Err(quiche::Error::InvalidStreamState(_))
                        if server && !s.raw && id & 0x3 == 0 =>
                    {
                        stopped.push((id, H3Code::RequestCancelled.code()))
                    }
                    _ => {}
                }
            }
        }
        for (id, code) in stopped {
            if let Some(s) = self.streams.get_mut(&id) {
                s.send_closed = true;
                let _ = q.stream_shutdown(id, Shutdown::Write, code);
                if !s.hidden {
                    let code = self.app_code(id, code);
                    self.event(EventKind::StopSending, id).code = code;
                }
                let _ = self.maybe_remove(id);
            }
        }
    }
}

/// The peer's QPACK encoder stream may only say "Set Dynamic Table
/// Capacity 0" (one byte, 0x20): we advertise capacity 0, so a larger
/// capacity or any insert is QPACK_ENCODER_STREAM_ERROR (RFC 9204 §4.3.1,
/// §3.2.3).
fn check_encoder_stream(data: &[u8]) -> ConnResult<()> {
    if data.iter().all(|&b| b == 0x20) {
        return Ok(());
    }
    Err(ConnError::new(
        H3Code::QpackEncoderStreamError,
        "encoder stream instruction beyond table capacity 0",
    ))
}

fn st_kind(uni: &IdMap<UniStream>, id: u64) -> UniKind {
    uni.get(&id).map_or(UniKind::Ignored, |s| s.kind)
}

/// Whether `:protocol` names WebTransport (draft-02..14 and 15+ spellings).
fn is_wt_protocol(p: &str) -> bool {
    p == "webtransport" || p == "webtransport-h3"
}
