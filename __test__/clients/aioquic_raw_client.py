#!/usr/bin/env python3
"""Independent raw-QUIC test client (custom ALPN, no HTTP/3) built on aioquic.

Drives the h3node server's raw QUIC mode with a QUIC stack that shares no code
with ours: aioquic's QuicConnectionProtocol / QuicConnection directly, no
H3Connection. One connection per run; the scenario is chosen with --scenario.
Prints exactly one JSON object on stdout, marked `"summary": true` like the
other clients in this directory, so runClient() in
__test__/helpers/independent.mjs finds it as `summary`.

Server behaviour expected by the `echo` scenario:
  * on connect it opens a bidi stream, writes "server-bidi" + FIN and reads
    our reply up to FIN ("echo:server-bidi");
  * it opens a uni stream with "server-uni" + FIN;
  * every QUIC DATAGRAM is echoed back unchanged (no flow id prefix);
  * each client bidi stream is echoed (all bytes, then FIN);
  * after the FIN of each client uni stream it opens a new uni stream with
    "echo:" + data + FIN;
  * it records the application error code and reason of our
    CONNECTION_CLOSE.

echo scenario: send --datagrams datagrams `dg-<i>` --datagram-interval ms
apart and collect echoes (until all are back or --collect s after the last);
then write --bidi-bytes (byte i = i % 251) + FIN on a bidi stream and compare
the echo; meanwhile send "uni-hello" + FIN on a uni stream, answer the server's
bidi stream with "echo:" + its text + FIN, and collect the server's uni
streams until two are complete; finally close the connection with application
error --close-code / --close-reason.
Report: alpn, maxDatagramFrameSize, datagramsSent, datagramsEchoed,
datagramsMatched, bidiBytes, bidiEchoOk, serverBidiText, uniTexts (sorted),
closeSent {code, reason}, errors, elapsedMs, ok.

bad-alpn scenario: offer only the ALPN "not-supported"; the server must refuse
the handshake with a CONNECTION_CLOSE (normally the TLS alert
no_application_protocol, QUIC error 0x178). Report: connected, error,
errorCode, alpn, errors, elapsedMs, ok (= not connected, refused by the peer;
a handshake that merely times out is not ok).

Exit status: 0 when the scenario's checks passed ("ok": true), 1 otherwise,
2 for bad arguments. Every wait is bounded by --timeout (or --collect /
--close-wait), so a broken server yields a failing report, never a hang.
"""

import argparse
import asyncio
import sys
import time

from aioquic.quic.events import (
    DatagramFrameReceived,
    HandshakeCompleted,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from aioquic_common import (
    BULK_FLOW_CONTROL,
    MAX_DATAGRAM_FRAME_SIZE,
    HandshakeFailed,
    HandshakeTimeout,
    RecvStream,
    ScenarioClient,
    add_tls_args,
    add_wait_args,
    connected_client,
    finish_report,
    parse_url,
    pattern_bytes,
    quic_configuration,
    run_main,
)

DEFAULT_ALPN = "h3node-echo"
BAD_ALPN = "not-supported"
SCENARIOS = ("echo", "bad-alpn")


def is_server_initiated(stream_id):
    return stream_id & 1 == 1


def is_unidirectional(stream_id):
    return stream_id & 2 == 2


class RawClient(ScenarioClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpn = None
        self.streams = {}  # every stream with receive-side activity, by id
        self.datagrams = []

    def stream(self, stream_id):
        st = self.streams.get(stream_id)
        if st is None:
            st = self.streams[stream_id] = RecvStream(stream_id)
        return st

    # -- events --------------------------------------------------------------
    def _quic_event(self, event):
        if isinstance(event, HandshakeCompleted):
            self.alpn = event.alpn_protocol
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams.append(event.data)
        elif isinstance(event, StreamDataReceived):
            st = self.stream(event.stream_id)
            st.data += event.data
            if event.end_stream:
                st.ended = True
        elif isinstance(event, StreamReset):
            self.stream(event.stream_id).reset_code = event.error_code
        elif isinstance(event, StopSendingReceived):
            self.stream(event.stream_id).stop_sending_code = event.error_code

    # -- actions -------------------------------------------------------------
    def open_stream(self, unidirectional):
        sid = self._quic.get_next_available_stream_id(
            is_unidirectional=unidirectional)
        if not unidirectional:
            self.stream(sid)
        return sid

    def send_datagram(self, payload):
        self._quic.send_datagram_frame(payload)
        self.transmit()

    def peer_streams(self, unidirectional):
        return [s for s in self.streams.values()
                if is_server_initiated(s.stream_id)
                and is_unidirectional(s.stream_id) == unidirectional]


# -- echo scenario ------------------------------------------------------------

async def datagram_echo(client, opts, report):
    sent = []
    for i in range(opts.datagrams):
        if client.terminated:
            break
        payload = f"dg-{i}".encode()
        client.send_datagram(payload)
        sent.append(payload)
        if i + 1 < opts.datagrams:
            await asyncio.sleep(opts.datagram_interval / 1000)
    wanted = set(sent)
    await client.wait_until(lambda: wanted.issubset(client.datagrams),
                            opts.collect)
    got = list(client.datagrams)
    report["datagramsSent"] = len(sent)
    report["datagramsEchoed"] = len(got)
    report["datagramsMatched"] = len(wanted.intersection(got))
    if sent and not report["datagramsMatched"]:
        client.error(f"none of the {len(sent)} datagrams was echoed within "
                     f"{opts.collect:g} s")
    stray = [d for d in got if d not in wanted]
    if stray:
        client.error(f"{len(stray)} unexpected datagram(s), first "
                     f"{stray[0][:32]!r}")


async def bidi_echo(client, opts, report):
    sid = client.open_stream(unidirectional=False)
    body = pattern_bytes(opts.bidi_bytes)
    await client.write_in_chunks(sid, body)
    st = client.streams[sid]
    await client.wait_or_fail(
        lambda: st.done, opts.timeout,
        lambda: f"timeout reading bidi echo ({len(st.data)} of "
                f"{len(body)} bytes)")
    if st.reset_code is not None:
        client.error(f"bidi echo stream reset: code=0x{st.reset_code:x}")
    if st.stop_sending_code is not None:
        client.error(f"bidi echo stream STOP_SENDING: "
                     f"code=0x{st.stop_sending_code:x}")
    report["bidiBytes"] = len(st.data)
    report["bidiEchoOk"] = st.ended and bytes(st.data) == body
    if st.ended and not report["bidiEchoOk"]:
        first = next((i for i, (a, b) in enumerate(zip(st.data, body))
                      if a != b), min(len(st.data), len(body)))
        client.error(f"bidi echo differs from what was sent at byte {first} "
                     f"({len(st.data)} bytes back, {len(body)} sent)")


async def answer_server_bidi(client, opts, report):
    def first_server_bidi():
        found = client.peer_streams(unidirectional=False)
        return min(found, key=lambda s: s.stream_id) if found else None

    if not await client.wait_or_fail(
            lambda: first_server_bidi() is not None, opts.timeout,
            "timeout waiting for the server's bidi stream"):
        return
    st = first_server_bidi()
    await client.wait_or_fail(lambda: st.done, opts.timeout,
                              "timeout reading the server's bidi stream")
    if st.reset_code is not None:
        client.error(f"server bidi stream reset: code=0x{st.reset_code:x}")
    report["serverBidiText"] = bytes(st.data).decode("utf-8", "replace")
    if st.ended and not client.terminated:
        client.write(st.stream_id, b"echo:" + bytes(st.data), fin=True)
        report["serverBidiAnswered"] = True


async def collect_uni(client, opts, report, want=2):
    def complete():
        return sum(1 for s in client.peer_streams(unidirectional=True)
                   if s.done)

    await client.wait_or_fail(
        lambda: complete() >= want, opts.timeout,
        lambda: f"timeout waiting for {want} server uni streams "
                f"({complete()} complete)")
    texts = []
    for s in client.peer_streams(unidirectional=True):
        if s.reset_code is not None:
            client.error(f"server uni stream {s.stream_id} reset: "
                         f"code=0x{s.reset_code:x}")
        elif s.ended:
            texts.append(bytes(s.data).decode("utf-8", "replace"))
    report["uniTexts"] = sorted(texts)


async def scenario_echo(client, opts, report):
    report["maxDatagramFrameSize"] = \
        client._quic._remote_max_datagram_frame_size
    if client.alpn != opts.alpn:
        client.error(f"negotiated ALPN {client.alpn!r}, offered {opts.alpn!r}")
    if opts.datagrams and not report["maxDatagramFrameSize"]:
        client.error("server did not send the max_datagram_frame_size "
                     "transport parameter (or sent 0)")

    uni = client.open_stream(unidirectional=True)
    client.write(uni, b"uni-hello", fin=True)

    async def datagrams_then_bulk():
        # one after the other: packets of the bulk echo that the kernel drops
        # would take datagram echoes with them (never retransmitted)
        await datagram_echo(client, opts, report)
        await bidi_echo(client, opts, report)

    results = await asyncio.gather(
        datagrams_then_bulk(),
        answer_server_bidi(client, opts, report),
        collect_uni(client, opts, report),
        return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            client.error(f"{type(r).__name__}: {r}")

    if not client.terminated:
        client.closed_by_us = True
        client.close(error_code=opts.close_code,
                     reason_phrase=opts.close_reason)
        if client._quic._close_pending:
            client.error("CONNECTION_CLOSE could not be sent")
        else:
            report["closeSent"] = {"code": opts.close_code,
                                   "reason": opts.close_reason}
        # let the close (and a possible answer) travel before the socket goes
        closed = asyncio.ensure_future(client.wait_closed())
        await asyncio.wait([closed], timeout=opts.close_wait)
        if not closed.done():
            closed.cancel()
        await asyncio.gather(closed, return_exceptions=True)
    return (
        client.alpn == opts.alpn
        and report["datagramsMatched"] >= min(1, opts.datagrams)
        and report["bidiEchoOk"]
        and report["serverBidiText"] == "server-bidi"
        and report["serverBidiAnswered"]
        and report["uniTexts"] == ["echo:uni-hello", "server-uni"]
        and report["closeSent"] is not None
    )


async def run(opts):
    report = {"summary": True, "scenario": opts.scenario, "url": opts.url}
    offered = BAD_ALPN if opts.scenario == "bad-alpn" else opts.alpn
    report["alpnOffered"] = offered
    if opts.scenario == "bad-alpn":
        report.update({"connected": False, "error": None, "errorCode": None,
                       "alpn": None})
    else:
        report.update({
            "alpn": None, "maxDatagramFrameSize": None,
            "datagramsSent": 0, "datagramsEchoed": 0, "datagramsMatched": 0,
            "bidiBytes": 0, "bidiEchoOk": False, "serverBidiText": None,
            "serverBidiAnswered": False, "uniTexts": [], "closeSent": None,
        })
    started = time.monotonic()
    ok = False
    created = []
    cfg = quic_configuration([offered], opts.timeout,
                             opts.server_name or opts.host, opts.insecure,
                             opts.ca, **BULK_FLOW_CONTROL,
                             max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE)

    errors = []
    handshake_error = None
    try:
        async with connected_client(opts, cfg, RawClient, created) as client:
            report["alpn"] = client.alpn
            if opts.scenario == "bad-alpn":
                report["connected"] = True
                client.error(f"handshake completed offering only {offered!r} "
                             f"(negotiated ALPN {client.alpn!r})")
            else:
                ok = await scenario_echo(client, opts, report)
            client.close_unless_terminated(0)
    except (HandshakeTimeout, HandshakeFailed) as exc:
        handshake_error = exc
    except Exception as exc:  # noqa: BLE001 - report everything
        errors.append(f"{type(exc).__name__}: {exc}")
    client = created[0] if created else None

    if opts.scenario == "bad-alpn":
        if isinstance(handshake_error, HandshakeFailed):
            report["error"] = str(handshake_error)
            report["errorCode"] = client.terminated_code if client else None
            ok = True  # the server refused the handshake
        elif isinstance(handshake_error, HandshakeTimeout):
            report["error"] = str(handshake_error)
            errors.append(f"no refusal from the server: {handshake_error}")
    elif handshake_error is not None:
        errors.append(f"connection failed: {handshake_error}")

    # a failed handshake is reported above (or expected, with bad-alpn)
    return finish_report(report, client, errors, ok, started,
                         peer_close_is_error=handshake_error is None)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="aioquic raw QUIC (custom ALPN) test client "
                    "(one connection per run)")
    p.add_argument("--url", required=True,
                   help="https://host:port (any path is ignored)")
    p.add_argument("--scenario", choices=SCENARIOS, default="echo")
    p.add_argument("--alpn", default=DEFAULT_ALPN,
                   help=f"echo: ALPN to offer (default {DEFAULT_ALPN}); "
                        f"bad-alpn always offers {BAD_ALPN!r}")
    add_tls_args(p)
    add_wait_args(p)
    p.add_argument("--close-wait", type=float, default=0.5,
                   help="seconds to linger after sending CONNECTION_CLOSE")
    p.add_argument("--datagrams", type=int, default=20,
                   help="echo: number of datagrams dg-0..dg-N-1")
    p.add_argument("--datagram-interval", type=float, default=20.0,
                   help="echo: milliseconds between datagrams")
    p.add_argument("--bidi-bytes", type=int, default=100 * 1024,
                   help="echo: bytes written on the client bidi stream "
                        "(byte i = i %% 251)")
    p.add_argument("--close-code", type=int, default=42,
                   help="echo: application error code of CONNECTION_CLOSE")
    p.add_argument("--close-reason", default="bye",
                   help="echo: reason phrase of CONNECTION_CLOSE")
    opts = p.parse_args(argv)
    parse_url(p, opts)
    if opts.timeout <= 0 or opts.collect < 0 or opts.close_wait < 0 or \
            opts.datagram_interval < 0:
        p.error("--timeout must be > 0, --collect/--close-wait/"
                "--datagram-interval >= 0")
    if opts.datagrams < 0 or opts.bidi_bytes < 0:
        p.error("counts must be >= 0")
    if not opts.alpn or len(opts.alpn.encode()) > 255:
        p.error("--alpn must be 1..255 bytes")
    if not 0 <= opts.close_code < 1 << 62:
        p.error("--close-code must be a QUIC varint (0 .. 2^62-1)")
    return opts


def main(argv=None):
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
