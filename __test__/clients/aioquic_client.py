#!/usr/bin/env python3
"""Independent HTTP/3 test client built on aioquic.

Used by the h3node test suite to drive the server with a QUIC/HTTP/3 stack
that shares no code with ours. Prints one JSON object per response on stdout
and a final summary object. See --help for the flags.

Request model:
  * the per-connection request list is every --url repeated --count times
    (--count defaults to --parallel, so `--parallel 100` alone means
    "100 concurrent requests on one connection");
  * at most --parallel requests are in flight per connection;
  * --connections N opens N independent QUIC connections and runs the whole
    list on each of them.

Exit status: 0 when every request either completed (any HTTP status) or was
deliberately reset via --reset-after; 1 otherwise; 2 for bad arguments.
"""

import argparse
import asyncio
import hashlib
import sys
import time
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.events import (
    ConnectionTerminated,
    StopSendingReceived,
    StreamReset,
)

from aioquic_common import (
    BULK_FLOW_CONTROL,
    describe_termination,
    emit,
    pattern_bytes,
    protocol_factory,
    quic_configuration,
    split_response_headers,
)

H3_REQUEST_CANCELLED = 0x10C
CHUNK_SIZE = 64 * 1024
# keep at most this many un-acknowledged request-body bytes queued per stream
SEND_HIGH_WATER = 1024 * 1024


def body_sha256(size):
    h = hashlib.sha256()
    off = 0
    while off < size:
        n = min(CHUNK_SIZE, size - off)
        h.update(pattern_bytes(n, off))
        off += n
    return h.hexdigest()


class RequestState:
    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.status = None
        self.headers = {}
        self.trailers = None
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.done = asyncio.get_running_loop().create_future()
        self.stop_sending = False  # peer asked us to stop sending the body

    def finish(self, error=None):
        if not self.done.done():
            self.done.set_result(error)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.requests = {}
        self.terminated = None
        self._progress = self._loop.create_future()

    # -- flow control helpers -------------------------------------------
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        # ACKs arrive in datagrams: wake up body writers waiting for room.
        fut, self._progress = self._progress, self._loop.create_future()
        fut.set_result(None)

    async def wait_progress(self, timeout=0.05):
        # asyncio.wait (unlike wait_for on Python < 3.12) never swallows a
        # cancellation, which the overall --timeout relies on.
        await asyncio.wait([self._progress], timeout=timeout)

    def unacked(self, stream_id):
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    # -- events -----------------------------------------------------------
    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            if self._connected_waiter is not None:
                # connect() re-raises this; mark it retrieved so asyncio does
                # not log "Future exception was never retrieved" on stderr
                self._connected_waiter.add_done_callback(
                    lambda f: f.cancelled() or f.exception())
            self.terminated = describe_termination(event)
            for req in self.requests.values():
                req.finish(self.terminated)
        elif isinstance(event, StreamReset):
            req = self.requests.get(event.stream_id)
            if req is not None:
                req.finish(f"stream reset by peer: code=0x{event.error_code:x}")
        elif isinstance(event, StopSendingReceived):
            req = self.requests.get(event.stream_id)
            if req is not None:
                req.stop_sending = True
        for h3_event in self.http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event):
        req = self.requests.get(getattr(event, "stream_id", None))
        if req is None:
            return
        if isinstance(event, HeadersReceived):
            status, fields = split_response_headers(event.headers)
            if req.status is None:
                if status is not None and 100 <= status < 200 and status != 101:
                    pass  # interim response; wait for the final one
                else:
                    req.status = status
                    req.headers = fields
            else:
                req.trailers = fields
            if event.stream_ended:
                req.finish()
        elif isinstance(event, DataReceived):
            req.sha.update(event.data)
            req.bytes += len(event.data)
            if event.stream_ended:
                req.finish()

    # -- requests ---------------------------------------------------------
    async def request(self, url, opts):
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        authority = parts.netloc
        body_size = opts.body_size
        reset_after = opts.reset_after
        has_body = body_size > 0 or reset_after is not None

        headers = [
            (b":method", opts.method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        if body_size > 0 and not opts.no_content_length:
            headers.append((b"content-length", str(body_size).encode()))
        for name, value in opts.header:
            headers.append((name.lower().encode(), value.encode()))

        started = time.monotonic()
        sid = self._quic.get_next_available_stream_id()
        req = RequestState(sid)
        self.requests[sid] = req
        result = {"stream_id": sid, "url": url}
        was_reset = False
        try:
            if self.terminated:
                raise RuntimeError(self.terminated)
            self.http.send_headers(sid, headers, end_stream=not has_body)
            self.transmit()
            if has_body:
                was_reset = await self._send_body(req, body_size, reset_after, opts)
            if was_reset and opts.reset_mode == "both":
                result["reset"] = True
                result["error"] = "reset by client (--reset-after)"
            else:
                error = await req.done
                if was_reset:
                    result["reset"] = True
                if error:
                    result["error"] = error
        except asyncio.CancelledError:
            # overall deadline hit: report this request (with its stream id)
            result["error"] = "timeout"
        except Exception as exc:  # noqa: BLE001 - report everything
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.requests.pop(sid, None)
        out = {
            "status": req.status,
            "headers": req.headers,
            "bytes": req.bytes,
            "sha256": req.sha.hexdigest(),
        }
        if req.trailers is not None:
            out["trailers"] = req.trailers
        out.update(result)
        if "error" not in out and req.status is None:
            out["error"] = "no response headers"
        out["elapsed_ms"] = round((time.monotonic() - started) * 1000, 3)
        return out

    async def _send_body(self, req, body_size, reset_after, opts):
        """Stream the request body; returns True when the stream was reset."""
        sid = req.stream_id
        limit = body_size if reset_after is None else min(body_size, reset_after)
        off = 0
        while off < limit:
            while self.unacked(sid) > SEND_HIGH_WATER and not req.done.done():
                await self.wait_progress()
            if req.stop_sending or (req.done.done() and req.done.result()):
                return False  # peer stopped/reset us; nothing more to send
            n = min(CHUNK_SIZE, limit - off)
            last = reset_after is None and off + n == body_size
            self.http.send_data(sid, pattern_bytes(n, off), end_stream=last)
            self.transmit()
            off += n
        if reset_after is None:
            if body_size == 0:
                self.http.send_data(sid, b"", end_stream=True)
                self.transmit()
            return False
        # Give the already-written bytes a chance to be acknowledged so the
        # server really sees them before the reset (bounded wait).
        deadline = time.monotonic() + 0.5
        while self.unacked(sid) > 0 and time.monotonic() < deadline:
            await self.wait_progress(0.02)
        self._quic.reset_stream(sid, H3_REQUEST_CANCELLED)
        if opts.reset_mode == "both":
            try:
                self._quic.stop_stream(sid, H3_REQUEST_CANCELLED)
            except Exception:  # noqa: BLE001 - receive side may be finished
                pass
        self.transmit()
        return True


def failure_result(url, index, error):
    return {
        "status": None,
        "headers": {},
        "bytes": 0,
        "sha256": hashlib.sha256().hexdigest(),
        "stream_id": None,
        "url": url,
        "conn": index,
        "error": error,
    }


async def run_connection(index, host, port, jobs, opts, config_factory, results):
    reported = [0]

    def report(res):
        res["conn"] = index
        emit(res)
        results.append(res)
        reported[0] += 1

    async def one(client, url, sem):
        try:
            async with sem:
                res = await client.request(url, opts)
        except asyncio.CancelledError:
            res = failure_result(url, index, "timeout")
        report(res)

    error = None
    created = []

    try:
        async with connect(
            host,
            port,
            configuration=config_factory(),
            create_protocol=protocol_factory(H3Client, created),
        ) as client:
            if opts.retire_cid_twice:
                await retire_cid_twice(client, opts.timeout)
            sem = asyncio.Semaphore(opts.parallel)
            tasks = [asyncio.ensure_future(one(client, url, sem)) for url in jobs]
            try:
                await asyncio.gather(*tasks)
                if any(r.get("reset") for r in results):
                    # let RESET_STREAM/STOP_SENDING be (re)transmitted before
                    # CONNECTION_CLOSE so the server sees a stream reset
                    await asyncio.sleep(0.1)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    except asyncio.CancelledError:
        error = "timeout"
    except Exception as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {exc}"
        if created and created[0].terminated:
            detail = created[0].terminated  # e.g. TLS alert from the peer
        error = f"connection failed: {detail}"
    if error:
        # connection-level failure: everything not yet reported fails
        for url in jobs[reported[0]:]:
            report(failure_result(url, index, error))


# Connection-level facts the summary reports (one connection per run for the
# flags that set them).
FACTS = {}


async def retire_cid_twice(client, timeout):
    """Moves to the server's next connection ID and retires the one used so
    far twice, in one packet: what a client does when it retransmits a
    RETIRE_CONNECTION_ID whose first copy the server had received but not yet
    acknowledged (RFC 9000 allows duplicates: the server must ignore the
    second). aioquic never duplicates it on its own, so the retired sequence
    number is queued a second time by hand."""
    quic = client._quic
    deadline = time.monotonic() + timeout
    # The server's NEW_CONNECTION_ID frames come with or just after the
    # handshake.
    while not quic._peer_cid_available and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    FACTS["peerCidsAvailable"] = len(quic._peer_cid_available)
    if not quic._peer_cid_available:
        FACTS["retiredTwice"] = False
        return
    old = quic._peer_cid.sequence_number
    quic.change_connection_id()
    queued = quic._retire_connection_ids.count(old)
    if queued == 1:
        quic._retire_connection_ids.append(old)
    FACTS["retiredTwice"] = queued == 1
    FACTS["retiredSequence"] = old
    client.transmit()
    # Let the server take both frames before the requests go out.
    await asyncio.sleep(0.2)


def parse_args(argv):
    p = argparse.ArgumentParser(description="aioquic HTTP/3 test client")
    p.add_argument("--url", action="append", required=True,
                   help="https://host:port/path (repeatable)")
    p.add_argument("--count", type=int, default=None,
                   help="repeat the URL list N times (default: --parallel)")
    p.add_argument("--method", default="GET")
    p.add_argument("--body-size", type=int, default=0,
                   help="request body length; byte i is i %% 251")
    p.add_argument("--no-content-length", action="store_true",
                   help="do not send content-length for the request body")
    p.add_argument("--header", action="append", default=[],
                   help="name:value (repeatable)")
    p.add_argument("--parallel", type=int, default=1,
                   help="max concurrent requests per connection")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server certificate")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="overall deadline in seconds")
    p.add_argument("--reset-after", type=int, default=None,
                   help="reset the request stream after sending BYTES of body")
    p.add_argument("--retire-cid-twice", action="store_true",
                   help="after the handshake, switch to the server's next "
                        "connection ID and send RETIRE_CONNECTION_ID for the "
                        "old one twice in one packet (summary: retiredTwice)")
    p.add_argument("--reset-mode", choices=["both", "send"], default="both",
                   help="both: RESET_STREAM+STOP_SENDING and do not wait for a "
                        "response; send: RESET_STREAM only, then wait for the "
                        "response")
    opts = p.parse_args(argv)
    opts.method = opts.method.upper()
    headers = []
    for h in opts.header:
        name, sep, value = h.partition(":")
        if not sep or not name:
            p.error(f"bad --header {h!r}, expected name:value")
        headers.append((name.strip(), value.strip()))
    opts.header = headers
    if opts.count is None:
        opts.count = max(1, opts.parallel)
    if opts.parallel < 1 or opts.connections < 1 or opts.count < 0:
        p.error("--parallel/--connections must be >= 1, --count >= 0")
    return opts


async def main_async(opts):
    targets = set()
    for url in opts.url:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise SystemExit(f"unsupported url {url!r}")
        targets.add((parts.hostname, parts.port or 443))
    if len(targets) != 1:
        raise SystemExit("all --url values must share host and port")
    host, port = targets.pop()

    def config_factory():
        return quic_configuration(H3_ALPN, opts.timeout, host, opts.insecure,
                                  **BULK_FLOW_CONTROL)

    jobs = [u for _ in range(opts.count) for u in opts.url]
    results = []
    started = time.monotonic()
    conn_tasks = [
        asyncio.ensure_future(
            run_connection(i, host, port, jobs, opts, config_factory, results))
        for i in range(opts.connections)
    ]
    _, pending = await asyncio.wait(conn_tasks, timeout=opts.timeout)
    for t in pending:
        t.cancel()
    await asyncio.gather(*conn_tasks, return_exceptions=True)
    return results, time.monotonic() - started


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    results, elapsed = asyncio.run(main_async(opts))
    ok = sum(1 for r in results if not r.get("error"))
    reset = sum(1 for r in results if r.get("reset") and r.get("error"))
    failed = sum(1 for r in results if r.get("error") and not r.get("reset"))
    expected = len(opts.url) * opts.count * opts.connections
    if len(results) < expected:  # should not happen; never report success
        failed += expected - len(results)
    emit({
        "summary": True,
        "ok": ok,
        "failed": failed,
        "reset": reset,
        "sent_sha256": body_sha256(opts.body_size),
        "elapsed_ms": round(elapsed * 1000, 1),
        **FACTS,
    })
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
