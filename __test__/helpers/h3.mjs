// Shared helpers for the ava suites: a deterministic byte source with a
// known SHA-256, and a server started in-process on a free loopback port.
import { createHash } from 'node:crypto'

import { listen, serve, Client } from '../../dist/index.js'

export { listen, serve, Client }

const BLOCK = 1024 * 1024
let block = null
function baseBlock() {
  if (block) return block
  block = Buffer.alloc(BLOCK)
  let x = 0x9e3779b9
  for (let i = 0; i < BLOCK; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    block.writeUInt32LE(x >>> 0, i)
  }
  return block
}

/** Chunk `i` (1 MiB) of the deterministic stream: the base block stamped with its index. */
export function blockAt(i) {
  const b = Buffer.from(baseBlock())
  b.writeUInt32LE(i, 0)
  return b
}

/** A ReadableStream of `n` deterministic bytes; `onPull(bytesSoFar)` observes how far the consumer pulled. */
export function patternStream(n, { chunk = 64 * 1024, onPull } = {}) {
  let off = 0
  let cur = null
  let curIndex = -1
  return new ReadableStream({
    pull(c) {
      if (off >= n) return c.close()
      const i = Math.floor(off / BLOCK)
      if (i !== curIndex) { cur = blockAt(i); curIndex = i }
      const start = off % BLOCK
      const len = Math.min(chunk, BLOCK - start, n - off)
      c.enqueue(cur.subarray(start, start + len))
      off += len
      onPull?.(off)
    },
  })
}

/** SHA-256 (hex) of the first `n` bytes of the deterministic stream. */
export function patternSha256(n) {
  const h = createHash('sha256')
  let off = 0
  for (let i = 0; off < n; i++) {
    const b = blockAt(i)
    const len = Math.min(BLOCK, n - off)
    h.update(len === BLOCK ? b : b.subarray(0, len))
    off += len
  }
  return h.digest('hex')
}

/** Reads a stream to the end: `{ bytes, sha256 }`. */
export async function digest(stream) {
  const h = createHash('sha256')
  let bytes = 0
  for await (const c of stream) { h.update(c); bytes += c.byteLength }
  return { bytes, sha256: h.digest('hex') }
}

/**
 * A server on 127.0.0.1 with a dev certificate, and a client that pins it.
 * Both are closed when test `t` ends, pass or fail.
 */
export async function pair(t, options = {}, clientOptions = {}) {
  const server = await listen({ host: '127.0.0.1', port: 0, ...options })
  const { port } = server.address()
  const client = new Client({ pinnedCertificates: [server.certificate.sha256], ...clientOptions })
  const base = `https://127.0.0.1:${port}`
  const p = { server, client, port, base, async close() { await client.close(); await server.close(1000) } }
  t.teardown(() => p.close())
  return p
}

/** Closes `closable` when test `t` ends. */
export function closeAfter(t, closable) {
  t.teardown(() => closable.close())
  return closable
}

/** Answers every request of `server` with `handler(req)` (for-await style). */
export function handle(server, handler) {
  return (async () => {
    for await (const req of server) {
      Promise.resolve().then(() => handler(req)).catch((e) => {
        if (!req.responded) req.respond(Promise.reject(e))
      })
    }
  })()
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Polls `fn` until it returns truthy or `ms` pass. */
export async function waitFor(fn, ms = 5000, step = 25) {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) return v
    await sleep(step)
  }
}
