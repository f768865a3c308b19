#!/usr/bin/env python3
"""Raw-frame HTTP/3 client for bad-input tests, on aioquic's QUIC layer.

aioquic's QuicConnection / QuicConnectionProtocol carry the QUIC part; the
HTTP/3 part is written here, frame by frame, so that it can misbehave:
aioquic's H3Connection is not used at all. The client opens its control
stream (SETTINGS) and both QPACK streams like a normal HTTP/3 client, then
writes crafted bytes on request or unidirectional streams and records exactly
what the server did:

  * per request stream: response :status and fields (decoded with aioquic's
    pylsqpack decoder), body bytes, FIN, RESET_STREAM code, STOP_SENDING code;
  * per connection: CONNECTION_CLOSE code, reason and whether it was an
    application close (frame 0x1d, which aioquic reports with frame_type None),
    the server's SETTINGS, STOP_SENDING on our unidirectional streams;
  * after every case: a normal `GET <url path>` on a NEW connection
    (`followUp`).

Before any misbehaviour the client waits for the server's SETTINGS and for
the acknowledgement of its own stream prefaces and SETTINGS, so the server
provably knows our critical streams.

Header blocks we send are encoded by the tiny QPACK encoder below (literal
field lines with literal names, no Huffman, Required Insert Count 0), so any
name, order or size can be sent; a few variants craft invalid blocks by hand.

One scenario per run, chosen with --case (see CASES); --variant limits a case
to some of its variants. Each variant that ends the connection runs on a
connection of its own. Prints one JSON object on stdout (`"summary": true`):

  case, probes: [{name, expect, conforms, ...observations}], followUp,
  errors, elapsedMs, ok

`expect` is what RFC 9114 / RFC 9204 / RFC 9297 require (`connClose` code,
`streamError` code, `status`, or `observe` when the RFC leaves it open);
`conforms` compares it with what happened. `ok` = no client-side errors, every
probe conforms and the follow-up GET got 200. Exit status: 0 when ok, 1
otherwise, 2 for bad arguments. Every wait is bounded by --timeout (or --wait
/ --hold), so a broken server yields a failing report, never a hang.

Cases:
  data-before-headers   DATA first on a request stream; DATA or HEADERS after
                        trailers -> connection error H3_FRAME_UNEXPECTED
  headers-too-large     field section over --max-header-size (frame length and
                        decoded size) -> 431; exactly at the limit -> 200
  too-many-headers      --max-header-count + 1 fields -> 431; exactly -> 200
  missing-pseudo        no :path, uppercase names, pseudo after regular,
                        duplicate :method, unknown pseudo -> stream error
                        H3_MESSAGE_ERROR, then a GET on the same connection
  content-length-mismatch  POST declaring 10 sending 5 (+FIN), declaring 5
                        sending 10 -> stream error H3_MESSAGE_ERROR
  reserved-frame        HTTP/2 frame types 0x2 0x6 0x8 0x9 on a request stream
                        -> H3_FRAME_UNEXPECTED; reserved types 0x1f*N+0x21
                        before, between and after HEADERS/DATA -> ignored
  second-settings       a second SETTINGS on the control stream
  close-control-stream  FIN / RESET_STREAM on our control stream
                        -> H3_CLOSED_CRITICAL_STREAM
  close-qpack-encoder-stream  FIN / RESET_STREAM on the QPACK encoder stream,
                        FIN on the decoder stream -> H3_CLOSED_CRITICAL_STREAM
  control-misc          further control-stream and SETTINGS errors, a
                        truncated frame before FIN, an empty request stream,
                        an encoder-stream instruction the decoder cannot take
  qpack-garbage         invalid header blocks -> QPACK_DECOMPRESSION_FAILED
  reset-storm           --count requests (default 1000), each reset right
                        after it was sent (--reset-mode reset; cancel adds
                        STOP_SENDING) or once its response to GET --body-path
                        started (late), within MAX_STREAMS and opening more
                        as credit comes back; then a GET on the same
                        connection (a storm that gets no more credit for
                        --timeout s is reported as `stalled`)
  abandoned-streams     --count streams (default 2000), one connection per
                        mode: partial HEADERS + RESET_STREAM, RESET_STREAM
                        alone, bare FIN; then a GET on each connection
  slowloris-response    GET --body-path and never read it (our flow-control
                        windows are frozen) for --hold s while a second
                        connection keeps sending GETs
  unknown-uni-types     --count (default 50) unidirectional streams of
                        reserved types with data -> STOP_SENDING, request served
  datagrams             --count (default 500) HTTP/3 datagrams to flows that
                        do not exist -> dropped, request served (GET
                        --stats-path is reported as serverStats when given)
  incomplete-headers    half a HEADERS frame, then --wait s of silence
  incomplete-body       POST with content-length 100, half the body, then
                        --wait s of silence
"""

import argparse
import asyncio
import json
import sys
import time
from contextlib import asynccontextmanager

import pylsqpack
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from aioquic_common import (
    H3_NO_ERROR,
    MAX_DATAGRAM_FRAME_SIZE,
    SETTING_H3_DATAGRAM,
    HandshakeFailed,
    HandshakeTimeout,
    ScenarioClient,
    add_tls_args,
    connected_client,
    parse_url,
    quic_configuration,
    run_main,
)

# -- HTTP/3 and QPACK constants (RFC 9114 §7.2, §8.1; RFC 9204 §6) ---------------

DATA, HEADERS, SETTINGS, GOAWAY = 0x0, 0x1, 0x4, 0x7
STREAM_CONTROL, STREAM_PUSH, STREAM_ENCODER, STREAM_DECODER = 0x0, 0x1, 0x2, 0x3
SETTING_QPACK_MAX_TABLE_CAPACITY = 0x1
SETTING_MAX_FIELD_SECTION_SIZE = 0x6
SETTING_QPACK_BLOCKED_STREAMS = 0x7

H3_STREAM_CREATION_ERROR = 0x103
H3_CLOSED_CRITICAL_STREAM = 0x104
H3_FRAME_UNEXPECTED = 0x105
H3_FRAME_ERROR = 0x106
H3_SETTINGS_ERROR = 0x109
H3_MISSING_SETTINGS = 0x10a
H3_REQUEST_CANCELLED = 0x10c
H3_REQUEST_INCOMPLETE = 0x10d
H3_MESSAGE_ERROR = 0x10e
QPACK_DECOMPRESSION_FAILED = 0x200
QPACK_ENCODER_STREAM_ERROR = 0x201
H3_DATAGRAM_ERROR = 0x33

CODE_NAMES = {
    0x100: "H3_NO_ERROR", 0x101: "H3_GENERAL_PROTOCOL_ERROR",
    0x102: "H3_INTERNAL_ERROR", 0x103: "H3_STREAM_CREATION_ERROR",
    0x104: "H3_CLOSED_CRITICAL_STREAM", 0x105: "H3_FRAME_UNEXPECTED",
    0x106: "H3_FRAME_ERROR", 0x107: "H3_EXCESSIVE_LOAD", 0x108: "H3_ID_ERROR",
    0x109: "H3_SETTINGS_ERROR", 0x10a: "H3_MISSING_SETTINGS",
    0x10b: "H3_REQUEST_REJECTED", 0x10c: "H3_REQUEST_CANCELLED",
    0x10d: "H3_REQUEST_INCOMPLETE", 0x10e: "H3_MESSAGE_ERROR",
    0x10f: "H3_CONNECT_ERROR", 0x110: "H3_VERSION_FALLBACK",
    0x200: "QPACK_DECOMPRESSION_FAILED", 0x201: "QPACK_ENCODER_STREAM_ERROR",
    0x202: "QPACK_DECODER_STREAM_ERROR", 0x33: "H3_DATAGRAM_ERROR",
}


def reserved_type(n):
    """Reserved (greasing) frame / stream / setting type number n (§7.2.8)."""
    return 0x1f * n + 0x21


# -- wire encoding ----------------------------------------------------------------

def varint(v):
    """QUIC variable-length integer (RFC 9000 §16)."""
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 0x40000000:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def read_varint(buf, pos):
    """(value, next position), or None when buf holds only part of it."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        return None
    v = first & 0x3F
    for b in buf[pos + 1:pos + n]:
        v = (v << 8) | b
    return v, pos + n


def frame(ty, payload=b""):
    return varint(ty) + varint(len(payload)) + payload


def frame_header(ty, length):
    return varint(ty) + varint(length)


def settings_payload(pairs):
    return b"".join(varint(k) + varint(v) for k, v in pairs)


def qpack_int(value, prefix_bits, flags=0):
    """QPACK/HPACK prefixed integer (RFC 7541 §5.1); flags fill the bits above
    the prefix in the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def qpack_literal(name, value):
    """Literal Field Line with Literal Name (RFC 9204 §4.5.6), no Huffman."""
    return (qpack_int(len(name), 3, 0x20) + name +
            qpack_int(len(value), 7, 0x00) + value)


def qpack_block(fields, prefix=b"\x00\x00"):
    """Encoded field section: Required Insert Count 0 and Base 0 (no dynamic
    table), then every field as a literal with a literal name."""
    return prefix + b"".join(qpack_literal(n, v) for n, v in fields)


def headers_frame(fields, prefix=b"\x00\x00"):
    return frame(HEADERS, qpack_block(fields, prefix))


def field_section_size(fields):
    """Size as RFC 9114 §4.2.2 counts it: name + value + 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in fields)


def b(s):
    return s.encode() if isinstance(s, str) else s


def code_text(code):
    if code is None:
        return None
    return f"0x{code:x} {CODE_NAMES.get(code, '')}".strip()


# -- the client -------------------------------------------------------------------

class Response:
    """What the server sent on one request stream."""

    def __init__(self, client, stream_id):
        self.client = client
        self.stream_id = stream_id
        self.buf = bytearray()
        self.data_left = 0
        self.status = None
        self.headers = []
        self.trailers = None
        self.body_bytes = 0
        self.body_head = bytearray()
        self.ended = False
        self.reset = None
        self.stop_sending = None
        self.decode_error = None
        self.other_frames = []

    @property
    def done(self):
        return self.ended or self.reset is not None

    def feed(self, data):
        self.buf += data
        while True:
            if self.data_left:
                n = min(self.data_left, len(self.buf))
                if n == 0:
                    return
                self.body_bytes += n
                room = 512 - len(self.body_head)
                if room > 0:
                    self.body_head += self.buf[:min(n, room)]
                del self.buf[:n]
                self.data_left -= n
                continue
            ty = read_varint(self.buf, 0)
            ln = ty and read_varint(self.buf, ty[1])
            if not ln:
                return
            ty, (length, hl) = ty[0], ln
            if ty == DATA:
                del self.buf[:hl]
                self.data_left = length
                continue
            if len(self.buf) < hl + length:
                return
            payload = bytes(self.buf[hl:hl + length])
            del self.buf[:hl + length]
            if ty == HEADERS:
                self._on_headers(payload)
            else:
                self.other_frames.append(ty)

    def _on_headers(self, payload):
        try:
            control, fields = self.client.decoder.feed_header(
                self.stream_id, payload)
        except Exception as exc:  # noqa: BLE001 - DecompressionFailed, StreamBlocked
            self.decode_error = f"{type(exc).__name__}: {exc}"
            return
        if control:
            self.client.send_decoder_instructions(control)
        status = next((v for n, v in fields if n == b":status"), None)
        if self.status is None:
            code = int(status) if status and status.isdigit() else None
            if code is not None and 100 <= code < 200:
                return  # informational: the final response follows
            self.status = code
            self.headers = fields
        else:
            self.trailers = fields

    def report(self):
        out = {
            "stream": self.stream_id,
            "status": self.status,
            "headers": {n.decode("latin-1"): v.decode("latin-1")
                        for n, v in self.headers if not n.startswith(b":")},
            "bodyBytes": self.body_bytes,
            # the text of a short body; a long one is only counted
            "body": bytes(self.body_head).decode("utf-8", "replace")
            if self.body_bytes <= 200 else None,
            "ended": self.ended,
            "reset": self.reset,
            "stopSending": self.stop_sending,
        }
        if self.trailers is not None:
            out["trailers"] = {n.decode("latin-1"): v.decode("latin-1")
                               for n, v in self.trailers}
        if self.decode_error:
            out["decodeError"] = self.decode_error
        if self.other_frames:
            out["otherFrames"] = self.other_frames
        return out


class RawH3Client(ScenarioClient):
    """HTTP/3 by hand over aioquic's QUIC connection."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.authority = b"localhost"
        self.decoder = pylsqpack.Decoder(0, 0)
        self.responses = {}
        self.peer_uni = {}  # server uni stream id -> {type, buf, ended, reset}
        self.server_settings = None
        self.server_goaway = None
        self.server_control_frames = []
        self.local_uni_stopped = {}  # our uni stream id -> STOP_SENDING code
        self.control_id = self.encoder_id = self.decoder_id = None
        self.datagrams_received = 0
        self.close_info = None

    # -- events --------------------------------------------------------------
    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated) and self.close_info is None:
            self.close_info = {
                "code": event.error_code,
                "name": code_text(event.error_code),
                "reason": event.reason_phrase,
                # CONNECTION_CLOSE 0x1d (application) carries no frame type
                "app": event.frame_type is None,
                "frameType": event.frame_type,
                "byUs": self.closed_by_us,
            }
        super().quic_event_received(event)

    def _quic_event(self, event):
        if isinstance(event, StreamDataReceived):
            sid = event.stream_id
            if sid & 2:
                if sid & 1:
                    self._on_peer_uni(sid, event.data, event.end_stream)
            else:
                r = self.response(sid)
                r.feed(event.data)
                if event.end_stream:
                    r.ended = True
        elif isinstance(event, StreamReset):
            sid = event.stream_id
            if sid & 2:
                self.peer_uni.setdefault(sid, self._new_uni())["reset"] = \
                    event.error_code
            else:
                self.response(sid).reset = event.error_code
        elif isinstance(event, StopSendingReceived):
            sid = event.stream_id
            if sid & 2:
                self.local_uni_stopped[sid] = event.error_code
            else:
                self.response(sid).stop_sending = event.error_code
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams_received += 1

    @staticmethod
    def _new_uni():
        return {"type": None, "buf": bytearray(), "ended": False,
                "reset": None}

    def _on_peer_uni(self, sid, data, end):
        st = self.peer_uni.setdefault(sid, self._new_uni())
        st["buf"] += data
        st["ended"] |= end
        if st["type"] is None:
            got = read_varint(st["buf"], 0)
            if got is None:
                return
            st["type"] = got[0]
            del st["buf"][:got[1]]
        if st["type"] != STREAM_CONTROL:
            st["buf"].clear()  # QPACK streams: table capacity is 0 both ways
            return
        buf = st["buf"]
        while True:
            ty = read_varint(buf, 0)
            ln = ty and read_varint(buf, ty[1])
            if not ln or len(buf) < ln[1] + ln[0]:
                return
            ty, (length, hl) = ty[0], ln
            payload = bytes(buf[hl:hl + length])
            del buf[:hl + length]
            self.server_control_frames.append(ty)
            if ty == SETTINGS and self.server_settings is None:
                pairs, pos = {}, 0
                while pos < len(payload):
                    k = read_varint(payload, pos)
                    v = k and read_varint(payload, k[1])
                    if not v:
                        break
                    pairs[k[0]] = v[0]
                    pos = v[1]
                self.server_settings = pairs
            elif ty == GOAWAY:
                got = read_varint(payload, 0)
                self.server_goaway = got[0] if got else None

    # -- state ---------------------------------------------------------------
    def response(self, sid):
        r = self.responses.get(sid)
        if r is None:
            r = self.responses[sid] = Response(self, sid)
        return r

    def conn_report(self):
        return {"connClose": self.close_info}

    def bidi_credit(self):
        q = self._quic
        return q._remote_max_streams_bidi - q._local_next_stream_id_bidi // 4

    def uni_credit(self):
        q = self._quic
        return q._remote_max_streams_uni - q._local_next_stream_id_uni // 4

    # -- actions -------------------------------------------------------------
    def open_uni(self, preface=b"", fin=False):
        sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic.send_stream_data(sid, preface, end_stream=fin)
        return sid

    def start_h3(self, settings=None, control_payload=None):
        """Open the control stream (SETTINGS unless control_payload says
        otherwise) and the QPACK encoder and decoder streams."""
        if settings is None:
            settings = default_settings()
        body = control_payload if control_payload is not None else \
            frame(SETTINGS, settings_payload(settings))
        self.control_id = self.open_uni(varint(STREAM_CONTROL) + body)
        self.encoder_id = self.open_uni(varint(STREAM_ENCODER))
        self.decoder_id = self.open_uni(varint(STREAM_DECODER))
        self.transmit()

    def send_decoder_instructions(self, data):
        if self.decoder_id is not None and not self.terminated:
            self._quic.send_stream_data(self.decoder_id, data)

    def new_stream(self):
        sid = self._quic.get_next_available_stream_id()
        self.response(sid)
        return sid

    def send(self, sid, data, fin=False):
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()

    def reset(self, sid, code=H3_REQUEST_CANCELLED):
        self._quic.reset_stream(sid, code)
        self.transmit()

    def request_fields(self, method="GET", path="/", extra=()):
        return [(b":method", b(method)), (b":scheme", b"https"),
                (b":authority", self.authority), (b":path", b(path)),
                *[(b(n), b(v)) for n, v in extra]]

    async def get(self, path="/", timeout=5.0):
        """A normal GET on a new stream: its Response (done or not)."""
        sid = self.new_stream()
        self.send(sid, headers_frame(self.request_fields("GET", path)),
                  fin=True)
        await self.wait_until(lambda: self.responses[sid].done, timeout)
        return self.responses[sid]

    def acked(self, sid):
        """Whether everything written on our stream sid was acknowledged."""
        st = self._quic._streams.get(sid)
        if st is None:
            return True  # finished and forgotten
        return st.sender._buffer_start >= st.sender._buffer_stop

    async def wait_acked(self, ids, timeout):
        """Poll (ACKs raise no aioquic event) until ids are acknowledged."""
        deadline = time.monotonic() + timeout
        while not all(self.acked(sid) for sid in ids):
            if self.terminated or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    async def wait_end(self, timeout, done=lambda: False):
        """Wait for the connection to end (or done()); then whether it has."""
        await self.wait_until(done, timeout)
        return self.terminated is not None


def default_settings(datagrams=False):
    pairs = [(SETTING_QPACK_MAX_TABLE_CAPACITY, 0),
             (SETTING_QPACK_BLOCKED_STREAMS, 0),
             (SETTING_MAX_FIELD_SECTION_SIZE, 1 << 20),
             (reserved_type(5), 7)]  # a reserved setting the peer must ignore
    if datagrams:
        pairs.append((SETTING_H3_DATAGRAM, 1))
    return pairs


# -- connections ----------------------------------------------------------------

@asynccontextmanager
async def h3_connection(opts, *, settings=None, control_payload=None,
                        datagrams=False, params=None):
    """A QUIC connection with our HTTP/3 streams open and the server's
    SETTINGS received; closed with H3_NO_ERROR on exit (unless it is gone)."""
    extra = dict(params or {})
    if datagrams:
        extra["max_datagram_frame_size"] = MAX_DATAGRAM_FRAME_SIZE
    cfg = quic_configuration(["h3"], opts.timeout,
                             opts.server_name or opts.host, opts.insecure,
                             opts.ca, **extra)
    # silences longer than --wait / --hold must not end the connection
    cfg.idle_timeout = max(cfg.idle_timeout, opts.wait + 20, opts.hold + 20)
    created = []
    async with connected_client(opts, cfg, RawH3Client, created) as c:
        c.authority = opts.authority.encode()
        try:
            c.start_h3(settings, control_payload)
            # a server may close at once when our SETTINGS are the bad
            # input: that is for the caller to see in close_info
            if not await c.wait_until(lambda: c.server_settings is not None,
                                      opts.timeout) and not c.terminated:
                c.error("no SETTINGS from the server")
            # A stream reset before the server read its type byte cannot be
            # told from an unknown stream (quiche drops unread data on
            # RESET_STREAM, and RFC 9114 §6.2 has that tolerated): make sure
            # the server has our stream prefaces and SETTINGS first.
            ids = (c.control_id, c.encoder_id, c.decoder_id)
            if not await c.wait_acked(ids, opts.timeout) and \
                    not c.terminated:
                c.error("our control and QPACK streams were not acknowledged")
            yield c
        finally:
            c.close_unless_terminated(H3_NO_ERROR)


async def fresh_get(opts, path=None):
    """GET on a new connection: {status, body, elapsedMs} (+ error)."""
    t0 = time.monotonic()
    out = {"status": None}
    try:
        async with h3_connection(opts) as c:
            r = await c.get(path or opts.path, opts.timeout)
            out.update(status=r.status, body=r.report()["body"],
                       ended=r.ended, reset=r.reset)
            if c.terminated:
                out["connClose"] = c.close_info
    except Exception as exc:  # noqa: BLE001 - report everything
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    return out


def judge(probe):
    """Set probe["conforms"] from probe["expect"] and the observations."""
    exp = probe["expect"]
    close = probe.get("connClose")
    peer_close = close if close and not close.get("byUs") else None
    if "connClose" in exp:
        ok = bool(peer_close and peer_close["code"] == exp["connClose"]
                  and peer_close["app"])
    elif "streamError" in exp:
        code = exp["streamError"]
        r = probe.get("response") or {}
        ok = (peer_close is None and r.get("reset") == code and
              r.get("stopSending") in (None, code) and r.get("status") is None
              and (probe.get("sameConnection") or {}).get("status") == 200)
    elif "status" in exp:
        r = probe.get("response") or {}
        ok = peer_close is None and r.get("status") == exp["status"] and \
            r.get("ended") is True
        if "body" in exp:
            ok = ok and r.get("body") == exp["body"]
    else:
        ok = True  # observe only
    probe["conforms"] = bool(ok)
    return probe


async def run_probe(opts, name, expect, action, **conn_kw):
    """One variant on a connection of its own: `await action(c, probe)`
    returns a predicate telling when there is nothing more to wait for
    (besides the connection closing); then the connection's end is recorded
    and the probe judged."""
    t0 = time.monotonic()
    probe = {"name": name, "expect": expect}
    try:
        async with h3_connection(opts, **conn_kw) as c:
            if c.errors:
                probe["error"] = "; ".join(c.errors)
            elif c.terminated:
                probe.update(c.conn_report())  # closed before we could act
            else:
                done = await action(c, probe) if action else None
                await c.wait_end(opts.timeout, done or (lambda: False))
                if not c.terminated and "connClose" in expect:
                    # a late close would still count: give it a moment
                    await c.wait_end(0.2)
                probe.update(c.conn_report())
                for sid in probe.pop("_streams", []):
                    probe.setdefault("responses", []).append(
                        c.responses[sid].report())
                if "_after" in probe:
                    r = c.responses[probe.pop("_after")]
                    probe["getAfter"] = {"status": r.status, "reset": r.reset}
                if "_stream" in probe:
                    probe["response"] = c.responses[probe.pop("_stream")] \
                        .report()
                if "streamError" in expect and not c.terminated:
                    r = await c.get(opts.path, opts.timeout)
                    probe["sameConnection"] = {"status": r.status,
                                               "reset": r.reset}
                    probe.update(c.conn_report())
                if c.errors and "error" not in probe:
                    probe["clientErrors"] = c.errors
    except (HandshakeTimeout, HandshakeFailed) as exc:
        probe["error"] = f"connection failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - report everything
        probe["error"] = f"{type(exc).__name__}: {exc}"
    probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    return judge(probe)


def stream_action(build, fin=True, wait_response=True):
    """An action that sends build(c) (bytes) on a new request stream."""
    async def action(c, probe):
        sid = c.new_stream()
        probe["_stream"] = sid
        c.send(sid, build(c), fin=fin)
        r = c.responses[sid]
        return (lambda: r.done) if wait_response else None
    return action


def then_get(opts, action=None):
    """`action`, then a normal GET on the same connection: once it is
    answered the server has read what came before it (when nothing else
    tells), and a server that should have closed the connection did not."""
    async def wrapped(c, probe):
        if action is not None:
            await action(c, probe)
        sid = c.new_stream()
        c.send(sid, headers_frame(c.request_fields("GET", opts.path)),
               fin=True)
        probe["_after"] = sid
        r = c.responses[sid]
        return lambda: r.done
    return wrapped


# -- cases ------------------------------------------------------------------------

def conn(code):
    return {"connClose": code}


def stream_err(code):
    return {"streamError": code}


def variants_data_before_headers(opts):
    post = lambda c: c.request_fields("POST", opts.echo_path)  # noqa: E731
    trailers = headers_frame([(b"x-trailer", b"1")])
    return [
        ("data-first", conn(H3_FRAME_UNEXPECTED),
         stream_action(lambda c: frame(DATA, b"hello"), fin=False,
                       wait_response=False)),
        ("empty-data-first", conn(H3_FRAME_UNEXPECTED),
         stream_action(lambda c: frame(DATA), fin=False,
                       wait_response=False)),
        ("data-after-trailers", conn(H3_FRAME_UNEXPECTED),
         stream_action(lambda c: headers_frame(post(c)) + frame(DATA, b"ab") +
                       trailers + frame(DATA, b"cd"), fin=False,
                       wait_response=False)),
        ("headers-after-trailers", conn(H3_FRAME_UNEXPECTED),
         stream_action(lambda c: headers_frame(post(c)) + trailers + trailers,
                       fin=False, wait_response=False)),
    ]


def padded_to(fields, total):
    """fields plus one x-pad field making the section exactly `total`
    bytes as RFC 9114 §4.2.2 counts them."""
    need = total - field_section_size(fields) - 32 - len(b"x-pad")
    if need < 0:
        raise ValueError("limit too small")
    return fields + [(b"x-pad", b"a" * need)]


def variants_headers_too_large(opts):
    limit = opts.max_header_size

    def many_small(c):
        # encoded under the limit, decoded (with 32 per field) over it
        fields = c.request_fields("GET", opts.path)
        i = 0
        while field_section_size(fields) <= limit:
            fields.append((f"x-f{i:03d}".encode(), b"v" * 60))
            i += 1
        block = qpack_block(fields)
        assert len(block) <= limit, "the encoded block must fit the limit"
        return frame(HEADERS, block)

    return [
        ("frame-over-limit", {"status": 431},
         stream_action(lambda c: headers_frame(
             c.request_fields("GET", opts.path,
                              [("x-big", "a" * (limit + 1000))])))),
        ("decoded-over-limit", {"status": 431}, stream_action(many_small)),
        ("one-over-limit", {"status": 431},
         stream_action(lambda c: headers_frame(padded_to(
             c.request_fields("GET", opts.path), limit + 1)))),
        ("at-limit", {"status": 200, "body": opts.expect_body},
         stream_action(lambda c: headers_frame(padded_to(
             c.request_fields("GET", opts.path), limit)))),
    ]


def variants_too_many_headers(opts):
    def with_count(n):
        def build(c):
            fields = c.request_fields("GET", opts.path)
            fields += [(f"x-h{i}".encode(), b"1")
                       for i in range(n - len(fields))]
            return headers_frame(fields)
        return build

    n = opts.max_header_count
    return [
        ("over-limit", {"status": 431}, stream_action(with_count(n + 1))),
        ("at-limit", {"status": 200, "body": opts.expect_body},
         stream_action(with_count(n))),
    ]


def variants_missing_pseudo(opts):
    base = lambda c: c.request_fields("GET", opts.path)  # noqa: E731

    def send(fields_of):
        return stream_action(lambda c: headers_frame(fields_of(c)))

    return [
        ("no-path", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: [f for f in base(c) if f[0] != b":path"])),
        ("no-method", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: [f for f in base(c) if f[0] != b":method"])),
        ("uppercase-field-name", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: base(c) + [(b"X-Upper", b"1")])),
        ("uppercase-pseudo-name", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: [(b":PATH" if n == b":path" else n, v)
                         for n, v in base(c)])),
        ("pseudo-after-regular", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: base(c)[:3] + [(b"x-a", b"1")] + base(c)[3:])),
        ("duplicate-method", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: [(b":method", b"GET")] + base(c))),
        ("unknown-pseudo", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: base(c) + [(b":foo", b"1")])),
        ("connection-specific-field", stream_err(H3_MESSAGE_ERROR),
         send(lambda c: base(c) + [(b"connection", b"close")])),
        # Allowed (RFC 9114 section 4.3.1): Host in place of :authority.
        # The server's handler answers /url with the URL it saw.
        ("host-not-authority",
         {"status": 200, "body": "https://host.example:8443/url?q=1"},
         send(lambda c: [f for f in c.request_fields("GET", "/url?q=1")
                         if f[0] != b":authority"] +
              [(b"host", b"host.example:8443")])),
    ]


def variants_content_length(opts):
    def post(declared, body):
        return stream_action(lambda c: headers_frame(c.request_fields(
            "POST", opts.echo_path,
            [("content-length", str(declared))])) + frame(DATA, body))

    return [
        ("declared-10-sent-5", stream_err(H3_MESSAGE_ERROR), post(10, b"12345")),
        ("declared-5-sent-10", stream_err(H3_MESSAGE_ERROR),
         post(5, b"1234567890")),
        ("declared-5-sent-5", {"status": 200, "body": "5"},
         post(5, b"12345")),
    ]


def variants_reserved_frame(opts):
    def h2(ty, before):
        def build(c):
            head = headers_frame(c.request_fields("POST", opts.echo_path))
            bad = frame(ty, b"\x00" * 4)
            return bad + head if before else head + bad
        return stream_action(build, fin=False, wait_response=False)

    def grease(c):
        g = lambda n, size: frame(reserved_type(n), bytes(size))  # noqa: E731
        return (g(1, 3) + g(7, 0) +
                headers_frame(c.request_fields("POST", opts.echo_path)) +
                g(100, 20000) + frame(DATA, b"abc") + g(2 ** 20, 10) +
                frame(DATA, b"de") + g(3, 1))

    return [
        ("h2-0x2-before-headers", conn(H3_FRAME_UNEXPECTED), h2(0x2, True)),
        ("h2-0x6-before-headers", conn(H3_FRAME_UNEXPECTED), h2(0x6, True)),
        ("h2-0x8-after-headers", conn(H3_FRAME_UNEXPECTED), h2(0x8, False)),
        ("h2-0x9-after-headers", conn(H3_FRAME_UNEXPECTED), h2(0x9, False)),
        ("reserved-types-ignored", {"status": 200, "body": "5"},
         stream_action(grease)),
    ]


def control_action(data, fin=False):
    async def action(c, probe):
        c._quic.send_stream_data(c.control_id, data, end_stream=fin)
        c.transmit()
    return action


def variants_second_settings(opts):
    return [
        ("second-settings", conn(H3_FRAME_UNEXPECTED),
         control_action(frame(SETTINGS, settings_payload([(0x6, 100)])))),
    ]


def reset_action(which):
    async def action(c, probe):
        c.reset(getattr(c, which), H3_NO_ERROR)
    return action


def variants_close_control(opts):
    return [
        ("fin", conn(H3_CLOSED_CRITICAL_STREAM), control_action(b"", fin=True)),
        ("reset", conn(H3_CLOSED_CRITICAL_STREAM), reset_action("control_id")),
    ]


def fin_action(which):
    async def action(c, probe):
        c._quic.send_stream_data(getattr(c, which), b"", end_stream=True)
        c.transmit()
    return action


def variants_close_qpack(opts):
    return [
        ("encoder-fin", conn(H3_CLOSED_CRITICAL_STREAM), fin_action("encoder_id")),
        ("encoder-reset", conn(H3_CLOSED_CRITICAL_STREAM),
         reset_action("encoder_id")),
        ("decoder-fin", conn(H3_CLOSED_CRITICAL_STREAM), fin_action("decoder_id")),
    ]


def variants_control_misc(opts):
    def uni(preface):
        async def action(c, probe):
            c.open_uni(preface)
            c.transmit()
        return action

    async def empty_request(c, probe):
        sid = c.new_stream()
        probe["_stream"] = sid
        c.send(sid, b"", fin=True)
        r = c.responses[sid]
        await c.wait_until(lambda: r.done, min(opts.timeout, 1.0))
        return lambda: True

    async def encoder_capacity(c, probe):
        # Set Dynamic Table Capacity 4096 (RFC 9204 §4.3.1), above the
        # QPACK_MAX_TABLE_CAPACITY of 0 the server advertised
        c._quic.send_stream_data(c.encoder_id, qpack_int(4096, 5, 0x20))
        c.transmit()

    async def encoder_insert(c, probe):
        # Insert with Literal Name (§4.3.3) into a table of capacity 0
        c._quic.send_stream_data(c.encoder_id,
                                 qpack_int(3, 5, 0x40) + b"abc" +
                                 qpack_int(1, 7) + b"x")
        c.transmit()

    async def goaway_when_done(c, probe):
        # A GET, answered; then GOAWAY (RFC 9114 §5.2): the client is done.
        sid = c.new_stream()
        probe["_stream"] = sid
        c.send(sid, headers_frame(c.request_fields("GET", opts.path)),
               fin=True)
        r = c.responses[sid]
        await c.wait_until(lambda: r.done, opts.timeout)
        probe["goawaySentAt"] = time.monotonic()
        c._quic.send_stream_data(c.control_id, frame(GOAWAY, varint(0)))
        c.transmit()

    settings = lambda pairs: frame(SETTINGS, settings_payload(pairs))  # noqa: E731
    return [
        ("client-goaway", conn(H3_NO_ERROR), goaway_when_done),
        ("settings-h2-reserved-id", conn(H3_SETTINGS_ERROR), then_get(opts),
         {"control_payload": settings([(0x2, 0)])}),
        ("duplicate-setting", conn(H3_SETTINGS_ERROR), then_get(opts),
         {"control_payload": settings([(0x6, 100), (0x6, 100)])}),
        ("first-frame-not-settings", conn(H3_MISSING_SETTINGS), then_get(opts),
         {"control_payload": frame(reserved_type(4), b"x") +
          settings([(0x6, 100)])}),
        ("data-on-control-stream", conn(H3_FRAME_UNEXPECTED),
         control_action(frame(DATA, b"x"))),
        ("second-control-stream", conn(H3_STREAM_CREATION_ERROR),
         uni(varint(STREAM_CONTROL) + settings([]))),
        ("push-stream-from-client", conn(H3_STREAM_CREATION_ERROR),
         uni(varint(STREAM_PUSH) + varint(0))),
        ("truncated-frame-then-fin", conn(H3_FRAME_ERROR),
         stream_action(lambda c: headers_frame(
             c.request_fields("GET", opts.path))[:5], wait_response=False)),
        ("empty-request-stream", stream_err(H3_REQUEST_INCOMPLETE),
         empty_request),
        ("h3-datagram-setting-2", conn(H3_SETTINGS_ERROR), then_get(opts),
         {"settings": default_settings() + [(SETTING_H3_DATAGRAM, 2)],
          "datagrams": True}),
        ("h3-datagram-without-transport-param", conn(H3_SETTINGS_ERROR),
         then_get(opts),
         {"settings": default_settings(datagrams=True)}),
        ("encoder-capacity-over-limit", conn(QPACK_ENCODER_STREAM_ERROR),
         then_get(opts, encoder_capacity)),
        ("encoder-insert-into-empty-table", conn(QPACK_ENCODER_STREAM_ERROR),
         then_get(opts, encoder_insert)),
    ]


def variants_qpack_garbage(opts):
    def block(raw, fin=True):
        return stream_action(lambda c: frame(HEADERS, raw), fin=fin)

    def valid_fields(c):
        return b"".join(qpack_literal(n, v)
                        for n, v in c.request_fields("GET", opts.path))

    def bad_huffman(c):
        # x-h: <Huffman string of 32 one bits: it holds EOS (RFC 7541 §5.2)>
        return frame(HEADERS, b"\x00\x00" + valid_fields(c) +
                     qpack_int(3, 3, 0x20) + b"x-h" +
                     qpack_int(4, 7, 0x80) + b"\xff\xff\xff\xff")

    def nonzero_ric(c):
        # Required Insert Count 2 with a dynamic table of capacity 0 (§4.5.1.1)
        return frame(HEADERS, b"\x02\x00" + valid_fields(c))

    return [
        ("dynamic-table-reference", conn(QPACK_DECOMPRESSION_FAILED),
         block(b"\x00\x00\x80")),
        ("post-base-reference", conn(QPACK_DECOMPRESSION_FAILED),
         block(b"\x00\x00\x10")),
        ("static-index-out-of-range", conn(QPACK_DECOMPRESSION_FAILED),
         block(b"\x00\x00\xff\x40")),
        ("truncated-integer", conn(QPACK_DECOMPRESSION_FAILED),
         block(b"\x00\x00\xff")),
        ("string-overruns-block", conn(QPACK_DECOMPRESSION_FAILED),
         block(b"\x00\x00\x23abc\x7f\x10ab")),
        ("invalid-huffman", conn(QPACK_DECOMPRESSION_FAILED),
         stream_action(bad_huffman)),
        ("nonzero-required-insert-count", conn(QPACK_DECOMPRESSION_FAILED),
         stream_action(nonzero_ric)),
    ]


PROBE_CASES = {
    "data-before-headers": variants_data_before_headers,
    "headers-too-large": variants_headers_too_large,
    "too-many-headers": variants_too_many_headers,
    "missing-pseudo": variants_missing_pseudo,
    "content-length-mismatch": variants_content_length,
    "reserved-frame": variants_reserved_frame,
    "second-settings": variants_second_settings,
    "close-control-stream": variants_close_control,
    "close-qpack-encoder-stream": variants_close_qpack,
    "control-misc": variants_control_misc,
    "qpack-garbage": variants_qpack_garbage,
}


async def run_probe_case(opts, report):
    for spec in PROBE_CASES[opts.case](opts):
        name, expect, action = spec[:3]
        conn_kw = spec[3] if len(spec) > 3 else {}
        if opts.variant and name not in opts.variant:
            continue
        report["probes"].append(
            await run_probe(opts, name, expect, action, **conn_kw))


# -- load cases -------------------------------------------------------------------

async def wait_credit(c, credit, timeout):
    """Poll (MAX_STREAMS raises no aioquic event) until credit() > 0."""
    deadline = time.monotonic() + timeout
    while credit() <= 0:
        if c.terminated or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def storm(opts, c, probe, count, open_one):
    """Open `count` streams with open_one(c, sid) while MAX_STREAMS allows,
    waiting for credit as it comes back; stalls are recorded."""
    t0 = time.monotonic()
    opened = 0
    stalled = None
    while opened < count:
        if not await wait_credit(c, c.bidi_credit, opts.timeout):
            stalled = {"opened": opened,
                       "maxStreams": c._quic._remote_max_streams_bidi,
                       "afterMs": round((time.monotonic() - t0) * 1000)}
            break
        for _ in range(min(c.bidi_credit(), count - opened, 64)):
            sid = c._quic.get_next_available_stream_id()
            open_one(c, sid)
            opened += 1
        c.transmit()
        await asyncio.sleep(0)
    probe.update(opened=opened, stalled=stalled,
                 maxStreamsSeen=c._quic._remote_max_streams_bidi,
                 stormMs=round((time.monotonic() - t0) * 1000, 1))


async def after_storm(opts, c, probe):
    """A GET on the storm's connection, once the server caught up."""
    t0 = time.monotonic()
    if probe.get("stalled") and c.bidi_credit() <= 0:
        probe["sameConnection"] = {"status": None, "error": "no stream credit",
                                   "maxStreams": c._quic._remote_max_streams_bidi}
        return
    if not await wait_credit(c, c.bidi_credit, opts.timeout):
        probe["sameConnection"] = {"status": None,
                                   "error": "no stream credit",
                                   "maxStreams": c._quic._remote_max_streams_bidi}
        return
    r = await c.get(opts.path, opts.timeout)
    probe["sameConnection"] = {
        "status": r.status, "body": r.report()["body"], "reset": r.reset,
        "elapsedMs": round((time.monotonic() - t0) * 1000, 1)}


async def late_storm(opts, c, probe, count):
    """Requests for --body-path cancelled (RESET_STREAM + STOP_SENDING) once
    their response has started, in batches within MAX_STREAMS."""
    t0 = time.monotonic()
    opened, stalled, late = 0, None, 0
    while opened < count:
        if not await wait_credit(c, c.bidi_credit, opts.timeout):
            stalled = {"opened": opened,
                       "maxStreams": c._quic._remote_max_streams_bidi}
            break
        batch = []
        for _ in range(min(c.bidi_credit(), count - opened, 32)):
            sid = c.new_stream()
            c._quic.send_stream_data(sid, headers_frame(
                c.request_fields("GET", opts.body_path)), end_stream=True)
            batch.append(c.responses[sid])
            opened += 1
        c.transmit()
        await c.wait_until(lambda: all(r.status is not None or r.done
                                       for r in batch), opts.timeout)
        for r in batch:
            late += r.status is not None
            if r.done:
                continue  # over already (aioquic forgot the stream)
            c._quic.reset_stream(r.stream_id, H3_REQUEST_CANCELLED)
            c._quic.stop_stream(r.stream_id, H3_REQUEST_CANCELLED)
        c.transmit()
    probe.update(opened=opened, stalled=stalled, startedBeforeReset=late,
                 maxStreamsSeen=c._quic._remote_max_streams_bidi,
                 stormMs=round((time.monotonic() - t0) * 1000, 1))


async def case_reset_storm(opts, report):
    count = opts.count or 1000
    probe = {"name": f"reset-{count}", "expect": {"survives": True}}
    t0 = time.monotonic()
    cancel = opts.reset_mode == "cancel"

    def open_one(c, sid):
        c.response(sid)
        c._quic.send_stream_data(
            sid, headers_frame(c.request_fields("GET", opts.path)),
            end_stream=True)
        c._quic.reset_stream(sid, H3_REQUEST_CANCELLED)
        if cancel:
            c._quic.stop_stream(sid, H3_REQUEST_CANCELLED)

    # late: each response may send only 8 KiB before its cancel (we never
    # raise MAX_STREAM_DATA), or the storm is mostly Python moving bytes
    params = {"max_stream_data": 8192} if opts.reset_mode == "late" else None
    try:
        async with h3_connection(opts, params=params) as c:
            if opts.reset_mode == "late":
                c._quic._write_stream_limits = lambda builder, space, stream: None
                await late_storm(opts, c, probe, count)
            else:
                await storm(opts, c, probe, count, open_one)
            await after_storm(opts, c, probe)
            probe["answered"] = sum(1 for r in c.responses.values()
                                    if r.status is not None)
            probe["resetByServer"] = sum(1 for r in c.responses.values()
                                         if r.reset is not None)
            probe.update(c.conn_report())
    except Exception as exc:  # noqa: BLE001
        probe["error"] = f"{type(exc).__name__}: {exc}"
    probe["resetMode"] = opts.reset_mode
    probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    probe["conforms"] = (not probe.get("stalled") and not probe.get("error")
                         and probe.get("connClose") is None and
                         probe.get("sameConnection", {}).get("status") == 200)
    report["probes"].append(probe)


ABANDON_MODES = ("partial-headers-reset", "reset-only", "bare-fin")


async def case_abandoned(opts, report):
    count = opts.count or 2000
    modes = [m for m in ABANDON_MODES if not opts.variant or m in opts.variant]
    per_mode = -(-count // len(modes))
    for mode in modes:
        probe = {"name": mode, "expect": {"survives": True},
                 "count": per_mode}
        t0 = time.monotonic()

        def open_one(c, sid, mode=mode):
            c.response(sid)
            if mode == "bare-fin":
                c._quic.send_stream_data(sid, b"", end_stream=True)
                return
            if mode == "partial-headers-reset":
                head = headers_frame(c.request_fields("GET", opts.path))
                c._quic.send_stream_data(sid, head[:len(head) // 2])
            c._quic.reset_stream(sid, H3_REQUEST_CANCELLED)

        try:
            async with h3_connection(opts) as c:
                await storm(opts, c, probe, per_mode, open_one)
                await after_storm(opts, c, probe)
                resets = [r.reset for r in c.responses.values()
                          if r.reset is not None]
                probe["resetByServer"] = len(resets)
                probe["resetCodes"] = sorted(set(resets))
                probe.update(c.conn_report())
        except Exception as exc:  # noqa: BLE001
            probe["error"] = f"{type(exc).__name__}: {exc}"
        probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
        probe["conforms"] = (
            not probe.get("stalled") and not probe.get("error") and
            probe.get("connClose") is None and
            probe.get("sameConnection", {}).get("status") == 200)
        report["probes"].append(probe)


async def case_slowloris(opts, report):
    """A response we never read: our windows stay at their initial size."""
    probe = {"name": "unread-response", "expect": {"observe": True},
             "path": opts.body_path, "holdS": opts.hold}
    t0 = time.monotonic()
    window = 64 * 1024
    params = {"max_stream_data": window, "max_data": 4 * window}
    try:
        async with h3_connection(opts, params=params) as slow:
            q = slow._quic
            # Freeze the credit we give: aioquic raises MAX_DATA and
            # MAX_STREAM_DATA as data arrives, whether read or not.
            q._write_connection_limits = lambda builder, space: None
            q._write_stream_limits = lambda builder, space, stream: None
            sid = slow.new_stream()
            slow.send(sid, headers_frame(
                slow.request_fields("GET", opts.body_path)), fin=True)
            r = slow.responses[sid]
            await slow.wait_until(lambda: r.status is not None, opts.timeout)
            others = {"requests": 0, "ok": 0, "latenciesMs": []}
            deadline = time.monotonic() + opts.hold
            async with h3_connection(opts) as other:
                while time.monotonic() < deadline and not other.terminated:
                    t1 = time.monotonic()
                    g = await other.get(opts.path, opts.timeout)
                    others["requests"] += 1
                    others["ok"] += g.status == 200
                    others["latenciesMs"].append(
                        round((time.monotonic() - t1) * 1000, 1))
                    await asyncio.sleep(0.1)
            lat = others.pop("latenciesMs")
            others["maxLatencyMs"] = max(lat) if lat else None
            probe["otherConnection"] = others
            probe["response"] = r.report()
            probe["windowBytes"] = window
            probe.update(slow.conn_report())
            probe["slowConnectionOpen"] = not slow.terminated
    except Exception as exc:  # noqa: BLE001
        probe["error"] = f"{type(exc).__name__}: {exc}"
    probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    o = probe.get("otherConnection") or {}
    probe["conforms"] = (not probe.get("error") and o.get("requests", 0) > 0
                         and o.get("ok") == o.get("requests"))
    report["probes"].append(probe)


async def case_unknown_uni(opts, report):
    count = opts.count or 50
    probe = {"name": f"reserved-uni-types-{count}",
             "expect": {"stopSendingOnOpen": H3_STREAM_CREATION_ERROR,
                        "status": 200}}
    t0 = time.monotonic()
    try:
        async with h3_connection(opts) as c:
            open_ids, fin_ids, stalled = [], [], None
            for i in range(count):
                if not await wait_credit(c, c.uni_credit, opts.timeout):
                    stalled = {"opened": i,
                               "maxStreams": c._quic._remote_max_streams_uni}
                    break
                # every other one ends with FIN; the rest stay open, and the
                # server must stop those (they would hold its stream credit)
                fin = i % 2 == 1
                sid = c.open_uni(varint(reserved_type(i + 1)) + bytes(100 + i),
                                 fin=fin)
                (fin_ids if fin else open_ids).append(sid)
                c.transmit()
                await asyncio.sleep(0)
            await c.wait_until(
                lambda: all(s in c.local_uni_stopped for s in open_ids),
                opts.timeout)

            def tally(ids):
                out = {}
                for sid in ids:
                    k = code_text(c.local_uni_stopped.get(sid)) or "none"
                    out[k] = out.get(k, 0) + 1
                return out
            probe.update(opened=len(open_ids) + len(fin_ids), stalled=stalled,
                         maxStreamsSeen=c._quic._remote_max_streams_uni,
                         stopSendingOpen=tally(open_ids),
                         stopSendingFinished=tally(fin_ids))
            r = await c.get(opts.path, opts.timeout)
            probe["response"] = r.report()
            probe.update(c.conn_report())
    except Exception as exc:  # noqa: BLE001
        probe["error"] = f"{type(exc).__name__}: {exc}"
    probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    name = code_text(H3_STREAM_CREATION_ERROR)
    opened_open = -(-count // 2)
    probe["conforms"] = (
        not probe.get("error") and not probe.get("stalled") and
        probe.get("connClose") is None and
        probe.get("stopSendingOpen") == {name: opened_open} and
        set(probe.get("stopSendingFinished", {})) <= {name, "none"} and
        (probe.get("response") or {}).get("status") == 200)
    report["probes"].append(probe)


async def case_datagrams(opts, report):
    count = opts.count or 500
    probe = {"name": f"unknown-flows-{count}", "expect": {"status": 200}}
    t0 = time.monotonic()
    try:
        async with h3_connection(opts, datagrams=True,
                                 settings=default_settings(True)) as c:
            probe["serverH3Datagram"] = (c.server_settings or {}).get(
                SETTING_H3_DATAGRAM)
            probe["serverMaxDatagramFrameSize"] = \
                c._quic._remote_max_datagram_frame_size
            first = await c.get(opts.path, opts.timeout)  # a finished flow
            # a finished request's flow, flows of streams never opened (near
            # and far), and the largest quarter stream id allowed (2^60 - 1)
            flows = (lambda i: first.stream_id // 4, lambda i: 10_000 + i,
                     lambda i: 2 ** 40 + i, lambda i: 2 ** 60 - 1)
            for i in range(count):
                qsid = flows[i % len(flows)](i)
                c._quic.send_datagram_frame(varint(qsid) + b"dgram-%d" % i)
                if i % 32 == 31:
                    c.transmit()
                    await asyncio.sleep(0.001)
            c.transmit()
            await asyncio.sleep(0.2)
            probe["sent"] = count
            r = await c.get(opts.stats_path or opts.path, opts.timeout)
            probe["response"] = r.report()
            if opts.stats_path and r.status == 200:
                try:
                    probe["serverStats"] = json.loads(r.body_head.decode())
                except ValueError:
                    pass
            probe["datagramsReceived"] = c.datagrams_received
            probe.update(c.conn_report())
    except Exception as exc:  # noqa: BLE001
        probe["error"] = f"{type(exc).__name__}: {exc}"
    probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    probe["conforms"] = (not probe.get("error") and probe.get("connClose") is None
                         and (probe.get("response") or {}).get("status") == 200
                         and probe.get("datagramsReceived") == 0)
    report["probes"].append(probe)
    for name, payload in (("empty-datagram", b""),
                          ("quarter-stream-id-too-large", varint(2 ** 60) + b"x")):
        if opts.variant and name not in opts.variant:
            continue

        async def action(c, p, payload=payload):
            c._quic.send_datagram_frame(payload)
            c.transmit()

        report["probes"].append(await run_probe(
            opts, name, conn(H3_DATAGRAM_ERROR), action, datagrams=True,
            settings=default_settings(True)))


async def silence(opts, report, name, build):
    """Send build(c) on a request stream, then nothing for --wait s."""
    probe = {"name": name, "expect": {"observe": True}, "waitS": opts.wait}
    t0 = time.monotonic()
    try:
        async with h3_connection(opts) as c:
            sid = c.new_stream()
            c.send(sid, build(c))
            r = c.responses[sid]
            await c.wait_until(lambda: r.done, opts.wait)
            probe["duringWait"] = {
                "response": r.report(),
                "stoppedOrReset": r.reset is not None or
                r.stop_sending is not None,
                "connectionClosed": c.terminated is not None,
            }
            probe["waitedMs"] = round((time.monotonic() - t0) * 1000, 1)
            if not c.terminated:
                g = await c.get(opts.path, opts.timeout)
                probe["sameConnection"] = {"status": g.status}
            probe.update(c.conn_report())
    except Exception as exc:  # noqa: BLE001
        probe["error"] = f"{type(exc).__name__}: {exc}"
    probe["elapsedMs"] = round((time.monotonic() - t0) * 1000, 1)
    probe["conforms"] = not probe.get("error")
    report["probes"].append(probe)


async def case_incomplete_headers(opts, report):
    def build(c):
        head = headers_frame(c.request_fields("GET", opts.path))
        return head[:len(head) // 2]
    await silence(opts, report, "half-headers-frame", build)


async def case_incomplete_body(opts, report):
    def build(c):
        return (headers_frame(c.request_fields(
            "POST", opts.echo_path, [("content-length", "100")])) +
            frame_header(DATA, 100) + bytes(50))
    await silence(opts, report, "half-body", build)


CASES = {
    **{name: run_probe_case for name in PROBE_CASES},
    "reset-storm": case_reset_storm,
    "abandoned-streams": case_abandoned,
    "slowloris-response": case_slowloris,
    "unknown-uni-types": case_unknown_uni,
    "datagrams": case_datagrams,
    "incomplete-headers": case_incomplete_headers,
    "incomplete-body": case_incomplete_body,
}


# -- main -------------------------------------------------------------------------

async def run(opts):
    started = time.monotonic()
    report = {"summary": True, "case": opts.case, "probes": []}
    errors = []
    try:
        await CASES[opts.case](opts, report)
    except Exception as exc:  # noqa: BLE001 - report everything
        errors.append(f"{type(exc).__name__}: {exc}")
    if not opts.no_follow_up:
        report["followUp"] = await fresh_get(opts)
    for p in report["probes"]:
        if p.get("error"):
            errors.append(f"{p['name']}: {p['error']}")
    report["nonConforming"] = [p["name"] for p in report["probes"]
                               if not p.get("conforms")]
    report["errors"] = errors
    report["elapsedMs"] = round((time.monotonic() - started) * 1000, 1)
    follow_ok = opts.no_follow_up or report["followUp"].get("status") == 200
    report["ok"] = (not errors and bool(report["probes"]) and
                    not report["nonConforming"] and follow_ok)
    return report


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True,
                   help="https://host:port/path of a resource answering 200 "
                        "(the normal GET)")
    p.add_argument("--case", required=True, choices=sorted(CASES))
    p.add_argument("--variant", action="append", default=[],
                   help="run only this variant (repeatable; comma lists too)")
    add_tls_args(p)
    p.add_argument("--timeout", type=float, default=5.0,
                   help="limit in seconds for each individual wait")
    p.add_argument("--wait", type=float, default=5.0,
                   help="silence of the incomplete-* cases, seconds")
    p.add_argument("--hold", type=float, default=3.0,
                   help="slowloris-response: seconds the response stays unread")
    p.add_argument("--count", type=int, default=0,
                   help="streams / datagrams of the load cases (0: default)")
    p.add_argument("--reset-mode", choices=("reset", "cancel", "late"),
                   default="reset",
                   help="reset-storm: RESET_STREAM right after the request "
                        "(reset), RESET_STREAM + STOP_SENDING right after it "
                        "(cancel), or both once the response to GET "
                        "--body-path has started (late)")
    p.add_argument("--max-header-size", type=int, default=16384)
    p.add_argument("--max-header-count", type=int, default=128)
    p.add_argument("--echo-path", default="/echo",
                   help="path answering a POST with its body length")
    p.add_argument("--body-path", default="/bytes/10000000",
                   help="slowloris-response: path with a large body")
    p.add_argument("--stats-path", default=None,
                   help="datagrams: path answering with the server's "
                        "connection stats as JSON")
    p.add_argument("--expect-body", default="ok",
                   help="body of the normal GET")
    p.add_argument("--no-follow-up", action="store_true",
                   help="skip the GET on a new connection at the end")
    opts = p.parse_args(argv)
    opts.variant = [v for arg in opts.variant for v in arg.split(",") if v]
    parse_url(p, opts, default_path="/")
    return opts


if __name__ == "__main__":
    sys.exit(run_main(parse_args, run))
