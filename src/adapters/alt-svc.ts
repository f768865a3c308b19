/**
 * `Alt-Svc` for the TCP side of a site: `h3node/alt-svc`.
 *
 * Browsers try HTTP/3 only after an HTTP/1.1 or HTTP/2 response told them
 * where it is (`Alt-Svc: h3=":443"; ma=86400`, RFC 7838 and RFC 9114 §3.1.1).
 * This module builds that header ({@link altSvc}) and sets it from
 * `node:http` / `node:https` / `node:http2` request listeners
 * ({@link altSvcMiddleware}, {@link withAltSvc}), Hono ({@link altSvcHono})
 * and Fastify ({@link altSvcFastify}). It loads neither Hono nor Fastify
 * (nor the native addon).
 *
 * @example
 * ```ts
 * import { createServer } from 'node:https'
 * import { withAltSvc } from 'h3node/alt-svc'
 *
 * createServer({ cert, key }, withAltSvc((req, res) => res.end('hello over TCP'), { port: 443 })).listen(443)
 * ```
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isIP } from 'node:net'

import { H3Error } from '../errors'

/** Options of {@link altSvc} and the middlewares. */
export interface AltSvcOptions {
  /** UDP port of the HTTP/3 server, 1 to 65535. Required. */
  port: number
  /**
   * How long the client may remember the alternative, in seconds (`ma`),
   * 0 to 2147483647. Default `86400` (one day).
   */
  maxAge?: number
  /**
   * Host of the HTTP/3 server when it is not the host the request went to:
   * a DNS name or an IP address (IPv6 with or without brackets). The HTTP/3
   * server must present a certificate valid for the origin's host name
   * (RFC 7838 §2.1). Default: none (same host).
   */
  host?: string
}

/** A response whose headers can be set: `http.ServerResponse`, `http2.Http2ServerResponse`, Express's `res`. */
export interface AltSvcNodeResponse {
  /** Sets one header. */
  setHeader(name: string, value: string): unknown
  /** Whether the head was sent already (then nothing is set). */
  readonly headersSent?: boolean
}

/** The `next` of Connect and Express middleware. */
export type AltSvcNext = (err?: unknown) => void

/** A Connect/Express-style middleware that sets `Alt-Svc`, or a plain call before your own code. */
export type AltSvcNodeMiddleware = (req: unknown, res: AltSvcNodeResponse, next?: AltSvcNext) => void

/** The part of a Hono `Context` that {@link altSvcHono} uses. */
export interface AltSvcHonoContext {
  /** Sets a response header (Hono's `c.header`). */
  header(name: string, value: string | undefined): void
}

/** A Hono middleware (`app.use(...)`). */
export type AltSvcHonoMiddleware = (c: AltSvcHonoContext, next: () => Promise<void>) => Promise<void>

/** The part of a Fastify reply that {@link altSvcFastify} uses. */
export interface AltSvcFastifyReply {
  /** Sets a response header (Fastify's `reply.header`). */
  header(name: string, value: string): unknown
}

/** The part of a Fastify instance that {@link altSvcFastify} uses as a plugin. */
export interface AltSvcFastifyInstance {
  /** Fastify's `addHook`. */
  addHook(name: 'onSend', hook: AltSvcFastifyHook): unknown
}

/** An `onSend` hook (callback style): sets the header and passes the payload on. */
export type AltSvcFastifyHook = (request: unknown, reply: AltSvcFastifyReply, payload: unknown, done: (err: null, payload: unknown) => void) => void

/**
 * What {@link altSvcFastify} returns: a plugin for `fastify.register()` that
 * adds the hook to the whole instance, and an `onSend` hook for
 * `fastify.addHook('onSend', ...)`, in one function.
 */
export interface AltSvcFastifyPlugin {
  /** As a plugin: `fastify.register(altSvcFastify(options))`. */
  (instance: AltSvcFastifyInstance, options: unknown, done: (err?: Error) => void): void
  /** As a hook: `fastify.addHook('onSend', altSvcFastify(options))`. */
  (request: unknown, reply: AltSvcFastifyReply, payload: unknown, done: (err: null, payload: unknown) => void): void
}

const DNS_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/

function hostPart(host: unknown): string {
  if (host === undefined) return ''
  if (typeof host === 'string') {
    if (isIP(host) === 4 || DNS_NAME.test(host)) return host
    if (isIP(host) === 6) return `[${host}]`
    if (host.startsWith('[') && host.endsWith(']') && isIP(host.slice(1, -1)) === 6) return host
  }
  throw new H3Error('ERR_H3_INVALID_OPTION', `option host must be a DNS name or an IP address, got ${typeof host === 'string' ? JSON.stringify(host) : String(host)}`)
}

function integer(o: Record<string, unknown>, name: string, def: number | undefined, min: number, max: number): number {
  const v = o[name]
  if (v === undefined && def !== undefined) return def
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option ${name} must be an integer from ${min} to ${max}, got ${String(v)}`)
  }
  return v
}

/**
 * The `Alt-Svc` header value that points browsers at an HTTP/3 server:
 * `h3=":<port>"; ma=<maxAge>` (with `host` before the colon when given).
 *
 * @throws H3Error `ERR_H3_INVALID_OPTION` naming the option (`port`,
 * `maxAge`, `host`).
 *
 * @example
 * ```ts
 * import { altSvc } from 'h3node/alt-svc'
 *
 * altSvc({ port: 443 })                                    // 'h3=":443"; ma=86400'
 * altSvc({ port: 8443, maxAge: 3600, host: 'h3.example.com' }) // 'h3="h3.example.com:8443"; ma=3600'
 * ```
 */
export function altSvc(options: AltSvcOptions): string {
  if (typeof options !== 'object' || options === null) {
    throw new H3Error('ERR_H3_INVALID_OPTION', 'options must be an object with port (the UDP port of the HTTP/3 server)')
  }
  const o = options as unknown as Record<string, unknown>
  const port = integer(o, 'port', undefined, 1, 65535)
  const maxAge = integer(o, 'maxAge', 86400, 0, 2147483647)
  return `h3="${hostPart(o.host)}:${port}"; ma=${maxAge}`
}

/**
 * Middleware for `node:http`, `node:https` and `node:http2` (compatibility
 * API) servers, Connect and Express: sets `Alt-Svc` on the response, then
 * calls `next()` if there is one. Call it first thing in your own request
 * listener, or `app.use()` it. The options are checked here, once.
 *
 * @throws H3Error `ERR_H3_INVALID_OPTION` (see {@link altSvc}).
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http'
 * import { altSvcMiddleware } from 'h3node/alt-svc'
 *
 * const setAltSvc = altSvcMiddleware({ port: 443 })
 * createServer((req, res) => {
 *   setAltSvc(req, res)
 *   res.end('hello')
 * }).listen(80)
 * // Express: app.use(altSvcMiddleware({ port: 443 }))
 * ```
 */
export function altSvcMiddleware(options: AltSvcOptions): AltSvcNodeMiddleware {
  const value = altSvc(options)
  return (_req, res, next) => {
    if (!res.headersSent) res.setHeader('alt-svc', value)
    if (typeof next === 'function') next()
  }
}

/**
 * Wraps a request listener of `node:http`, `node:https` or `node:http2`
 * (compatibility API) so that every response carries `Alt-Svc`.
 *
 * In TypeScript the parameters of an inline `handler` are typed as
 * `node:http`'s; annotate them for `node:http2` (see the example).
 *
 * @param handler your request listener; what it returns is returned.
 * @throws H3Error `ERR_H3_INVALID_OPTION` (see {@link altSvc}), or
 * `ERR_H3_INVALID_ARGUMENT` if `handler` is not a function.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:https'
 * import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2'
 * import { withAltSvc } from 'h3node/alt-svc'
 *
 * createServer({ cert, key }, withAltSvc((req, res) => res.end('hi'), { port: 443 })).listen(443)
 * const h2 = createSecureServer(
 *   { cert, key },
 *   withAltSvc((req: Http2ServerRequest, res: Http2ServerResponse) => res.end('hi'), { port: 443 }),
 * )
 * h2.listen(8443)
 * ```
 */
export function withAltSvc<Req = IncomingMessage, Res extends AltSvcNodeResponse = ServerResponse, R = unknown>(
  handler: (req: Req, res: Res) => R,
  options: AltSvcOptions,
): (req: Req, res: Res) => R {
  if (typeof handler !== 'function') throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'handler must be a request listener function')
  const value = altSvc(options)
  return (req, res) => {
    if (!res.headersSent) res.setHeader('alt-svc', value)
    return handler(req, res)
  }
}

/**
 * Hono middleware: sets `Alt-Svc` on every response of the routes it
 * covers (404s and errors included).
 *
 * @throws H3Error `ERR_H3_INVALID_OPTION` (see {@link altSvc}).
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { serve } from '@hono/node-server'
 * import { altSvcHono } from 'h3node/alt-svc'
 *
 * const app = new Hono()
 * app.use(altSvcHono({ port: 443 }))
 * app.get('/', (c) => c.text('hello'))
 * serve({ fetch: app.fetch, port: 8080 })
 * ```
 */
export function altSvcHono(options: AltSvcOptions): AltSvcHonoMiddleware {
  const value = altSvc(options)
  return async (c, next) => {
    await next()
    c.header('Alt-Svc', value)
  }
}

/**
 * Fastify: one function that is both a plugin and an `onSend` hook. As a
 * plugin (`fastify.register(...)`) it adds the hook to the instance it is
 * registered on, including routes registered before it and 404s (it is not
 * encapsulated, like plugins wrapped with `fastify-plugin`); as a hook
 * (`fastify.addHook('onSend', ...)`) it sets the header itself.
 *
 * @throws H3Error `ERR_H3_INVALID_OPTION` (see {@link altSvc}).
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { altSvcFastify } from 'h3node/alt-svc'
 *
 * const fastify = Fastify()
 * await fastify.register(altSvcFastify({ port: 443 }))
 * // or: fastify.addHook('onSend', altSvcFastify({ port: 443 }))
 * fastify.get('/', async () => 'hello')
 * await fastify.listen({ port: 8080 })
 * ```
 */
export function altSvcFastify(options: AltSvcOptions): AltSvcFastifyPlugin {
  const value = altSvc(options)
  const hook: AltSvcFastifyHook = (_request, reply, payload, done) => {
    reply.header('alt-svc', value)
    done(null, payload)
  }
  function plugin(a: unknown, b: unknown, c: unknown, d?: unknown): void {
    if (typeof d === 'function' && typeof (b as AltSvcFastifyReply | null)?.header === 'function') {
      hook(a, b as AltSvcFastifyReply, c, d as (err: null, payload: unknown) => void)
      return
    }
    const instance = a as AltSvcFastifyInstance | null
    if (typeof instance?.addHook !== 'function' || typeof c !== 'function') {
      throw new H3Error('ERR_H3_INVALID_ARGUMENT', 'altSvcFastify() is used as fastify.register(altSvcFastify(options)) or fastify.addHook(\'onSend\', altSvcFastify(options))')
    }
    instance.addHook('onSend', hook)
    ;(c as (err?: Error) => void)()
  }
  // Not encapsulated: the hook covers the instance it is registered on (what fastify-plugin marks).
  Object.defineProperty(plugin, Symbol.for('skip-override'), { value: true })
  Object.defineProperty(plugin, Symbol.for('fastify.display-name'), { value: 'h3node-alt-svc' })
  return plugin as AltSvcFastifyPlugin
}
