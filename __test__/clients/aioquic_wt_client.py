#!/usr/bin/env python3
"""Independent WebTransport (draft-02 style) test client built on aioquic.

Drives the h3node server's WebTransport support with a QUIC/HTTP/3 stack that
shares no code with ours. One session per run; the scenario is chosen with
--scenario (see SCENARIOS below and --help). Prints exactly one JSON object on
stdout, marked `"summary": true` like aioquic_client.py's summary line, so
runClient() in __test__/helpers/independent.mjs finds it as `summary`.

Session set-up: after the QUIC handshake the client waits for the server's
SETTINGS (it checks ENABLE_CONNECT_PROTOCOL 0x08, H3_DATAGRAM 0x33 and
ENABLE_WEBTRANSPORT 0x2b603742, all = 1), then sends an extended CONNECT with
`:protocol webtransport`, `origin` and `sec-webtransport-http3-draft02: 1`.
Any 2xx answer means the session is ready.

Stream handling note: aioquic parses every bidirectional stream as HTTP/3
frames. The bidirectional WebTransport streams this client opens itself carry
raw bytes in the server-to-client direction, so their QUIC events are handled
here and never passed to H3Connection. Bytes written on WebTransport streams
go straight to the QUIC layer (H3Connection.send_data would add DATA frames).

Exit status: 0 when the scenario's checks passed ("ok": true), 1 otherwise,
2 for bad arguments. Every wait is bounded by --timeout, so a broken server
yields a failing report, never a hang.
"""

import argparse
import asyncio
import json
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError, encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

SCENARIOS = {
    # name: default path (used when --url has no path)
    "echo": "/echo",
    "server-close": "/close",
    "refuse": "/refuse",
    "many-datagrams": "/echo",
}

H3_NO_ERROR = 0x100
RECEIVE_BUFFER = 4 * 1024 * 1024
SETTING_ENABLE_CONNECT_PROTOCOL = 0x08
SETTING_H3_DATAGRAM = 0x33
SETTING_H3_DATAGRAM_OLD = 0xFFD277
SETTING_ENABLE_WEBTRANSPORT = 0x2B603742

CAPSULE_CLOSE_SESSION = 0x2843
CAPSULE_DRAIN_SESSION = 0x78AE

# WebTransport application error code n travels as the HTTP/3 code
# WT_APP_ERROR_FIRST + n + n // 0x1e (skipping the reserved code points).
WT_APP_ERROR_FIRST = 0x52E4A40FA8DB
WT_APP_ERROR_LAST = 0x52E5AC983162


def http3_to_wt_error(h):
    """Application code for an HTTP/3 error code, or None outside the range."""
    if h < WT_APP_ERROR_FIRST or h > WT_APP_ERROR_LAST:
        return None
    if (h - 0x21) % 0x1F == 0:
        return None  # a reserved (GREASE) code point
    shifted = h - WT_APP_ERROR_FIRST
    return shifted - shifted // 0x1F


def fmt_code(h):
    """HTTP/3 error code as hex, plus the WebTransport code when mapped."""
    n = http3_to_wt_error(h)
    return f"0x{h:x}" if n is None else f"0x{h:x} (webtransport {n})"


def pattern_bytes(size, offset=0):
    """byte i = (offset + i) % 251, same pattern as aioquic_client.py."""
    start = offset % 251
    reps = (start + size) // 251 + 1
    return (bytes(range(251)) * reps)[start:start + size]


def close_capsule(code, reason):
    payload = code.to_bytes(4, "big") + reason.encode("utf-8")
    return (encode_uint_var(CAPSULE_CLOSE_SESSION)
            + encode_uint_var(len(payload)) + payload)


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class WtStream:
    """Receive side of one WebTransport stream (either direction)."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.data = bytearray()
        self.ended = False
        self.reset_code = None  # HTTP/3 error code of a RESET_STREAM
        self.stop_sending_code = None

    @property
    def done(self):
        return self.ended or self.reset_code is not None


class WtClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.session_id = None
        self.status = None
        self.response_headers = {}
        self.session_capsules = bytearray()
        self.session_fin = False
        self.session_reset = None
        self.close_received = None  # {"closeCode", "reason"}
        self.drain_received = False
        self.capsule_types = []  # other capsule types seen (for debugging)
        self.own_streams = {}  # client-opened bidi WT streams, handled raw
        self.incoming = {}  # peer-opened WT streams by id, in arrival order
        self.datagrams = []  # payloads received on our session
        self.terminated = None
        self.errors = []
        self.closed_by_us = False
        self._changed = self._loop.create_future()

    # -- plumbing ------------------------------------------------------------
    def _wake(self):
        fut, self._changed = self._changed, self._loop.create_future()
        fut.set_result(None)

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self._wake()  # ACKs too: lets senders see a drained datagram queue

    async def wait_until(self, cond, timeout):
        """Wait for cond() (re-checked on every event); False on timeout or
        when the connection is gone."""
        deadline = time.monotonic() + timeout
        while True:
            if cond():
                return True
            if self.terminated:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # asyncio.wait never swallows a cancellation (unlike wait_for)
            await asyncio.wait([self._changed], timeout=remaining)

    def error(self, msg):
        if msg not in self.errors:
            self.errors.append(msg)

    # -- events --------------------------------------------------------------
    def quic_event_received(self, event):
        try:
            self._quic_event(event)
        finally:
            self._wake()

    def _quic_event(self, event):
        if isinstance(event, ConnectionTerminated):
            self.terminated = (
                f"connection terminated: code=0x{event.error_code:x} "
                f"reason={event.reason_phrase!r}"
            )
            return
        sid = getattr(event, "stream_id", None)
        own = self.own_streams.get(sid)
        if own is not None:
            # raw WebTransport bytes: keep them away from the HTTP/3 parser
            if isinstance(event, StreamDataReceived):
                own.data += event.data
                if event.end_stream:
                    own.ended = True
            elif isinstance(event, StreamReset):
                own.reset_code = event.error_code
            elif isinstance(event, StopSendingReceived):
                own.stop_sending_code = event.error_code
            return
        known = self.incoming.get(sid)
        if known is not None and isinstance(event, (StreamReset,
                                                    StopSendingReceived)):
            # identified WT stream: H3Connection would treat the reset as an
            # aborted request and send a QPACK stream cancellation
            if isinstance(event, StreamReset):
                known.reset_code = event.error_code
            else:
                known.stop_sending_code = event.error_code
            return
        if sid is not None and sid == self.session_id:
            if isinstance(event, StreamReset):
                self.session_reset = event.error_code
        elif (isinstance(event, StreamReset) and sid % 2 == 1
              and sid not in (self.http._peer_control_stream_id,
                              self.http._peer_decoder_stream_id,
                              self.http._peer_encoder_stream_id)):
            # a server stream reset before its WT header arrived: it cannot
            # be attributed to a session, but it is surely not HTTP/3 traffic
            st = self.incoming[sid] = WtStream(sid)
            st.reset_code = event.error_code
            if sid % 4 == 1:
                return  # bidi: keep H3Connection from sending a QPACK cancel
        for h3_event in self.http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event):
        if isinstance(event, WebTransportStreamDataReceived):
            if event.session_id != self.session_id:
                self.error(f"WT stream {event.stream_id} for unknown session "
                           f"{event.session_id}")
            st = self.incoming.get(event.stream_id)
            if st is None:
                st = self.incoming[event.stream_id] = WtStream(event.stream_id)
            st.data += event.data
            if event.stream_ended:
                st.ended = True
        elif isinstance(event, DatagramReceived):
            if event.stream_id == self.session_id:
                self.datagrams.append(event.data)
            else:
                self.error(f"datagram for unknown stream {event.stream_id}")
        elif isinstance(event, HeadersReceived):
            if event.stream_id != self.session_id:
                return
            status = None
            fields = {}
            for name, value in event.headers:
                k = name.decode("latin-1").lower()
                v = value.decode("utf-8", "replace")
                if k == ":status":
                    status = int(v)
                elif not k.startswith(":"):
                    fields[k] = v if k not in fields else fields[k] + ", " + v
            if self.status is None and status is not None and \
                    not (100 <= status < 200):
                self.status = status
                self.response_headers = fields
            if event.stream_ended:
                self.session_fin = True
        elif isinstance(event, DataReceived):
            if event.stream_id != self.session_id:
                return
            self.session_capsules += event.data
            self._parse_capsules()
            if event.stream_ended:
                self.session_fin = True
                if self.session_capsules:
                    self.error(f"truncated capsule at end of CONNECT stream "
                               f"({len(self.session_capsules)} bytes)")

    def _parse_capsules(self):
        while self.session_capsules:
            buf = Buffer(data=bytes(self.session_capsules))
            try:
                ctype = buf.pull_uint_var()
                length = buf.pull_uint_var()
            except BufferReadError:
                return
            start = buf.tell()
            if len(self.session_capsules) - start < length:
                return  # wait for the rest
            payload = bytes(self.session_capsules[start:start + length])
            del self.session_capsules[:start + length]
            if ctype == CAPSULE_CLOSE_SESSION:
                if length < 4:
                    self.error(f"CLOSE_WEBTRANSPORT_SESSION capsule too short "
                               f"({length} bytes)")
                    continue
                try:
                    reason = payload[4:].decode("utf-8")
                except UnicodeDecodeError:
                    self.error("close reason is not UTF-8")
                    reason = payload[4:].decode("utf-8", "replace")
                if self.close_received is not None:
                    self.error("second CLOSE_WEBTRANSPORT_SESSION capsule")
                self.close_received = {
                    "closeCode": int.from_bytes(payload[:4], "big"),
                    "reason": reason,
                }
            elif ctype == CAPSULE_DRAIN_SESSION:
                self.drain_received = True
            else:
                self.capsule_types.append(ctype)

    # -- actions -------------------------------------------------------------
    def open_session(self, authority, path, origin):
        sid = self._quic.get_next_available_stream_id()
        self.session_id = sid
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"webtransport"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"origin", origin.encode()),
            (b"sec-webtransport-http3-draft02", b"1"),
        ]
        self.http.send_headers(sid, headers, end_stream=False)
        self.transmit()
        return sid

    def open_stream(self, unidirectional):
        sid = self.http.create_webtransport_stream(
            self.session_id, is_unidirectional=unidirectional)
        if not unidirectional:
            self.own_streams[sid] = WtStream(sid)
        return sid

    def write(self, stream_id, data, fin=False):
        self._quic.send_stream_data(stream_id, data, end_stream=fin)
        self.transmit()

    def send_datagram(self, payload):
        self.http.send_datagram(self.session_id, payload)

    def datagrams_queued(self):
        return len(self._quic._datagrams_pending)

    def close_session(self, code, reason):
        self.http.send_data(self.session_id, close_capsule(code, reason),
                            end_stream=True)
        self.transmit()

    def finish_session_stream(self):
        """FIN our side of the CONNECT stream (after a server close)."""
        try:
            self._quic.send_stream_data(self.session_id, b"", end_stream=True)
            self.transmit()
        except Exception as exc:  # noqa: BLE001 - e.g. already finished
            self.error(f"cannot finish CONNECT stream: {exc}")


# -- scenarios ----------------------------------------------------------------

async def establish(client, opts, report):
    """Wait for SETTINGS, send the CONNECT, wait for the final status."""
    if not await client.wait_until(
            lambda: client.http.received_settings is not None, opts.timeout):
        client.error(client.terminated or "timeout waiting for server SETTINGS")
    settings = client.http.received_settings or {}
    report["settings"] = {hex(k): v for k, v in sorted(settings.items())
                          if k in (SETTING_ENABLE_CONNECT_PROTOCOL,
                                   SETTING_H3_DATAGRAM,
                                   SETTING_H3_DATAGRAM_OLD,
                                   SETTING_ENABLE_WEBTRANSPORT)}
    report["maxDatagramFrameSize"] = client._quic._remote_max_datagram_frame_size
    if client.http.received_settings is not None:
        for key, name in ((SETTING_ENABLE_CONNECT_PROTOCOL,
                           "ENABLE_CONNECT_PROTOCOL"),
                          (SETTING_H3_DATAGRAM, "H3_DATAGRAM"),
                          (SETTING_ENABLE_WEBTRANSPORT, "ENABLE_WEBTRANSPORT")):
            if settings.get(key) != 1:
                client.error(f"server SETTINGS lack {name} (0x{key:x}) = 1")
    if client.terminated:
        return False
    client.open_session(opts.authority, opts.path, opts.origin)
    if not await client.wait_until(
            lambda: client.status is not None or client.session_fin
            or client.session_reset is not None, opts.timeout):
        client.error(client.terminated or "timeout waiting for CONNECT response")
    report["status"] = client.status
    ready = client.status is not None and 200 <= client.status < 300
    if client.status is None and client.session_reset is not None:
        client.error(f"CONNECT stream reset: code={fmt_code(client.session_reset)}")
    report["ready"] = ready
    return ready


async def close_and_wait_fin(client, opts, code, reason, report):
    if client.terminated or client.session_fin:
        if client.session_fin and client.close_received is None:
            client.error("server ended the CONNECT stream before our close")
    else:
        client.close_session(code, reason)
        report["closeSent"] = {"closeCode": code, "reason": reason}
    await client.wait_until(lambda: client.session_fin
                            or client.session_reset is not None,
                            min(opts.timeout, opts.fin_wait))
    report["serverFin"] = client.session_fin


async def collect_echo_datagrams(client, opts, report):
    sent = []
    for i in range(opts.datagrams):
        payload = f"dg-{i}".encode()
        client.send_datagram(payload)
        client.transmit()
        sent.append(payload)
        if i + 1 < opts.datagrams:
            await asyncio.sleep(opts.datagram_interval / 1000)
    wanted = set(sent)
    await client.wait_until(
        lambda: wanted.issubset(client.datagrams) or client.terminated,
        opts.collect)
    got = list(client.datagrams)
    report["datagramsSent"] = len(sent)
    report["datagramsEchoed"] = len(got)
    report["datagramsMatched"] = len(wanted.intersection(got))
    stray = [d for d in got if d not in wanted]
    if stray:
        client.error(f"{len(stray)} unexpected datagram(s), first "
                     f"{stray[0][:32]!r}")


async def bidi_echo(client, opts, report):
    sid = client.open_stream(unidirectional=False)
    body = pattern_bytes(opts.bidi_bytes)
    chunk = 64 * 1024
    for off in range(0, len(body), chunk):
        end = min(off + chunk, len(body))
        client.write(sid, body[off:end], fin=end == len(body))
        await asyncio.sleep(0)
    if not body:
        client.write(sid, b"", fin=True)
    st = client.own_streams[sid]
    if not await client.wait_until(lambda: st.done, opts.timeout):
        client.error(client.terminated or
                     f"timeout reading bidi echo ({len(st.data)} of "
                     f"{len(body)} bytes)")
    if st.reset_code is not None:
        client.error(f"bidi echo stream reset: code={fmt_code(st.reset_code)}")
    report["bidiBytes"] = len(st.data)
    report["bidiEchoOk"] = st.ended and bytes(st.data) == body


async def uni_send(client, opts):
    sid = client.open_stream(unidirectional=True)
    client.write(sid, b"uni-hello", fin=True)


async def answer_server_bidi(client, opts, report):
    def first_server_bidi():
        for st in client.incoming.values():
            if st.stream_id % 4 == 1:
                return st
        return None

    if not await client.wait_until(lambda: first_server_bidi() is not None,
                                   opts.timeout):
        client.error(client.terminated or
                     "timeout waiting for the server's bidi stream")
        return
    st = first_server_bidi()
    if not await client.wait_until(lambda: st.done, opts.timeout):
        client.error(client.terminated or
                     "timeout reading the server's bidi stream")
    if st.reset_code is not None:
        client.error(f"server bidi stream reset: code={fmt_code(st.reset_code)}")
    text = bytes(st.data).decode("utf-8", "replace")
    report["serverBidiText"] = text
    if st.ended and not client.terminated:
        client.write(st.stream_id, b"echo:" + bytes(st.data), fin=True)


async def collect_uni(client, opts, report, want=2):
    def unis():
        return [s for s in client.incoming.values() if s.stream_id % 4 == 3]

    if not await client.wait_until(
            lambda: sum(1 for s in unis() if s.done) >= want, opts.timeout):
        client.error(client.terminated or
                     f"timeout waiting for {want} server uni streams "
                     f"({sum(1 for s in unis() if s.done)} complete)")
    texts = []
    for s in unis():
        if s.reset_code is not None:
            client.error(f"server uni stream {s.stream_id} reset: "
                         f"code={fmt_code(s.reset_code)}")
        elif s.ended:
            texts.append(bytes(s.data).decode("utf-8", "replace"))
    report["uniTexts"] = sorted(texts)


async def scenario_echo(client, opts, report):
    report.update({
        "datagramsSent": 0, "datagramsEchoed": 0, "datagramsMatched": 0,
        "bidiBytes": 0, "bidiEchoOk": False, "serverBidiText": None,
        "uniTexts": [], "closeSent": None, "serverFin": False,
    })
    if not await establish(client, opts, report):
        return False
    await uni_send(client, opts)

    async def datagrams_then_bulk():
        # one after the other: packets of the 256 KiB echo that the kernel
        # drops would take datagram echoes with them (never retransmitted)
        await collect_echo_datagrams(client, opts, report)
        await bidi_echo(client, opts, report)

    tasks = [
        datagrams_then_bulk(),
        answer_server_bidi(client, opts, report),
        collect_uni(client, opts, report),
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            client.error(f"{type(r).__name__}: {r}")
    if client.close_received is not None:
        client.error(f"server closed the session: {client.close_received}")
    await close_and_wait_fin(client, opts, opts.close_code, opts.close_reason,
                             report)
    return (
        report["datagramsMatched"] >= min(1, opts.datagrams)
        and report["bidiEchoOk"]
        and report["serverBidiText"] == "server-bidi"
        and report["uniTexts"] == ["echo:uni-hello", "server-uni"]
        and report["closeSent"] is not None
    )


async def scenario_server_close(client, opts, report):
    report.update({"closed": None, "serverFin": False})
    if not await establish(client, opts, report):
        return False
    if not await client.wait_until(
            lambda: client.session_fin or client.session_reset is not None,
            opts.timeout):
        client.error(client.terminated or
                     "timeout waiting for the server to close the session")
    report["closed"] = client.close_received
    report["serverFin"] = client.session_fin
    if client.session_reset is not None:
        client.error(f"CONNECT stream reset: code={fmt_code(client.session_reset)}")
    if client.session_fin and client.close_received is None:
        client.error("CONNECT stream ended without a close capsule")
    if client.session_fin and not client.terminated:
        client.finish_session_stream()
        await asyncio.sleep(0.05)  # let the FIN leave before CONNECTION_CLOSE
    return client.close_received is not None and client.session_fin


async def scenario_refuse(client, opts, report):
    ready = await establish(client, opts, report)
    if ready:
        await close_and_wait_fin(client, opts, 0, "", report)
        return False
    return client.status is not None


async def scenario_many_datagrams(client, opts, report):
    report.update({"sent": 0, "received": 0, "matched": 0, "elapsedMs": 0})
    if not await establish(client, opts, report):
        return False
    size = opts.size
    if size < 8:
        raise SystemExit("--size must be >= 8")
    filler = pattern_bytes(size - 8)
    started = time.monotonic()
    sent = 0
    while sent < opts.count and not client.terminated:
        n = min(opts.burst, opts.count - sent)
        for i in range(sent, sent + n):
            client.send_datagram(i.to_bytes(8, "big") + filler)
        sent += n
        client.transmit()
        # do not let aioquic's datagram queue grow: wait until the congestion
        # window let this burst out (bounded), then yield to the receive path
        if client.datagrams_queued() and not await client.wait_until(
                lambda: client.datagrams_queued() == 0, opts.timeout):
            client.error(client.terminated or
                         f"datagram send queue stalled for {opts.timeout:g} s "
                         f"({client.datagrams_queued()} queued)")
            break
        await asyncio.sleep(0)
    send_done = time.monotonic()
    await client.wait_until(lambda: len(client.datagrams) >= sent,
                            opts.collect)
    last = time.monotonic()
    got = client.datagrams
    seen = set()
    for d in got:
        if len(d) == size and d[8:] == filler:
            idx = int.from_bytes(d[:8], "big")
            if idx < sent:
                seen.add(idx)
    report["sent"] = sent
    report["received"] = len(got)
    report["matched"] = len(seen)
    report["sendMs"] = round((send_done - started) * 1000, 1)
    report["elapsedMs"] = round((last - started) * 1000, 1)
    await close_and_wait_fin(client, opts, 0, "", report)
    return sent == opts.count and len(seen) > 0


class HandshakeTimeout(Exception):
    pass


class HandshakeFailed(Exception):
    pass


def grow_receive_buffer(client):
    """A bigger UDP receive buffer: a Python receiver drains the socket
    slowly, and a packet dropped by the kernel during a bulk transfer can
    carry a datagram echo (those are never retransmitted)."""
    sock = client._transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError:
        pass  # the kernel caps it at net.core.rmem_max anyway


RUNNERS = {
    "echo": scenario_echo,
    "server-close": scenario_server_close,
    "refuse": scenario_refuse,
    "many-datagrams": scenario_many_datagrams,
}


async def run(opts):
    report = {"summary": True, "scenario": opts.scenario, "url": opts.url,
              "ready": False, "status": None}
    started = time.monotonic()
    ok = False
    created = []

    def create_protocol(*args, **kwargs):
        proto = WtClient(*args, **kwargs)
        created.append(proto)
        return proto

    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        idle_timeout=max(5.0, opts.timeout),
        max_data=64 * 1024 * 1024,
        max_stream_data=16 * 1024 * 1024,
        max_datagram_frame_size=65536,
    )
    cfg.server_name = opts.server_name or opts.host
    if opts.insecure:
        cfg.verify_mode = ssl.CERT_NONE
    elif opts.ca:
        cfg.load_verify_locations(cafile=opts.ca)

    errors = []
    try:
        async with connect(opts.host, opts.port, configuration=cfg,
                           create_protocol=create_protocol,
                           wait_connected=False) as client:
            grow_receive_buffer(client)
            client.transmit()  # connect(wait_connected=False) holds it back
            connected = asyncio.ensure_future(client.wait_connected())
            done, _ = await asyncio.wait([connected], timeout=opts.timeout)
            if not done:
                waiter = client._connected_waiter
                if waiter is not None:
                    # set to ConnectionError when connect() closes the
                    # connection; mark it retrieved so asyncio stays quiet
                    waiter.add_done_callback(
                        lambda f: f.cancelled() or f.exception())
                connected.cancel()
                await asyncio.gather(connected, return_exceptions=True)
                client.closed_by_us = True  # connect() closes it on the way out
                raise HandshakeTimeout(
                    f"QUIC handshake timed out after {opts.timeout:g} s")
            if connected.exception() is not None:
                raise HandshakeFailed(client.terminated or "handshake failed")
            try:
                ok = await RUNNERS[opts.scenario](client, opts, report)
            finally:
                if not client.terminated:
                    client.closed_by_us = True
                    client.close(error_code=H3_NO_ERROR)
    except (HandshakeTimeout, HandshakeFailed) as exc:
        errors.append(f"connection failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - report everything
        errors.append(f"{type(exc).__name__}: {exc}")
    if created:
        client = created[0]
        errors = client.errors + errors
        if client.capsule_types:
            report["otherCapsules"] = [hex(t) for t in client.capsule_types]
        if client.drain_received:
            report["drainReceived"] = True
        if client.terminated and not client.closed_by_us and not any(
                client.terminated in e for e in errors):
            errors.append(client.terminated)  # the server closed on us
    report["errors"] = errors
    if "elapsedMs" not in report or opts.scenario != "many-datagrams":
        report["elapsedMs"] = round((time.monotonic() - started) * 1000, 1)
    report["ok"] = bool(ok) and not errors
    return report


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="aioquic WebTransport test client (one session per run)")
    p.add_argument("--url", required=True,
                   help="https://host:port[/path]; without a path the "
                        "scenario's default is used (/echo, /close, /refuse)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="echo")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server certificate")
    p.add_argument("--ca", default=None,
                   help="PEM file with the CA / self-signed certificate to trust")
    p.add_argument("--server-name", default=None,
                   help="TLS server name (SNI + verification), default: URL host")
    p.add_argument("--origin", default=None,
                   help="origin header (default https://<authority>)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="limit in seconds for each individual wait")
    p.add_argument("--collect", type=float, default=2.0,
                   help="seconds to keep collecting datagram echoes after the "
                        "last datagram was sent")
    p.add_argument("--fin-wait", type=float, default=2.0,
                   help="seconds to wait for the server's FIN after our close")
    # echo
    p.add_argument("--datagrams", type=int, default=20,
                   help="echo: number of datagrams dg-0..dg-N-1")
    p.add_argument("--datagram-interval", type=float, default=20.0,
                   help="echo: milliseconds between datagrams")
    p.add_argument("--bidi-bytes", type=int, default=256 * 1024,
                   help="echo: bytes written on the client bidi stream "
                        "(byte i = i %% 251)")
    p.add_argument("--close-code", type=int, default=42,
                   help="echo: session close code")
    p.add_argument("--close-reason", default="bye",
                   help="echo: session close reason")
    # many-datagrams
    p.add_argument("--count", type=int, default=10000,
                   help="many-datagrams: datagrams to send")
    p.add_argument("--size", type=int, default=100,
                   help="many-datagrams: payload bytes per datagram (>= 8)")
    p.add_argument("--burst", type=int, default=32,
                   help="many-datagrams: datagrams queued per burst")
    opts = p.parse_args(argv)
    parts = urlsplit(opts.url)
    if parts.scheme != "https" or not parts.hostname:
        p.error(f"unsupported url {opts.url!r}")
    opts.host = parts.hostname
    opts.port = parts.port or 443
    opts.authority = parts.netloc
    path = parts.path if parts.path not in ("", "/") else SCENARIOS[opts.scenario]
    if parts.query:
        path += "?" + parts.query
    opts.path = path
    if opts.origin is None:
        opts.origin = f"https://{opts.authority}"
    if opts.timeout <= 0 or opts.collect < 0 or opts.fin_wait < 0:
        p.error("--timeout must be > 0, --collect/--fin-wait >= 0")
    if opts.count < 0 or opts.datagrams < 0 or opts.bidi_bytes < 0:
        p.error("counts must be >= 0")
    if opts.burst < 1 or opts.size < 8 or opts.size > 1100:
        p.error("--burst must be >= 1, --size between 8 and 1100")
    if not 0 <= opts.close_code <= 0xFFFFFFFF:
        p.error("--close-code must fit in 32 bits")
    return opts


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    report = asyncio.run(run(opts))
    emit(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
