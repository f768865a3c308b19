"""Code shared by the aioquic test clients in this directory.

The clients are run as scripts (`python __test__/clients/<script>.py`), so
this module is imported as a sibling: Python puts the script's directory first
on sys.path whatever the working directory is.

What lives here: the JSON output line, the deterministic body pattern, QUIC
configuration (ALPN, TLS trust, flow control), the connect + bounded
handshake sequence, a protocol base class with bounded waits and error
collection, the final report (errors, elapsedMs, ok) and exit status, and the
command-line flags and URL handling the one-session clients have in common.
Scenario logic stays in the scripts.
"""

import asyncio
import json
import socket
import ssl
import sys
import time
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated

H3_NO_ERROR = 0x100
SETTING_H3_DATAGRAM = 0x33
RECEIVE_BUFFER = 4 * 1024 * 1024
# flow-control windows for the clients that move bulk data
BULK_FLOW_CONTROL = {"max_data": 64 * 1024 * 1024,
                     "max_stream_data": 16 * 1024 * 1024}
MAX_DATAGRAM_FRAME_SIZE = 65536


# -- output -------------------------------------------------------------------

def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_main(parse_args, run, argv=None):
    """main() of a one-report client: parse the flags (exit 2 when bad), run,
    print the report; exit status 0 when it is ok, 1 otherwise."""
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    report = asyncio.run(run(opts))
    emit(report)
    return 0 if report["ok"] else 1


def finish_report(report, client, errors, ok, started, peer_close_is_error=True):
    """Complete a one-session report with errors, elapsedMs and ok.

    `errors` are the run's own errors; the client's (when a connection was
    created) come first, and a close by the server that no error mentions yet
    is added unless `peer_close_is_error` is false. A scenario that measured
    its own elapsedMs keeps it."""
    if client is not None:
        client.add_to_report(report)
        errors = client.errors + errors
        if peer_close_is_error and client.terminated and \
                not client.closed_by_us and not any(
                    client.terminated in e for e in errors):
            errors.append(client.terminated)  # the server closed on us
    report["errors"] = errors
    if "elapsedMs" not in report:
        report["elapsedMs"] = round((time.monotonic() - started) * 1000, 1)
    report["ok"] = bool(ok) and not errors
    return report


# -- data ---------------------------------------------------------------------

def pattern_bytes(size, offset=0):
    """Bytes [offset, offset+size) of the deterministic body: byte i = i % 251."""
    start = offset % 251
    reps = (start + size) // 251 + 1
    return (bytes(range(251)) * reps)[start:start + size]


def describe_termination(event):
    """Text for a ConnectionTerminated event."""
    return (f"connection terminated: code=0x{event.error_code:x} "
            f"reason={event.reason_phrase!r}")


def split_response_headers(headers, bad_status=None):
    """(status, fields) of an HTTP/3 header block: :status as an int (None
    when absent), other pseudo-headers dropped, a repeated field's values
    joined with ", ". A :status that is not a number raises ValueError, or
    is passed to bad_status(value) when that is given."""
    status = None
    fields = {}
    for name, value in headers:
        k = name.decode("latin-1").lower()
        v = value.decode("utf-8", "replace")
        if k == ":status":
            if bad_status is None:
                status = int(v)
            else:
                try:
                    status = int(v)
                except ValueError:
                    bad_status(v)
        elif not k.startswith(":"):
            fields[k] = v if k not in fields else fields[k] + ", " + v
    return status, fields


# -- connection ---------------------------------------------------------------

def quic_configuration(alpn_protocols, timeout, server_name, insecure,
                       ca=None, **params):
    """Client QuicConfiguration; `params` are further QuicConfiguration
    fields (flow control, max_datagram_frame_size)."""
    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=alpn_protocols,
        idle_timeout=max(5.0, timeout),
        **params,
    )
    cfg.server_name = server_name
    if insecure:
        cfg.verify_mode = ssl.CERT_NONE
    elif ca:
        cfg.load_verify_locations(cafile=ca)
    return cfg


def protocol_factory(protocol_class, created):
    """create_protocol for connect() that also appends each protocol to
    `created`, so the caller has it even when connect() raised."""
    def create_protocol(*args, **kwargs):
        proto = protocol_class(*args, **kwargs)
        created.append(proto)
        return proto
    return create_protocol


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


@asynccontextmanager
async def connected_client(opts, cfg, protocol_class, created):
    """Connect to opts.host:opts.port and complete the QUIC handshake within
    opts.timeout (HandshakeTimeout / HandshakeFailed otherwise); yields the
    protocol, which `created` holds too. The connection is closed on exit."""
    async with connect(opts.host, opts.port, configuration=cfg,
                       create_protocol=protocol_factory(protocol_class,
                                                        created),
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
        yield client


async def run_session(opts, cfg, protocol_class, report, started, scenario):
    """One HTTP/3 connection: handshake, `await scenario(client)` (its result
    is ok), close with H3_NO_ERROR; returns the finished report."""
    created = []
    ok = False
    errors = []
    try:
        async with connected_client(opts, cfg, protocol_class,
                                    created) as client:
            try:
                ok = await scenario(client)
            finally:
                client.close_unless_terminated(H3_NO_ERROR)
    except (HandshakeTimeout, HandshakeFailed) as exc:
        errors.append(f"connection failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - report everything
        errors.append(f"{type(exc).__name__}: {exc}")
    return finish_report(report, created[0] if created else None, errors, ok,
                         started)


class RecvStream:
    """Receive side of one stream (raw QUIC or WebTransport)."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.data = bytearray()
        self.ended = False
        self.reset_code = None  # error code of a RESET_STREAM
        self.stop_sending_code = None

    @property
    def done(self):
        return self.ended or self.reset_code is not None


class ScenarioClient(QuicConnectionProtocol):
    """Protocol base: records the connection's end, collects errors and wakes
    wait_until() on every event. Subclasses handle the other QUIC events in
    _quic_event()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.terminated = None  # text, once the connection is gone
        self.terminated_code = None
        self.errors = []
        self.closed_by_us = False
        self._changed = self._loop.create_future()

    # -- plumbing ------------------------------------------------------------
    def _wake(self):
        fut, self._changed = self._changed, self._loop.create_future()
        fut.set_result(None)

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

    async def wait_or_fail(self, cond, timeout, what):
        """wait_until(), recording a failure as an error: the connection's
        end, else `what` (a string, or a callable giving it at that moment)."""
        if await self.wait_until(cond, timeout):
            return True
        self.error(self.terminated or (what() if callable(what) else what))
        return False

    def error(self, msg):
        if msg not in self.errors:
            self.errors.append(msg)

    def add_to_report(self, report):
        """Add protocol-specific fields to the final report (none here)."""

    # -- events --------------------------------------------------------------
    def quic_event_received(self, event):
        try:
            if isinstance(event, ConnectionTerminated):
                self.terminated_code = event.error_code
                self.terminated = describe_termination(event)
            else:
                self._quic_event(event)
        finally:
            self._wake()

    def _quic_event(self, event):
        raise NotImplementedError

    # -- actions -------------------------------------------------------------
    def write(self, stream_id, data, fin=False):
        self._quic.send_stream_data(stream_id, data, end_stream=fin)
        self.transmit()

    async def write_in_chunks(self, stream_id, body, chunk=64 * 1024):
        """Write body and FIN in chunks, letting the event loop run between
        them (only a FIN for an empty body)."""
        for off in range(0, len(body), chunk):
            end = min(off + chunk, len(body))
            self.write(stream_id, body[off:end], fin=end == len(body))
            await asyncio.sleep(0)
        if not body:
            self.write(stream_id, b"", fin=True)

    def close_unless_terminated(self, error_code):
        if not self.terminated:
            self.closed_by_us = True
            self.close(error_code=error_code)


# -- command line -------------------------------------------------------------

def add_tls_args(p):
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server certificate")
    p.add_argument("--ca", default=None,
                   help="PEM file with the CA / self-signed certificate to trust")
    p.add_argument("--server-name", default=None,
                   help="TLS server name (SNI + verification), default: URL host")


def add_wait_args(p):
    p.add_argument("--timeout", type=float, default=10.0,
                   help="limit in seconds for each individual wait")
    p.add_argument("--collect", type=float, default=2.0,
                   help="seconds to keep collecting datagram echoes after the "
                        "last datagram was sent")


def parse_url(p, opts, default_path=None, bad_port_is_usage_error=True):
    """Set opts.host and opts.port from opts.url (https only, port 443 by
    default) and, given a default_path, opts.authority and opts.path (the
    URL's path and query, default_path when the path is empty or /)."""
    parts = urlsplit(opts.url)
    if parts.scheme != "https" or not parts.hostname:
        p.error(f"unsupported url {opts.url!r}")
    opts.host = parts.hostname
    try:
        opts.port = parts.port or 443
    except ValueError:
        if not bad_port_is_usage_error:
            raise
        p.error(f"bad port in {opts.url!r}")
    if default_path is None:
        return
    opts.authority = parts.netloc
    path = parts.path if parts.path not in ("", "/") else default_path
    if parts.query:
        path += "?" + parts.query
    opts.path = path
