/**
 * Fastify on HTTP/3: `h3node/fastify`.
 *
 * - {@link serveFastify} serves a Fastify app over HTTP/3, on its own or
 *   next to the app's usual HTTP/1.1 or HTTP/2 listener (`app.listen`,
 *   which this module never calls).
 * - {@link fastifyHandler} turns an app into a handler of h3node requests,
 *   for a server you drive yourself (`for await (const req of server)`).
 *
 * Every HTTP/3 request enters Fastify's router (`app.routing(req, res)`)
 * as a Node-style pair: {@link H3IncomingMessage} (a `Readable` of the
 * request body, with `method`, `url`, `headers`, `httpVersion` `'3.0'`
 * and a {@link H3Socket} telling the peer's address) and
 * {@link H3ServerResponse} (a `Writable` with the `ServerResponse` API:
 * `statusCode`, `setHeader`, `writeHead`, `write`, `end`, trailers). Both
 * directions stream with backpressure. Routes, hooks, plugins, body
 * parsers, `reply.send(stream)`, `reply.raw` and error handlers work as
 * over HTTP/1.1; the route can tell the protocol by
 * `request.raw.httpVersionMajor === 3` and reach the h3node request by
 * `request.raw.h3`.
 *
 * Fastify is not loaded by this module (its types only): install `fastify`
 * yourself.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { serveFastify } from 'h3node/fastify'
 *
 * const app = Fastify()
 * app.get('/', async (request) => ({ hello: request.ip, over: request.raw.httpVersion }))
 * const h3 = await serveFastify(app, { port: 4433, cert, key }) // HTTP/3 on UDP 4433
 * await app.listen({ port: 4433 })                              // and HTTP/1.1 on TCP 4433, if you want it
 * ```
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { STATUS_CODES } from 'node:http'
import { isIP } from 'node:net'
import { Readable, Writable } from 'node:stream'

import type { FastifyInstance } from 'fastify'

import { H3Error } from '../errors'
import { Server, type IncomingRequest, type ListenOptions } from '../server'

/**
 * A Fastify instance of any server type (HTTP/1.1, HTTPS or HTTP/2 apps
 * are all accepted: HTTP/3 requests do not go through their server).
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import type { AnyFastifyInstance } from 'h3node/fastify'
 * const app: AnyFastifyInstance = Fastify({ http2: true })
 * ```
 */
export type AnyFastifyInstance = FastifyInstance<any, any, any, any, any>

/**
 * Options of {@link serveFastify}: every option of h3node's `listen`, and these.
 *
 * @example
 * ```ts
 * const options: FastifyServeOptions = { port: 4433, cert, key, closeWithApp: true, closeGraceMs: 2000 }
 * await serveFastify(app, options)
 * ```
 */
export interface FastifyServeOptions extends ListenOptions {
  /**
   * Close the HTTP/3 server when the app closes (`await app.close()`):
   * GOAWAY, in-flight requests finish (up to `closeGraceMs`), then the
   * app's own listener and `onClose` hooks. When the app is not listening
   * yet this runs in a `preClose` hook, so HTTP/3 requests finish before
   * the app's plugins are closed; on an app already listening it can only
   * run in an `onClose` hook. Default `true`.
   */
  closeWithApp?: boolean
  /**
   * Takes WebTransport session requests (with `webTransport: true`): call
   * `req.acceptWebTransport()` or refuse with `req.respond()`. Without it
   * they are refused with 405, like any other CONNECT (Fastify has no
   * CONNECT routes to give them to).
   */
  onWebTransport?: (req: IncomingRequest) => void
}

/**
 * Options of {@link fastifyHandler}.
 *
 * @example
 * ```ts
 * const handle = fastifyHandler(app, { onError: (err, req) => console.error(req.url, err) })
 * ```
 */
export interface FastifyHandlerOptions {
  /**
   * Called with errors the adapter could not hand to Fastify (the app
   * failing to become ready, `app.routing` throwing) and responses that
   * could not be sent. Route errors go to Fastify's error handlers, not
   * here. Default: `console.error`.
   */
  onError?: (error: unknown, request: IncomingRequest) => void
  /** As in {@link FastifyServeOptions.onWebTransport}. */
  onWebTransport?: (req: IncomingRequest) => void
}

/**
 * Header values the `ServerResponse` API takes.
 *
 * @example
 * ```ts
 * reply.raw.setHeader('set-cookie', ['a=1', 'b=2']) // a list: one field each
 * reply.raw.setHeader('content-length', 42)          // numbers are sent as text
 * ```
 */
export type OutgoingHeaderValue = number | string | readonly string[]

/**
 * Headers as `writeHead` takes them: an object, a flat `[name, value, ...]`
 * list or `[name, value]` pairs.
 *
 * @example
 * ```ts
 * res.writeHead(200, { 'content-type': 'text/plain' })
 * res.writeHead(200, ['x-a', '1', 'x-a', '2'])
 * res.writeHead(200, [['set-cookie', 'a=1'], ['set-cookie', 'b=2']])
 * ```
 */
export type OutgoingHeadersInit = Record<string, OutgoingHeaderValue | undefined> | readonly string[] | readonly (readonly [string, OutgoingHeaderValue])[]

const noop = (): void => {}

/** What the socket of a request acts on. */
type SocketOps = { destroy(err?: Error): void; end(): void }

/** Hop-by-hop fields HTTP/3 forbids (RFC 9114 §4.2): left out of responses. */
const CONNECTION_FIELDS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings'])

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/

function checkHeader(name: string, value: unknown): void {
  if (typeof name !== 'string' || !TOKEN.test(name)) {
    throw new H3Error('ERR_H3_INVALID_ARGUMENT', `invalid header name ${JSON.stringify(String(name))}`)
  }
  if (value === undefined) throw new H3Error('ERR_H3_INVALID_ARGUMENT', `header ${name} has no value`)
  const values = Array.isArray(value) ? value : [value]
  for (const v of values) {
    if (BAD_VALUE.test(String(v))) throw new H3Error('ERR_H3_INVALID_ARGUMENT', `invalid character in the value of header ${name}`)
  }
}

let dateCache = ''
let dateSecond = -1
function httpDate(): string {
  const now = Date.now()
  const s = Math.floor(now / 1000)
  if (s !== dateSecond) {
    dateSecond = s
    dateCache = new Date(now).toUTCString()
  }
  return dateCache
}

/**
 * What stands for the socket of an HTTP/3 request (`req.socket`,
 * `res.socket`): the peer and local addresses of its QUIC connection,
 * `encrypted` (always `true`, so `request.protocol` is `'https'`) and
 * `alpnProtocol` `'h3'`. There is one per request, not per connection:
 * `destroy()` resets the request's stream, not the connection, the way
 * Node's HTTP/2 compatibility layer treats its socket proxy.
 *
 * @example
 * ```ts
 * app.get('/who', async (request) => {
 *   const s = request.socket // an H3Socket over HTTP/3
 *   return `${s.remoteAddress}:${s.remotePort} (${s.alpnProtocol})`
 * })
 * ```
 */
export class H3Socket extends EventEmitter {
  /** Peer IP address. */
  readonly remoteAddress: string
  /** Peer UDP port. */
  readonly remotePort: number
  /** `'IPv4'` or `'IPv6'`. */
  readonly remoteFamily: string
  /** Local IP address. */
  readonly localAddress: string
  /** Local UDP port. */
  readonly localPort: number
  /** Always `true`: QUIC is encrypted. */
  readonly encrypted = true
  /** The negotiated ALPN, `'h3'`. */
  readonly alpnProtocol: string
  /** The SNI name the client sent, or `false`. */
  readonly servername: string | false
  /** Client certificates are not requested: always `false`. */
  readonly authorized = false
  /** The h3node request. */
  readonly h3: IncomingRequest
  #destroyed = false
  #ops: SocketOps

  /** @internal */
  constructor(h3: IncomingRequest, ops: SocketOps) {
    super()
    const c = h3.connection
    this.h3 = h3
    this.remoteAddress = c.remoteAddress
    this.remotePort = c.remotePort
    this.remoteFamily = isIP(c.remoteAddress) === 6 ? 'IPv6' : 'IPv4'
    this.localAddress = c.localAddress
    this.localPort = c.localPort
    this.alpnProtocol = c.alpn || 'h3'
    this.servername = c.serverName ?? false
    this.#ops = ops
  }

  /** Whether {@link destroy} was called. */
  get destroyed(): boolean {
    return this.#destroyed
  }

  /** `true` until destroyed. */
  get readable(): boolean {
    return !this.#destroyed
  }

  /** `true` until destroyed. */
  get writable(): boolean {
    return !this.#destroyed
  }

  /**
   * Aborts the request: resets its stream (the peer sees the response
   * fail) and stops reading its body. The QUIC connection stays up.
   */
  destroy(error?: Error): this {
    if (this.#destroyed) return this
    this.#destroyed = true
    this.#ops.destroy(error)
    process.nextTick(() => this.emit('close', error !== undefined))
    return this
  }

  /** Ends the response (as `res.end()`): a request stream has no half-close of its own. */
  end(): this {
    this.#ops.end()
    return this
  }

  /**
   * Registers `callback` for `'timeout'`, which is never emitted: idle
   * peers are closed by QUIC's idle timeout (`idleTimeoutMs`).
   */
  setTimeout(_ms: number, callback?: () => void): this {
    if (callback) this.once('timeout', callback)
    return this
  }

  /** No effect (QUIC has no Nagle). */
  setNoDelay(_noDelay?: boolean): this {
    return this
  }

  /** No effect (QUIC keeps connections alive by its own rules). */
  setKeepAlive(_enable?: boolean, _delay?: number): this {
    return this
  }

  /** No effect. */
  ref(): this {
    return this
  }

  /** No effect. */
  unref(): this {
    return this
  }

  /** The local address, as `net.Socket#address()` gives it. */
  address(): { address: string; port: number; family: string } {
    return { address: this.localAddress, port: this.localPort, family: isIP(this.localAddress) === 6 ? 'IPv6' : 'IPv4' }
  }

  /** `'TLSv1.3'`: QUIC always runs TLS 1.3. */
  getProtocol(): string {
    return 'TLSv1.3'
  }

  /** An empty object: the client sent no certificate (none is requested). */
  getPeerCertificate(): Record<string, never> {
    return {}
  }
}

/**
 * The request Fastify sees over HTTP/3 (`request.raw`): a `Readable` of
 * the request body with the fields of Node's `IncomingMessage`. The body
 * is read from the QUIC stream only as the app consumes it, so a slow
 * reader slows the client (flow control).
 *
 * - `url` is the path and query; `headers` has lowercase names, `host`
 *   taken from `:authority`, `set-cookie` as an array and `cookie` fields
 *   joined with `'; '`.
 * - `httpVersion` is `'3.0'`; `socket` is an {@link H3Socket}.
 * - `aborted` turns `true` and `'aborted'` is emitted when the client
 *   resets the stream or goes away before the exchange is complete
 *   (then reading fails with the h3node error: `ERR_H3_STREAM_RESET`,
 *   ...); as in Node, `'close'` follows the end of the body, and a body
 *   nobody reads is dropped when the response is complete (the client is
 *   told to stop sending it).
 * - `h3` is the h3node {@link IncomingRequest} (connection info, stream
 *   id, datagrams, early data).
 *
 * @example
 * ```ts
 * app.post('/upload', async (request) => {
 *   let bytes = 0
 *   for await (const chunk of request.raw) bytes += chunk.length // read as it arrives
 *   return { bytes, over: request.raw.httpVersion }
 * })
 * app.addContentTypeParser('application/octet-stream', (request, payload, done) => done(null))
 * ```
 */
export class H3IncomingMessage extends Readable {
  /** The h3node request. */
  readonly h3: IncomingRequest
  /** Request method. */
  method: string
  /** Path and query, as the client sent them in `:path` (Fastify's `rewriteUrl` may change it). */
  url: string
  /** Request headers, Node style (lowercase names). */
  headers: Record<string, string | string[]>
  /** `[name, value, ...]` as received (pseudo-headers left out, `host` added when absent). */
  rawHeaders: string[]
  /** `'3.0'`. */
  readonly httpVersion = '3.0'
  /** `3`. */
  readonly httpVersionMajor = 3
  /** `0`. */
  readonly httpVersionMinor = 0
  /** The {@link H3Socket} of this request. */
  readonly socket: H3Socket
  /** Same as `socket`. */
  readonly connection: H3Socket
  /** `true` once the whole body was received. */
  complete = false
  /** `true` once the client aborted the request. */
  aborted = false
  /** Trailers the client sent after the body (filled when the body ends). */
  trailers: Record<string, string> = {}
  /** The trailers as `[name, value, ...]`. */
  rawTrailers: string[] = []
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null
  #reading = false
  #dumped = false
  #bodyless: boolean

  /** @internal */
  constructor(h3: IncomingRequest, socket: H3Socket) {
    super()
    this.h3 = h3
    this.socket = this.connection = socket
    this.method = h3.method
    this.#bodyless = h3.method === 'GET' || h3.method === 'HEAD'
    this.complete = this.#bodyless
    const full = h3.url
    const slash = full.indexOf('/', full.indexOf('//') + 2)
    const authority = slash < 0 ? '' : full.slice(full.indexOf('//') + 2, slash)
    this.url = slash < 0 ? '/' : full.slice(slash)
    const headers: Record<string, string | string[]> = Object.create(null)
    const raw: string[] = []
    for (const [name, value] of h3.headers) {
      raw.push(name, value)
      if (name === 'set-cookie') {
        const prev = headers[name]
        if (Array.isArray(prev)) prev.push(value)
        else headers[name] = [value]
      } else if (name === 'cookie') {
        // Headers joins repeated fields with ', '; HTTP/3 splits cookies into fields (RFC 9114 §4.2.1).
        headers[name] = value.replace(/, /g, '; ')
      } else {
        headers[name] = value
      }
    }
    if (headers.host === undefined && authority) {
      headers.host = authority
      raw.push('host', authority)
    }
    this.headers = headers
    this.rawHeaders = raw
  }

  /** @internal */
  override _read(): void {
    if (this.#reading || this.#dumped) return
    if (!this.#reader) {
      let body: ReadableStream<Uint8Array> | null = null
      if (!this.#bodyless) {
        try {
          body = this.h3.request.body
        } catch (err) {
          this.destroy(err as Error)
          return
        }
      }
      if (!body) {
        this.#end()
        return
      }
      this.#reader = body.getReader()
    }
    this.#reading = true
    this.#reader.read().then(
      ({ value, done }) => {
        this.#reading = false
        if (this.destroyed || this.#dumped) return
        if (done) this.#end()
        else this.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength))
      },
      (err) => {
        this.#reading = false
        if (this.destroyed || this.#dumped) return
        this.#abort()
        this.destroy(err)
      },
    )
  }

  #end(): void {
    this.complete = true
    const t = this.h3.trailers
    if (t) {
      const obj: Record<string, string> = {}
      const raw: string[] = []
      t.forEach((value, name) => {
        obj[name] = value
        raw.push(name, value)
      })
      this.trailers = obj
      this.rawTrailers = raw
    }
    this.push(null)
  }

  /** @internal marks the request aborted by the client. */
  abort(): void {
    this.#abort()
  }

  #abort(): void {
    // As Node: a request whose body was not read to the end is aborted too.
    if (this.aborted || (this.complete && this.readableEnded)) return
    this.aborted = true
    this.emit('aborted')
  }

  /**
   * @internal the response is complete and nobody reads the body: stop the
   * client sending it (STOP_SENDING with H3_NO_ERROR) and end the stream.
   */
  dump(): void {
    if (this.#dumped || this.readableEnded || this.destroyed) return
    this.#dumped = true
    this.#reader?.cancel().catch(noop)
    this.push(null)
    this.resume()
  }

  /** @internal */
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#reader && !this.complete) this.#reader.cancel(err ?? undefined).catch(noop)
    // As Node's IncomingMessage: an error nobody listens for is not thrown.
    callback(err && this.listenerCount('error') > 0 ? err : null)
  }

  /** Registers `callback` for the socket's `'timeout'` (never emitted; see {@link H3Socket.setTimeout}). */
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms, callback)
    return this
  }
}

/**
 * The response Fastify writes over HTTP/3 (`reply.raw`): a `Writable`
 * with the API of Node's `ServerResponse`, streamed into an h3node
 * `Response`. `write()` returns `false` and `'drain'` follows once QUIC
 * has taken the data, so a slow client slows the app.
 *
 * - `writeHead(status, [message], [headers])` takes an object, a flat
 *   `[name, value, ...]` list or `[name, value]` pairs; `setHeader`,
 *   `appendHeader`, `getHeader(s)`, `hasHeader`, `removeHeader`,
 *   `getHeaderNames`, `flushHeaders`, `addTrailers` as in Node.
 * - Statuses 200 to 599 (HTTP/3 has no reason phrase: `statusMessage` is
 *   not sent; informational responses are not supported). HEAD, 204 and
 *   304 responses are sent without a body; fields HTTP/3 forbids
 *   (`connection`, `transfer-encoding`, ...) are left out.
 * - `'finish'` once the whole response was handed to QUIC, then
 *   `'close'`; a client that aborts gives `'close'` without `'finish'`.
 *   `destroy()` before the end resets the stream.
 * - Setting a header after the headers were sent throws
 *   `ERR_H3_ALREADY_RESPONDED`; an invalid name, value or status throws
 *   `ERR_H3_INVALID_ARGUMENT`.
 *
 * @example
 * ```ts
 * app.get('/raw', (request, reply) => {
 *   reply.hijack()
 *   reply.raw.writeHead(200, { 'content-type': 'text/plain' })
 *   reply.raw.write('streamed ')
 *   reply.raw.end('over HTTP/3')
 * })
 * ```
 */
export class H3ServerResponse extends Writable {
  /** Status code sent with the headers. Default 200. */
  statusCode = 200
  /** Kept for compatibility; HTTP/3 sends no reason phrase. */
  statusMessage = ''
  /** Add a `date` header when the app sets none. Default `true`. */
  sendDate = true
  /** Always `false` (HTTP/3 frames bodies itself). */
  readonly chunkedEncoding = false
  /** Always `false`. */
  readonly shouldKeepAlive = false
  /** Always `false`. */
  readonly useChunkedEncodingByDefault = false
  /** Always `false`. */
  strictContentLength = false
  /** The request this answers. */
  readonly req: H3IncomingMessage
  /** The request's {@link H3Socket}. */
  readonly socket: H3Socket
  /** Same as `socket`. */
  readonly connection: H3Socket
  #h3: IncomingRequest
  #headers = new Map<string, { name: string; value: OutgoingHeaderValue }>()
  #headSent = false
  #committed = false
  #noBody = false
  #written = false
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null
  #closed = false
  #waiting: (() => void) | null = null
  #trailers: Headers | null = null
  #sent: Promise<void> | null = null
  #clientAborted = false
  #onFailure: (err: unknown) => void

  /** @internal */
  constructor(req: H3IncomingMessage, onFailure: (err: unknown) => void) {
    super({ decodeStrings: true })
    this.req = req
    this.socket = this.connection = req.socket
    this.#h3 = req.h3
    this.#onFailure = onFailure
  }

  /** Whether the headers were sent (or `writeHead` was called). */
  get headersSent(): boolean {
    return this.#headSent
  }

  /** Same as `writableEnded`. */
  get finished(): boolean {
    return this.writableEnded
  }

  /** Sets one header (replacing it); throws `ERR_H3_ALREADY_RESPONDED` after the headers were sent. */
  setHeader(name: string, value: OutgoingHeaderValue): this {
    this.#checkNotSent(name)
    checkHeader(name, value)
    this.#headers.set(name.toLowerCase(), { name, value: Array.isArray(value) ? [...value] : value })
    return this
  }

  /** Adds a value to a header (which becomes a list). */
  appendHeader(name: string, value: OutgoingHeaderValue): this {
    this.#checkNotSent(name)
    checkHeader(name, value)
    const key = name.toLowerCase()
    const prev = this.#headers.get(key)
    const add = Array.isArray(value) ? value.map(String) : [String(value)]
    if (!prev) this.#headers.set(key, { name, value: add.length === 1 ? add[0] : add })
    else this.#headers.set(key, { name: prev.name, value: [...(Array.isArray(prev.value) ? prev.value : [String(prev.value)]), ...add] })
    return this
  }

  /** Sets every header of a `Headers` or a `Map` (`set-cookie` values kept apart). */
  setHeaders(headers: Headers | Map<string, OutgoingHeaderValue>): this {
    if (headers instanceof Headers) {
      headers.forEach((value, name) => {
        if (name !== 'set-cookie') this.setHeader(name, value)
      })
      const cookies = headers.getSetCookie()
      if (cookies.length > 0) this.setHeader('set-cookie', cookies)
    } else {
      for (const [name, value] of headers) this.setHeader(name, value)
    }
    return this
  }

  /** The value of a header as it was set, or `undefined`. */
  getHeader(name: string): OutgoingHeaderValue | undefined {
    return this.#headers.get(String(name).toLowerCase())?.value
  }

  /** Every header, lowercase names (a fresh object). */
  getHeaders(): Record<string, OutgoingHeaderValue> {
    const out: Record<string, OutgoingHeaderValue> = Object.create(null)
    for (const [key, { value }] of this.#headers) out[key] = value
    return out
  }

  /** Header names, lowercase. */
  getHeaderNames(): string[] {
    return [...this.#headers.keys()]
  }

  /** Header names as they were set. */
  getRawHeaderNames(): string[] {
    return [...this.#headers.values()].map((h) => h.name)
  }

  /** Whether a header is set. */
  hasHeader(name: string): boolean {
    return this.#headers.has(String(name).toLowerCase())
  }

  /** Removes a header; throws `ERR_H3_ALREADY_RESPONDED` after the headers were sent. */
  removeHeader(name: string): void {
    this.#checkNotSent(name)
    this.#headers.delete(String(name).toLowerCase())
  }

  /**
   * Sets the status and headers (merged over those set with `setHeader`);
   * they go out with the first body bytes, `flushHeaders()` or `end()`.
   */
  writeHead(statusCode: number, statusMessage?: string, headers?: OutgoingHeadersInit): this
  writeHead(statusCode: number, headers?: OutgoingHeadersInit): this
  writeHead(statusCode: number, messageOrHeaders?: string | OutgoingHeadersInit, headers?: OutgoingHeadersInit): this {
    if (this.#headSent) {
      throw new H3Error('ERR_H3_ALREADY_RESPONDED', `cannot write the head of ${this.req.method} ${this.req.url}: the headers were sent`)
    }
    if (!Number.isInteger(statusCode) || statusCode < 200 || statusCode > 599) {
      throw new H3Error('ERR_H3_INVALID_ARGUMENT', `status code must be an integer from 200 to 599 over HTTP/3, got ${String(statusCode)}`)
    }
    let message: string | undefined
    let init: OutgoingHeadersInit | undefined
    if (typeof messageOrHeaders === 'string') {
      message = messageOrHeaders
      init = headers
    } else {
      init = messageOrHeaders
    }
    if (init) {
      if (Array.isArray(init)) {
        if (init.length > 0 && Array.isArray(init[0])) {
          for (const [name, value] of init as readonly (readonly [string, OutgoingHeaderValue])[]) this.appendHeader(name, value)
        } else {
          const flat = init as readonly string[]
          if (flat.length % 2 !== 0) throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'a flat header list needs a value for every name')
          // Listed fields replace earlier ones but may repeat among themselves.
          for (let i = 0; i < flat.length; i += 2) this.#headers.delete(String(flat[i]).toLowerCase())
          for (let i = 0; i < flat.length; i += 2) this.appendHeader(flat[i], flat[i + 1])
        }
      } else {
        const obj = init as Record<string, OutgoingHeaderValue | undefined>
        for (const name of Object.keys(obj)) if (name) this.setHeader(name, obj[name] as OutgoingHeaderValue)
      }
    }
    this.statusCode = statusCode
    this.statusMessage = message ?? STATUS_CODES[statusCode] ?? 'unknown'
    this.#headSent = true
    this.#noBody = this.req.method === 'HEAD' || statusCode === 204 || statusCode === 304
    return this
  }

  /** Sends the headers now, before any body bytes. */
  flushHeaders(): void {
    if (!this.#headSent) this.#implicitHead()
    if (!this.#committed && !this.destroyed) this.#commit(!this.#noBody)
  }

  /** Sets trailers, sent after the body (they need a body; HEAD, 204 and 304 responses drop them). */
  addTrailers(headers: Record<string, string | string[]> | readonly (readonly [string, string])[]): void {
    const t = (this.#trailers ??= new Headers())
    const entries = Array.isArray(headers) ? headers : Object.entries(headers)
    for (const [name, value] of entries as Iterable<[string, string | string[]]>) {
      checkHeader(name, value)
      for (const v of Array.isArray(value) ? value : [value]) t.append(name, String(v))
    }
  }

  /** No effect: HTTP/3 needs no `100 Continue` (the client does not wait for it). */
  writeContinue(callback?: () => void): void {
    if (callback) process.nextTick(callback)
  }

  /** No effect: informational responses are not sent over HTTP/3 by h3node. */
  writeProcessing(callback?: () => void): void {
    if (callback) process.nextTick(callback)
  }

  /** No effect (informational responses are not sent); `callback` is called. */
  writeEarlyHints(_hints: Record<string, string | string[]>, callback?: () => void): void {
    if (callback) process.nextTick(callback)
  }

  /** Registers `callback` for the socket's `'timeout'` (never emitted; see {@link H3Socket.setTimeout}). */
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms, callback)
    return this
  }

  override write(chunk: any, encoding?: any, callback?: any): boolean {
    if (typeof encoding === 'function') {
      callback = encoding
      encoding = undefined
    }
    if (this.writableEnded) {
      const err = new H3Error('ERR_H3_ALREADY_RESPONDED', `write after end of ${this.req.method} ${this.req.url}`)
      if (typeof callback === 'function') process.nextTick(callback, err)
      return false
    }
    if (!this.#headSent && !this.destroyed) this.#implicitHead()
    if (this.#noBody) {
      if (typeof callback === 'function') process.nextTick(callback)
      return true
    }
    this.#written = true
    return encoding === undefined ? super.write(chunk, callback) : super.write(chunk, encoding, callback)
  }

  override end(chunk?: any, encoding?: any, callback?: any): this {
    if (typeof chunk === 'function') {
      callback = chunk
      chunk = undefined
      encoding = undefined
    } else if (typeof encoding === 'function') {
      callback = encoding
      encoding = undefined
    }
    if (this.writableEnded) {
      if (typeof callback === 'function') {
        if (this.writableFinished) process.nextTick(callback)
        else this.once('finish', callback)
      }
      return this
    }
    if (!this.#headSent && !this.destroyed) {
      const s = this.statusCode
      if (chunk != null && !this.#written && !this.#headers.has('content-length') && s !== 204 && s !== 304) {
        const length = typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : (chunk as Uint8Array).byteLength
        this.#headers.set('content-length', { name: 'content-length', value: String(length) })
      }
      this.#implicitHead()
    }
    if (this.#noBody) chunk = undefined
    if (chunk != null) {
      this.#written = true
      if (encoding === undefined) super.end(chunk, callback)
      else super.end(chunk, encoding, callback)
    } else {
      super.end(callback)
    }
    return this
  }

  #checkNotSent(name: string): void {
    if (this.#headSent) {
      throw new H3Error('ERR_H3_ALREADY_RESPONDED', `cannot set header ${String(name)}: the headers of ${this.req.method} ${this.req.url} were sent`)
    }
  }

  #implicitHead(): void {
    this.writeHead(this.statusCode)
  }

  /** Hands the response to h3node: with a streamed body, or complete without one. */
  #commit(withBody: boolean): void {
    if (this.#committed) return
    this.#committed = true
    const fields: [string, string][] = []
    for (const [key, { value }] of this.#headers) {
      if (CONNECTION_FIELDS.has(key)) continue
      if (Array.isArray(value)) for (const v of value) fields.push([key, String(v)])
      else fields.push([key, String(value)])
    }
    if (this.sendDate && !this.#headers.has('date')) fields.push(['date', httpDate()])
    let body: ReadableStream<Uint8Array> | null = null
    if (!this.#noBody && (withBody || this.#trailers)) {
      body = new ReadableStream<Uint8Array>(
        {
          start: (c) => {
            this.#controller = c
            if (!withBody) {
              this.#closed = true
              c.close()
            }
          },
          pull: () => {
            const w = this.#waiting
            this.#waiting = null
            w?.()
          },
          cancel: () => {
            // h3node stopped reading it: the client reset or stopped the stream.
            this.#clientAborted = true
            this.destroy()
          },
        },
        { highWaterMark: 64 * 1024, size: (c) => c.byteLength },
      )
    }
    let response: Response
    try {
      response = new Response(body, { status: this.statusCode, headers: fields })
    } catch (err) {
      this.#onFailure(err)
      response = new Response('Internal Server Error', { status: 500, headers: { 'content-type': 'text/plain;charset=utf-8' } })
    }
    const trailers = body ? () => this.#trailers ?? undefined : undefined
    this.#sent = this.#h3.respond(response, trailers ? { trailers } : undefined)
  }

  /** @internal */
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (!this.#committed) this.#commit(true)
    const c = this.#controller
    if (chunk.byteLength === 0 || !c || this.#closed) {
      callback()
      return
    }
    try {
      c.enqueue(chunk)
    } catch {
      // The body was cancelled (the client went away): destroy() follows.
      callback()
      return
    }
    if ((c.desiredSize ?? 0) > 0) callback()
    else this.#waiting = callback
  }

  /** @internal */
  override _final(callback: (error?: Error | null) => void): void {
    if (!this.#committed) {
      this.#commit(false)
    } else if (this.#controller && !this.#closed) {
      this.#closed = true
      try {
        this.#controller.close()
      } catch {
        // cancelled meanwhile
      }
    }
    // 'finish' once h3node handed the whole response to QUIC.
    ;(this.#sent ?? Promise.resolve()).then(() => callback())
  }

  /** @internal the client went away: nothing more goes on the wire. */
  clientAborted(): void {
    this.#clientAborted = true
  }

  /** @internal */
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const w = this.#waiting
    this.#waiting = null
    if (!this.writableFinished && !this.#clientAborted) {
      // The app gave up on the response: the peer must not take it as complete.
      const reason = err ?? new H3Error('ERR_H3_STREAM_RESET', `the response to ${this.req.method} ${this.req.url} was destroyed before its end`)
      if (!this.#committed) {
        this.#committed = true
        // h3node resets a stream whose body fails; it has no reset before the headers.
        const failing = new ReadableStream<Uint8Array>({ start: (c) => c.error(reason) })
        this.#sent = this.#h3.respond(new Response(failing, { status: 500 }))
      } else if (this.#controller && !this.#closed) {
        this.#closed = true
        this.#controller.error(reason)
      }
    }
    w?.()
    // As Node's ServerResponse: destroying never emits 'error'.
    callback(null)
  }
}

function reportToConsole(error: unknown): void {
  console.error('h3node/fastify: request failed:', error)
}

function checkApp(app: unknown): asserts app is AnyFastifyInstance {
  const a = app as Partial<AnyFastifyInstance> | null
  if (typeof a !== 'object' || a === null || typeof a.routing !== 'function' || typeof a.ready !== 'function') {
    throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'argument app must be a Fastify instance (fastify 5 or newer: it needs app.routing)')
  }
}

function checkFunction(o: Record<string, unknown>, name: string): void {
  if (o[name] !== undefined && typeof o[name] !== 'function') {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option ${name} must be a function, got ${typeof o[name]}`)
  }
}

/** Routes one h3node request into Fastify. */
function dispatch(app: AnyFastifyInstance, h3: IncomingRequest, onError: (error: unknown, request: IncomingRequest) => void): void {
  let res: H3ServerResponse | null = null
  const socket = new H3Socket(h3, {
    destroy: (err) => {
      if (res && !res.destroyed) res.destroy(err)
    },
    end: () => {
      if (res && !res.writableEnded && !res.destroyed) res.end()
    },
  })
  const req = new H3IncomingMessage(h3, socket)
  const response = new H3ServerResponse(req, (err) => onError(err, h3))
  res = response
  const signal = h3.signal
  const onAbort = (): void => {
    response.clientAborted()
    req.abort()
    if (!response.destroyed) response.destroy()
    if (!req.destroyed) req.destroy(req.readableEnded ? undefined : (signal.reason as Error))
  }
  if (signal.aborted) {
    queueMicrotask(onAbort)
  } else {
    signal.addEventListener('abort', onAbort, { once: true })
  }
  response.once('close', () => {
    signal.removeEventListener('abort', onAbort)
    if (req.destroyed) return
    if (!response.writableFinished) {
      // The app destroyed the response (or the client went away): the exchange is over.
      req.destroy()
      return
    }
    // As Node: an unread body is dumped (here: STOP_SENDING); the request closes after its end.
    if (!req.readableEnded && req.listenerCount('data') === 0 && req.listenerCount('readable') === 0) req.dump()
  })
  try {
    app.routing(req, response)
  } catch (err) {
    onError(err, h3)
    if (!response.headersSent && !response.destroyed) {
      response.statusCode = 500
      response.setHeader('content-type', 'text/plain;charset=utf-8')
      response.end('Internal Server Error')
    } else if (!response.writableEnded) {
      response.destroy(err as Error)
    }
  }
}

function handleOther(h3: IncomingRequest, onWebTransport: ((req: IncomingRequest) => void) | undefined, onError: (error: unknown, request: IncomingRequest) => void): boolean {
  if (h3.isWebTransport && onWebTransport) {
    try {
      onWebTransport(h3)
    } catch (err) {
      onError(err, h3)
      if (!h3.responded) void h3.respond(new Response(null, { status: 500 }))
    }
    return true
  }
  if (h3.method === 'CONNECT') {
    void h3.respond(new Response(null, { status: 405 }))
    return true
  }
  return false
}

/**
 * Makes a handler that answers h3node requests with a Fastify app, for a
 * server you run yourself (to mix the app with other routes, WebTransport
 * or your own `for await` loop). The first request waits for
 * `app.ready()`. Use {@link serveFastify} to have the server made for you.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { listen } from 'h3node'
 * import { fastifyHandler } from 'h3node/fastify'
 *
 * const app = Fastify()
 * app.get('/', async () => 'hello over HTTP/3')
 * await app.ready()
 * const handle = fastifyHandler(app)
 * const server = await listen({ port: 4433 })
 * for await (const req of server) {
 *   if (new URL(req.url).pathname === '/ping') req.respond(new Response('pong'))
 *   else handle(req)
 * }
 * ```
 */
export function fastifyHandler(app: AnyFastifyInstance, options: FastifyHandlerOptions = {}): (req: IncomingRequest) => void {
  checkApp(app)
  if (typeof options !== 'object' || options === null) throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'argument options must be an object')
  checkFunction(options as Record<string, unknown>, 'onError')
  checkFunction(options as Record<string, unknown>, 'onWebTransport')
  const onError = options.onError ?? reportToConsole
  const onWebTransport = options.onWebTransport
  let ready = false
  let readying: Promise<unknown> | null = null
  return (h3: IncomingRequest) => {
    if (handleOther(h3, onWebTransport, onError)) return
    if (ready) {
      dispatch(app, h3, onError)
      return
    }
    readying ??= Promise.resolve(app.ready()).then(() => {
      ready = true
    })
    readying.then(
      () => dispatch(app, h3, onError),
      (err) => {
        onError(err, h3)
        if (!h3.responded) void h3.respond(new Response('Internal Server Error', { status: 500, headers: { 'content-type': 'text/plain;charset=utf-8' } }))
      },
    )
  }
}

/**
 * Serves a Fastify app over HTTP/3: waits for `app.ready()`, starts an
 * h3node server with `options` (those of `listen`) and routes every
 * request into the app. The app may also listen on TCP (`app.listen`,
 * before or after): both serve the same routes, hooks and plugins. With
 * `closeWithApp` (default) `app.close()` closes the HTTP/3 server too;
 * `server.close()` closes only the HTTP/3 server.
 *
 * Throws `ERR_H3_INVALID_ARGUMENT` if `app` is not a Fastify instance,
 * `ERR_H3_INVALID_OPTION` naming a bad option, and the errors of `listen`
 * (`ERR_H3_ADDRESS_IN_USE`, ...); an app that fails to load rejects with
 * its own error.
 *
 * @returns the h3node `Server` (`address()`, `certificate`, `close()`);
 * do not iterate it, the adapter takes its requests.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { serveFastify } from 'h3node/fastify'
 *
 * const app = Fastify()
 * app.get('/hello/:name', async (request) => ({ hello: request.params.name, protocol: request.raw.httpVersion }))
 * const server = await serveFastify(app, { port: 4433, host: '127.0.0.1' })
 * await app.listen({ port: 8080 })     // optional: the same app over HTTP/1.1
 * // ...
 * await app.close()                     // closes both
 * ```
 */
export async function serveFastify(app: AnyFastifyInstance, options: FastifyServeOptions = {}): Promise<Server> {
  checkApp(app)
  if (typeof options !== 'object' || options === null) throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'argument options must be an object')
  const o = options as Record<string, unknown>
  if (o.closeWithApp !== undefined && typeof o.closeWithApp !== 'boolean') {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option closeWithApp must be a boolean, got ${String(o.closeWithApp)}`)
  }
  checkFunction(o, 'onWebTransport')
  checkFunction(o, 'onError')
  const { closeWithApp = true, onWebTransport, ...listenOptions } = options
  let server: Server | null = null
  if (closeWithApp) {
    const close = async (): Promise<void> => {
      await server?.close()
    }
    try {
      // Before the app's own listener and plugins close: HTTP/3 requests in flight finish first.
      app.addHook('preClose', close)
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'FST_ERR_INSTANCE_ALREADY_LISTENING') throw err
      // addHook is closed once the app listens; avvio's onClose is not (and not in Fastify's types).
      ;(app as unknown as { onClose(hook: () => Promise<void>): unknown }).onClose(close)
    }
  }
  await app.ready()
  const s = new Server(listenOptions)
  server = s
  const onError = (err: unknown, req: IncomingRequest): void => s.reportError(err, req)
  s.setHandler((h3) => {
    if (!handleOther(h3, onWebTransport, onError)) dispatch(app, h3, onError)
  })
  return s
}
