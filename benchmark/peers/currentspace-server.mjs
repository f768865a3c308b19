// @currentspace/http3 hello world for `npm run bench` (needs Node >= 24):
//   node currentspace-server.mjs --port P --cert PEM --key PEM [--retry]
// The package is loaded from the directory in $CURRENTSPACE_DIR (a cache install, never a
// dependency of h3node). Same routes as h3node-server.js. Prints `listening <port>`.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { parseArgs } from 'node:util'

const { values: o } = parseArgs({
  options: { port: { type: 'string', default: '0' }, cert: { type: 'string' }, key: { type: 'string' }, retry: { type: 'boolean', default: false }, 'idle-timeout-ms': { type: 'string', default: '30000' } },
})
const require = createRequire(path.join(process.env.CURRENTSPACE_DIR, 'package.json'))
const { createSecureServer } = require('@currentspace/http3')

const CHUNK = Buffer.alloc(64 * 1024)
const HELLO = Buffer.from('Hello, HTTP/3!')

const server = createSecureServer({
  cert: readFileSync(o.cert, 'utf8'),
  key: readFileSync(o.key, 'utf8'),
  disableRetry: !o.retry,
  maxIdleTimeoutMs: Number(o['idle-timeout-ms']),
  // the same windows and stream limit as the other HTTP/3 servers of the benchmark
  initialMaxData: 4 << 20,
  initialMaxStreamDataBidiLocal: 1 << 20,
  initialMaxStreamsBidi: 256,
}, (stream, headers) => {
  const p = String(headers[':path'])
  if (p === '/sink') {
    let n = 0
    stream.on('data', (c) => (n += c.length))
    stream.on('end', () => stream.respondWithBody({ ':status': '200', 'content-type': 'text/plain;charset=UTF-8' }, String(n)))
  } else if (p.startsWith('/bytes/')) {
    let left = Number(p.slice(7))
    stream.respond({ ':status': '200', 'content-length': String(left) })
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
    stream.respondWithBody({ ':status': '200', 'content-type': 'text/plain;charset=UTF-8', 'content-length': String(HELLO.length) }, HELLO)
  }
})
server.on('error', (e) => {
  console.error(e)
  process.exit(1)
})
server.on('listening', () => console.log(`listening ${o.port}`))
server.listen(Number(o.port), '127.0.0.1')
process.on('SIGTERM', () => { try { server.close() } catch {} ; process.exit(0) })
