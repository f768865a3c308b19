/**
 * h3node: HTTP/3 for Node.js.
 *
 * - {@link listen} / {@link serve}: an HTTP/3 server speaking Web `Request`
 *   and `Response`.
 * - {@link Client}: an HTTP/3 client with a `fetch`-compatible subset.
 * - WebTransport: `webTransport: true` on the server and
 *   {@link IncomingRequest.acceptWebTransport}; {@link WebTransport} (the
 *   browser's constructor shape) or {@link Client.webTransport} on the client.
 * - Adapters: `h3node/hono`, `h3node/fastify`, `h3node/alt-svc`.
 * - {@link listenQuic} / {@link connectQuic}: raw QUIC with your own ALPN,
 *   streams and datagrams.
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
export type { ListenOptions, ServeOptions, RespondOptions, ConnectionInfo, ConnectionStats, AddressInfo, EndpointOptions, AcceptWebTransportOptions } from './server'
export { Client, WebTransport } from './client'
export type { ClientOptions, H3RequestInit, H3Response, WebTransportInit, WebTransportOptions } from './client'
export { WebTransportSession, QuicConnection, DatagramDuplexStream } from './webtransport'
export type { WebTransportBidirectionalStream, WebTransportCloseInfo, WebTransportCloseOptions, DatagramStats } from './webtransport'
export { listenQuic, connectQuic, QuicServer } from './quic'
export type { QuicListenOptions, QuicConnectOptions } from './quic'
export { generateDevCertificate, certificateSha256 } from './cert'
export type { DevCertificate, DevCertificateOptions } from './cert'
export { H3Error } from './errors'
export type { H3ErrorCode } from './errors'
export type { TransportOptions } from './options'
