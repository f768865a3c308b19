/**
 * h3node: HTTP/3 for Node.js.
 *
 * - {@link listen} / {@link serve}: an HTTP/3 server speaking Web `Request`
 *   and `Response`.
 * - {@link Client}: an HTTP/3 client with a `fetch`-compatible subset.
 * - {@link generateDevCertificate}: short-lived certificates for development.
 *
 * @example
 * ```ts
 * import { listen } from 'h3node'
 * const server = await listen({ port: 4433 })
 * for await (const req of server) req.respond(new Response('Hello, HTTP/3!'))
 * ```
 *
 * @module
 */
export { listen, serve, Server, IncomingRequest, H3Codes } from './server'
export type { ListenOptions, ServeOptions, RespondOptions, ConnectionInfo, ConnectionStats, AddressInfo } from './server'
export { Client } from './client'
export type { ClientOptions, H3RequestInit, H3Response } from './client'
export { generateDevCertificate, certificateSha256 } from './cert'
export type { DevCertificate, DevCertificateOptions } from './cert'
export { H3Error } from './errors'
export type { H3ErrorCode } from './errors'
export type { TransportOptions } from './options'
