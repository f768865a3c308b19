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
import sys
import time

from aioquic.buffer import Buffer, BufferReadError, encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.events import (
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from aioquic_common import (
    BULK_FLOW_CONTROL,
    MAX_DATAGRAM_FRAME_SIZE,
    SETTING_H3_DATAGRAM,
    RecvStream,
    ScenarioClient,
    add_tls_args,
    add_wait_args,
    parse_url,
    pattern_bytes,
    quic_configuration,
    run_main,
    run_session,
    split_response_headers,
)

SCENARIOS = {
    # name: default path (used when --url has no path)
    "echo": "/echo",
    "server-close": "/close",
    "refuse": "/refuse",
    "many-datagrams": "/echo",
}

SETTING_ENABLE_CONNECT_PROTOCOL = 0x08
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


def close_capsule(code, reason):
    payload = code.to_bytes(4, "big") + reason.encode("utf-8")
    return (encode_uint_var(CAPSULE_CLOSE_SESSION)
            + encode_uint_var(len(payload)) + payload)


class WtClient(ScenarioClient):
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

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self._wake()  # ACKs too: lets senders see a drained datagram queue

    def add_to_report(self, report):
        if self.capsule_types:
            report["otherCapsules"] = [hex(t) for t in self.capsule_types]
        if self.drain_received:
            report["drainReceived"] = True

    # -- events --------------------------------------------------------------
    def _quic_event(self, event):
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
            st = self.incoming[sid] = RecvStream(sid)
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
                st = self.incoming[event.stream_id] = RecvStream(event.stream_id)
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
            status, fields = split_response_headers(event.headers)
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
            self.own_streams[sid] = RecvStream(sid)
        return sid

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
    await client.wait_or_fail(
        lambda: client.http.received_settings is not None, opts.timeout,
        "timeout waiting for server SETTINGS")
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
    await client.wait_or_fail(
        lambda: client.status is not None or client.session_fin
        or client.session_reset is not None, opts.timeout,
        "timeout waiting for CONNECT response")
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
    await client.write_in_chunks(sid, body)
    st = client.own_streams[sid]
    await client.wait_or_fail(
        lambda: st.done, opts.timeout,
        lambda: f"timeout reading bidi echo ({len(st.data)} of "
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

    if not await client.wait_or_fail(
            lambda: first_server_bidi() is not None, opts.timeout,
            "timeout waiting for the server's bidi stream"):
        return
    st = first_server_bidi()
    await client.wait_or_fail(lambda: st.done, opts.timeout,
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

    await client.wait_or_fail(
        lambda: sum(1 for s in unis() if s.done) >= want, opts.timeout,
        lambda: f"timeout waiting for {want} server uni streams "
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
    await client.wait_or_fail(
        lambda: client.session_fin or client.session_reset is not None,
        opts.timeout, "timeout waiting for the server to close the session")
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
        if client.datagrams_queued() and not await client.wait_or_fail(
                lambda: client.datagrams_queued() == 0, opts.timeout,
                lambda: f"datagram send queue stalled for {opts.timeout:g} s "
                        f"({client.datagrams_queued()} queued)"):
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
    cfg = quic_configuration(H3_ALPN, opts.timeout,
                             opts.server_name or opts.host, opts.insecure,
                             opts.ca, **BULK_FLOW_CONTROL,
                             max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE)
    return await run_session(
        opts, cfg, WtClient, report, started,
        lambda client: RUNNERS[opts.scenario](client, opts, report))


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="aioquic WebTransport test client (one session per run)")
    p.add_argument("--url", required=True,
                   help="https://host:port[/path]; without a path the "
                        "scenario's default is used (/echo, /close, /refuse)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="echo")
    add_tls_args(p)
    p.add_argument("--origin", default=None,
                   help="origin header (default https://<authority>)")
    add_wait_args(p)
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
    # a bad port still ends in a traceback (exit 1) here, as it always did
    parse_url(p, opts, SCENARIOS[opts.scenario],
              bad_port_is_usage_error=False)
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
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
