#!/usr/bin/env node
// What the Web objects of a hello world cost on the Node that runs the server, without any
// server: nanoseconds per `new Request(...)`, `new Response(...)` and reading a response body
// through a reader, pinned to one core, one `await` per iteration (so the microtasks each one
// queues run before the next, as in a server's event-loop turns).
//
// Why: `serve({ fetch })` builds a `Request` for every request and every handler builds a
// `Response`; plain tokio-quiche and Node's http2 hello world build neither. This puts a number
// on that part of the per-request CPU, which h3node cannot remove without giving up real
// `Request` and `Response` objects (see benchmark/README.md, "What is left against the targets").
//   node benchmark/web-objects.js [--node 24|current] [--iterations 200000] [--core 0]
'use strict'
const { spawnSync } = require('node:child_process')
const { parseArgs } = require('node:util')
const proc = require('./lib/proc')
const tools = require('./lib/tools')

const { values: o } = parseArgs({
  options: {
    node: { type: 'string', default: '24' },
    iterations: { type: 'string', default: '200000' },
    core: { type: 'string', default: '0' },
    child: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

if (o.help) {
  console.log('usage: node benchmark/web-objects.js [--node 24|current] [--iterations N] [--core N]')
  process.exit(0)
}
function usageError(message) {
  console.error(`web-objects.js: ${message}`)
  process.exit(2)
}
try {
  tools.checkNodeOption(o.node)
} catch (e) {
  usageError(e.message)
}
const iterations = Number(o.iterations)
if (!Number.isInteger(iterations) || iterations < 1000) usageError(`--iterations takes an integer of at least 1000, not ${o.iterations}`)

async function child() {
  const url = 'https://127.0.0.1:4433/'
  // oha's three fields, as the server copies them for a repeated set (src/server.ts).
  const fields = new Headers({ 'user-agent': 'oha/1.16.0', accept: '*/*', 'accept-encoding': 'gzip, br' })
  async function readBody(response) {
    const reader = response.body.getReader()
    await reader.read()
    await reader.read()
  }
  const cases = [
    ['an empty async iteration (the loop itself)', async () => {}],
    ['new Request(url)', () => void new Request(url)],
    ['new Request(url, { headers }), a Headers of 3 fields copied', () => void new Request(url, { headers: fields })],
    ['new Response(null)', () => void new Response(null)],
    ["new Response('Hello, HTTP/3!')", () => void new Response('Hello, HTTP/3!')],
    ["new Response('Hello, HTTP/3!'), its body read to the end by a reader", () => readBody(new Response('Hello, HTTP/3!'))],
  ]
  const warmup = Math.min(30000, iterations)
  for (const [name, f] of cases) {
    for (let i = 0; i < warmup; i++) await f()
    const t = process.hrtime.bigint()
    for (let i = 0; i < iterations; i++) await f()
    const ns = Number(process.hrtime.bigint() - t) / iterations
    console.log(`${ns.toFixed(0).padStart(7)} ns  ${name}`)
  }
}

async function main() {
  const bin = await tools.nodeFor(o.node)
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim()
  console.log(`Node ${version}, core ${o.core}, ${iterations} iterations each`)
  const args = [__filename, '--child', '--iterations', String(iterations)]
  const r = spawnSync(...proc.pinned(o.core, bin, args), { stdio: 'inherit' })
  process.exit(r.status ?? 1)
}

;(o.child ? child() : main()).catch((e) => {
  console.error(e)
  process.exit(1)
})
