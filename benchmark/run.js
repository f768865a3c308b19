// `npm run bench`: what h3node does on this machine, with the figures written
// to benchmark/results/latest.json. This first version measures h3node alone
// (small requests with the quic-go load client, bulk transfers with the
// package client); the side-by-side run against peers (Node http2, plain
// tokio-quiche, @currentspace/http3) is tracked as its own issue. No figure
// here is asserted anywhere: the numbers are reported, not judged.
'use strict'
const { spawn, execFileSync } = require('node:child_process')
const { writeFileSync, mkdirSync, readFileSync } = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { listen, Client } = require('..')

const MiB = 1024 * 1024

function loopbackMtu() {
  try {
    return Number(readFileSync('/sys/class/net/lo/mtu', 'utf8').trim())
  } catch {
    return null
  }
}

async function bulk(base, pin, bytes) {
  const client = new Client({ pinnedCertificates: [pin] })
  try {
    let t = performance.now()
    const res = await client.fetch(`${base}/bytes/${bytes}`)
    let n = 0
    for await (const c of res.body) n += c.byteLength
    const down = (performance.now() - t) / 1000
    const chunk = new Uint8Array(64 * 1024)
    let sent = 0
    t = performance.now()
    const up = await client.fetch(`${base}/sink`, {
      method: 'POST',
      duplex: 'half',
      body: new ReadableStream({
        pull(c) {
          if (sent >= bytes) return c.close()
          c.enqueue(chunk)
          sent += chunk.length
        },
      }),
    })
    const got = Number(await up.text())
    const upS = (performance.now() - t) / 1000
    return { bytes, downloadSeconds: down, downloadGbps: (n * 8) / down / 1e9, uploadSeconds: upS, uploadGbps: (got * 8) / upS / 1e9 }
  } finally {
    await client.close()
  }
}

async function smallRequests(base, requests, parallel, connections) {
  const { runClient } = await import(pathToFileURL(path.join(__dirname, '..', '__test__', 'helpers', 'independent.mjs')).href)
  const r = await runClient('quic-go', ['--url', `${base}/`, '--count', String(requests), '--parallel', String(parallel), '--connections', String(connections), '--insecure'], { timeoutMs: 300_000 })
  const ms = r.summary?.elapsed_ms ?? NaN
  return { requests: requests * connections, parallelPerConnection: parallel, connections, ok: r.summary?.ok, seconds: ms / 1000, reqPerSec: (requests * connections) / (ms / 1000) }
}

async function main() {
  const server = await listen({ host: '127.0.0.1', port: 0 })
  const base = `https://127.0.0.1:${server.address().port}`
  ;(async () => {
    for await (const req of server) {
      const url = new URL(req.url)
      if (url.pathname === '/sink') {
        let n = 0
        ;(async () => {
          for await (const c of req.request.body) n += c.byteLength
          req.respond(new Response(String(n)))
        })()
      } else if (url.pathname.startsWith('/bytes/')) {
        let left = Number(url.pathname.slice(7))
        const chunk = new Uint8Array(64 * 1024)
        req.respond(new Response(new ReadableStream({
          pull(c) {
            if (left <= 0) return c.close()
            const n = Math.min(left, chunk.length)
            c.enqueue(n === chunk.length ? chunk : chunk.subarray(0, n))
            left -= n
          },
        })))
      } else req.respond(new Response('Hello, HTTP/3!'))
    }
  })()
  const results = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, loopbackMtu: loopbackMtu() },
    note: 'h3node alone; client and server share the machine. Peers side by side: see the performance issue.',
    bulk: await bulk(base, server.certificate.sha256, Number(process.env.BENCH_BULK_BYTES ?? 1024 * MiB)),
    small: [],
  }
  for (const [parallel, connections] of [[1, 1], [16, 1], [64, 1], [64, 4]]) {
    results.small.push(await smallRequests(base, parallel === 1 ? 2000 : 5000, parallel, connections))
  }
  await server.close()
  mkdirSync(path.join(__dirname, 'results'), { recursive: true })
  writeFileSync(path.join(__dirname, 'results', 'latest.json'), JSON.stringify(results, null, 2) + '\n')
  console.log(JSON.stringify(results, null, 2))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
