// `node examples/fastify.js`: one Fastify app served over HTTP/1.1 (TCP) and
// HTTP/3 (UDP) at once, on the same port number, with a generated
// development certificate for HTTP/3.
//   GET  /            hello, and which protocol carried it
//   GET  /json        a JSON document
//   POST /echo        echoes the request body back, streamed
//   GET  /stream?n=5  n chunks, one every 200 ms
//   GET  /bytes/N     N bytes, streamed with backpressure
// HTTP/1.1 responses carry `Alt-Svc: h3=":PORT"`, which tells browsers the
// same origin is on HTTP/3 (they act on it for https origins; this demo's
// TCP side is plain http to keep it one command).
// Set PORT and HOST to move it (default 127.0.0.1:4433); Ctrl-C closes both.
'use strict'
const { Readable } = require('node:stream')
const Fastify = require('fastify')
const { serveFastify } = require('h3node/fastify')

function buildApp() {
  const app = Fastify()
  let h3Port = 0

  // Advertise HTTP/3 on every HTTP/1.1 (or HTTP/2) response.
  app.addHook('onRequest', (request, reply, done) => {
    if (h3Port && request.raw.httpVersionMajor < 3) reply.header('alt-svc', `h3=":${h3Port}"; ma=86400`)
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    console.log(`HTTP/${request.raw.httpVersion} ${request.ip} ${request.method} ${request.url} ${reply.statusCode}`)
    done()
  })
  // Bodies other than JSON and text reach the route as a stream.
  app.addContentTypeParser('*', (request, payload, done) => done(null, payload))

  app.get('/', async (request) => `Hello from Fastify over HTTP/${request.raw.httpVersion}!\n`)
  app.get('/json', async (request) => ({ hello: 'world', protocol: request.raw.httpVersion, ip: request.ip }))
  app.post('/echo', (request, reply) => {
    reply.type(request.headers['content-type'] ?? 'application/octet-stream').send(request.body)
  })
  app.get('/stream', (request, reply) => {
    const n = Math.min(Number(request.query.n ?? 5), 100)
    let i = 0
    reply.type('text/plain').send(new Readable({
      read() {
        if (i >= n) return void this.push(null)
        setTimeout(() => this.push(`chunk ${++i} of ${n}\n`), 200)
      },
    }))
  })
  app.get('/bytes/:n', (request, reply) => {
    let left = Math.min(Number(request.params.n) || 0, 2 ** 34)
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    reply.type('application/octet-stream').send(new Readable({
      read() {
        if (left <= 0) return void this.push(null)
        const n = Math.min(left, chunk.length)
        left -= n
        this.push(chunk.subarray(0, n))
      },
    }))
  })
  return { app, setH3Port: (p) => (h3Port = p) }
}

async function main() {
  const host = process.env.HOST ?? '127.0.0.1'
  const port = Number(process.env.PORT ?? 4433)
  const { app, setH3Port } = buildApp()

  // HTTP/3 first (it closes with the app), then the app's own TCP listener on the same number.
  const server = await serveFastify(app, { host, port })
  const h3Port = server.address().port
  setH3Port(h3Port)
  try {
    await app.listen({ host, port: h3Port })
  } catch (err) {
    if (err.code !== 'EADDRINUSE' || port !== 0) throw err
    await app.listen({ host, port: 0 }) // the UDP port was free on TCP: take another
  }
  const tcpPort = app.server.address().port
  const hostPart = host.includes(':') ? `[${host}]` : host
  console.log('h3node + Fastify: one app, two protocols')
  console.log(`  HTTP/3    https://${hostPart}:${h3Port}/  (UDP)`)
  console.log(`  HTTP/1.1  http://${hostPart}:${tcpPort}/  (TCP, answers with Alt-Svc: h3=":${h3Port}")`)
  console.log(`certificate sha256: ${server.certificate.sha256}`)
  console.log('\nTry it:')
  console.log(`  curl -i http://${hostPart}:${tcpPort}/`)
  console.log(`  (cd __test__/clients/go-h3client && go run . --insecure --url https://${hostPart}:${h3Port}/json)`)
  console.log(`  ORIGIN=https://${hostPart}:${h3Port} H3_PIN=${server.certificate.sha256} node examples/client.js\n`)

  process.once('SIGINT', () => {
    console.log('closing (HTTP/3 GOAWAY and in-flight requests first, then TCP)')
    app.close().then(() => console.log('closed'))
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
