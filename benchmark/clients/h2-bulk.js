// Bulk transfer over one HTTP/2 stream with Node's http2 client, for the Node http2 peer:
//   node h2-bulk.js download https://127.0.0.1:P/bytes/N N
//   node h2-bulk.js upload   https://127.0.0.1:P/sink N
// Prints {"bytes","seconds","gbps"} as JSON. Certificates are not verified (throwaway cert).
'use strict'
const http2 = require('node:http2')

const [mode, url, n] = process.argv.slice(2)
const bytes = Number(n)
const u = new URL(url)
const session = http2.connect(u.origin, { rejectUnauthorized: false, settings: { initialWindowSize: 16 << 20 } })
session.on('connect', () => session.setLocalWindowSize(24 << 20))
session.on('error', (e) => {
  console.error(e)
  process.exit(1)
})
const t0 = performance.now()
let got = 0
if (mode === 'download') {
  const req = session.request({ ':path': u.pathname })
  req.on('data', (c) => (got += c.length))
  req.on('end', done)
} else {
  const req = session.request({ ':path': u.pathname, ':method': 'POST' })
  const chunk = Buffer.alloc(64 * 1024)
  let left = bytes
  const pump = () => {
    while (left > 0) {
      const k = Math.min(left, chunk.length)
      left -= k
      if (!req.write(k === chunk.length ? chunk : chunk.subarray(0, k))) return req.once('drain', pump)
    }
    req.end()
  }
  pump()
  let text = ''
  req.on('data', (c) => (text += c))
  req.on('end', () => {
    got = Number(text)
    done()
  })
}
function done() {
  const s = (performance.now() - t0) / 1000
  if (got !== bytes) {
    console.error(`transferred ${got} of ${bytes} bytes`)
    process.exit(1)
  }
  console.log(JSON.stringify({ bytes: got, seconds: s, gbps: (got * 8) / s / 1e9, client: 'node:http2' }))
  session.close()
}
