/**
 * WebTransport sessions and raw QUIC connections, shaped like the browser's
 * `WebTransport`: `ready`, `closed`, `draining`, `close()`, `datagrams`,
 * `incomingBidirectionalStreams`, `incomingUnidirectionalStreams`,
 * `createBidirectionalStream()`, `createUnidirectionalStream()`,
 * `getStats()`.
 *
 * On the wire (draft-ietf-webtrans-http3):
 * - `close({ closeCode, reason })` sends CLOSE_WEBTRANSPORT_SESSION on the
 *   CONNECT stream and ends it with FIN; every stream of the session is
 *   reset with WT_SESSION_GONE.
 * - `writable.abort(e)` sends RESET_STREAM and `readable.cancel(e)` sends
 *   STOP_SENDING, each with `e.streamErrorCode` (default 0) mapped into the
 *   HTTP/3 error space; the peer sees the same application code.
 * - Datagrams carry the session's quarter stream id (RFC 9297).
 *
 * @module
 */
import { IncomingBody, toBytes } from './body'
import { H3Error } from './errors'
import { Ev, type NativeEvent, type StreamPort } from './native'

/** The native operations a session needs on its connection. @internal */
export interface SessionPort {
  /** Opens a stream; its id, or -1 if the connection is gone. */
  openStream(bidi: boolean): number
  /** Sends one datagram on the session's flow. */
  sendDatagram(data: Uint8Array): boolean
  /** Closes the session (WebTransport) or the connection (raw QUIC). */
  close(code: number, reason: string): void
  /** Binds stream commands to one stream. */
  stream(id: number): StreamPort
  /** Transport statistics of the connection. */
  stats(): Promise<Record<string, number> | null>
}

/** How a session ended: what the browser's `WebTransport.closed` resolves to. */
export interface WebTransportCloseInfo {
  /** Application close code (0 when none was given). */
  closeCode: number
  /** Close reason (at most 1024 bytes of UTF-8). */
  reason: string
}

/** Options of {@link WebTransportSession.close}. */
export interface WebTransportCloseOptions {
  /** Application close code, 0 to 2^32 - 1. Default `0`. */
  closeCode?: number
  /** Reason, cut to 1024 bytes of UTF-8. Default `''`. */
  reason?: string
}

/** A bidirectional stream: what `createBidirectionalStream()` resolves to. */
export interface WebTransportBidirectionalStream {
  /** Bytes from the peer. `cancel(e)` sends STOP_SENDING with `e.streamErrorCode`. */
  readonly readable: ReadableStream<Uint8Array>
  /** Bytes to the peer. `close()` sends FIN; `abort(e)` sends RESET_STREAM with `e.streamErrorCode`. */
  readonly writable: WritableStream<Uint8Array>
}

/** Limits of one session's queues. @internal */
export interface SessionLimits {
  /** Bytes of one stream held for JS and not yet read. */
  readWindow: number
  /** Bytes of one stream written and not yet accepted by QUIC. */
  writeWindow: number
  /** Datagrams held in the incoming queue before the oldest is dropped. */
  datagramQueue: number
  /** Largest datagram payload the peer accepts, bytes (0: none). */
  maxDatagramSize: number
}

/** Counters of a session's datagrams. */
export interface DatagramStats {
  /** Datagrams received and queued for the reader. */
  received: number
  /** Datagrams sent. */
  sent: number
  /** Incoming datagrams dropped because the reader fell `incomingHighWaterMark` behind (oldest first). */
  droppedIncoming: number
  /** Outgoing datagrams dropped because they exceed `maxDatagramSize`. */
  droppedTooLarge: number
}

/**
 * The datagram half of a session, as in the browser: a `readable` of
 * incoming datagrams and a `writable` for outgoing ones. Datagrams are
 * unreliable: when the reader falls `incomingHighWaterMark` datagrams
 * behind, the oldest are dropped and counted.
 */
export class DatagramDuplexStream {
  /** Incoming datagrams. */
  readonly readable: ReadableStream<Uint8Array>
  /** Outgoing datagrams (the same stream `createWritable()` returns). */
  readonly writable: WritableStream<Uint8Array>
  #maxDatagramSize: number
  /** Incoming datagrams held for the reader before the oldest is dropped. */
  incomingHighWaterMark: number
  #queue: Uint8Array[] = []
  #wake: (() => void) | null = null
  #closed = false
  #error: unknown = undefined
  #send: (d: Uint8Array) => boolean
  #ready: Promise<void> | null
  /** Counters. */
  readonly stats: DatagramStats = { received: 0, sent: 0, droppedIncoming: 0, droppedTooLarge: 0 }

  /** @internal */
  constructor(send: (d: Uint8Array) => boolean, maxDatagramSize: number, queue: number, ready: Promise<void> | null = null) {
    this.#send = send
    this.#ready = ready
    this.#maxDatagramSize = maxDatagramSize
    this.incomingHighWaterMark = queue
    this.readable = new ReadableStream<Uint8Array>(
      {
        pull: async (c) => {
          while (this.#queue.length === 0) {
            if (this.#error !== undefined) return c.error(this.#error)
            if (this.#closed) return c.close()
            await new Promise<void>((r) => {
              this.#wake = r
            })
          }
          c.enqueue(this.#queue.shift()!)
        },
        cancel: () => {
          this.#closed = true
          this.#queue = []
        },
      },
      { highWaterMark: 0 },
    )
    this.writable = this.createWritable()
  }

  /** Largest payload that can be sent, bytes (0: the peer does not accept datagrams). */
  get maxDatagramSize(): number {
    return this.#maxDatagramSize
  }

  /** @internal known once the connection is up. */
  setMaxDatagramSize(n: number): void {
    this.#maxDatagramSize = n
  }

  /**
   * A writable for outgoing datagrams. Writes wait for the session to be
   * ready. A datagram larger than
   * `maxDatagramSize` is dropped and counted (as browsers do); writing when
   * the peer does not accept datagrams fails with `ERR_H3_DATAGRAMS_DISABLED`.
   */
  createWritable(): WritableStream<Uint8Array> {
    return new WritableStream<Uint8Array>({
      write: async (chunk) => {
        if (this.#ready) await this.#ready
        if (this.#error !== undefined) throw this.#error
        const bytes = toBytes(chunk)
        if (this.maxDatagramSize === 0) {
          throw new H3Error('ERR_H3_DATAGRAMS_DISABLED', 'the peer does not accept datagrams')
        }
        if (bytes.byteLength > this.maxDatagramSize) {
          this.stats.droppedTooLarge++
          return
        }
        if (this.#send(bytes)) this.stats.sent++
      },
    })
  }

  /** @internal */
  push(d: Uint8Array): void {
    if (this.#closed || this.#error !== undefined) return
    this.stats.received++
    this.#queue.push(d)
    while (this.#queue.length > Math.max(1, this.incomingHighWaterMark)) {
      this.#queue.shift()
      this.stats.droppedIncoming++
    }
    this.#wakeReader()
  }

  /** @internal */
  end(err?: unknown): void {
    if (err !== undefined && this.#error === undefined && !this.#closed) this.#error = err
    this.#closed = true
    this.#wakeReader()
  }

  #wakeReader(): void {
    const w = this.#wake
    this.#wake = null
    w?.()
  }
}

/** A stream of the session, with its two halves. */
type Sub = {
  id: number
  recv: IncomingBody | null
  send: SendSide | null
}

/**
 * The sending half of a stream: a WritableStream with a byte window.
 *
 * Writes reach the native side once per event-loop turn, and a `close()` in
 * the same turn rides on the last chunk. quiche 0.30 can drop a FIN sent on
 * its own after data that is acknowledged before the FIN leaves (the stream
 * counts as complete and is collected); a FIN carried with data is safe.
 * Raw streams have no empty frame to carry it (HTTP/3 bodies use one), so
 * the common write-then-close sequence is made to carry it instead.
 */
class SendSide {
  readonly writable: WritableStream<Uint8Array>
  #outstanding = 0
  #wake: (() => void) | null = null
  #failed: unknown = undefined
  #done = false
  #port: StreamPort
  #window: number
  #onDone: () => void
  #pending: Uint8Array[] = []
  #fin = false
  #scheduled = false

  constructor(port: StreamPort, window: number, onDone: () => void) {
    this.#port = port
    this.#window = window
    this.#onDone = onDone
    this.writable = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        while (this.#outstanding >= this.#window && this.#failed === undefined) {
          await new Promise<void>((r) => {
            this.#wake = r
          })
        }
        if (this.#failed !== undefined) throw this.#failed
        const bytes = toBytes(chunk)
        if (bytes.byteLength === 0) return
        this.#outstanding += bytes.byteLength
        this.#pending.push(bytes)
        this.#schedule()
      },
      close: () => {
        if (this.#failed !== undefined) throw this.#failed
        this.#fin = true
        this.#schedule()
        this.#finish()
      },
      abort: (reason) => {
        this.#pending = []
        if (this.#failed === undefined) this.#port.reset(streamErrorCode(reason))
        this.#failed ??= reason
        this.#finish()
      },
    })
  }

  #schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => this.#flush())
  }

  #flush(): void {
    this.#scheduled = false
    const chunks = this.#pending
    this.#pending = []
    if (this.#failed !== undefined) return
    const last = chunks.length - 1
    for (let i = 0; i <= last; i++) this.#port.write(chunks[i], this.#fin && i === last)
    if (this.#fin && last < 0) this.#port.write(new Uint8Array(0), true)
  }

  get done(): boolean {
    return this.#done
  }

  sent(n: number): void {
    this.#outstanding -= n
    if (this.#outstanding < this.#window) this.#wakeWriter()
  }

  /** The peer stopped reading, or the session/connection ended. */
  fail(err: unknown): void {
    if (this.#failed !== undefined) return
    this.#failed = err
    this.#wakeWriter()
    this.#finish()
  }

  #finish(): void {
    if (this.#done) return
    this.#done = true
    this.#onDone()
  }

  #wakeWriter(): void {
    const w = this.#wake
    this.#wake = null
    w?.()
  }
}

/** `streamErrorCode` of an abort reason (0 when it has none). */
function streamErrorCode(reason: unknown): number {
  const c = (reason as { streamErrorCode?: unknown } | null | undefined)?.streamErrorCode
  return typeof c === 'number' && Number.isInteger(c) && c >= 0 && c <= 0xffffffff ? c : 0
}

/** A queue-backed ReadableStream fed by {@link SessionBase} (incoming streams). */
class Incoming<T> {
  readonly stream: ReadableStream<T>
  #c!: ReadableStreamDefaultController<T>
  #done = false

  constructor() {
    this.stream = new ReadableStream<T>({
      start: (c) => {
        this.#c = c
      },
      cancel: () => {
        this.#done = true
      },
    })
  }

  push(v: T): boolean {
    if (this.#done) return false
    this.#c.enqueue(v)
    return true
  }

  end(err?: unknown): void {
    if (this.#done) return
    this.#done = true
    if (err === undefined) this.#c.close()
    else this.#c.error(err)
  }
}

/**
 * What a WebTransport session and a raw QUIC connection share: streams
 * both ways, datagrams, and their end. @internal
 */
export class SessionBase {
  /** Datagrams. */
  readonly datagrams: DatagramDuplexStream
  /** Bidirectional streams the peer opens. */
  readonly incomingBidirectionalStreams: ReadableStream<WebTransportBidirectionalStream>
  /** Unidirectional streams the peer opens (each a readable of bytes). */
  readonly incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>
  /** @internal */
  protected port: SessionPort | null
  /** @internal */
  protected limits: SessionLimits
  /** @internal */
  protected ended: unknown = undefined
  #subs = new Map<number, Sub>()
  #bidi = new Incoming<WebTransportBidirectionalStream>()
  #uni = new Incoming<ReadableStream<Uint8Array>>()
  #isServer: boolean
  #ready: Promise<void> | null

  /** @internal */
  constructor(port: SessionPort | null, limits: SessionLimits, isServer: boolean, ready: Promise<void> | null = null) {
    this.port = port
    this.limits = limits
    this.#isServer = isServer
    this.#ready = ready
    this.datagrams = new DatagramDuplexStream(
      (d) => this.ended === undefined && (this.port?.sendDatagram(d) ?? false),
      limits.maxDatagramSize,
      limits.datagramQueue,
      ready,
    )
    this.incomingBidirectionalStreams = this.#bidi.stream
    this.incomingUnidirectionalStreams = this.#uni.stream
  }

  /** Streams of this session still open in at least one direction. */
  get openStreams(): number {
    return this.#subs.size
  }

  #sub(id: number, recv: boolean, send: boolean): Sub {
    const sp = this.port!.stream(id)
    const sub: Sub = { id, recv: null, send: null }
    const maybeForget = (): void => {
      if ((!sub.recv || sub.recv.done) && (!sub.send || sub.send.done)) this.#subs.delete(id)
    }
    // Cancelling the readable sends STOP_SENDING with the reason's code.
    if (recv) sub.recv = new IncomingBody(sp, this.limits.readWindow, maybeForget, streamErrorCode)
    if (send) sub.send = new SendSide(sp, this.limits.writeWindow, maybeForget)
    this.#subs.set(id, sub)
    return sub
  }

  async #check(): Promise<void> {
    if (this.#ready) await this.#ready
    if (this.ended !== undefined) throw this.ended
  }

  /** Opens a bidirectional stream (once the session is ready). */
  async createBidirectionalStream(): Promise<WebTransportBidirectionalStream> {
    await this.#check()
    const id = this.port!.openStream(true)
    if (id < 0) throw new H3Error('ERR_H3_CONNECTION_CLOSED', 'the connection is closed')
    const sub = this.#sub(id, true, true)
    return { readable: sub.recv!.stream, writable: sub.send!.writable }
  }

  /** Opens a unidirectional (send-only) stream (once the session is ready). */
  async createUnidirectionalStream(): Promise<WritableStream<Uint8Array>> {
    await this.#check()
    const id = this.port!.openStream(false)
    if (id < 0) throw new H3Error('ERR_H3_CONNECTION_CLOSED', 'the connection is closed')
    return this.#sub(id, false, true).send!.writable
  }

  /** Transport statistics of the connection, with this session's datagram counters. */
  async getStats(): Promise<Record<string, unknown>> {
    const s = await this.port?.stats()
    return { ...(s ?? {}), datagrams: { ...this.datagrams.stats } }
  }

  // ---- events from the native side (internal) ------------------------------

  /** @internal the peer opened stream `id`. */
  onStreamOpen(id: number): void {
    if (this.ended !== undefined) return
    const peerBidi = (id & 2) === 0
    const sub = this.#sub(id, true, peerBidi)
    if (peerBidi) this.#bidi.push({ readable: sub.recv!.stream, writable: sub.send!.writable })
    else this.#uni.push(sub.recv!.stream)
  }

  /** @internal */
  onData(id: number, data: Uint8Array | null | undefined, fin: boolean): void {
    const r = this.#subs.get(id)?.recv
    if (!r) return
    if (data && data.byteLength > 0) r.push(data)
    if (fin) r.end()
  }

  /** @internal the peer reset stream `id` (`code`: its application code). */
  onReset(id: number, code: number): void {
    const s = this.#subs.get(id)
    if (!s) return
    // RESET_STREAM ends only the receiving half; the sending half goes on.
    const err = Object.assign(new H3Error('ERR_H3_STREAM_RESET', `peer reset the stream (code ${code})`, { wireCode: code }), { streamErrorCode: code })
    s.recv?.fail(err)
  }

  /** @internal the peer stopped reading stream `id`. */
  onStopSending(id: number, code: number): void {
    const err = Object.assign(new H3Error('ERR_H3_STOP_SENDING', `peer stopped reading the stream (code ${code})`, { wireCode: code }), { streamErrorCode: code })
    this.#subs.get(id)?.send?.fail(err)
  }

  /** @internal */
  onSent(id: number, n: number): void {
    this.#subs.get(id)?.send?.sent(n)
  }

  /** @internal routes a stream event (Data, Reset, StopSending, Sent) of one of this session's streams. */
  onStreamEvent(e: NativeEvent): void {
    switch (e.kind) {
      case Ev.Data:
        return this.onData(e.stream, e.data, e.fin)
      case Ev.Reset:
        return this.onReset(e.stream, e.code)
      case Ev.StopSending:
        return this.onStopSending(e.stream, e.code)
      case Ev.Sent:
        return this.onSent(e.stream, e.code)
    }
  }

  /** @internal */
  onDatagram(d: Uint8Array): void {
    this.datagrams.push(d)
  }

  /** @internal owns stream `id`? */
  owns(id: number): boolean {
    return this.#subs.has(id)
  }

  /** @internal everything ends with `err`. */
  protected teardown(err: unknown, clean: boolean): void {
    if (this.ended !== undefined) return
    this.ended = err
    for (const s of this.#subs.values()) {
      s.recv?.fail(err)
      s.send?.fail(err)
    }
    this.#subs.clear()
    this.#bidi.end(clean ? undefined : err)
    this.#uni.end(clean ? undefined : err)
    this.datagrams.end(clean ? undefined : err)
  }

  /** @internal is this side the server? */
  protected get isServer(): boolean {
    return this.#isServer
  }
}

/**
 * One WebTransport session: from {@link IncomingRequest.acceptWebTransport}
 * on a server, or {@link WebTransport} / `Client.webTransport()` on a
 * client. Shaped like the browser's `WebTransport`.
 */
export class WebTransportSession extends SessionBase {
  /** Resolves once the session is established (rejects if refused). */
  readonly ready: Promise<void>
  /** Resolves with the close code and reason when the session ends (rejects when it ends abruptly). */
  readonly closed: Promise<WebTransportCloseInfo>
  /** Resolves when the peer (or a server shutdown) asks the session to wind down. */
  readonly draining: Promise<void>
  #sessionId: number
  #resolveReady!: () => void
  #rejectReady!: (e: unknown) => void
  #resolveClosed!: (i: WebTransportCloseInfo) => void
  #rejectClosed!: (e: unknown) => void
  #resolveDraining!: () => void
  #onEnd: () => void

  /** @internal */
  setOnEnd(f: () => void): void {
    this.#onEnd = f
  }

  /** @internal */
  constructor(port: SessionPort | null, limits: SessionLimits, isServer: boolean, sessionId: number, onEnd: () => void) {
    let resolveReady!: () => void
    let rejectReady!: (e: unknown) => void
    const ready = new Promise<void>((res, rej) => {
      resolveReady = res
      rejectReady = rej
    })
    super(port, limits, isServer, port ? null : ready)
    this.ready = ready
    this.#resolveReady = resolveReady
    this.#rejectReady = rejectReady
    this.#sessionId = sessionId
    this.#onEnd = onEnd
    this.closed = new Promise((res, rej) => {
      this.#resolveClosed = res
      this.#rejectClosed = rej
    })
    this.draining = new Promise((res) => {
      this.#resolveDraining = res
    })
    // Nobody has to listen to these.
    this.ready.catch(() => {})
    this.closed.catch(() => {})
  }

  /**
   * Closes the session: CLOSE_WEBTRANSPORT_SESSION with `closeCode` and
   * `reason`, then FIN on the CONNECT stream; every stream of the session is
   * reset with WT_SESSION_GONE. A second call does nothing.
   */
  close(info: WebTransportCloseOptions = {}): void {
    if (this.ended !== undefined) return
    const code = info.closeCode ?? 0
    if (!Number.isInteger(code) || code < 0 || code > 0xffffffff) {
      throw new H3Error('ERR_H3_INVALID_ARGUMENT', `closeCode must be an integer from 0 to 2^32 - 1, got ${String(code)}`)
    }
    let reason = String(info.reason ?? '')
    const bytes = Buffer.from(reason)
    if (bytes.byteLength > 1024) reason = new TextDecoder().decode(bytes.subarray(0, 1024)).replace(/\uFFFD$/, '')
    this.port?.close(code, reason)
    this.#end({ closeCode: code, reason }, true)
  }

  /** The CONNECT stream id: the session id on the wire (-1 until the request is sent). */
  get sessionId(): number {
    return this.#sessionId
  }

  /** @internal client: the CONNECT went out on `sessionId`. */
  bind(port: SessionPort, sessionId: number): void {
    this.port = port
    this.#sessionId = sessionId
  }

  /** @internal the session was accepted; `maxDatagramSize` known now. */
  onReady(maxDatagramSize?: number): void {
    if (maxDatagramSize !== undefined) this.datagrams.setMaxDatagramSize(maxDatagramSize)
    this.#resolveReady()
  }

  /** @internal the peer closed it (clean) or it broke. */
  onClosed(clean: boolean, closeCode: number, reason: string): void {
    if (clean) this.#end({ closeCode, reason }, true)
    else this.#end(new H3Error('ERR_H3_SESSION_CLOSED', 'WebTransport session ended abruptly'), false)
  }

  /** @internal */
  onDrain(): void {
    this.#resolveDraining()
  }

  /** @internal refused, or the connection died. */
  onFailed(err: unknown): void {
    this.#end(err, false)
  }

  #end(result: WebTransportCloseInfo | unknown, clean: boolean): void {
    if (this.ended !== undefined) return
    const err = clean
      ? new H3Error('ERR_H3_SESSION_CLOSED', `WebTransport session closed (code ${(result as WebTransportCloseInfo).closeCode})`)
      : result
    this.teardown(err, clean)
    this.#rejectReady(err)
    this.#resolveDraining()
    if (clean) this.#resolveClosed(result as WebTransportCloseInfo)
    else this.#rejectClosed(err)
    this.#onEnd()
  }
}

/**
 * A raw QUIC connection from {@link listenQuic} or {@link connectQuic}:
 * streams both ways and datagrams, with the application protocol chosen by
 * ALPN. Shaped like a WebTransport session.
 */
export class QuicConnection extends SessionBase {
  /** Resolves when the connection has closed (with the peer's or our code). */
  readonly closed: Promise<WebTransportCloseInfo>
  /** The negotiated ALPN protocol. */
  readonly alpn: string
  /** Peer address. */
  readonly remoteAddress: string
  /** Peer UDP port. */
  readonly remotePort: number
  /** Connection id, unique within the endpoint. */
  readonly id: number
  #resolveClosed!: (i: WebTransportCloseInfo) => void

  /** @internal */
  constructor(port: SessionPort, limits: SessionLimits, isServer: boolean, info: { id: number; alpn: string; remoteAddress: string; remotePort: number }) {
    super(port, limits, isServer)
    this.id = info.id
    this.alpn = info.alpn
    this.remoteAddress = info.remoteAddress
    this.remotePort = info.remotePort
    this.closed = new Promise((res) => {
      this.#resolveClosed = res
    })
  }

  /** Closes the connection with CONNECTION_CLOSE carrying `closeCode` and `reason`. */
  close(info: WebTransportCloseOptions = {}): void {
    if (this.ended !== undefined) return
    const code = info.closeCode ?? 0
    if (!Number.isInteger(code) || code < 0 || code > Number.MAX_SAFE_INTEGER) {
      throw new H3Error('ERR_H3_INVALID_ARGUMENT', `closeCode must be a non-negative integer, got ${String(code)}`)
    }
    const reason = String(info.reason ?? '')
    this.port?.close(code, reason)
    this.onClosed(code, reason, true)
  }

  /** @internal */
  onClosed(closeCode: number, reason: string, clean: boolean): void {
    if (this.ended !== undefined) return
    this.teardown(new H3Error('ERR_H3_CONNECTION_CLOSED', `connection closed (code ${closeCode}${reason ? `: ${reason}` : ''})`, { wireCode: closeCode }), clean)
    this.#resolveClosed({ closeCode, reason })
  }
}
