// Type test: the public API as users write it. Checked by `npm run test:types`
// (tsc --noEmit); a change that breaks these lines breaks users' builds.
import { listen, serve, Client, H3Error, generateDevCertificate, type IncomingRequest, type H3Response } from '../..'

async function forAwait(): Promise<void> {
  const server = await listen({ port: 0, host: '127.0.0.1', idleTimeoutMs: 10_000, congestionControl: 'bbr2' })
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
  const c = new Client({ pinnedCertificates: [sha256] })
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

void [forAwait, fetchStyle, client, errors]
