#!/usr/bin/env node
// Counts the instructions h3node's server executes per small request, under valgrind's
// callgrind: the `for await` (or `serve`) hello world of peers/h3node-server.js answers a fixed
// number of oha requests (HTTP/3), after a warm-up that lets V8 optimize, and the count is
// split by thread (JS main thread, the native I/O thread, V8's and libuv's helpers).
//
// Why: on a shared VM, req/s and CPU µs of one build move by ±15% from run to run, so a change
// worth a few percent cannot be seen in them. An instruction count moves by about 1% between
// runs of one build (kernel time, cache misses and the wire are not in it: it counts work, not
// time). Use it to compare builds, side by side; use run.js for what users get.
// `--mode tokio-quiche` counts the plain tokio-quiche server of the benchmark (peers/
// tokio-quiche-server) under the same load: the work of the ceiling, for scale.
//   node benchmark/instructions.js [--requests 10000] [--warmup 15000] [--runs 2]
//        [--mode for-await|serve|tokio-quiche] [--streams 256] [--connections 4] [--node 24|current]
//        [--native PATH.node]   (load this addon build instead of the package's)
//        [--keep DIR]   (keep callgrind's per-thread files there, for callgrind_annotate)
//        [--browser-headers]   (each request carries the 13 fields of a Chrome navigation, not oha's 3)
// Compare two checkouts by running it in each. Needs valgrind (apt-get install valgrind).
// Under callgrind everything runs about 50x slower: the defaults take about a minute a run.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const os = require('node:os')
const { parseArgs } = require('node:util')
const { execFileSync, spawnSync } = require('node:child_process')
const tools = require('./lib/tools')
const proc = require('./lib/proc')

const { values: o } = parseArgs({
  options: {
    requests: { type: 'string', default: '10000' },
    warmup: { type: 'string', default: '15000' },
    runs: { type: 'string', default: '2' },
    mode: { type: 'string', default: 'for-await' },
    streams: { type: 'string', default: '256' },
    connections: { type: 'string', default: '4' },
    node: { type: 'string', default: '24' },
    native: { type: 'string' },
    keep: { type: 'string' },
    'browser-headers': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (o.help) {
  console.log('usage: node benchmark/instructions.js [--requests N] [--warmup N] [--runs N] [--mode for-await|serve|tokio-quiche] [--streams N] [--connections N] [--node 24|current] [--native PATH.node] [--keep DIR] [--browser-headers]')
  process.exit(0)
}
const whole = (name, min) => {
  const n = Number(o[name])
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} takes a whole number >= ${min}, not ${o[name]}`)
  return n
}
const requests = whole('requests', 1)
const warmup = whole('warmup', 0)
const runs = whole('runs', 1)
const streams = whole('streams', 1)
const connections = whole('connections', 1)
if (!['for-await', 'serve', 'tokio-quiche'].includes(o.mode)) throw new Error(`--mode takes for-await, serve or tokio-quiche, not ${o.mode}`)
const plain = o.mode === 'tokio-quiche'
if (plain && o.native) throw new Error('--native applies to the h3node modes, not --mode tokio-quiche')
tools.checkNodeOption(o.node)
if (o.native && !fs.existsSync(o.native)) throw new Error(`--native: no file ${o.native}`)
if (!tools.which('valgrind') || !tools.which('callgrind_control')) throw new Error('valgrind is not installed (apt-get install valgrind)')

// What Chrome sends on a navigation besides the pseudo-headers (oha adds its own user-agent,
// accept and accept-encoding when not given).
const BROWSER_HEADERS = [
  'sec-ch-ua: "Chromium";v="142", "Not_A Brand";v="24"',
  'sec-ch-ua-mobile: ?0',
  'sec-ch-ua-platform: "Linux"',
  'upgrade-insecure-requests: 1',
  'user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36',
  'accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8',
  'sec-fetch-site: none',
  'sec-fetch-mode: navigate',
  'sec-fetch-user: ?1',
  'sec-fetch-dest: document',
  'accept-encoding: gzip, deflate, br, zstd',
  'accept-language: en-US,en;q=0.9',
  'priority: u=0, i',
]

/** Sends `n` GETs with oha on core 1 (with `--browser-headers`, Chrome's fields); resolves to the number answered 200. */
function load(oha, url, n) {
  const per = Math.max(1, Math.round(streams / connections))
  const headers = o['browser-headers'] ? BROWSER_HEADERS.flatMap((h) => ['-H', h]) : []
  const r = spawnSync('taskset', ['-c', '1', oha, '--http-version', '3', '--insecure', '--no-tui', '--output-format', 'json',
    '-n', String(n), '-c', String(connections), '-p', String(per), '-t', '60s', ...headers, url], { encoding: 'utf8', maxBuffer: 64 << 20 })
  try {
    return Number(JSON.parse(r.stdout).statusCodeDistribution?.['200'] ?? 0)
  } catch {
    throw new Error(`oha failed: ${(r.stderr || r.stdout || '').slice(-800)}`)
  }
}

/**
 * Total instructions of each thread's callgrind file. The JS thread is the process's first
 * thread; the I/O thread is the one that ran tokio-quiche; the rest are V8's and libuv's.
 */
function byThread(dir, pid) {
  const out = { js: 0, io: 0, helpers: 0 }
  for (const f of fs.readdirSync(dir).filter((f) => f.startsWith(`cg.${pid}`))) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8')
    // A dump's `summary:` line reads 0; its `totals:` line has the count.
    const total = Number((/^totals: (\d+)/m.exec(text) ?? /^summary: (\d+)/m.exec(text))?.[1] ?? 0)
    const thread = Number(/-(\d+)$/.exec(f)?.[1] ?? 1)
    if (thread === 1) out.js += total
    // The addon is shipped stripped: its own symbols are not there to go by, libc's are.
    else if (/sendmsg/.test(text)) out.io += total
    else out.helpers += total
  }
  return out
}

async function once(oha, cert, bin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h3node-callgrind-'))
  const port = await proc.freePort()
  const server = plain
    ? [bin, '--addr', `127.0.0.1:${port}`, '--cert', cert.cert, '--key', cert.key, '--threads', '1']
    : [bin, path.join(__dirname, 'peers', 'h3node-server.js'), '--mode', o.mode, '--port', String(port), '--cert', cert.cert, '--key', cert.key]
  const args = ['--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', '--smc-check=all-non-file',
    `--callgrind-out-file=${path.join(dir, 'cg.%p')}`, ...server]
  const [c, a] = proc.pinned(0, 'valgrind', args)
  const env = o.native ? { NAPI_RS_NATIVE_LIBRARY_PATH: path.resolve(o.native) } : {}
  const s = await proc.startProcess(c, a, { env, timeoutMs: 300_000 })
  const url = `https://127.0.0.1:${port}/`
  try {
    // Two loads: the first connections' close and the next ones' open come before the count, as
    // in a benchmark run, where each step opens new connections (V8 optimizes, then meets the
    // events of a closing connection: the recompiles that follow are warm-up, not per request).
    if (warmup) {
      load(oha, url, Math.ceil(warmup / 2))
      load(oha, url, Math.floor(warmup / 2))
    }
    execFileSync('callgrind_control', ['-i', 'on', String(s.pid)], { stdio: 'ignore' })
    const ok = load(oha, url, requests)
    execFileSync('callgrind_control', ['-i', 'off', String(s.pid)], { stdio: 'ignore' })
    execFileSync('callgrind_control', ['-d', String(s.pid)], { stdio: 'ignore' })
    await proc.sleep(1000)
    await s.stop()
    if (ok < requests) throw new Error(`only ${ok} of ${requests} requests were answered 200`)
    const t = byThread(dir, s.pid)
    return { ok, js: t.js / ok, io: t.io / ok, helpers: t.helpers / ok, total: (t.js + t.io + t.helpers) / ok }
  } finally {
    await s.stop()
    if (o.keep) {
      fs.mkdirSync(o.keep, { recursive: true })
      for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(o.keep, f))
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'h3node-instr-'))
  const cert = tools.makeCert(tmp)
  const oha = await tools.ensureOha()
  const bin = plain ? await tools.ensureTokioQuiche() : await tools.nodeFor(o.node)
  const what = plain ? 'plain tokio-quiche (1 worker thread)' : `h3node ${o.mode}, Node ${execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim()}`
  // tokio-quiche: the first thread only starts the runtime; its worker is the I/O thread.
  const names = plain ? ['main thread', 'I/O thread', 'other threads'] : ['JS thread', 'I/O thread', 'V8/libuv helpers']
  const rows = []
  for (let i = 0; i < runs; i++) {
    const r = await once(oha, cert, bin)
    rows.push(r)
    console.error(`[instructions] run ${i + 1}: ${Math.round(r.total)} per request (${names[0]} ${Math.round(r.js)}, ${names[1]} ${Math.round(r.io)}, ${names[2]} ${Math.round(r.helpers)})`)
  }
  fs.rmSync(tmp, { recursive: true, force: true })
  const k = (f) => Math.round(rows.map((r) => r[f]).sort((a, b) => a - b)[Math.floor((rows.length - 1) / 2)]).toLocaleString('en-US')
  console.log(`${what}, ${streams} streams over ${connections} connections, ${requests} requests after ${warmup} warm-up${o['browser-headers'] ? ', browser headers' : ''}, ${runs} run(s), median:`)
  console.log(`  instructions per request: ${k('total')} (${names[0]} ${k('js')}, ${names[1]} ${k('io')}, ${names[2]} ${k('helpers')})`)
  console.log(`  every run: ${rows.map((r) => Math.round(r.total).toLocaleString('en-US')).join(', ')}`)
}

main().catch((e) => {
  console.error(e.stack || e)
  process.exit(1)
})
