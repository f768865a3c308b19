#!/usr/bin/env python3
"""aioquic client for the interop matrix (__test__/interop-matrix.test.mjs).

One run = one or more QUIC connections to one server, each sending a list of
HTTP/3 requests, with the knobs the interop cases need:

  --get PATH / --post PATH:SIZE   requests (repeatable; --count repeats the list)
  --parallel N                    requests in flight per connection (default: all)
  --connections N                 independent connections run at once
  --cipher chacha20               offer TLS_CHACHA20_POLY1305_SHA256 only
  --key-update-after BYTES        request a key update once BYTES of response
                                  bodies have arrived on the connection
  --resume                        a first connection fetches a session ticket;
                                  the measured connection(s) then resume with it
  --early                         with --resume: send the requests before the
                                  handshake completes (0-RTT when the ticket
                                  allows it)
  --force-early                   with --early: offer 0-RTT even when the ticket
                                  does not allow it (the server must refuse it)

The report (one JSON object on stdout) describes each measured connection from
the client's side: whether it received a Retry and the size of the token its
next Initial carried, whether the TLS session was resumed, whether 0-RTT was
sent and accepted, the negotiated cipher suite, the key phase reached, and
every response's status, size and SHA-256. Exit status 0 when every request
got a response and no connection failed, else 1.

Response bodies are not checked here: the test compares the SHA-256 values.
Request bodies follow the shared pattern (byte i = i % 251).
"""

import argparse
import asyncio
import dataclasses
import hashlib
import sys
import time
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.events import (ConnectionTerminated, HandshakeCompleted,
                                 StreamReset)
from aioquic.quic.logger import QuicLogger
from aioquic import tls

from aioquic_common import (BULK_FLOW_CONTROL, describe_termination, emit,
                            pattern_bytes, protocol_factory,
                            quic_configuration, split_response_headers)

CHUNK = 64 * 1024
MAX_EARLY_DATA = 0xFFFFFFFF


class Exchange:
    def __init__(self, method, path, body_size):
        self.method = method
        self.path = path
        self.body_size = body_size
        self.status = None
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.error = None
        self.stream_id = None
        self.done = asyncio.get_running_loop().create_future()

    def finish(self, error=None):
        if error and self.error is None:
            self.error = error
        if not self.done.done():
            self.done.set_result(None)

    def report(self):
        out = {"method": self.method, "path": self.path, "status": self.status,
               "bytes": self.bytes, "sha256": self.sha.hexdigest(),
               "stream_id": self.stream_id}
        if self.error:
            out["error"] = self.error
        elif self.status is None:
            out["error"] = "no response"
        return out


class InteropClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.exchanges = {}
        self.terminated = None
        self.handshake = None  # HandshakeCompleted
        self.received = 0  # response body bytes on this connection
        self.key_update_after = None
        self.key_updated_at = None
        self.handshake_done = self._loop.create_future()

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
            if not self.handshake_done.done():
                self.handshake_done.set_result(True)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = describe_termination(event)
            if not self.handshake_done.done():
                self.handshake_done.set_result(False)
            for ex in self.exchanges.values():
                ex.finish(self.terminated)
        elif isinstance(event, StreamReset):
            ex = self.exchanges.get(event.stream_id)
            if ex:
                ex.finish(f"stream reset: code=0x{event.error_code:x}")
        for h3 in self.http.handle_event(event):
            ex = self.exchanges.get(getattr(h3, "stream_id", None))
            if ex is None:
                continue
            if isinstance(h3, HeadersReceived):
                status, _ = split_response_headers(h3.headers)
                if ex.status is None and status is not None and status >= 200:
                    ex.status = status
                if h3.stream_ended:
                    ex.finish()
            elif isinstance(h3, DataReceived):
                ex.sha.update(h3.data)
                ex.bytes += len(h3.data)
                self.received += len(h3.data)
                self._maybe_key_update()
                if h3.stream_ended:
                    ex.finish()

    def _maybe_key_update(self):
        if (self.key_update_after is not None and self.key_updated_at is None
                and self.received >= self.key_update_after):
            self.key_updated_at = self.received
            self._quic.request_key_update()
            self.transmit()

    def key_phase(self):
        return self._quic._cryptos[tls.Epoch.ONE_RTT].send.key_phase

    async def request(self, ex, authority):
        headers = [(b":method", ex.method.encode()), (b":scheme", b"https"),
                   (b":authority", authority.encode()),
                   (b":path", ex.path.encode())]
        if ex.body_size:
            headers.append((b"content-length", str(ex.body_size).encode()))
        sid = self._quic.get_next_available_stream_id()
        ex.stream_id = sid
        self.exchanges[sid] = ex
        try:
            if self.terminated:
                raise RuntimeError(self.terminated)
            self.http.send_headers(sid, headers, end_stream=ex.body_size == 0)
            self.transmit()
            off = 0
            while off < ex.body_size:
                n = min(CHUNK, ex.body_size - off)
                self.http.send_data(sid, pattern_bytes(n, off),
                                    end_stream=off + n == ex.body_size)
                self.transmit()
                off += n
                await asyncio.sleep(0)
            await ex.done
        finally:
            self.exchanges.pop(sid, None)


def build_exchanges(opts):
    out = []
    for _ in range(opts.count):
        for path in opts.get:
            out.append(("GET", path, 0))
        for spec in opts.post:
            path, _, size = spec.rpartition(":")
            out.append(("POST", path, int(size)))
    return out


def trace_summary(logger):
    """What the client's own qlog trace shows: Retry packets received, the
    token its Initials carried afterwards, 0-RTT packets sent."""
    info = {"retry_received": 0, "zero_rtt_packets_sent": 0}
    for trace in logger.to_dict()["traces"]:
        for ev in trace["events"]:
            name = ev.get("name", "")
            hdr = ev.get("data", {}).get("header", {})
            ptype = hdr.get("packet_type")
            if name.endswith("packet_received") and ptype == "retry":
                info["retry_received"] += 1
            if name.endswith("packet_sent") and ptype == "0RTT":
                info["zero_rtt_packets_sent"] += 1
    return info


async def one_connection(opts, index, host, port, authority, specs,
                         session_ticket=None, early=False, on_ticket=None):
    logger = QuicLogger()
    cfg = quic_configuration(H3_ALPN, opts.timeout, host, True,
                             quic_logger=logger, **BULK_FLOW_CONTROL)
    if opts.cipher == "chacha20":
        cfg.cipher_suites = [tls.CipherSuite.CHACHA20_POLY1305_SHA256]
    if session_ticket is not None:
        cfg.session_ticket = session_ticket
    created = []
    report = {"conn": index, "responses": []}
    exchanges = []
    try:
        async with connect(host, port, configuration=cfg,
                           create_protocol=protocol_factory(InteropClient,
                                                            created),
                           session_ticket_handler=on_ticket,
                           wait_connected=False) as client:
            client.key_update_after = opts.key_update_after
            first_datagrams = report["first_datagrams"] = []
            transport = client._transport
            sendto = transport.sendto

            def recording_sendto(data, addr=None):
                # the first datagrams' sizes and the types of the long-header
                # packets they start with (evidence for coalescing)
                if len(first_datagrams) < 4:
                    first_datagrams.append(len(data))
                return sendto(data, addr)

            transport.sendto = recording_sendto
            client.transmit()
            if early and opts.early_delay_ms:
                await asyncio.sleep(opts.early_delay_ms / 1000)
            if not early:
                done, _ = await asyncio.wait([client.handshake_done],
                                             timeout=opts.timeout)
                if not done or not client.handshake_done.result():
                    raise RuntimeError(client.terminated or "handshake timed out")
            sem = asyncio.Semaphore(opts.parallel or len(specs) or 1)

            async def run(ex):
                async with sem:
                    await client.request(ex, authority)

            exchanges = [Exchange(*s) for s in specs]
            tasks = [asyncio.ensure_future(run(ex)) for ex in exchanges]
            done, pending = await asyncio.wait(tasks, timeout=opts.timeout) \
                if tasks else (set(), set())
            for t in pending:
                t.cancel()
            for ex in exchanges:
                if not ex.done.done():
                    ex.finish("timeout")
            if opts.resume_wait and on_ticket is not None:
                # tickets may come after the last response
                await asyncio.wait([opts.ticket_seen], timeout=opts.timeout)
            if client.handshake is not None:
                report["session_resumed"] = client.handshake.session_resumed
                report["early_data_accepted"] = \
                    client.handshake.early_data_accepted
            ks = client._quic.tls.key_schedule
            report["cipher_suite"] = ks.cipher_suite.name if ks else None
            report["key_phase"] = client.key_phase()
            report["key_update_requested_at"] = client.key_updated_at
            report["token_length"] = len(client._quic._peer_token)
            if client.terminated:
                report["error"] = client.terminated
            client.close(error_code=0x100)
    except Exception as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {exc}"
        if created and created[0].terminated:
            detail = created[0].terminated
        report["error"] = f"connection failed: {detail}"
    report.update(trace_summary(logger))
    report["responses"] = [ex.report() for ex in exchanges]
    return report


async def main_async(opts):
    parts = urlsplit(opts.url)
    host, port, authority = parts.hostname, parts.port or 443, parts.netloc
    specs = build_exchanges(opts)
    started = time.monotonic()
    out = {"ok": False}
    ticket = None
    if opts.resume:
        tickets = []
        opts.ticket_seen = asyncio.get_running_loop().create_future()

        def on_ticket(t):
            tickets.append(t)
            if not opts.ticket_seen.done():
                opts.ticket_seen.set_result(None)

        opts.resume_wait = True
        first = await one_connection(opts, -1, host, port, authority,
                                     [("GET", opts.get[0] if opts.get else "/", 0)],
                                     on_ticket=on_ticket)
        opts.resume_wait = False
        out["first"] = first
        if not tickets:
            out["error"] = "no session ticket received"
            emit(out)
            return 1
        ticket = tickets[-1]
        out["ticket_max_early_data"] = ticket.max_early_data_size
        if opts.force_early and ticket.max_early_data_size != MAX_EARLY_DATA:
            ticket = dataclasses.replace(ticket,
                                         max_early_data_size=MAX_EARLY_DATA)
            out["ticket_forced_early"] = True
    conns = await asyncio.gather(*[
        one_connection(opts, i, host, port, authority, specs,
                       session_ticket=ticket, early=opts.early)
        for i in range(opts.connections)])
    out["connections"] = conns
    out["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    failed = [c for c in conns if c.get("error")] + [
        r for c in conns for r in c["responses"] if r.get("error")]
    out["ok"] = not failed
    emit(out)
    return 0 if out["ok"] else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="https://host:port (base)")
    p.add_argument("--get", action="append", default=[])
    p.add_argument("--post", action="append", default=[], help="PATH:SIZE")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--parallel", type=int, default=0)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--cipher", choices=["any", "chacha20"], default="any")
    p.add_argument("--key-update-after", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--early", action="store_true")
    p.add_argument("--force-early", action="store_true")
    p.add_argument("--early-delay-ms", type=float, default=0,
                   help="with --early: wait this long after the Initial "
                        "before sending the requests")
    p.add_argument("--timeout", type=float, default=60.0)
    opts = p.parse_args()
    opts.resume_wait = False
    if (opts.early or opts.force_early) and not opts.resume:
        p.error("--early needs --resume")
    return asyncio.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
