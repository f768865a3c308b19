// Type test: the public API as users write it. Checked by `npm run test:types`
// (tsc --noEmit); a change that breaks these lines breaks users' builds.
import {
  listen,
  serve,
  Client,
  H3Error,
  generateDevCertificate,
  WebTransport,
  listenQuic,
  connectQuic,
  type IncomingRequest,
  type H3Response,
  type WebTransportSession,
  type WebTransportBidirectionalStream,
  type WebTransportCloseInfo,
  type QuicServer,
  type QuicConnection,
} from '../..'

async function forAwait(): Promise<void> {
  const server = await listen({
    port: 0,
    host: '127.0.0.1',
    idleTimeoutMs: 10_000,
    congestionControl: 'bbr2',
    headersTimeoutMs: 5_000,
    bodyTimeoutMs: 10_000,
    sendTimeoutMs: 10_000,
    unreadBodyTimeoutMs: 5_000,
    maxStreamResets: 100,
    streamResetWindowMs: 1_000,
    eventBatchDelayUs: 500,
    eventBatchSize: 0,
  })
  const addr: { address: string; port: number; family: 'IPv4' | 'IPv6' } = server.address()
  const sha: string | undefined = server.certificate?.sha256
  for await (const req of server) {
    const r: Request = req.request
    const remote: string = req.connection.remoteAddress
    const early: boolean = req.earlyData
    const signal: AbortSignal = req.signal
    void req.respond(new Response('hi'), { trailers: { 'x-t': '1' } })
    void [r, remote, early, signal, addr, sha]
  }
  await server.close(1000)
}

async function fetchStyle(): Promise<void> {
  const server = await serve({
    port: 0,
    fetch: (request: Request, info: IncomingRequest) => new Response(`${request.method} ${info.connection.alpn}`),
    onError: (e: unknown) => console.error(e),
  })
  await server[Symbol.asyncDispose]()
}

async function client(): Promise<void> {
  const { sha256 } = generateDevCertificate({ days: 7 })
  const c = new Client({ pinnedCertificates: [sha256], resumeSessions: true })
  const res: H3Response = await c.fetch('https://127.0.0.1:4433/', { method: 'POST', body: 'x', trailers: { a: 'b' } })
  const trailers: Headers | null = await res.trailers
  void trailers
  await c.close()
}

function errors(e: unknown): string | undefined {
  if (e instanceof H3Error) {
    // @ts-expect-error: codes are a closed union
    const bad: typeof e.code = 'ERR_NOT_A_CODE'
    void bad
    return e.code
  }
  return undefined
}

async function webTransport(): Promise<void> {
  const server = await listen({ port: 0, webTransport: true, maxWebTransportSessions: 4, datagramQueueLength: 256 })
  for await (const req of server) {
    if (!req.isWebTransport) continue
    const session: WebTransportSession = req.acceptWebTransport({ headers: { 'x-a': 'b' } })
    const { readable, writable }: WebTransportBidirectionalStream = await session.createBidirectionalStream()
    await readable.pipeTo(writable)
    const uni: WritableStream<Uint8Array> = await session.createUnidirectionalStream()
    void uni
    const info: WebTransportCloseInfo = await session.closed
    void info.closeCode
    session.close({ closeCode: 1, reason: 'bye' })
    // @ts-expect-error: closeCode is a number
    session.close({ closeCode: '1' })
  }
  const wt = new WebTransport('https://127.0.0.1:4433/', { serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(32) }] })
  await wt.ready
  const n: number = wt.datagrams.maxDatagramSize
  void n
}

async function rawQuic(): Promise<void> {
  const server: QuicServer = await listenQuic({ port: 0, alpn: ['a', 'b'] })
  for await (const conn of server) {
    const c: QuicConnection = conn
    void c.alpn
  }
  const conn = await connectQuic({ host: '127.0.0.1', port: 1, alpn: 'a', insecure: true })
  conn.close({ closeCode: 3 })
  // @ts-expect-error: alpn is required
  await listenQuic({ port: 0 })
}

void [forAwait, fetchStyle, client, errors, webTransport, rawQuic]
