/**
 * The HTTP/3 server: {@link listen} for `for await` scripts, {@link serve}
 * for `fetch(request) => Response` handlers.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'

import { IncomingBody, OutgoingBody, appendFields, appendSection, flattenHeaders, toHeaders } from './body'
import { generateDevCertificate, type DevCertificate } from './cert'
import { H3Codes, H3Error, fromNative } from './errors'
import { native, Ev, commandQueue, dispatchAll, sessionPort, splitSection, streamPort, takeEvents, warnIfRuntimeDiffers, type NativeEvent, type StreamPort } from './native'
import { checkBoolean, checkInteger, resolveTransport, type TransportOptions } from './options'
import { Inbox } from './inbox'
import { DatagramDuplexStream, WebTransportSession, type SessionLimits } from './webtransport'

/** Where a request came from. */
export interface ConnectionInfo {
  /** Connection id, unique within the server. */
  readonly id: number
  /** Peer IP address. */
  readonly remoteAddress: string
  /** Peer UDP port. */
  readonly remotePort: number
  /** Local IP address. */
  readonly localAddress: string
  /** Local UDP port. */
  readonly localPort: number
  /** Negotiated ALPN (`'h3'`). */
  readonly alpn: string
  /** Whether the TLS session was resumed. */
  readonly resumed: boolean
  /** The SNI server name the client sent, if any. */
  readonly serverName: string | null
}

/** Transport statistics of one connection. */
export interface ConnectionStats {
  /** Smoothed round-trip time, milliseconds. */
  rttMs: number
  /** Congestion window, bytes. */
  cwnd: number
  /** Packets sent. */
  sentPackets: number
  /** Packets received. */
  recvPackets: number
  /** Packets declared lost. */
  lostPackets: number
  /** UDP payload bytes sent. */
  sentBytes: number
  /** UDP payload bytes received. */
  recvBytes: number
  /** Datagrams received. */
  datagramsReceived: number
  /** Datagrams queued for sending. */
  datagramsSent: number
  /** Datagrams received or sent for a flow that is unknown or closed (dropped). */
  datagramsDroppedUnknownFlow: number
  /** Outgoing datagrams dropped because the send queue was full (the oldest goes). */
  datagramsDroppedSendQueueFull: number
  /** Outgoing datagrams dropped because they exceed what the peer accepts. */
  datagramsDroppedTooLarge: number
  /** Incoming datagrams dropped from QUIC's full receive queue (the oldest goes) before they were read. */
  datagramsDroppedReceiveQueueFull: number
}

/** Options of {@link listen}. */
export interface ListenOptions extends TransportOptions, EndpointOptions {
  /**
   * Accept WebTransport sessions: the server advertises WebTransport in its
   * SETTINGS (the identifiers Chromium, Firefox and Safari each look for)
   * and extended CONNECT requests with `:protocol` `webtransport` arrive in
   * the request loop, where {@link IncomingRequest.acceptWebTransport}
   * accepts them. Needs `datagrams`. Default `false`.
   */
  webTransport?: boolean
  /**
   * How long {@link Server.close} lets in-flight requests finish after
   * GOAWAY before closing connections, milliseconds. Default `5000`.
   */
  closeGraceMs?: number
  /**
   * Called with errors of request handlers (they become 500 responses or
   * stream resets) and responses that could not be sent. Default: `console.error`.
   */
  onError?: (error: unknown, request: IncomingRequest) => void
}

/** Options of {@link IncomingRequest.acceptWebTransport}. */
export interface AcceptWebTransportOptions {
  /** Extra response headers sent with the 200. */
  headers?: HeadersInit
}

/** Options of {@link IncomingRequest.respond}. */
export interface RespondOptions {
  /** Trailers sent after the body. A function is called once the body is sent. */
  trailers?: HeadersInit | (() => HeadersInit | undefined)
}

/**
 * A request's abort state; its `AbortSignal` is made only when someone asks
 * for it (most handlers never do), already aborted if the request was.
 */
class LazyAbort {
  #controller: AbortController | null = null
  #aborted = false
  #reason: unknown = undefined

  get aborted(): boolean {
    return this.#aborted
  }

  get reason(): unknown {
    return this.#reason
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort(this.#reason)
    }
    return this.#controller.signal
  }

  abort(reason: unknown): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.#controller?.abort(reason)
  }
}

/**
 * The `Request` a request is shown as: a real `Request` (made by its
 * constructor, so every method and brand check works) whose `signal` is
 * the request's own abort signal, as is the `signal` of its `clone()`.
 *
 * Passing the signal to the `Request` constructor instead (`init.signal`)
 * links it in undici with a listener, a WeakRef and a FinalizationRegistry
 * entry per request: 8-15 µs of server CPU per request under load
 * (`serve({ fetch })` hello world, 4 connections x 64 streams, Node 24,
 * alternating runs: 38-47 µs per request with it, 27-34 with this class),
 * and p99 latency about twice as long. The cost of not linking: a `Request` made
 * with this one as its input (`new Request(request)`, `fetch(request)`)
 * gets a signal of its own; one made with it as its init
 * (`new Request(url, request)`) or given `{ signal: request.signal }`
 * follows it.
 */
class H3Request extends Request {
  #abort: LazyAbort

  constructor(url: string, init: RequestInit | undefined, abort: LazyAbort) {
    super(url, init)
    this.#abort = abort
  }

  /** @internal */
  static signalOf(r: H3Request): AbortSignal {
    return r.#abort.signal
  }

  override clone(): Request {
    const copy = super.clone()
    const abort = this.#abort
    Object.defineProperty(copy, 'signal', { get: () => abort.signal, configurable: true })
    return copy
  }
}
// An accessor on the prototype, once (the platform's `Request` declares
// `signal` as a plain property, which TypeScript will not let a getter override).
Object.defineProperty(H3Request.prototype, 'signal', {
  get(this: H3Request) {
    return H3Request.signalOf(this)
  },
  configurable: true,
})

/**
 * What the server keeps of a request stream until its response is over
 * (and its request body, if any). It does not hold the `IncomingRequest`:
 * once the handler is done with that (and with its `Request`, `Response`
 * and their streams), they are garbage even while the stream still waits
 * for its Finished event, instead of living through a young-generation GC
 * and being copied by it.
 */
type StreamState = {
  conn: number
  stream: number
  /** Trailers of the request body (names and values), once they arrived. */
  trailers: string[] | null
  body: IncomingBody | null
  out: OutgoingBody | null
  abort: LazyAbort
  finished: boolean
  /** HTTP datagrams of the request (created on first use). */
  datagrams: DatagramDuplexStream | null
  /** The WebTransport session this CONNECT opened. */
  session: WebTransportSession | null
}

/**
 * One request, as yielded by `for await (const req of server)`.
 * `request` is a standard `Request`; answer with {@link respond}.
 */
export class IncomingRequest {
  // `declare`d and assigned in the constructor: a class field would be
  // defined on every request through V8's slow define path (measured: about
  // 600 instructions per field).
  /** The connection the request arrived on. */
  declare readonly connection: ConnectionInfo
  /** Whether the request arrived in 0-RTT early data (replayable). */
  declare readonly earlyData: boolean
  /** The QUIC stream id of the request. */
  declare readonly streamId: number
  #server: Server
  /** The header section as it crossed: names and values joined with NUL. */
  #section: string
  /** `#section` split, on first need (most handlers never read headers). */
  #fields: string[] | null = null
  #request: Request | null = null
  #state: StreamState
  #responded = false
  #trailers: Headers | null = null
  #method = 'GET'
  #url: string
  #protocol: string | null = null
  /** Where the section's regular fields start (after the pseudo-headers). */
  #fieldsAt = 0

  /** @internal `section`: the header section, names and values joined with NUL, pseudo-headers first. */
  constructor(server: Server, conn: ConnectionInfo, stream: number, section: string, early: boolean, state: StreamState) {
    this.#server = server
    this.connection = conn
    this.streamId = stream
    this.#section = section
    this.earlyData = early
    this.#state = state
    let scheme = 'https'
    let authority = ''
    let path = '/'
    // Pseudo-headers come first (the native side rejects any later one), so
    // the URL is read off the front of the section without splitting it.
    let i = 0
    while (i < section.length && section.charCodeAt(i) === 58) {
      const eq = section.indexOf('\0', i)
      if (eq < 0) break
      let end = section.indexOf('\0', eq + 1)
      if (end < 0) end = section.length
      const value = section.slice(eq + 1, end)
      switch (section.slice(i, eq)) {
        case ':method':
          this.#method = value
          break
        case ':scheme':
          scheme = value
          break
        case ':authority':
          authority = value
          break
        case ':path':
          path = value
          break
        case ':protocol':
          this.#protocol = value
          break
      }
      i = end + 1
    }
    this.#fieldsAt = i
    if (!authority) {
      const f = this.#fieldList()
      for (let i = 0; i < f.length; i += 2) if (f[i] === 'host') authority = f[i + 1]
    }
    authority ||= `${conn.localAddress.includes(':') ? `[${conn.localAddress}]` : conn.localAddress}:${conn.localPort}`
    this.#url = `${scheme}://${authority}${path.startsWith('/') ? path : '/' + path}`
  }

  #fieldList(): string[] {
    return (this.#fields ??= splitSection(this.#section))
  }

  /** The request method. */
  get method(): string {
    return this.#method
  }

  /** The absolute request URL (`https://authority/path`). */
  get url(): string {
    return this.#url
  }

  /** The request headers (pseudo-headers left out). */
  get headers(): Headers {
    return this.#request?.headers ?? toHeaders(this.#fieldList())
  }

  /** The `:protocol` of an extended CONNECT (RFC 9220), else `null`. */
  get protocol(): string | null {
    return this.#protocol
  }

  /**
   * Whether this is a WebTransport session request (extended CONNECT with
   * `:protocol` `webtransport` or `webtransport-h3`, on a server with
   * `webTransport` on). Answer it with {@link acceptWebTransport}, or refuse
   * it with `respond()` and a non-2xx status.
   */
  get isWebTransport(): boolean {
    return this.#state.session !== null || (this.#server.webTransport && this.#method === 'CONNECT' && (this.#protocol === 'webtransport' || this.#protocol === 'webtransport-h3'))
  }

  /**
   * The request as a standard `Request` (built on first access). The
   * platform's `Request` cannot be a CONNECT, so a WebTransport session
   * request appears as a `GET` with `upgrade: webtransport` (the way
   * WebSocket upgrades look to fetch handlers); accept it with
   * {@link acceptWebTransport}. Reading `request` of any other CONNECT
   * throws `ERR_H3_CONNECT_REQUEST`: `method`, `url`, `headers` and
   * `protocol` describe it.
   *
   * Its `signal` is {@link signal} (so is the `signal` of its `clone()`,
   * and of a `Request` made with it as the init, `new Request(url,
   * request)`). A `Request` made with it as the input (`new
   * Request(request)`, `fetch(request)`) gets a signal of its own: pass
   * `{ signal: request.signal }` to carry the abort along.
   */
  get request(): Request {
    if (this.#request) return this.#request
    const webTransport = this.isWebTransport
    if (!webTransport && this.#method === 'CONNECT') {
      throw new H3Error('ERR_H3_CONNECT_REQUEST', `a CONNECT request has no Request form; use req.method, req.url, req.headers and req.protocol`)
    }
    // No init at all for a GET without a body (a WebTransport CONNECT
    // appears as one): undici reads every RequestInit member off an init
    // object, about 2,800 instructions a request for an empty one.
    let init: (RequestInit & { duplex?: 'half' }) | undefined
    if (!webTransport && this.#method !== 'GET') init = { method: this.#method }
    if (this.#state.body) {
      init ??= {}
      init.body = this.#state.body.stream
      init.duplex = 'half'
    }
    // The fields of the connection's last request again (a client sends
    // the same ones request after request): copied from a Headers made
    // once, which skips the per-call checks of `Headers.append`.
    // (Not when the fields were split already: `req.headers` was read first.)
    const fields = this.#fields ? '' : this.#section.slice(this.#fieldsAt)
    const same = fields ? this.#server.repeatedFields(this.connection.id, fields) : null
    if (same) {
      init ??= {}
      init.headers = same
    }
    const request = new H3Request(this.#url, init, this.#state.abort)
    // Otherwise the fields go straight into the request's own Headers. A
    // stream body has no type of its own, so no content-type is there first.
    if (!same) {
      if (this.#fields) appendFields(request.headers, this.#fields)
      else appendSection(request.headers, this.#section)
    }
    if (webTransport) request.headers.set('upgrade', 'webtransport')
    this.#request = request
    return request
  }

  /** Aborts when the client resets the stream, stops reading, or the connection dies before the response is complete. */
  get signal(): AbortSignal {
    return this.#state.abort.signal
  }

  /** Trailers the client sent after the body, once the body has been read to the end. */
  get trailers(): Headers | null {
    if (!this.#trailers && this.#state.trailers) this.#trailers = toHeaders(this.#state.trailers)
    return this.#trailers
  }

  /** Whether {@link respond} or {@link acceptWebTransport} was called. */
  get responded(): boolean {
    return this.#responded
  }

  /**
   * HTTP datagrams (RFC 9297) of this request: flow id = the stream id / 4.
   * Datagrams that arrive before the first access are dropped and counted
   * in `server.stats()`.
   */
  get datagrams(): DatagramDuplexStream {
    if (this.#state.session) return this.#state.session.datagrams
    this.#state.datagrams ??= this.#server.requestDatagrams(this.connection.id, this.streamId)
    return this.#state.datagrams
  }

  /**
   * Accepts a WebTransport session: sends a 200 (with `headers`) and
   * returns the session, which is ready at once. Streams the client opened
   * before this call (held natively, up to `maxBufferedStreams`) are
   * delivered now. Throws `ERR_H3_NOT_WEBTRANSPORT` if the request is not a
   * WebTransport CONNECT, `ERR_H3_ALREADY_RESPONDED` if answered already.
   */
  acceptWebTransport(options: AcceptWebTransportOptions = {}): WebTransportSession {
    if (!this.isWebTransport) {
      throw new H3Error('ERR_H3_NOT_WEBTRANSPORT', `${this.#method} ${this.#url} is not a WebTransport request${this.#server.webTransport ? '' : ' (the server was started without webTransport: true)'}`)
    }
    if (this.#responded) {
      throw new H3Error('ERR_H3_ALREADY_RESPONDED', `request ${this.#method} ${this.#url} was already responded to`)
    }
    if (this.#state.finished || this.#state.abort.aborted) {
      throw new H3Error('ERR_H3_SESSION_CLOSED', 'the client went away before the session was accepted')
    }
    this.#responded = true
    const head = [':status', '200']
    if (this.headers.get('sec-webtransport-http3-draft02') === '1') head.push('sec-webtransport-http3-draft', 'draft02')
    if (options.headers) flattenHeaders(new Headers(options.headers), head)
    return this.#server.acceptSession(this, this.#state, head)
  }

  /**
   * Sends `response` (or what the promise resolves to). A rejected promise
   * or a non-`Response` value gives a 500 (reported to `onError`); a body
   * that fails midway resets the stream with H3_INTERNAL_ERROR. Calling it
   * twice throws `ERR_H3_ALREADY_RESPONDED`.
   *
   * @returns a promise that settles when the response has been handed to
   * QUIC (or failed); it never rejects.
   */
  respond(response: Response | PromiseLike<Response>, options?: RespondOptions): Promise<void> {
    if (this.#responded) {
      throw new H3Error('ERR_H3_ALREADY_RESPONDED', `request ${this.#method} ${this.#url} was already responded to`)
    }
    this.#responded = true
    if (this.isWebTransport) {
      // A 2xx would open the session without its object: only refusals here.
      const refuse = Promise.resolve(response).then((r) => {
        if (r instanceof Response && r.status >= 200 && r.status < 300) {
          throw new H3Error('ERR_H3_INVALID_RESPONSE', 'a WebTransport request is accepted with acceptWebTransport(), not a 2xx respond()')
        }
        return r
      })
      return this.#send(refuse, options)
    }
    return this.#send(response, options)
  }

  #send(input: Response | PromiseLike<Response>, options?: RespondOptions): Promise<void> {
    // A Response given as it is goes out in this turn: no await in between.
    if (input instanceof Response) return this.#sendResponse(input, options)
    return Promise.resolve(input).then(
      (res) =>
        res instanceof Response
          ? this.#sendResponse(res, options)
          : this.#sendError(new H3Error('ERR_H3_INVALID_RESPONSE', `handler returned ${typeof res}, not a Response`)),
      (err) => this.#sendError(err),
    )
  }

  /** The handler failed or gave no Response: reported, and a 500 if the client is still there. */
  #sendError(err: unknown): void {
    this.#server.reportError(err, this)
    if (!this.#state.finished && !this.#state.abort.aborted) {
      const port = this.#server.port(this.connection.id, this.streamId)
      port.sendHeaders([':status', '500', 'content-type', 'text/plain;charset=utf-8'], false)
      port.write(Buffer.from('Internal Server Error'), true)
    }
  }

  async #sendResponse(res: Response, options?: RespondOptions): Promise<void> {
    if (this.#state.finished || this.#state.abort.aborted) {
      await res.body?.cancel(this.#state.abort.reason).catch(() => {})
      return
    }
    const port = this.#server.port(this.connection.id, this.streamId)
    const head = flattenHeaders(res.headers, [':status', String(res.status)])
    const body = this.#method === 'HEAD' || res.status === 204 || res.status === 304 ? null : res.body
    if (!body) {
      port.sendHeaders(head, true)
      await res.body?.cancel().catch(() => {})
      return
    }
    port.sendHeaders(head, false)
    const out = this.#server.outgoing(this.#state, port)
    const t = options?.trailers
    try {
      await out.pump(
        body,
        t &&
          (() => {
            const init = typeof t === 'function' ? t() : t
            return init ? flattenHeaders(new Headers(init)) : undefined
          }),
      )
    } catch (err) {
      // A peer abort is not a handler error.
      if (!this.#state.abort.aborted) this.#server.reportError(err, this)
      // The stream was reset: no Finished event will come.
      this.#server.settle(this.#state)
    }
  }
}

/** Address a server is bound to. */
export interface AddressInfo {
  /** IP address. */
  address: string
  /** UDP port. */
  port: number
  /** `'IPv4'` or `'IPv6'`. */
  family: 'IPv4' | 'IPv6'
}

/** @internal the address a native server is bound to. */
export function addressOf(n: { address(): string[] }): AddressInfo {
  const [address, port, family] = n.address()
  return { address, port: Number(port), family: family as 'IPv4' | 'IPv6' }
}

function pem(value: string | Buffer, name: string): Buffer {
  if (Buffer.isBuffer(value)) return value
  if (typeof value !== 'string') throw new H3Error('ERR_H3_INVALID_OPTION', `option ${name} must be PEM text, a Buffer or a file path`)
  if (value.includes('-----BEGIN')) return Buffer.from(value)
  try {
    return readFileSync(value)
  } catch (e) {
    throw new H3Error(name === 'cert' ? 'ERR_H3_INVALID_CERT' : 'ERR_H3_INVALID_KEY', `cannot read ${name} file ${value}: ${(e as Error).message}`, { cause: e })
  }
}

/** Where and as whom a server listens: the options {@link listen} and `listenQuic` share. */
export interface EndpointOptions {
  /** UDP port; 0 picks a free one (see `address()`). Default `4433`. */
  port?: number
  /**
   * IP address to bind. `'::'` is dual-stack (IPv4 too) unless `ipv6Only`.
   * Default `'::'`.
   */
  host?: string
  /** With host `'::'`, refuse IPv4. Default `false`. */
  ipv6Only?: boolean
  /**
   * Certificate chain, leaf first: PEM text, a Buffer of PEM, or a file path.
   * Without `cert` and `key`, a development certificate is generated
   * (see `certificate` on the server).
   */
  cert?: string | Buffer
  /** Private key: PEM text, a Buffer of PEM, or a file path. */
  key?: string | Buffer
  /** Validity of the generated development certificate, days (1 to 14). Default `14`. */
  devCertDays?: number
  /**
   * Stateless Retry (address validation) before accepting a connection:
   * protects against spoofed sources at the cost of one round trip.
   * Default `false`.
   */
  retry?: boolean
}

/** @internal validates the endpoint options; makes a dev certificate when no cert is given. */
export function resolveEndpoint(options: EndpointOptions): {
  certificate: DevCertificate | null
  native: { host: string; port: number; ipv6Only: boolean; cert: Buffer; key: Buffer; retry: boolean }
} {
  const o = options as Record<string, unknown>
  const port = checkInteger(o, 'port', 4433, 0, 65535)
  const host = options.host ?? '::'
  if (typeof host !== 'string' || isIP(host) === 0) {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option host must be an IPv4 or IPv6 address, got ${String(host)}`)
  }
  const retry = checkBoolean(o, 'retry', false)
  const ipv6Only = checkBoolean(o, 'ipv6Only', false)
  const days = checkInteger(o, 'devCertDays', 14, 1, 14)
  if (options.cert === undefined && options.key === undefined) {
    const dev = generateDevCertificate({ days, names: host === '::' || host === '0.0.0.0' ? [] : [host] })
    const loopback = host === '127.0.0.1' || host === '::1' || host.startsWith('127.')
    if (!loopback) {
      process.emitWarning(`h3node is serving a generated development certificate on ${host}; pass cert and key for production`, {
        code: 'H3NODE_DEV_CERT',
      })
    }
    return { certificate: dev, native: { host, port, ipv6Only, retry, cert: Buffer.from(dev.cert), key: Buffer.from(dev.key) } }
  }
  if (options.cert === undefined) throw new H3Error('ERR_H3_INVALID_OPTION', 'option key was given without cert')
  if (options.key === undefined) throw new H3Error('ERR_H3_INVALID_OPTION', 'option cert was given without key')
  return { certificate: null, native: { host, port, ipv6Only, retry, cert: pem(options.cert, 'cert'), key: pem(options.key, 'key') } }
}

/**
 * An HTTP/3 server. Iterate it with `for await` to receive requests; close
 * it with {@link close} (or `await using`).
 */
export class Server implements AsyncIterable<IncomingRequest>, AsyncDisposable {
  /** The generated development certificate, when no `cert` was given. */
  readonly certificate: DevCertificate | null
  #native: InstanceType<typeof native.NativeServer>
  #conns = new Map<number, ConnectionInfo>()
  #streams = new Map<number, Map<number, StreamState>>()
  #inbox = new Inbox<IncomingRequest>()
  #closing: Promise<void> | null = null
  #closed = false
  #resolveClosed!: () => void
  #closedPromise: Promise<void>
  #readWindow: number
  #writeWindow: number
  #maxWriteWindow: number
  #unreadBodyMs: number
  #graceMs: number
  #onError: (error: unknown, request: IncomingRequest) => void
  #handler: ((req: IncomingRequest) => void) | null = null
  #webTransport: boolean
  #datagramQueue: number
  #maxDatagram = new Map<number, number>()
  /** Per connection: the regular fields of its last request, and a `Headers` of them once they came twice. */
  #lastFields = new Map<number, { fields: string; headers: Headers | null }>()
  #sessions = new Map<number, Map<number, WebTransportSession>>()

  /** @internal use {@link listen} */
  constructor(options: ListenOptions = {}) {
    const o = options as Record<string, unknown>
    this.#webTransport = checkBoolean(o, 'webTransport', false)
    const transport = resolveTransport(options, { webtransport: this.#webTransport })
    if (this.#webTransport && !transport.datagrams) {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option webTransport needs option datagrams (browsers open sessions only with HTTP/3 datagrams)')
    }
    this.#datagramQueue = transport.datagramQueueLength
    const endpoint = resolveEndpoint(options)
    this.certificate = endpoint.certificate
    this.#graceMs = checkInteger(o, 'closeGraceMs', 5000, 0, 2 ** 31)
    if (options.onError !== undefined && typeof options.onError !== 'function') {
      throw new H3Error('ERR_H3_INVALID_OPTION', 'option onError must be a function')
    }
    this.#onError = options.onError ?? ((e) => console.error('h3node: request handler failed:', e))
    this.#readWindow = transport.streamReadWindow
    this.#writeWindow = transport.streamWriteWindow
    this.#maxWriteWindow = transport.maxStreamWriteWindow
    this.#unreadBodyMs = transport.unreadBodyTimeoutMs
    this.#closedPromise = new Promise((r) => {
      this.#resolveClosed = r
    })
    try {
      this.#native = native.NativeServer.listen({ ...endpoint.native, transport }, () => this.#onBatch())
    } catch (e) {
      throw fromNative(e)
    }
    warnIfRuntimeDiffers(transport)
  }

  /** The bound address. */
  address(): AddressInfo {
    return addressOf(this.#native)
  }

  /** Number of open QUIC connections. */
  get connections(): number {
    return this.#native.connectionCount()
  }

  /**
   * Requests whose exchange is not over yet: the response is not complete,
   * or the request body is still being read. Returns to 0 when traffic stops.
   */
  get activeRequests(): number {
    let n = 0
    for (const m of this.#streams.values()) n += m.size
    return n
  }

  /** Transport statistics of a connection (`null` once it is gone). */
  async stats(connectionId: number): Promise<ConnectionStats | null> {
    return (await this.#native.stats(connectionId)) as ConnectionStats | null
  }

  /** Resolves when the server has fully closed. */
  get closed(): Promise<void> {
    return this.#closedPromise
  }

  /**
   * @internal `fields` (a request's regular fields, joined with NUL as they
   * crossed) as a `Headers` to copy into its `Request`, when the last
   * request of connection `conn` carried the very same ones; else `null`,
   * and `fields` becomes that last request's. The `Headers` is made once and
   * never handed out: `Request` copies it.
   *
   * Copying a made `Headers` skips `Headers.append`'s conversions (measured
   * 2026-11-24, Node 24, callgrind: 13 fields of a Chrome navigation, 61,000
   * instructions appended one by one against 36,000 copied; oha's 3 fields,
   * 10,400 against 8,700).
   */
  repeatedFields(conn: number, fields: string): Headers | null {
    const last = this.#lastFields.get(conn)
    if (last === undefined) {
      this.#lastFields.set(conn, { fields, headers: null })
      return null
    }
    if (last.fields !== fields) {
      last.fields = fields
      last.headers = null
      return null
    }
    return (last.headers ??= appendSection(new Headers(), fields))
  }

  /** @internal */
  port(conn: number, stream: number): StreamPort {
    return streamPort(this.#native, conn, stream)
  }

  /** @internal */
  outgoing(state: StreamState, port: StreamPort): OutgoingBody {
    state.out = new OutgoingBody(port, this.#writeWindow, this.#maxWriteWindow)
    return state.out
  }

  /** @internal */
  reportError(err: unknown, req: IncomingRequest): void {
    try {
      this.#onError(err, req)
    } catch {
      // An onError that throws must not take the server down.
    }
  }

  /** @internal used by {@link serve} */
  setHandler(h: (req: IncomingRequest) => void): void {
    this.#handler = h
  }

  /** Whether the server accepts WebTransport (the `webTransport` option). */
  get webTransport(): boolean {
    return this.#webTransport
  }

  /** WebTransport sessions open now, over all connections. */
  get webTransportSessions(): number {
    let n = 0
    for (const m of this.#sessions.values()) n += m.size
    return n
  }

  #limits(conn: number): SessionLimits {
    return {
      readWindow: this.#readWindow,
      writeWindow: this.#writeWindow,
      datagramQueue: this.#datagramQueue,
      maxDatagramSize: this.#maxDatagram.get(conn) ?? 0,
    }
  }

  /** @internal */
  requestDatagrams(conn: number, stream: number): DatagramDuplexStream {
    const n = this.#native
    // The flow id takes up to 8 bytes of each datagram.
    const max = Math.max(0, (this.#maxDatagram.get(conn) ?? 0) - varintLength(stream / 4))
    const q = commandQueue(n)
    return new DatagramDuplexStream((d) => {
      q.flush() // after the response head and writes queued before it
      return n.sendDatagram(conn, stream, d)
    }, max, this.#datagramQueue)
  }

  /** @internal */
  acceptSession(req: IncomingRequest, state: StreamState, head: string[]): WebTransportSession {
    const n = this.#native
    const conn = req.connection.id
    const sid = req.streamId
    const limits = this.#limits(conn)
    limits.maxDatagramSize = Math.max(0, limits.maxDatagramSize - varintLength(sid / 4))
    const session = new WebTransportSession(
      sessionPort(n, conn, sid),
      limits,
      true,
      sid,
      () => {
        this.#sessions.get(conn)?.delete(sid)
        state.finished = true
        this.#maybeDrop(state)
      },
    )
    state.session = session
    let m = this.#sessions.get(conn)
    if (!m) this.#sessions.set(conn, (m = new Map()))
    m.set(sid, session)
    commandQueue(n).headers(conn, sid, head, false)
    session.onReady()
    if (this.#closing) session.onDrain()
    return session
  }

  #sessionOf(conn: number, stream: number): WebTransportSession | undefined {
    const m = this.#sessions.get(conn)
    if (!m) return undefined
    for (const s of m.values()) if (s.owns(stream)) return s
    return undefined
  }

  #onBatch(): void {
    dispatchAll(takeEvents(this.#native), (e) => this.#dispatch(e))
  }

  #state(e: NativeEvent): StreamState | undefined {
    return this.#streams.get(e.conn)?.get(e.stream)
  }

  #drop(conn: number, stream: number): void {
    const m = this.#streams.get(conn)
    m?.delete(stream)
  }

  /** Forgets a stream once its response is over and its request body too. */
  #maybeDrop(s: StreamState): void {
    if (s.finished && (!s.body || s.body.done)) this.#drop(s.conn, s.stream)
  }

  /** @internal the response ended without a Finished event (its stream was reset). */
  settle(state: StreamState): void {
    state.finished = true
    this.#maybeDrop(state)
  }

  /**
   * One event. The events every request brings (Headers, Data, Sent,
   * Finished) are handled here; the rest in `#dispatchRare`. Kept apart
   * because V8 deoptimizes a function when a branch its optimized code never
   * ran is taken: with every kind in one function, the first connection
   * close or reset after warm-up threw the request path back to the
   * interpreter and cost a new TurboFan compile of the whole switch (35 ms
   * on the core the server shares; `--trace-deopt` showed three such
   * deoptimizations over two back-to-back oha loads).
   */
  #dispatch(e: NativeEvent): void {
    const kind = e.kind
    if (kind === Ev.Headers) return this.#onHeaders(e)
    if (kind === Ev.Data || kind === Ev.Sent) {
      if (this.#toSession(e)) return
      const s = this.#state(e)
      if (!s) return
      if (kind === Ev.Sent) {
        s.out?.sent(e.code)
        return
      }
      if (!s.body) return
      if (e.data && e.data.byteLength > 0) s.body.push(e.data)
      if (e.fin) s.body.end()
      return
    }
    if (kind === Ev.Finished) return this.#onFinished(e)
    this.#dispatchRare(e)
  }

  #onHeaders(e: NativeEvent): void {
    const conn = this.#conns.get(e.conn)
    const streams = this.#streams.get(e.conn)
    if (!conn || !streams) return
    const state: StreamState = {
      conn: e.conn,
      stream: e.stream,
      trailers: null,
      body: null,
      out: null,
      abort: new LazyAbort(),
      finished: false,
      datagrams: null,
      session: null,
    }
    const req = new IncomingRequest(this, conn, e.stream, e.section ?? '', e.early, state)
    const method = req.method
    if (!e.fin && method !== 'GET' && method !== 'HEAD' && method !== 'CONNECT') {
      state.body = new IncomingBody(this.port(e.conn, e.stream), this.#readWindow, () => this.#maybeDrop(state))
    }
    streams.set(e.stream, state)
    this.#deliver(req)
  }

  #onFinished(e: NativeEvent): void {
    const s = this.#state(e)
    if (!s) return
    // Finished carries the last Sent's bytes (crate/src/bridge.rs).
    if (e.code > 0) s.out?.sent(e.code)
    s.finished = true
    if (s.body && !s.body.done) {
      // The response is complete and nobody is reading the request
      // body: ask the client to stop sending it (STOP_SENDING, H3_NO_ERROR).
      if (!s.body.stream.locked) s.body.stream.cancel().catch(() => {})
      // The handler may still be reading it, or may have dropped its reader.
      else if (this.#unreadBodyMs > 0) this.#watchUnread(s.body)
    }
    this.#maybeDrop(s)
  }

  /**
   * Watches a request body whose response is complete and whose reader the
   * handler holds: when the reader took no bytes through a whole period of
   * `unreadBodyTimeoutMs` and bytes wait for it at the period's end, the
   * body is given up (STOP_SENDING H3_NO_ERROR, reads reject with
   * ERR_H3_BODY_ABANDONED), which lets the stream go. A period that ends
   * with bytes taken, or with none waiting (the reader waits for the
   * client), starts a new one.
   */
  #watchUnread(body: IncomingBody): void {
    const ms = this.#unreadBodyMs
    let read = body.read
    const timer = setInterval(() => {
      if (body.done) return clearInterval(timer)
      const now = body.read
      if (now !== read || !body.waiting) {
        read = now
        return
      }
      clearInterval(timer)
      body.abandon(new H3Error('ERR_H3_BODY_ABANDONED', `the response was complete and the request body went unread for ${ms} ms (unreadBodyTimeoutMs)`), H3Codes.NO_ERROR)
    }, ms)
    timer.unref()
  }

  /** A stream event of a WebTransport session's stream, not a request's: hands it to the session. */
  #toSession(e: NativeEvent): boolean {
    const wt = this.#sessions.has(e.conn) ? this.#sessionOf(e.conn, e.stream) : undefined
    wt?.onStreamEvent(e)
    return wt !== undefined
  }

  /** Every event but Headers, Data, Sent and Finished. */
  #dispatchRare(e: NativeEvent): void {
    if ((e.kind === Ev.Reset || e.kind === Ev.StopSending) && this.#toSession(e)) return
    switch (e.kind) {
      case Ev.ConnOpen:
        this.#conns.set(e.conn, {
          id: e.conn,
          remoteAddress: e.info?.remoteAddress ?? '',
          remotePort: e.info?.remotePort ?? 0,
          localAddress: e.info?.localAddress ?? '',
          localPort: e.info?.localPort ?? 0,
          alpn: e.info?.alpn ?? '',
          resumed: e.info?.resumed ?? false,
          serverName: e.info?.serverName ?? null,
        })
        this.#streams.set(e.conn, new Map())
        this.#maxDatagram.set(e.conn, e.info?.maxDatagramSize ?? 0)
        break
      case Ev.StreamOpen:
        this.#sessions.get(e.conn)?.get(e.code)?.onStreamOpen(e.stream)
        break
      case Ev.Datagram: {
        const session = this.#sessions.get(e.conn)?.get(e.stream)
        if (session) session.onDatagram(e.data!)
        else this.#state(e)?.datagrams?.push(e.data!)
        break
      }
      case Ev.SessionClosed:
        this.#sessions.get(e.conn)?.get(e.stream)?.onClosed(e.fin, e.code, e.text ?? '')
        break
      case Ev.SessionDrain:
        this.#sessions.get(e.conn)?.get(e.stream)?.onDrain()
        break
      case Ev.Trailers: {
        const s = this.#state(e)
        if (s) s.trailers = splitSection(e.section)
        break
      }
      case Ev.Reset: {
        const s = this.#state(e)
        if (!s) break
        const err =
          e.text === 'body timeout'
            ? new H3Error('ERR_H3_BODY_TIMEOUT', 'the request body stopped arriving (bodyTimeoutMs)', { wireCode: e.code })
            : e.text === 'send timeout'
              ? new H3Error('ERR_H3_SEND_TIMEOUT', 'the client stopped reading the response (sendTimeoutMs)', { wireCode: e.code })
              : new H3Error('ERR_H3_STREAM_RESET', `stream reset with code 0x${e.code.toString(16)}`, { wireCode: e.code })
        this.#abort(s, err)
        this.#drop(e.conn, e.stream)
        break
      }
      case Ev.PeerAddress: {
        // The connection migrated (NAT rebinding, new address): requests
        // from now on name the new address; earlier ones keep theirs.
        const old = this.#conns.get(e.conn)
        if (old) this.#conns.set(e.conn, { ...old, remoteAddress: e.info?.remoteAddress ?? old.remoteAddress, remotePort: e.info?.remotePort ?? old.remotePort, localAddress: e.info?.localAddress ?? old.localAddress, localPort: e.info?.localPort ?? old.localPort })
        break
      }
      case Ev.StopSending: {
        const s = this.#state(e)
        if (!s) break
        const err = new H3Error('ERR_H3_STOP_SENDING', `client stopped reading (code 0x${e.code.toString(16)})`, { wireCode: e.code })
        this.#abort(s, err)
        this.#maybeDrop(s)
        break
      }
      case Ev.ConnClose: {
        const streams = this.#streams.get(e.conn)
        if (streams) {
          const err = new H3Error('ERR_H3_CONNECTION_CLOSED', `connection closed${e.text ? `: ${e.text}` : ''}`, { wireCode: e.code })
          for (const s of streams.values()) this.#abort(s, err)
        }
        for (const session of this.#sessions.get(e.conn)?.values() ?? []) session.onFailed(err0(e))
        this.#sessions.delete(e.conn)
        this.#maxDatagram.delete(e.conn)
        this.#lastFields.delete(e.conn)
        this.#streams.delete(e.conn)
        this.#conns.delete(e.conn)
        break
      }
      case Ev.ServerClosed:
        this.#finishClose()
        break
    }
  }

  #abort(s: StreamState, err: H3Error): void {
    s.body?.fail(err)
    s.datagrams?.end(err)
    s.session?.onFailed(err)
    // After the response was complete, nothing is aborted: that is a normal end.
    if (s.finished) return
    s.finished = true
    s.abort.abort(err)
    s.out?.abort(err)
  }

  #deliver(req: IncomingRequest): void {
    if (this.#handler) {
      this.#handler(req)
      return
    }
    this.#inbox.push(req)
  }

  /** Yields requests until the server closes. */
  [Symbol.asyncIterator](): AsyncIterator<IncomingRequest> {
    return {
      next: () => this.#inbox.next(),
      return: async () => {
        await this.close()
        return { value: undefined, done: true }
      },
    }
  }

  /**
   * Graceful shutdown: stops accepting connections, sends GOAWAY on every
   * connection (requests already received go on; new ones are refused with
   * H3_REQUEST_REJECTED), closes each connection with H3_NO_ERROR when its
   * requests are done, and after `graceMs` (default: the `closeGraceMs`
   * option) closes the rest. Resolves when every connection is gone and
   * the native threads of this server are released.
   */
  close(graceMs: number = this.#graceMs): Promise<void> {
    if (!this.#closing) {
      this.#closing = this.#closedPromise
      commandQueue(this.#native).flush()
      this.#native.close(graceMs)
      // GOAWAY went out with a DRAIN capsule for every session.
      for (const m of this.#sessions.values()) for (const session of m.values()) session.onDrain()
      this.#inbox.end()
    }
    return this.#closing
  }

  #finishClose(): void {
    if (this.#closed) return
    this.#closed = true
    // Requests that never got an answer end with the server.
    for (const r of this.#inbox.drain()) {
      const st = this.#streams.get(r.connection.id)?.get(r.streamId)
      if (st) this.#abort(st, new H3Error('ERR_H3_SERVER_CLOSED', 'server closed'))
    }
    commandQueue(this.#native).flush()
    this.#native.release()
    this.#resolveClosed()
  }

  /** `await using server = await listen(...)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/**
 * Starts an HTTP/3 server.
 *
 * @example
 * ```ts
 * import { listen } from 'h3node'
 * const server = await listen({ port: 4433 })
 * for await (const req of server) {
 *   req.respond(new Response('Hello, HTTP/3!'))
 * }
 * ```
 */
export async function listen(options: ListenOptions = {}): Promise<Server> {
  return new Server(options)
}

/** Options of {@link serve}. */
export interface ServeOptions extends ListenOptions {
  /** Answers one request. Throwing or rejecting gives a 500. */
  fetch: (request: Request, info: IncomingRequest) => Response | PromiseLike<Response>
  /**
   * Takes WebTransport session requests (with `webTransport: true`): call
   * `req.acceptWebTransport()` or refuse with `req.respond()`. Without it
   * they go to `fetch` as a `GET` with `upgrade: webtransport`, where
   * `info.acceptWebTransport()` accepts (the returned `Response` is then
   * ignored) and a non-2xx `Response` refuses.
   */
  onWebTransport?: (req: IncomingRequest) => void
}

/**
 * Starts a server that answers every request with `options.fetch`, the
 * handler shape of Hono and other Web-standard frameworks.
 *
 * @example
 * ```ts
 * import { serve } from 'h3node'
 * const server = await serve({ port: 4433, fetch: (req) => new Response(`you asked for ${new URL(req.url).pathname}`) })
 * ```
 */
export async function serve(options: ServeOptions): Promise<Server> {
  if (typeof options?.fetch !== 'function') throw new H3Error('ERR_H3_INVALID_OPTION', 'option fetch must be a function')
  const server = new Server(options)
  const handler = options.fetch
  const onWebTransport = options.onWebTransport
  if (onWebTransport !== undefined && typeof onWebTransport !== 'function') {
    throw new H3Error('ERR_H3_INVALID_OPTION', 'option onWebTransport must be a function')
  }
  server.setHandler((req) => {
    if (req.isWebTransport && onWebTransport) {
      try {
        onWebTransport(req)
      } catch (err) {
        server.reportError(err, req)
        if (!req.responded) void req.respond(new Response(null, { status: 500 }))
      }
      return
    }
    if (req.method === 'CONNECT' && !req.isWebTransport) return void req.respond(new Response(null, { status: 405 }))
    let res: Response | PromiseLike<Response>
    try {
      res = handler(req.request, req)
    } catch (err) {
      res = Promise.reject(err)
    }
    if (req.isWebTransport) {
      // Accepted inside the handler: its Response has nothing left to say.
      void Promise.resolve(res).then(
        (r) => (req.responded ? void r?.body?.cancel().catch(() => {}) : req.respond(r)),
        (err) => (req.responded ? server.reportError(err, req) : req.respond(Promise.reject(err))),
      )
      return
    }
    void req.respond(res)
  })
  return server
}

export { H3Codes }

/** Bytes of a QUIC varint holding `v`. */
function varintLength(v: number): number {
  return v < 64 ? 1 : v < 16384 ? 2 : v < 2 ** 30 ? 4 : 8
}

function err0(e: NativeEvent): H3Error {
  return new H3Error('ERR_H3_CONNECTION_CLOSED', `connection closed${e.text ? `: ${e.text}` : ''}`, { wireCode: e.code })
}
