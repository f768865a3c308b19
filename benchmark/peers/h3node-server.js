// h3node hello world for `npm run bench`, in one of two shapes:
//   node h3node-server.js --mode for-await|serve --port P --cert PEM --key PEM [--retry]
// Routes (the same on every server of the benchmark):
//   /          200 "Hello, HTTP/3!"
//   /bytes/N   N zero bytes, streamed in 64 KiB chunks
//   /sink      reads the whole request body, answers its length as text
// Prints `listening <port>` once bound.
'use strict'
const { readFileSync } = require('node:fs')
const { parseArgs } = require('node:util')
const { listen, serve } = require('../..')

const { values: o } = parseArgs({
  options: {
    mode: { type: 'string', default: 'for-await' },
    port: { type: 'string', default: '0' },
    cert: { type: 'string' },
    key: { type: 'string' },
    retry: { type: 'boolean', default: false },
    'idle-timeout-ms': { type: 'string', default: '30000' },
  },
})

const CHUNK = new Uint8Array(64 * 1024)
// Defined only under benchmark/lib/stalls.js (benchmark/tail.js): notes a request's arrival.
const mark = globalThis.__h3nodeTailMark

function bytes(n) {
  let left = n
  return new Response(new ReadableStream({
    pull(c) {
      if (left <= 0) return c.close()
      const k = Math.min(left, CHUNK.length)
      c.enqueue(k === CHUNK.length ? CHUNK : CHUNK.subarray(0, k))
      left -= k
    },
  }), { headers: { 'content-length': String(n) } })
}

async function sink(request) {
  let n = 0
  for await (const c of request.body) n += c.byteLength
  return new Response(String(n))
}

async function main() {
  const opts = {
    host: '127.0.0.1',
    port: Number(o.port),
    cert: readFileSync(o.cert, 'utf8'),
    key: readFileSync(o.key, 'utf8'),
    retry: o.retry,
    idleTimeoutMs: Number(o['idle-timeout-ms']),
    onError: () => {},
  }
  let server
  if (o.mode === 'serve') {
    server = await serve({
      ...opts,
      fetch(request) {
        if (mark) mark()
        const path = request.url.slice(request.url.indexOf('/', 8))
        if (path === '/sink') return sink(request)
        if (path.startsWith('/bytes/')) return bytes(Number(path.slice(7)))
        return new Response('Hello, HTTP/3!')
      },
    })
  } else {
    server = await listen(opts)
    ;(async () => {
      for await (const req of server) {
        if (mark) mark()
        // Routed like the serve handler and Node http2's (a string compare of the path; no URL parse).
        const path = req.url.slice(req.url.indexOf('/', 8))
        if (path === '/sink') req.respond(sink(req.request))
        else if (path.startsWith('/bytes/')) req.respond(bytes(Number(path.slice(7))))
        else req.respond(new Response('Hello, HTTP/3!'))
      }
    })()
  }
  console.log(`listening ${server.address().port}`)
  const stop = () => server.close().then(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
