#!/usr/bin/env python3
"""Independent HTTP/3 datagram (RFC 9297) test client built on aioquic.

Drives HTTP/3 datagrams bound to a plain request stream (no extended CONNECT,
no WebTransport) with a QUIC/HTTP/3 stack that shares no code with ours. One
request per run. Prints exactly one JSON object on stdout, marked
`"summary": true` like the other clients in this directory, so runClient() in
__test__/helpers/independent.mjs finds it as `summary`.

Scenario:
  1. after the QUIC handshake, wait for the server's SETTINGS and check
     SETTINGS_H3_DATAGRAM (0x33) = 1 and the max_datagram_frame_size
     transport parameter (both are required before datagrams may be sent);
  2. send `POST <path>` (content-type text/plain) WITHOUT ending the stream
     and wait for the response HEADERS (the server answers 200 at once and
     keeps the response open);
  3. send --count datagrams `d-<i>` on that request's flow, --interval ms
     apart; interleaved with them, send --stray-count datagrams
     `stray-<i>` whose quarter stream id names a stream that was never opened
     (--stray-stream, default 400): the server must drop those;
  4. collect echoes until every `d-<i>` came back (then a short grace period
     for late stray echoes) or --collect seconds after the last datagram;
  5. send the request body `bye` with FIN and read the rest of the response
     body until FIN (captured as text in `body`).

Our own SETTINGS carry H3_DATAGRAM = 1 too (aioquic only sends it with
WebTransport enabled, so H3Connection is subclassed for that): RFC 9297 lets
an endpoint send HTTP/3 datagrams only once both sides advertised it.

Report fields: status, sent, straySent, echoed (datagrams received on the
request's flow), matched (distinct `d-<i>` echoed), strayEchoed (received
datagrams whose payload is a stray one, on any flow: must be 0), body,
responseEnded, settings, maxDatagramFrameSize, errors, elapsedMs, ok.
`ok` = status 200, matched >= 1 (>= 0 with --count 0), strayEchoed == 0,
response ended, and no errors.

Exit status: 0 when the checks passed ("ok": true), 1 otherwise, 2 for bad
arguments. Every wait is bounded by --timeout (or --collect), so a broken
server yields a failing report, never a hang.
"""

import argparse
import asyncio
import sys
import time

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
from aioquic.quic.events import StreamReset

from aioquic_common import (
    MAX_DATAGRAM_FRAME_SIZE,
    SETTING_H3_DATAGRAM,
    ScenarioClient,
    add_tls_args,
    add_wait_args,
    parse_url,
    quic_configuration,
    run_main,
    run_session,
    split_response_headers,
)

DEFAULT_PATH = "/dgram"
# after every regular echo arrived, keep listening this long for stray echoes
STRAY_GRACE = 0.25


class DatagramH3Connection(H3Connection):
    """H3Connection that advertises SETTINGS_H3_DATAGRAM = 1 without
    WebTransport (aioquic ties the two together)."""

    def _get_local_settings(self):
        settings = super()._get_local_settings()
        settings[SETTING_H3_DATAGRAM] = 1
        return settings


class DgramClient(ScenarioClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = DatagramH3Connection(self._quic)
        self.request_id = None
        self.status = None
        self.response_headers = {}
        self.body = bytearray()
        self.response_ended = False
        self.request_reset = None  # error code of a RESET_STREAM on the request
        self.flow_datagrams = []  # payloads received on the request's flow
        self.other_datagrams = []  # (stream_id, payload) for any other flow

    # -- events --------------------------------------------------------------
    def _quic_event(self, event):
        if (isinstance(event, StreamReset)
                and event.stream_id == self.request_id):
            self.request_reset = event.error_code
        for h3_event in self.http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event):
        if isinstance(event, DatagramReceived):
            if event.stream_id == self.request_id:
                self.flow_datagrams.append(event.data)
            else:
                self.other_datagrams.append((event.stream_id, event.data))
            return
        if getattr(event, "stream_id", None) != self.request_id:
            return
        if isinstance(event, HeadersReceived):
            status, fields = split_response_headers(
                event.headers,
                bad_status=lambda v: self.error(f"bad :status {v!r}"))
            if self.status is None and status is not None and \
                    not (100 <= status < 200):
                self.status = status
                self.response_headers = fields
            if event.stream_ended:
                self.response_ended = True
        elif isinstance(event, DataReceived):
            self.body += event.data
            if event.stream_ended:
                self.response_ended = True

    # -- actions -------------------------------------------------------------
    def open_request(self, authority, path):
        sid = self._quic.get_next_available_stream_id()
        self.request_id = sid
        self.http.send_headers(sid, [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"content-type", b"text/plain"),
        ], end_stream=False)
        self.transmit()
        return sid

    def send_datagram(self, stream_id, payload):
        self.http.send_datagram(stream_id, payload)
        self.transmit()

    def finish_request(self, body):
        self.http.send_data(self.request_id, body, end_stream=True)
        self.transmit()


# -- scenario -----------------------------------------------------------------

async def wait_settings(client, opts, report):
    # transport parameters are known once the handshake completed
    mdfs = client._quic._remote_max_datagram_frame_size
    report["maxDatagramFrameSize"] = mdfs
    if not await client.wait_or_fail(
            lambda: client.http.received_settings is not None, opts.timeout,
            "timeout waiting for server SETTINGS"):
        return False
    settings = client.http.received_settings
    report["settings"] = {hex(SETTING_H3_DATAGRAM):
                          settings.get(SETTING_H3_DATAGRAM)}
    if settings.get(SETTING_H3_DATAGRAM) != 1:
        client.error("server SETTINGS lack H3_DATAGRAM (0x33) = 1")
    if not mdfs:
        client.error("server did not send the max_datagram_frame_size "
                     "transport parameter (or sent 0)")
    return not client.terminated


def stray_slots(count, strays):
    """Indices of regular datagrams after which a stray one is sent:
    spread over the run (all at the start when count is 0)."""
    return [((k + 1) * count) // (strays + 1) for k in range(strays)]


async def scenario(client, opts, report):
    if not await wait_settings(client, opts, report):
        return False

    sid = client.open_request(opts.authority, opts.path)
    report["streamId"] = sid
    await client.wait_or_fail(
        lambda: client.status is not None or client.response_ended
        or client.request_reset is not None, opts.timeout,
        "timeout waiting for the response HEADERS")
    report["status"] = client.status
    if client.request_reset is not None:
        client.error(f"request stream reset: code=0x{client.request_reset:x}")
    if client.status is None or client.terminated:
        return False
    if client.response_ended:
        client.error("response ended before any datagram was sent")

    regular = [f"d-{i}".encode() for i in range(opts.count)]
    strays = [f"stray-{k}".encode() for k in range(opts.stray_count)]
    slots = stray_slots(opts.count, opts.stray_count)
    stray_set = set(strays)
    wanted = set(regular)

    def send_strays_at(i):
        while slots and slots[0] == i:
            slots.pop(0)
            client.send_datagram(opts.stray_stream,
                                 strays[report["straySent"]])
            report["straySent"] += 1

    send_strays_at(0)
    for i, payload in enumerate(regular):
        if client.terminated:
            break
        client.send_datagram(sid, payload)
        report["sent"] += 1
        send_strays_at(i + 1)
        if i + 1 < len(regular):
            await asyncio.sleep(opts.interval / 1000)

    # collect: stop early once every regular echo is back, but then still
    # listen briefly so that an echoed stray datagram is not missed
    await client.wait_until(
        lambda: wanted.issubset(client.flow_datagrams), opts.collect)
    if wanted.issubset(client.flow_datagrams) and opts.collect > 0:
        await client.wait_until(lambda: False,
                                min(STRAY_GRACE, opts.collect))

    got = list(client.flow_datagrams)
    report["echoed"] = len(got)
    report["matched"] = len(wanted.intersection(got))
    stray_echoed = [d for d in got if d in stray_set] + \
        [d for _, d in client.other_datagrams if d in stray_set]
    report["strayEchoed"] = len(stray_echoed)
    if regular and not report["matched"]:
        client.error(f"none of the {len(regular)} datagrams was echoed within "
                     f"{opts.collect:g} s")
    unexpected = [d for d in got if d not in wanted and d not in stray_set]
    if unexpected:
        client.error(f"{len(unexpected)} unexpected datagram(s) on the request "
                     f"flow, first {unexpected[0][:32]!r}")
    if client.other_datagrams:
        first_sid, first = client.other_datagrams[0]
        client.error(f"{len(client.other_datagrams)} datagram(s) on other "
                     f"flows, first stream {first_sid}: {first[:32]!r}")

    if not client.terminated and not client.response_ended and \
            client.request_reset is None:
        client.finish_request(b"bye")
        await client.wait_or_fail(
            lambda: client.response_ended
            or client.request_reset is not None, opts.timeout,
            lambda: f"timeout waiting for the end of the response "
                    f"({len(client.body)} body bytes so far)")
    if client.request_reset is not None:
        client.error(f"request stream reset: code=0x{client.request_reset:x}")
    report["body"] = bytes(client.body).decode("utf-8", "replace")
    report["responseEnded"] = client.response_ended
    return (
        client.status == 200
        and report["matched"] >= min(1, opts.count)
        and report["strayEchoed"] == 0
        and client.response_ended
    )


async def run(opts):
    report = {
        "summary": True, "url": opts.url, "path": opts.path,
        "status": None, "sent": 0, "straySent": 0, "echoed": 0, "matched": 0,
        "strayEchoed": 0, "body": None, "responseEnded": False,
        "strayStream": opts.stray_stream, "settings": None,
        "maxDatagramFrameSize": None,
    }
    started = time.monotonic()
    cfg = quic_configuration(H3_ALPN, opts.timeout,
                             opts.server_name or opts.host, opts.insecure,
                             opts.ca,
                             max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE)
    return await run_session(opts, cfg, DgramClient, report, started,
                             lambda client: scenario(client, opts, report))


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="aioquic HTTP/3 datagram (RFC 9297) test client "
                    "(one request per run)")
    p.add_argument("--url", required=True,
                   help=f"https://host:port[/path]; default path {DEFAULT_PATH}")
    add_tls_args(p)
    add_wait_args(p)
    p.add_argument("--count", type=int, default=50,
                   help="datagrams d-0..d-N-1 sent on the request's flow")
    p.add_argument("--interval", type=float, default=5.0,
                   help="milliseconds between datagrams")
    p.add_argument("--stray-count", type=int, default=3,
                   help="datagrams stray-0.. sent for a stream never opened")
    p.add_argument("--stray-stream", type=int, default=400,
                   help="stream id (a multiple of 4) the stray datagrams name")
    opts = p.parse_args(argv)
    parse_url(p, opts, DEFAULT_PATH)
    if opts.timeout <= 0 or opts.collect < 0 or opts.interval < 0:
        p.error("--timeout must be > 0, --collect/--interval >= 0")
    if opts.count < 0 or opts.stray_count < 0:
        p.error("counts must be >= 0")
    if opts.stray_stream < 0 or opts.stray_stream % 4 or \
            opts.stray_stream >= 1 << 62:
        p.error("--stray-stream must be a client bidi stream id "
                "(a multiple of 4, < 2^62)")
    if opts.stray_stream == 0 and opts.stray_count:
        p.error("--stray-stream 0 is the request stream itself")
    return opts


def main(argv=None):
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
