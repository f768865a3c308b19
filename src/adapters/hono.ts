/**
 * Hono on HTTP/3: `h3node/hono`.
 *
 * - {@link serve} starts an h3node server for a Hono app (`app.fetch`); the
 *   app gets the h3node {@link IncomingRequest} as its `env` (`c.env`).
 * - {@link getConnInfo} gives Hono's `ConnInfo` of the QUIC peer.
 * - {@link upgradeWebTransport} accepts a WebTransport session in a route;
 *   {@link isWebTransport} tells whether a request is one.
 *
 * Hono is not loaded by this module (its types only): install `hono`
 * yourself.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { serve, getConnInfo } from 'h3node/hono'
 *
 * const app = new Hono()
 * app.get('/', (c) => c.text(`hello ${getConnInfo(c).remote.address} over HTTP/3`))
 * const server = await serve({ fetch: app.fetch, port: 4433 })
 * ```
 *
 * @module
 */
import { isIP } from 'node:net'

import type { Context } from 'hono'
import type { ConnInfo } from 'hono/conninfo'

import { H3Error } from '../errors'
import { IncomingRequest, serve as serveH3, type AcceptWebTransportOptions, type AddressInfo, type Server, type ServeOptions } from '../server'
import type { WebTransportSession } from '../webtransport'

/**
 * The Hono environment of an app served by h3node: `c.env` is the
 * {@link IncomingRequest} (connection, stream id, early data, datagrams,
 * WebTransport).
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import type { H3Env } from 'h3node/hono'
 *
 * const app = new Hono<H3Env>()
 * app.get('/', (c) => c.text(`stream ${c.env.streamId} on connection ${c.env.connection.id}`))
 * ```
 */
export interface H3Env {
  /** The request as h3node sees it. */
  Bindings: IncomingRequest
}

/** Options of {@link serve}: `fetch` and every option of h3node's `listen`. */
export interface HonoServeOptions extends Omit<ServeOptions, 'fetch'> {
  /**
   * The app's handler: `app.fetch`. It is called with the `Request` and the
   * {@link IncomingRequest} as `env`.
   */
  fetch: (request: Request, env: IncomingRequest) => Response | PromiseLike<Response>
  /**
   * IP address to bind (the name `@hono/node-server` uses; same as `host`).
   * Default `'::'`.
   */
  hostname?: string
}

/** What {@link getConnInfo} returns: Hono's `ConnInfo`, with every field known. */
export interface H3ConnInfo extends ConnInfo {
  /** The QUIC peer. */
  remote: {
    /** Peer IP address (`::ffff:a.b.c.d` for IPv4 peers of a dual-stack server). */
    address: string
    /** Peer UDP port. */
    port: number
    /** Always `'udp'`: HTTP/3 runs on QUIC. */
    transport: 'udp'
    /** Family of `address`. */
    addressType: 'IPv4' | 'IPv6'
  }
}

/**
 * Starts an HTTP/3 server for a Hono app. The app gets the h3node
 * {@link IncomingRequest} as `env`, which {@link getConnInfo} and
 * {@link upgradeWebTransport} read. Every option of h3node's `listen` is
 * accepted; `hostname` is an alias of `host`. Without `cert` and `key` a
 * development certificate is generated (`server.certificate`).
 *
 * HTTP/1.1 connection fields a response may carry (`transfer-encoding`,
 * `connection`, `keep-alive`, `upgrade`, as Hono's `streamSSE` sets them)
 * are dropped by h3node itself: HTTP/3 forbids them.
 *
 * WebTransport requests (with `webTransport: true`) reach the app as a `GET`
 * with `upgrade: webtransport`: a route accepts them with
 * {@link upgradeWebTransport}; any non-2xx response (Hono's 404 for an
 * unmatched path) refuses them.
 *
 * @param options `fetch` (`app.fetch`) and the listen options.
 * @param listeningListener called once the server is bound, with its address.
 * @returns the h3node `Server` (close it with `server.close()`).
 * @throws H3Error `ERR_H3_INVALID_OPTION` naming the option (`fetch`,
 * `hostname`, `port`, ...), and the errors of `listen`.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { serve } from 'h3node/hono'
 *
 * const app = new Hono()
 * app.get('/api/users/:id', (c) => c.json({ id: c.req.param('id') }))
 * const server = await serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 4433 }, (info) => {
 *   console.log(`listening on https://${info.address}:${info.port}/`)
 * })
 * ```
 */
export async function serve(options: HonoServeOptions, listeningListener?: (info: AddressInfo) => void): Promise<Server> {
  if (typeof options !== 'object' || options === null) {
    throw new H3Error('ERR_H3_INVALID_OPTION', 'options must be an object with fetch (app.fetch) and listen options')
  }
  if (typeof options.fetch !== 'function') {
    throw new H3Error('ERR_H3_INVALID_OPTION', 'option fetch must be a function (pass app.fetch)')
  }
  if (listeningListener !== undefined && typeof listeningListener !== 'function') {
    throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'listeningListener must be a function')
  }
  const { hostname, ...rest } = options
  let host = options.host
  if (hostname !== undefined) {
    if (typeof hostname !== 'string' || isIP(hostname) === 0) {
      throw new H3Error('ERR_H3_INVALID_OPTION', `option hostname must be an IPv4 or IPv6 address, got ${String(hostname)}`)
    }
    if (host !== undefined && host !== hostname) {
      throw new H3Error('ERR_H3_INVALID_OPTION', `options host (${String(host)}) and hostname (${hostname}) disagree; give one`)
    }
    host = hostname
  }
  const server = await serveH3({ ...rest, host, fetch: options.fetch })
  if (listeningListener) listeningListener(server.address())
  return server
}

function incomingOf(c: Context, fn: string): IncomingRequest {
  const env: unknown = (c as { env?: unknown } | null | undefined)?.env
  if (!(env instanceof IncomingRequest)) {
    throw new H3Error(
      'ERR_H3_INVALID_ARGUMENT',
      `${fn}() needs a Hono context of an app served by h3node (serve() from 'h3node/hono', or 'h3node' with fetch: app.fetch): c.env is not an h3node IncomingRequest`,
    )
  }
  return env
}

/**
 * Connection information of the request, in Hono's `ConnInfo` shape: the
 * QUIC peer's address and UDP port.
 *
 * @param c the Hono context of an app served by h3node.
 * @throws H3Error `ERR_H3_INVALID_ARGUMENT` if the app is not served by h3node
 * (`c.env` is not an {@link IncomingRequest}).
 *
 * @example
 * ```ts
 * import { getConnInfo } from 'h3node/hono'
 *
 * app.get('/whoami', (c) => {
 *   const { remote } = getConnInfo(c) // { address: '127.0.0.1', port: 50123, transport: 'udp', addressType: 'IPv4' }
 *   return c.json(remote)
 * })
 * ```
 */
export function getConnInfo(c: Context): H3ConnInfo {
  const { remoteAddress: address, remotePort: port } = incomingOf(c, 'getConnInfo').connection
  return { remote: { address, port, transport: 'udp', addressType: isIP(address) === 6 ? 'IPv6' : 'IPv4' } }
}

/**
 * Whether the request is a WebTransport session request (an extended
 * CONNECT on a server started with `webTransport: true`, seen by Hono as a
 * `GET` with `upgrade: webtransport`). `false` for apps not served by h3node.
 *
 * @example
 * ```ts
 * import { isWebTransport, upgradeWebTransport } from 'h3node/hono'
 *
 * app.get('/live', (c) => {
 *   if (!isWebTransport(c)) return c.text('open this with WebTransport', 426)
 *   upgradeWebTransport(c)
 *   return c.body(null)
 * })
 * ```
 */
export function isWebTransport(c: Context): boolean {
  const env: unknown = (c as { env?: unknown } | null | undefined)?.env
  return env instanceof IncomingRequest && env.isWebTransport
}

/**
 * Accepts the WebTransport session of this request: sends the 200 (with
 * `options.headers`) and returns the session, ready at once. The route's
 * own `Response` is then ignored: return `c.body(null)`. A route that
 * returns a non-2xx response without calling this refuses the session with
 * that status.
 *
 * The server must be started with `webTransport: true`.
 *
 * @param c the Hono context of an app served by h3node.
 * @param options extra headers of the 200.
 * @throws H3Error `ERR_H3_NOT_WEBTRANSPORT` if the request is not a
 * WebTransport request (or the server runs without `webTransport: true`),
 * `ERR_H3_ALREADY_RESPONDED` if it was accepted already,
 * `ERR_H3_SESSION_CLOSED` if the client went away,
 * `ERR_H3_INVALID_ARGUMENT` if the app is not served by h3node.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { serve, upgradeWebTransport } from 'h3node/hono'
 *
 * const app = new Hono()
 * app.get('/wt/:room', (c) => {
 *   const session = upgradeWebTransport(c)
 *   ;(async () => {
 *     for await (const { readable, writable } of session.incomingBidirectionalStreams) readable.pipeTo(writable)
 *   })()
 *   return c.body(null)
 * })
 * await serve({ fetch: app.fetch, port: 4433, webTransport: true })
 * ```
 */
export function upgradeWebTransport(c: Context, options?: AcceptWebTransportOptions): WebTransportSession {
  return incomingOf(c, 'upgradeWebTransport').acceptWebTransport(options)
}
