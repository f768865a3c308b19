/**
 * Options, their defaults and units, and their validation. Defaults are
 * applied here and nowhere else.
 *
 * @module
 */
import { H3Error } from './errors'

/**
 * QUIC transport and HTTP/3 limits shared by servers and clients. Every
 * field is optional; the default is given with its unit.
 */
export interface TransportOptions {
  /**
   * Close a connection after this long with no packets, in milliseconds.
   * The peer is reaped by QUIC's idle timer (no CONNECTION_CLOSE is sent).
   * 0 disables it. Default `30000`.
   */
  idleTimeoutMs?: number
  /** Abandon a handshake that takes longer, in milliseconds; 0 disables. Default `10000`. */
  handshakeTimeoutMs?: number
  /** Concurrent bidirectional (request) streams the peer may open. Default `256`. */
  maxConcurrentBidiStreams?: number
  /** Concurrent unidirectional streams the peer may open. Default `16`. */
  maxConcurrentUniStreams?: number
  /** Initial connection-level flow-control window, in bytes. Default `4 MiB`. */
  connectionWindow?: number
  /** Initial per-stream flow-control window, in bytes. Default `1 MiB`. */
  streamWindow?: number
  /** Largest connection window auto-tuning may grow to, in bytes. Default `24 MiB`. */
  maxConnectionWindow?: number
  /** Largest stream window auto-tuning may grow to, in bytes. Default `16 MiB`. */
  maxStreamWindow?: number
  /**
   * Largest header section accepted, in bytes, counted as in RFC 9114 §4.2.2
   * (name + value + 32 per field). Larger requests get 431. Default `16384`.
   */
  maxHeaderSize?: number
  /** Most fields in one header section; more gets 431. Default `128`. */
  maxHeaderCount?: number
  /**
   * Bytes of one body held for JavaScript and not yet read, per stream.
   * Past this QUIC flow control stops the peer. Default `256 KiB`.
   */
  streamReadWindow?: number
  /**
   * Bytes of one outgoing body handed to the native side and not yet
   * accepted by QUIC, per stream. Past this, reading the body source pauses.
   * It is the window every body starts with and the least it shrinks to
   * (see `maxStreamWriteWindow`). Default `256 KiB`.
   */
  streamWriteWindow?: number
  /**
   * Largest write window a fast body grows to, in bytes. A stream whose
   * window QUIC took within 2 ms (more than about 100 MB/s) has its window
   * doubled, up to this; one that took over 8 ms has it halved, down to
   * `streamWriteWindow`. A bulk download then wakes the JS thread less
   * often per GiB, while a stream that drains slowly never holds more than
   * `streamWriteWindow` waiting; one that was fast and then stalls holds
   * up to this until it drains. Set it to `streamWriteWindow` for a fixed
   * window. HTTP bodies (responses, client uploads) only: WebTransport and
   * raw QUIC streams keep `streamWriteWindow`. Default `1 MiB`, or
   * `streamWriteWindow` if that is larger.
   */
  maxStreamWriteWindow?: number
  /** Congestion control: `'cubic'`, `'reno'` or `'bbr2'`. Default `'cubic'`. */
  congestionControl?: 'cubic' | 'reno' | 'bbr2'
  /** Accept 0-RTT early data from resuming clients. Default `false`. */
  earlyData?: boolean
  /** Write one qlog file per connection into this directory. Default: none. */
  qlogDir?: string
  /**
   * QUIC DATAGRAM frames (RFC 9221) and HTTP/3 datagrams (RFC 9297):
   * advertised to the peer and accepted. Default `true`.
   */
  datagrams?: boolean
  /**
   * Datagrams held per connection in each direction (native send and
   * receive queues) and per flow for the reader; when a queue is full the
   * oldest datagram is dropped and counted. Default `1024`.
   */
  datagramQueueLength?: number
  /** WebTransport sessions open at once on one connection; more get 429. Default `16`. */
  maxWebTransportSessions?: number
  /**
   * WebTransport streams held unread per connection while the session they
   * name is not yet accepted (they may arrive before its CONNECT). More are
   * reset with WT_BUFFERED_STREAM_REJECTED. Default `16`.
   */
  maxBufferedStreams?: number
  /**
   * Server: a request's whole header section must arrive within this many
   * milliseconds of its stream opening; otherwise the stream is reset with
   * H3_REQUEST_REJECTED and the application never sees it (the client may
   * retry). `0` turns it off. Default `30000` ms.
   */
  headersTimeoutMs?: number
  /**
   * Server: while the application is reading a request body (it has read
   * credit left), some of the body must arrive at least every this many
   * milliseconds. Otherwise, before a response started: a `408` response is
   * sent and the client asked to stop (STOP_SENDING, H3_NO_ERROR); after:
   * the stream is reset with H3_REQUEST_CANCELLED. Either way `req.signal`
   * aborts and the body stream errors with `ERR_H3_BODY_TIMEOUT`. A body the
   * application is slow to read never times out, nor does a CONNECT tunnel
   * (its data may rightly pause). `0` turns it off. Default `30000` ms.
   */
  bodyTimeoutMs?: number
  /**
   * Server: while a response has bytes waiting for the client (it does not
   * read, so flow control stays shut), QUIC must take some of them at least
   * every this many milliseconds; otherwise the stream is reset with
   * H3_REQUEST_CANCELLED and `req.signal` aborts with
   * `ERR_H3_SEND_TIMEOUT`. `0` turns it off. Default `30000` ms.
   */
  sendTimeoutMs?: number
  /**
   * Server: once a response is complete, a request body still arriving
   * that the handler took a reader for must go on being read. If the reader
   * takes no bytes through a whole period of this many milliseconds and
   * bytes are waiting for it at the period's end (checked once a period, so
   * it acts after one to two periods), the client is asked to stop sending
   * (STOP_SENDING, H3_NO_ERROR), the stream is let go, and the reader's
   * reads reject with `ERR_H3_BODY_ABANDONED`. Without it, a handler that
   * answered and dropped a half-read body would hold the stream, one of
   * `maxConcurrentBidiStreams`, until the connection closes: flow control
   * keeps the client from ever finishing. A reader that waits
   * for bytes still to come is never cut off here (that is
   * `bodyTimeoutMs`), and a body no reader was taken for is stopped as soon
   * as the response is complete. `0` turns it off. Default `30000` ms.
   */
  unreadBodyTimeoutMs?: number
  /**
   * Server: request streams one connection's client may cancel
   * (RESET_STREAM) within `streamResetWindowMs`; one more closes the
   * connection with H3_EXCESSIVE_LOAD (protection against "rapid reset"
   * floods). `0` means no limit. Default `500`.
   */
  maxStreamResets?: number
  /** The window `maxStreamResets` is counted over, in milliseconds. Default `10000` ms. */
  streamResetWindowMs?: number
  /**
   * Native I/O threads, shared by every server and client in the process;
   * the first one created decides, and a later one that asks for another
   * number gets a warning (`H3_RUNTIME_SETTINGS_IGNORED`). Default: half
   * the cores the process may use, 1 to 4.
   */
  threads?: number
  /**
   * How long a native I/O thread that stays busy may hold events back
   * before it wakes the JS thread to take them, in microseconds. A thread
   * that runs out of work wakes JS at once, with everything it holds; this
   * bounds the wait while it does not. Longer waits mean fewer wake-ups
   * and thread switches, and larger batches; shorter ones let JS start
   * sooner. `0` wakes JS at the first event of each batch.
   *
   * Process-wide, like `threads`: the first server or client created
   * decides, and a later one that asks for something else gets a warning
   * (`H3_RUNTIME_SETTINGS_IGNORED`).
   *
   * Default: `200` µs when the process may use two or more cores, where JS
   * runs alongside the I/O thread; `2000` µs when it may use one (CPU
   * affinity or a cgroup quota), where every wake-up takes the core from
   * the I/O thread.
   */
  eventBatchDelayUs?: number
  /**
   * How many events a busy native I/O thread may hold back before it
   * wakes the JS thread (an event is a request head, a piece of body, a
   * stream's end, a datagram...). `0` means no count limit, only
   * `eventBatchDelayUs`. Process-wide, like `threads`.
   *
   * Default: no limit when the process may use two or more cores; `64`
   * when it may use one.
   */
  eventBatchSize?: number
}

/** Resolved transport options, as the native side takes them. */
export interface ResolvedTransport {
  idleTimeoutMs: number
  handshakeTimeoutMs: number
  maxStreamsBidi: number
  maxStreamsUni: number
  connectionWindow: number
  streamWindow: number
  maxConnectionWindow: number
  maxStreamWindow: number
  congestionControl: string
  earlyData: boolean
  qlogDir?: string
  maxHeaderSize: number
  maxHeaderCount: number
  streamReadWindow: number
  threads: number
  /** `undefined`: the default for the cores. */
  eventBatchDelayUs: number | undefined
  /** `undefined`: the default for the cores; `0`: no count limit. */
  eventBatchSize: number | undefined
  datagrams: boolean
  datagramQueueLength: number
  webtransport: boolean
  maxWebTransportSessions: number
  maxBufferedStreams: number
  alpn: string[]
  raw: boolean
  headersTimeoutMs: number
  bodyTimeoutMs: number
  sendTimeoutMs: number
  maxStreamResets: number
  streamResetWindowMs: number
}

const MiB = 1024 * 1024

function integer(opts: Record<string, unknown>, name: string, def: number, min: number, max: number): number {
  const v = opts[name]
  if (v === undefined) return def
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option ${name} must be an integer from ${min} to ${max}, got ${String(v)}`)
  }
  return v
}

function bool(opts: Record<string, unknown>, name: string, def: boolean): boolean {
  const v = opts[name]
  if (v === undefined) return def
  if (typeof v !== 'boolean') throw new H3Error('ERR_H3_INVALID_OPTION', `option ${name} must be a boolean, got ${String(v)}`)
  return v
}

/** Validates `opts` and applies defaults; throws ERR_H3_INVALID_OPTION naming the option. */
export function resolveTransport(
  opts: TransportOptions,
  extra: { webtransport?: boolean; alpn?: string[]; raw?: boolean } = {},
): ResolvedTransport & { streamWriteWindow: number; maxStreamWriteWindow: number; unreadBodyTimeoutMs: number } {
  const o = opts as Record<string, unknown>
  const cc = o.congestionControl ?? 'cubic'
  if (cc !== 'cubic' && cc !== 'reno' && cc !== 'bbr2') {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option congestionControl must be 'cubic', 'reno' or 'bbr2', got ${String(cc)}`)
  }
  if (o.qlogDir !== undefined && typeof o.qlogDir !== 'string') {
    throw new H3Error('ERR_H3_INVALID_OPTION', 'option qlogDir must be a string')
  }
  const big = 2 ** 40
  const streamWriteWindow = integer(o, 'streamWriteWindow', 256 * 1024, 1024, big)
  return {
    idleTimeoutMs: integer(o, 'idleTimeoutMs', 30_000, 0, 2 ** 31),
    handshakeTimeoutMs: integer(o, 'handshakeTimeoutMs', 10_000, 0, 2 ** 31),
    maxStreamsBidi: integer(o, 'maxConcurrentBidiStreams', 256, 0, 2 ** 31),
    maxStreamsUni: integer(o, 'maxConcurrentUniStreams', 16, 3, 2 ** 31),
    connectionWindow: integer(o, 'connectionWindow', 4 * MiB, 1024, big),
    streamWindow: integer(o, 'streamWindow', 1 * MiB, 1024, big),
    maxConnectionWindow: integer(o, 'maxConnectionWindow', 24 * MiB, 1024, big),
    maxStreamWindow: integer(o, 'maxStreamWindow', 16 * MiB, 1024, big),
    congestionControl: cc,
    earlyData: bool(o, 'earlyData', false),
    qlogDir: o.qlogDir as string | undefined,
    maxHeaderSize: integer(o, 'maxHeaderSize', 16 * 1024, 1024, 2 ** 24),
    maxHeaderCount: integer(o, 'maxHeaderCount', 128, 8, 2 ** 16),
    streamReadWindow: integer(o, 'streamReadWindow', 256 * 1024, 1024, big),
    streamWriteWindow,
    maxStreamWriteWindow: integer(o, 'maxStreamWriteWindow', Math.max(MiB, streamWriteWindow), streamWriteWindow, big),
    threads: integer(o, 'threads', 0, 0, 64),
    eventBatchDelayUs: o.eventBatchDelayUs === undefined ? undefined : integer(o, 'eventBatchDelayUs', 0, 0, 1_000_000),
    eventBatchSize: o.eventBatchSize === undefined ? undefined : integer(o, 'eventBatchSize', 0, 0, 2 ** 20),
    datagrams: bool(o, 'datagrams', true),
    datagramQueueLength: integer(o, 'datagramQueueLength', 1024, 1, 2 ** 20),
    webtransport: extra.webtransport ?? false,
    maxWebTransportSessions: integer(o, 'maxWebTransportSessions', 16, 1, 2 ** 16),
    maxBufferedStreams: integer(o, 'maxBufferedStreams', 16, 0, 2 ** 16),
    alpn: extra.alpn ?? [],
    raw: extra.raw ?? false,
    headersTimeoutMs: integer(o, 'headersTimeoutMs', 30_000, 0, 2 ** 31),
    bodyTimeoutMs: integer(o, 'bodyTimeoutMs', 30_000, 0, 2 ** 31),
    sendTimeoutMs: integer(o, 'sendTimeoutMs', 30_000, 0, 2 ** 31),
    unreadBodyTimeoutMs: integer(o, 'unreadBodyTimeoutMs', 30_000, 0, 2 ** 31),
    maxStreamResets: integer(o, 'maxStreamResets', 500, 0, 2 ** 31),
    streamResetWindowMs: integer(o, 'streamResetWindowMs', 10_000, 1, 2 ** 31),
  }
}

export { integer as checkInteger, bool as checkBoolean }
