// Node's own HTTP/2 over TLS hello world (what users pick today) for `npm run bench`:
//   node node-http2-server.js --port P --cert PEM --key PEM
// Same routes as h3node-server.js: /, /bytes/N, /sink. Prints `listening <port>`.
'use strict'
const http2 = require('node:http2')
const { readFileSync } = require('node:fs')
const { parseArgs } = require('node:util')

const { values: o } = parseArgs({
  options: { port: { type: 'string', default: '0' }, cert: { type: 'string' }, key: { type: 'string' }, retry: { type: 'boolean' }, 'idle-timeout-ms': { type: 'string' } },
})
const CHUNK = Buffer.alloc(64 * 1024)
const HELLO = Buffer.from('Hello, HTTP/3!')

const server = http2.createSecureServer({
  cert: readFileSync(o.cert),
  key: readFileSync(o.key),
  // Windows as large as the HTTP/3 servers' (4 MiB connection, 1 MiB stream, growing).
  settings: { initialWindowSize: 1 << 20, maxConcurrentStreams: 256 },
})
server.on('session', (s) => s.setLocalWindowSize(24 << 20))
server.on('stream', (stream, headers) => {
  const path = headers[':path']
  if (path === '/sink') {
    let n = 0
    stream.on('data', (c) => (n += c.length))
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain;charset=UTF-8' })
      stream.end(String(n))
    })
  } else if (path.startsWith('/bytes/')) {
    let left = Number(path.slice(7))
    stream.respond({ ':status': 200, 'content-length': left })
    const pump = () => {
      while (left > 0) {
        const k = Math.min(left, CHUNK.length)
        left -= k
        if (!stream.write(k === CHUNK.length ? CHUNK : CHUNK.subarray(0, k))) return stream.once('drain', pump)
      }
      stream.end()
    }
    pump()
  } else {
    stream.respond({ ':status': 200, 'content-type': 'text/plain;charset=UTF-8', 'content-length': HELLO.length })
    stream.end(HELLO)
  }
})
server.on('error', (e) => {
  console.error(e)
  process.exit(1)
})
server.listen(Number(o.port), '127.0.0.1', () => console.log(`listening ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
