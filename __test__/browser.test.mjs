// The server against a real browser: headless Chromium (Debian `chromium`,
// driven by playwright-core) fetching over HTTP/3 from a page served at
// http://localhost. See helpers/browser.mjs.
import test from 'ava'

import { listen, handle } from './helpers/h3.mjs'
import { withChromium, evaluate, spkiHash, runWtScenario } from './helpers/browser.mjs'

/** A server on 127.0.0.1 with its generated dev certificate; requests answered by `handler`. */
async function browserServer(t, handler) {
  const server = await listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close(500))
  const seen = []
  handle(server, async (req) => {
    seen.push({ method: req.request.method, path: new URL(req.url).pathname, alpn: req.connection.alpn })
    await handler(req)
  })
  const { port } = server.address()
  return { server, seen, port, base: `https://127.0.0.1:${port}`, certPem: server.certificate.cert }
}

// The page (http://localhost:N) and the server (https://127.0.0.1:M) are different
// origins: the responses carry CORS headers, and Timing-Allow-Origin so that the
// page's resource timing entries show the protocol (nextHopProtocol) at all.
const CORS = { 'access-control-allow-origin': '*', 'timing-allow-origin': '*' }

test.serial('Chromium fetches GET and POST over HTTP/3', async (t) => {
  const { seen, port, base, certPem } = await browserServer(t, async (req) => {
    const r = req.request
    const path = new URL(req.url).pathname
    if (r.method === 'OPTIONS') {
      return req.respond(new Response(null, { status: 204, headers: { ...CORS, 'access-control-allow-methods': 'GET, POST', 'access-control-allow-headers': '*' } }))
    }
    if (path === '/hello' && r.method === 'GET') return req.respond(new Response('Hello, HTTP/3!', { headers: CORS }))
    if (path === '/echo' && r.method === 'POST') {
      const body = await r.text()
      return req.respond(new Response(`echo:${body}`, { headers: { ...CORS, 'x-method': r.method } }))
    }
    req.respond(new Response('not found', { status: 404, headers: CORS }))
  })

  const started = Date.now()
  const result = await withChromium(t, { quicOrigins: [`127.0.0.1:${port}`], spki: [spkiHash(certPem)] }, async (page) =>
    evaluate(
      page,
      async (base) => {
        const get = await fetch(`${base}/hello`)
        const getBody = await get.text()
        // text/plain keeps the POST a CORS "simple" request: no preflight.
        const post = await fetch(`${base}/echo`, { method: 'POST', body: 'ping from chromium', headers: { 'content-type': 'text/plain' } })
        const postBody = await post.text()
        const protocols = performance
          .getEntriesByType('resource')
          .filter((e) => e.name.startsWith(base))
          .map((e) => ({ path: new URL(e.name).pathname, protocol: e.nextHopProtocol }))
        return { get: { status: get.status, body: getBody }, post: { status: post.status, body: postBody }, protocols }
      },
      base,
      { timeout: 30_000 },
    ),
  )
  t.log(`browser round trip (launch, page, two fetches, close): ${Date.now() - started} ms`)

  t.deepEqual(result.get, { status: 200, body: 'Hello, HTTP/3!' })
  t.deepEqual(result.post, { status: 200, body: 'echo:ping from chromium' })
  t.deepEqual(result.protocols, [
    { path: '/hello', protocol: 'h3' },
    { path: '/echo', protocol: 'h3' },
  ])
  // The server speaks only HTTP/3: seeing the requests proves the browser used it.
  t.deepEqual(
    seen.filter((s) => s.method !== 'OPTIONS'),
    [
      { method: 'GET', path: '/hello', alpn: 'h3' },
      { method: 'POST', path: '/echo', alpn: 'h3' },
    ],
  )
})

test.serial('Chromium: WebTransport to a server without WebTransport is refused, not hung', async (t) => {
  // A plain server does not advertise WebTransport in its SETTINGS: the browser
  // must reject `ready` (the scenario times out after 10 s otherwise).
  const { port, certPem } = await browserServer(t, (req) => req.respond(new Response('no', { status: 404 })))
  const report = await runWtScenario(t, { port, certPem, path: '/echo', scenario: 'refuseScenario', timeout: 30_000 })
  t.log(report)
  t.true(report.readyRejected, JSON.stringify(report))
  t.is(report.errorName, 'WebTransportError')
})
