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
import { native, Ev, dispatchAll, streamPort, type NativeEvent, type StreamPort } from './native'
import { resolveTransport, type TransportOptions } from './options'
import type { ConnectionStats } from './server'

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
}

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
  #closed = false

  constructor(options: ClientOptions = {}) {
    const transport = resolveTransport(options, { webtransport: true })
    this.#readWindow = transport.streamReadWindow
    this.#writeWindow = transport.streamWriteWindow
    const pins = options.pinnedCertificates ?? []
    if (!Array.isArray(pins) || pins.some((p) => typeof p !== 'string')) {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option pinnedCertificates must be an array of hex strings')
    }
    if (options.insecure !== undefined && typeof options.insecure !== 'boolean') {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option insecure must be a boolean')
    }
    try {
      this.#native = native.NativeClient.create(
        {
          ca: options.ca === undefined ? undefined : Buffer.from(options.ca),
          pinnedSha256: pins,
          insecure: options.insecure ?? false,
          transport,
        },
        () => this.#onBatch(),
      )
    } catch (e) {
      throw fromNative(e)
    }
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
      const conn: Conn = { id, key, streams: new Map(), goaway: false }
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
        const n = this.#native
    // Cancelling a response body cancels the whole request.
    return streamPort(n, conn, stream, () => n.reset(conn, stream, H3Codes.REQUEST_CANCELLED))
  }

  /**
   * Sends a request over HTTP/3. Takes what the global `fetch` takes
   * (`https:` URLs only); the body may be any `BodyInit`, including a
   * `ReadableStream`, which is streamed with backpressure.
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
        const stream = this.#native.request(conn.id, head, body === null)
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
      }
      conn.streams.set(stream, p)
      p.onAbort = () => {
        this.#native.reset(conn.id, stream, H3Codes.REQUEST_CANCELLED)
        this.#fail(p, req.signal.reason)
      }
      req.signal.addEventListener('abort', p.onAbort, { once: true })
      if (body) {
        p.out = new OutgoingBody(this.#port(conn.id, stream), this.#writeWindow)
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

  #maybeDone(p: Pending): void {
    if (p.sendDone && p.recvDone) {
      p.conn.streams.delete(p.stream)
      if (p.onAbort) p.signal.removeEventListener('abort', p.onAbort)
    }
  }

  #fail(p: Pending, err: unknown): void {
    p.recvDone = true
    p.sendDone = true
    p.conn.streams.delete(p.stream)
    if (p.onAbort) p.signal.removeEventListener('abort', p.onAbort)
    if (!p.responded) {
      p.responded = true
      p.reject(err)
    }
    p.body?.fail(err)
    p.out?.abort(err)
    p.resolveTrailers?.(null)
  }

  #onBatch(): void {
        dispatchAll(this.#native.takeEvents(), (e) => this.#dispatch(e))
  }

  #dispatch(e: NativeEvent): void {
    if (e.kind === Ev.ConnClose) {
      const c = this.#conns.get(e.conn)
      if (!c) return
      this.#conns.delete(e.conn)
      const err = new H3Error('ERR_H3_CONNECTION_CLOSED', `connection closed${e.text ? `: ${e.text}` : ''}`, { wireCode: e.code })
      for (const p of [...c.streams.values()]) this.#fail(p, err)
      const pooled = this.#pool.get(c.key)
      pooled?.then((x) => {
        if (x === c && this.#pool.get(c.key) === pooled) this.#pool.delete(c.key)
      }, () => {})
      return
    }
    if (e.kind === Ev.GoAway) {
      const c = this.#conns.get(e.conn)
      if (c) c.goaway = true
      return
    }
    const p = this.#conns.get(e.conn)?.streams.get(e.stream)
    if (!p) return
    switch (e.kind) {
      case Ev.Headers: {
        const f = e.headers ?? []
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
        } catch (err) {
          p.responded = false
          this.#native.reset(p.conn.id, p.stream, H3Codes.MESSAGE_ERROR)
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
                p.trailers = toHeaders(e.headers ?? [])
        break
      }
      case Ev.Reset:
        this.#fail(p, new H3Error('ERR_H3_STREAM_RESET', `server reset the stream (code 0x${e.code.toString(16)})`, { wireCode: e.code }))
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
    for (const c of this.#conns.values()) for (const p of [...c.streams.values()]) this.#fail(p, err)
    this.#conns.clear()
    this.#pool.clear()
    this.#native.release()
  }

  /** `await using client = new Client(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
