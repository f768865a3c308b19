/**
 * An HTTP/3 client with a `fetch`-compatible subset: one pooled QUIC
 * connection per origin, streaming request and response bodies, and
 * `AbortSignal` cancellation (RESET_STREAM + STOP_SENDING with
 * H3_REQUEST_CANCELLED on the wire).
 *
 * @module
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

import { IncomingBody, OutgoingBody, flattenHeaders, toHeaders } from './body'
import { H3Codes, H3Error, fromNative } from './errors'
import { native, Ev, commandQueue, dispatchAll, sessionPort, splitSection, streamPort, takeEvents, warnIfRuntimeDiffers, type NativeEvent, type StreamPort } from './native'
import { resolveTransport, type TransportOptions } from './options'
import type { ConnectionStats } from './server'
import { WebTransportSession, type SessionLimits } from './webtransport'

/** Options of {@link Client}. */
export interface ClientOptions extends TransportOptions {
  /** Trusted CA certificates (PEM) instead of the system store. */
  ca?: string | Buffer
  /**
   * Accept servers whose leaf certificate has one of these SHA-256 hashes
   * (hex, colons allowed), whoever signed it: the way browsers pin
   * development certificates with `serverCertificateHashes`.
   */
  pinnedCertificates?: string[]
  /** Accept any certificate. For tests only. Default `false`. */
  insecure?: boolean
  /**
   * Keep the TLS session ticket each server sends (in memory, one per
   * server address and name, up to 256 servers) and resume that session on
   * the next connection to it: a shorter handshake without the certificate
   * (`req.connection.resumed` on an h3node server). A ticket the server no
   * longer accepts just means a full handshake. Default `true`.
   */
  resumeSessions?: boolean
}

type Pending = {
  conn: Conn
  stream: number
  method: string
  resolve: (r: Response) => void
  reject: (e: unknown) => void
  responded: boolean
  body: IncomingBody | null
  out: OutgoingBody | null
  sendDone: boolean
  recvDone: boolean
  /** The server sent STOP_SENDING: the request body is no longer wanted. */
  stopped: boolean
  onAbort: (() => void) | null
  signal: AbortSignal
  trailers: Headers | null
  resolveTrailers: ((h: Headers | null) => void) | null
  /** Its Response is watched by {@link abandoned}. */
  watched: boolean
}

/** What a settled request's resolve and reject become: they held its Response. */
const settled = (): void => {}

/**
 * Responses with a body still arriving. When one is garbage-collected and
 * nobody took its body, the exchange is cancelled (see {@link Client.fetch}):
 * left alone, the stream would stay open on flow control, holding the
 * server's stream limit and up to a read window of bytes here.
 */
const abandoned = new FinalizationRegistry<() => void>((cancel) => cancel())

/** Request options h3node adds to `RequestInit`. */
export interface H3RequestInit extends RequestInit {
  /** Trailers sent after the request body (needs a body). */
  trailers?: HeadersInit
}

/**
 * The `Response` {@link Client.fetch} resolves to: a standard `Response`
 * plus the trailers the server sent after the body.
 */
export interface H3Response extends Response {
  /** Resolves with the response trailers (or `null`) once the body has been read to the end. */
  readonly trailers: Promise<Headers | null>
}

type Conn = {
  id: number
  key: string
  streams: Map<number, Pending>
  goaway: boolean
  sessions: Map<number, WebTransportSession>
  maxDatagramSize: number
}

/** Options of {@link Client.webTransport}. */
export interface WebTransportInit {
  /** Extra request headers sent with the CONNECT (`origin` defaults to the URL's origin). */
  headers?: HeadersInit
}

/**
 * An HTTP/3 client. Connections are pooled per origin and reused while
 * open; a connection that received GOAWAY takes no new requests.
 *
 * @example
 * ```ts
 * import { Client } from 'h3node'
 * const client = new Client({ pinnedCertificates: [server.certificate!.sha256] })
 * const res = await client.fetch('https://127.0.0.1:4433/')
 * console.log(res.status, await res.text())
 * await client.close()
 * ```
 */
export class Client implements AsyncDisposable {
  #native: InstanceType<typeof native.NativeClient>
  #pool = new Map<string, Promise<Conn>>()
  #conns = new Map<number, Conn>()
  #readWindow: number
  #writeWindow: number
  #maxWriteWindow: number
  #datagramQueue: number
  #maxDatagram = new Map<number, number>()
  #closed = false

  constructor(options: ClientOptions = {}) {
    const transport = resolveTransport(options, { webtransport: true })
    this.#readWindow = transport.streamReadWindow
    this.#writeWindow = transport.streamWriteWindow
    this.#maxWriteWindow = transport.maxStreamWriteWindow
    this.#datagramQueue = transport.datagramQueueLength
    const pins = options.pinnedCertificates ?? []
    if (!Array.isArray(pins) || pins.some((p) => typeof p !== 'string')) {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option pinnedCertificates must be an array of hex strings')
    }
    if (options.insecure !== undefined && typeof options.insecure !== 'boolean') {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option insecure must be a boolean')
    }
    if (options.resumeSessions !== undefined && typeof options.resumeSessions !== 'boolean') {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option resumeSessions must be a boolean')
    }
    try {
      this.#native = native.NativeClient.create(
        {
          ca: options.ca === undefined ? undefined : Buffer.from(options.ca),
          pinnedSha256: pins,
          insecure: options.insecure ?? false,
          resumeSessions: options.resumeSessions ?? true,
          transport,
        },
        () => this.#onBatch(),
      )
    } catch (e) {
      throw fromNative(e)
    }
    warnIfRuntimeDiffers(transport)
  }

  /** Number of open QUIC connections. */
  get connections(): number {
    return this.#native.connectionCount()
  }

  /** Transport statistics of the pooled connection to `origin` (`null` if none). */
  async stats(origin: string | URL): Promise<ConnectionStats | null> {
    const c = await this.#pool.get(new URL(origin).origin)?.catch(() => null)
    return c ? ((await this.#native.stats(c.id)) as ConnectionStats | null) : null
  }

  async #connection(url: URL): Promise<Conn> {
    const key = url.origin
    const existing = this.#pool.get(key)
    if (existing) {
      const c = await existing.catch(() => null)
      if (c && !c.goaway && this.#conns.has(c.id)) return c
      if (this.#pool.get(key) === existing) this.#pool.delete(key)
    }
    const p = (async () => {
      const host = url.hostname.replace(/^\[|\]$/g, '')
      const ip = isIP(host) ? host : (await lookup(host)).address
      const port = Number(url.port || 443)
      let id: number
      try {
        id = await this.#native.connect(ip, port, isIP(host) ? undefined : host)
      } catch (e) {
        throw fromNative(e)
      }
      const conn: Conn = { id, key, streams: new Map(), goaway: false, sessions: new Map(), maxDatagramSize: 0 }
      this.#conns.set(id, conn)
      return conn
    })()
    this.#pool.set(key, p)
    p.catch(() => {
      if (this.#pool.get(key) === p) this.#pool.delete(key)
    })
    return p
  }

  #port(conn: number, stream: number): StreamPort {
    // Cancelling a response body cancels the whole request.
    return streamPort(this.#native, conn, stream, true)
  }

  /**
   * Sends a request over HTTP/3. Takes what the global `fetch` takes
   * (`https:` URLs only); the body may be any `BodyInit`, including a
   * `ReadableStream`, which is streamed with backpressure.
   *
   * Read or cancel every response body (`await res.body?.cancel()`): a body
   * left unread holds its stream open (flow control stops the server) and
   * up to `streamReadWindow` bytes. A `Response` that is garbage-collected
   * with its body untouched (no reader, nothing read) has its exchange
   * cancelled then, as an abort does: RESET_STREAM and STOP_SENDING with
   * H3_REQUEST_CANCELLED, and a request body still being sent is cancelled
   * with `ERR_H3_RESPONSE_ABANDONED`. When that happens is up to V8's GC.
   */
  async fetch(input: string | URL | Request, init?: H3RequestInit): Promise<H3Response> {
    if (this.#closed) throw new H3Error('ERR_H3_CLIENT_CLOSED', 'client is closed')
    const needsDuplex = init?.body instanceof ReadableStream || (input instanceof Request && input.body !== null)
    const req = new Request(input, needsDuplex ? ({ ...init, duplex: 'half' } as RequestInit) : init)
    const url = new URL(req.url)
    if (url.protocol !== 'https:') throw new TypeError(`h3node fetch needs an https: URL, got ${url.protocol}`)
    req.signal.throwIfAborted()
    const conn = await this.#connection(url)
    req.signal.throwIfAborted()
    if (this.#closed) throw new H3Error('ERR_H3_CLIENT_CLOSED', 'client is closed')
    const head = flattenHeaders(req.headers, [
      ':method', req.method,
      ':scheme', 'https',
      ':authority', url.host,
      ':path', url.pathname + url.search,
    ])
    const body = req.body
    // A body of known size announces it, as fetch does over HTTP/1.1 and 2.
    const size = knownLength(init?.body)
    if (body !== null && size !== null && !req.headers.has('content-length')) head.push('content-length', String(size))
    const stream = this.#native.request(conn.id, head.join('\0'), body === null)
    if (stream < 0) {
      // Gone before its close event reached us: never hand it out again.
      this.#conns.delete(conn.id)
      conn.goaway = true
      throw new H3Error('ERR_H3_CONNECTION_CLOSED', `connection to ${url.origin} is closed`)
    }
    const trailers = init?.trailers === undefined ? undefined : flattenHeaders(new Headers(init.trailers))
    return new Promise<H3Response>((resolve, reject) => {
      const p: Pending = {
        conn,
        stream,
        method: req.method,
        resolve: resolve as (r: Response) => void,
        reject,
        responded: false,
        body: null,
        out: null,
        sendDone: body === null,
        recvDone: false,
        stopped: false,
        onAbort: null,
        signal: req.signal,
        trailers: null,
        resolveTrailers: null,
        watched: false,
      }
      conn.streams.set(stream, p)
      p.onAbort = () => {
        commandQueue(this.#native).reset(conn.id, stream, H3Codes.REQUEST_CANCELLED)
        this.#fail(p, req.signal.reason)
      }
      req.signal.addEventListener('abort', p.onAbort, { once: true })
      if (body) {
        p.out = new OutgoingBody(this.#port(conn.id, stream), this.#writeWindow, this.#maxWriteWindow)
        p.out.pump(body, () => trailers).then(
          () => {
            p.sendDone = true
            this.#maybeDone(p)
          },
          (err) => {
            // Only a failing source is ours to report: STOP_SENDING from the
            // server ends the upload, not the response.
            if (!p.stopped && !p.recvDone) this.#fail(p, err)
          },
        )
      }
    })
  }

  /**
   * Opens a WebTransport session to `url` (an extended CONNECT with
   * `:protocol` `webtransport` on the pooled connection). Returns at once;
   * `ready` resolves when the server accepts, and rejects with
   * `ERR_H3_WEBTRANSPORT_REFUSED` (with `status`) if it answers otherwise.
   *
   * @example
   * ```ts
   * const wt = client.webTransport('https://127.0.0.1:4433/chat')
   * await wt.ready
   * const { readable, writable } = await wt.createBidirectionalStream()
   * ```
   */
  webTransport(url: string | URL, init: WebTransportInit = {}): WebTransportSession {
    const session = new WebTransportSession(null, this.sessionLimits(), false, -1, () => {})
    this.openSession(session, url, init)
    return session
  }

  /** @internal */
  sessionLimits(): SessionLimits {
    return { readWindow: this.#readWindow, writeWindow: this.#writeWindow, datagramQueue: this.#datagramQueue, maxDatagramSize: 0 }
  }

  /** @internal sends the CONNECT of `session` and binds it to its stream. */
  openSession(session: WebTransportSession, url: string | URL, init: WebTransportInit = {}): void {
    const u = new URL(url)
    if (u.protocol !== 'https:') throw new TypeError(`WebTransport needs an https: URL, got ${u.protocol}`)
    let conn: Conn | null = null
    session.setOnEnd(() => conn?.sessions.delete(session.sessionId))
    ;(async () => {
      if (this.#closed) throw new H3Error('ERR_H3_CLIENT_CLOSED', 'client is closed')
      const c = await this.#connection(u)
      conn = c
      const headers = new Headers(init.headers)
      if (!headers.has('origin')) headers.set('origin', u.origin)
      headers.set('sec-webtransport-http3-draft02', '1')
      const head = flattenHeaders(headers, [
        ':method', 'CONNECT',
        ':protocol', 'webtransport',
        ':scheme', 'https',
        ':authority', u.host,
        ':path', u.pathname + u.search,
      ])
      const sid = this.#native.request(c.id, head.join('\0'), false)
      if (sid < 0) throw new H3Error('ERR_H3_CONNECTION_CLOSED', `connection to ${u.origin} is closed`)
      session.bind(sessionPort(this.#native, c.id, sid), sid)
      c.sessions.set(sid, session)
    })().catch((err) => session.onFailed(err))
  }

  #sessionOf(c: Conn, stream: number): WebTransportSession | undefined {
    for (const s of c.sessions.values()) if (s.owns(stream)) return s
    return undefined
  }

  /** Routes an event of a WebTransport session or one of its streams; false if none. */
  #dispatchSession(c: Conn, e: NativeEvent): boolean {
    const own = c.sessions.get(e.stream)
    switch (e.kind) {
      case Ev.Headers: {
        if (!own) return false
        const f = splitSection(e.section)
        const status = Number(f[f.indexOf(':status') + 1])
        if (status >= 200 && status < 300) {
          // The flow id takes the first bytes of each datagram.
          own.onReady(Math.max(0, (this.#maxDatagram.get(c.id) ?? 0) - (e.stream / 4 < 64 ? 1 : e.stream / 4 < 16384 ? 2 : 4)))
        } else {
          commandQueue(this.#native).reset(c.id, e.stream, H3Codes.REQUEST_CANCELLED)
          own.onFailed(Object.assign(new H3Error('ERR_H3_WEBTRANSPORT_REFUSED', `server refused the WebTransport session with status ${status}`), { status }))
        }
        return true
      }
      case Ev.Reset:
        if (own) {
          own.onFailed(new H3Error('ERR_H3_STREAM_RESET', `server reset the session stream (code 0x${e.code.toString(16)})`, { wireCode: e.code }))
          return true
        }
        break
      case Ev.StreamOpen:
        c.sessions.get(e.code)?.onStreamOpen(e.stream)
        return true
      case Ev.Datagram:
        own?.onDatagram(e.data!)
        return true
      case Ev.SessionClosed:
        own?.onClosed(e.fin, e.code, e.text ?? '')
        return true
      case Ev.SessionDrain:
        own?.onDrain()
        return true
      case Ev.Data:
      case Ev.Finished:
        if (own) return true
        break
    }
    const s = this.#sessionOf(c, e.stream)
    if (!s) return false
    s.onStreamEvent(e)
    return true
  }

  #maybeDone(p: Pending): void {
    if (p.sendDone && p.recvDone) {
      p.conn.streams.delete(p.stream)
      if (p.onAbort) p.signal.removeEventListener('abort', p.onAbort)
      if (p.watched) abandoned.unregister(p)
    }
  }

  #fail(p: Pending, err: unknown): void {
    p.recvDone = true
    p.sendDone = true
    p.conn.streams.delete(p.stream)
    if (p.onAbort) p.signal.removeEventListener('abort', p.onAbort)
    if (p.watched) abandoned.unregister(p)
    if (!p.responded) {
      p.responded = true
      p.reject(err)
    }
    p.body?.fail(err)
    p.out?.abort(err)
    p.resolveTrailers?.(null)
  }

  /**
   * The Response of `p` was garbage-collected: if its body was left alone,
   * cancel the exchange as an abort does (RESET_STREAM and STOP_SENDING,
   * H3_REQUEST_CANCELLED). A body someone took (a reader, `text()`, a read)
   * lives on without its Response and is left to them.
   */
  #abandon(p: Pending): void {
    if (p.conn.streams.get(p.stream) !== p || !p.body || p.body.done || !p.body.untouched) return
    commandQueue(this.#native).reset(p.conn.id, p.stream, H3Codes.REQUEST_CANCELLED)
    this.#fail(p, new H3Error('ERR_H3_RESPONSE_ABANDONED', 'the Response was garbage-collected before its body was read'))
  }

  #onBatch(): void {
    dispatchAll(takeEvents(this.#native), (e) => this.#dispatch(e))
  }

  #dispatch(e: NativeEvent): void {
    if (e.kind === Ev.ConnOpen) {
      this.#maxDatagram.set(e.conn, e.info?.maxDatagramSize ?? 0)
      return
    }
    if (e.kind === Ev.ConnClose) {
      this.#maxDatagram.delete(e.conn)
      const c = this.#conns.get(e.conn)
      if (!c) return
      this.#conns.delete(e.conn)
      const err = new H3Error('ERR_H3_CONNECTION_CLOSED', `connection closed${e.text ? `: ${e.text}` : ''}`, { wireCode: e.code })
      for (const p of [...c.streams.values()]) this.#fail(p, err)
      for (const s of [...c.sessions.values()]) s.onFailed(err)
      const pooled = this.#pool.get(c.key)
      pooled?.then((x) => {
        if (x === c && this.#pool.get(c.key) === pooled) this.#pool.delete(c.key)
      }, () => {})
      return
    }
    if (e.kind === Ev.GoAway) {
      const c = this.#conns.get(e.conn)
      if (c) {
        c.goaway = true
        for (const s of c.sessions.values()) s.onDrain()
      }
      return
    }
    const c = this.#conns.get(e.conn)
    if (c && c.sessions.size > 0 && this.#dispatchSession(c, e)) return
    const p = c?.streams.get(e.stream)
    if (!p) return
    switch (e.kind) {
      case Ev.Headers: {
        const f = splitSection(e.section)
        const headers = toHeaders(f)
        const status = Number(f[f.indexOf(':status') + 1])
        const nullBody = e.fin || p.method === 'HEAD' || status === 204 || status === 304
        if (!nullBody) p.body = new IncomingBody(this.#port(p.conn.id, p.stream), this.#readWindow)
        p.responded = true
        try {
          const res = new Response(p.body?.stream ?? null, { status, headers })
          const trailers = new Promise<Headers | null>((r) => {
            p.resolveTrailers = r
          })
          trailers.catch(() => {})
          Object.defineProperty(res, 'trailers', { value: trailers, enumerable: false })
          p.resolve(res)
          // The promise's resolve function holds the Response: let go of it.
          p.resolve = settled
          p.reject = settled
          if (p.body && !e.fin) {
            p.watched = true
            abandoned.register(res, () => this.#abandon(p), p)
          }
        } catch (err) {
          p.responded = false
          commandQueue(this.#native).reset(p.conn.id, p.stream, H3Codes.MESSAGE_ERROR)
          this.#fail(p, err)
          return
        }
        if (nullBody && e.fin) {
          p.recvDone = true
          p.resolveTrailers?.(null)
          this.#maybeDone(p)
        }
        break
      }
      case Ev.Data:
        if (e.data && e.data.byteLength > 0) p.body?.push(e.data)
        if (e.fin) {
          p.body?.end()
          p.recvDone = true
          p.resolveTrailers?.(p.trailers)
          this.#maybeDone(p)
        }
        break
      case Ev.Trailers: {
        p.trailers = toHeaders(splitSection(e.section))
        break
      }
      case Ev.Reset:
        // fin: the server reset it; otherwise the response broke HTTP/3's
        // rules and this side reset it.
        this.#fail(
          p,
          new H3Error(
            'ERR_H3_STREAM_RESET',
            e.fin
              ? `server reset the stream (code 0x${e.code.toString(16)})`
              : `malformed response: the client reset the stream (code 0x${e.code.toString(16)})`,
            { wireCode: e.code },
          ),
        )
        break
      case Ev.StopSending:
        // The server does not want the rest of the request body.
        p.stopped = true
        p.out?.abort(new H3Error('ERR_H3_STOP_SENDING', 'server stopped reading the request body', { wireCode: e.code }))
        p.sendDone = true
        this.#maybeDone(p)
        break
      case Ev.Sent:
        p.out?.sent(e.code)
        break
    }
  }

  /** Closes every connection (CONNECTION_CLOSE with H3_NO_ERROR) and releases native threads. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const err = new H3Error('ERR_H3_CLIENT_CLOSED', 'client closed')
    for (const c of this.#conns.values()) {
      for (const p of [...c.streams.values()]) this.#fail(p, err)
      for (const s of [...c.sessions.values()]) s.onFailed(err)
    }
    this.#conns.clear()
    this.#pool.clear()
    commandQueue(this.#native).flush()
    this.#native.release()
  }

  /** `await using client = new Client(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/** Byte length of a body whose size is known before it is sent, else null. */
function knownLength(body: unknown): number | null {
  if (typeof body === 'string') return Buffer.byteLength(body)
  if (ArrayBuffer.isView(body) || body instanceof ArrayBuffer) return body.byteLength
  if (body instanceof Blob) return body.size
  if (body instanceof URLSearchParams) return Buffer.byteLength(body.toString())
  return null
}

/** Options of {@link WebTransport}, as in the browser plus h3node's client options. */
export interface WebTransportOptions extends ClientOptions, WebTransportInit {
  /**
   * Accept the server if its certificate's SHA-256 is one of these, as in
   * the browser (`{ algorithm: 'sha-256', value }`); adds to `pinnedCertificates`.
   */
  serverCertificateHashes?: { algorithm: 'sha-256'; value: BufferSource }[]
  /** Use this client's pooled connections instead of a private client. */
  client?: Client
}

/**
 * The browser's `WebTransport` constructor shape for Node:
 * `new WebTransport(url, { serverCertificateHashes })`. Without `client`,
 * it uses a private {@link Client} that closes with the session.
 *
 * @example
 * ```ts
 * import { WebTransport } from 'h3node'
 * const wt = new WebTransport('https://127.0.0.1:4433/chat', { serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }] })
 * await wt.ready
 * const writer = wt.datagrams.writable.getWriter()
 * await writer.write(new TextEncoder().encode('hi'))
 * ```
 */
export class WebTransport extends WebTransportSession {
  constructor(url: string | URL, options: WebTransportOptions = {}) {
    const own = options.client === undefined
    const pins = [...(options.pinnedCertificates ?? [])]
    for (const h of options.serverCertificateHashes ?? []) {
      if (h?.algorithm !== 'sha-256') throw new H3Error('ERR_H3_INVALID_OPTION', 'option serverCertificateHashes supports algorithm sha-256 only')
      const v = h.value
      const bytes = ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : new Uint8Array(v as ArrayBuffer)
      pins.push(Buffer.from(bytes).toString('hex'))
    }
    const client = options.client ?? new Client({ ...options, pinnedCertificates: pins })
    super(null, client.sessionLimits(), false, -1, () => {})
    if (own) this.closed.then(() => client.close(), () => client.close())
    client.openSession(this, url, options)
  }
}
