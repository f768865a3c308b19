#!/usr/bin/env node
// Profiles h3node's small-request path: the `for await` hello world (peers/h3node-server.js)
// pinned to core 0 under oha (HTTP/3, 64 streams on one connection) pinned to core 1.
//   1. JS side: `node --cpu-prof`, then the top functions by self time and a split by
//      category (h3node's dist/, Node internals, GC, native/idle).
//   2. Native side: `perf record -g` on the same server started with --perf-basic-prof (so
//      JIT frames have names), then `perf report` by shared object and by symbol.
// Writes into benchmark/results/profile/ (not committed). Needs oha and perf.
//   node benchmark/profile.js [--seconds 10] [--streams 64] [--connections 1] [--mode for-await|serve]
//        [--node 24|current]   (the Node the server runs on, as in run.js; default 24)
//        [--server tokio-quiche]   (perf only: profile the plain tokio-quiche server instead)
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const os = require('node:os')
const { parseArgs } = require('node:util')
const { execFileSync, spawn } = require('node:child_process')
const tools = require('./lib/tools')
const proc = require('./lib/proc')
const load = require('./lib/load')

const { values: o } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    streams: { type: 'string', default: '64' },
    connections: { type: 'string', default: '1' },
    mode: { type: 'string', default: 'for-await' },
    server: { type: 'string', default: 'h3node' },
    node: { type: 'string', default: '24' },
    out: { type: 'string', default: path.join(__dirname, 'results', 'profile') },
  },
})
const seconds = Number(o.seconds)
const streams = Number(o.streams)
const connections = Number(o.connections)
tools.checkNodeOption(o.node)

function categorize(url, name) {
  if (name === '(garbage collector)') return 'GC'
  if (name === '(idle)') return 'idle'
  if (name === '(program)') return 'native (program: N-API calls, addon, V8 runtime)'
  if (url.includes('/dist/')) return `h3node dist/${path.basename(url)}`
  if (url.includes('/benchmark/')) return 'benchmark handler'
  if (url.startsWith('node:internal/webstreams') || url.includes('internal/webstreams')) return 'Node web streams'
  if (url.includes('internal/deps/undici') || url.includes('undici')) return 'undici (Request/Response/Headers)'
  if (url.startsWith('node:') || url.startsWith('internal/')) return `Node ${url.replace(/^node:/, '').split('/').slice(0, 2).join('/')}`
  if (!url) return `native builtin (${name || 'anonymous'})`
  return url
}

function summarizeCpuProfile(file) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'))
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const counts = new Map()
  for (const s of prof.samples) counts.set(s, (counts.get(s) || 0) + 1)
  const total = prof.samples.length
  const fns = new Map()
  const cats = new Map()
  for (const [id, c] of counts) {
    const n = byId.get(id)
    const { functionName: name, url, lineNumber } = n.callFrame
    const key = `${name || '(anonymous)'} ${url ? `${url.replace(/^.*\/(dist|benchmark|node_modules)\//, '$1/')}:${lineNumber + 1}` : ''}`
    fns.set(key, (fns.get(key) || 0) + c)
    const cat = categorize(url, name)
    cats.set(cat, (cats.get(cat) || 0) + c)
  }
  const pct = (c) => `${((c / total) * 100).toFixed(1)}%`
  return {
    samples: total,
    top: [...fns].sort((a, b) => b[1] - a[1]).slice(0, 30).map(([k, c]) => `${pct(c).padStart(6)}  ${k}`),
    categories: [...cats].sort((a, b) => b[1] - a[1]).map(([k, c]) => `${pct(c).padStart(6)}  ${k}`),
  }
}

async function startServer(cert, extraNodeArgs) {
  const port = await proc.freePort()
  let cmd
  let args
  if (o.server === 'tokio-quiche') {
    cmd = await tools.ensureTokioQuiche()
    args = ['--addr', `127.0.0.1:${port}`, '--cert', cert.cert, '--key', cert.key, '--threads', '1']
  } else {
    cmd = await tools.nodeFor(o.node)
    args = [...extraNodeArgs, path.join(__dirname, 'peers', 'h3node-server.js'), '--mode', o.mode, '--port', String(port), '--cert', cert.cert, '--key', cert.key]
  }
  const [c, a] = proc.pinned(0, cmd, args)
  const s = await proc.startProcess(c, a)
  return { ...s, url: `https://127.0.0.1:${port}/` }
}

async function main() {
  fs.mkdirSync(o.out, { recursive: true })
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'h3node-prof-'))
  const cert = tools.makeCert(tmp)
  const oha = await tools.ensureOha()
  const report = []

  if (o.server === 'h3node') {
    // 1. JS: --cpu-prof
    const dir = path.join(o.out, 'cpuprofile')
    fs.rmSync(dir, { recursive: true, force: true })
    const s = await startServer(cert, ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=200'])
    await load.oha(oha, s.url, { connections, streams, seconds: 2, core: 1 }) // warm-up
    const before = proc.cpuMicros(s.pid)
    const r = await load.oha(oha, s.url, { connections, streams, seconds, core: 1 })
    const cpu = proc.cpuMicros(s.pid) - before
    await s.stop()
    await proc.sleep(500)
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
    const sum = summarizeCpuProfile(path.join(dir, file))
    const nodeBin = await tools.nodeFor(o.node)
    const nodeVersion = execFileSync(nodeBin, ['--version'], { encoding: 'utf8' }).trim()
    report.push(`# JS profile (node --cpu-prof), ${o.mode} on Node ${nodeVersion}, ${streams} streams / ${connections} conn, ${seconds} s`, '',
      `${Math.round(r.reqPerSec)} req/s under the profiler, server CPU ${(cpu / r.ok).toFixed(1)} µs/request (whole process), ${sum.samples} samples`, '',
      '## By category (self time, main thread)', '', ...sum.categories, '', '## Top functions (self time)', '', ...sum.top, '',
      `profile: ${path.join(dir, file)}`, '')
  }

  // 2. Native: perf record -g
  const s = await startServer(cert, ['--perf-basic-prof-only-functions', '--interpreted-frames-native-stack'])
  await load.oha(oha, s.url, { connections, streams, seconds: 2, core: 1 })
  const data = path.join(o.out, `perf-${o.server}.data`)
  const perf = spawn('perf', ['record', '-g', '-F', '1999', '-p', String(s.pid), '-o', data], { stdio: ['ignore', 'ignore', 'pipe'] })
  await proc.sleep(300)
  const before = proc.cpuMicros(s.pid)
  const r = await load.oha(oha, s.url, { connections, streams, seconds, core: 1 })
  const cpu = proc.cpuMicros(s.pid) - before
  perf.kill('SIGINT')
  await new Promise((res) => perf.once('exit', res))
  await s.stop()
  const rep = (sort, n) => execFileSync('perf', ['report', '-i', data, '--no-children', '--sort', sort, '--stdio', '--percent-limit', '0.5', '-g', 'none'], { encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\n').filter((l) => l && !l.startsWith('#')).slice(0, n)
  report.push(`# Native profile (perf record -g), server ${o.server}${o.server === 'h3node' ? ` ${o.mode}` : ''}, ${streams} streams / ${connections} conn, ${seconds} s`, '',
    `${Math.round(r.reqPerSec)} req/s under perf, server CPU ${(cpu / r.ok).toFixed(1)} µs/request`, '',
    '## By shared object', '', ...rep('dso', 20), '', '## By thread', '', ...rep('comm', 10), '', '## Top symbols', '', ...rep('dso,sym', 60), '', `data: ${data} (perf report -i ${data})`, '')
  const out = path.join(o.out, `profile-${o.server}${o.server === 'h3node' ? `-${o.mode}` : ''}.txt`)
  fs.writeFileSync(out, report.join('\n'))
  console.log(report.join('\n'))
  console.error(`[profile] written to ${out}`)
  fs.rmSync(tmp, { recursive: true, force: true })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
