#!/usr/bin/env node
// Where the half-load tail comes from: runs the h3node hello world (peers/h3node-server.js)
// pinned to core 0 under oha at a fixed rate (pinned to core 1) and sets every request oha
// timed beside what the server process did at that moment:
//   - oha `--db-url` gives each request's start and duration;
//   - lib/stalls.js (preloaded) gives the server's event-loop stalls and GC pauses on the wall
//     clock, and the arrival of the first measured request, which aligns the two clocks;
//   - `--trace-gc-nvp` gives each scavenge's bytes promoted to the old generation.
// Prints, for the requests at or above p99, the share that overlapped a stall of the server's
// event loop, by what the stall contained (a scavenge, a mark-compact, no GC entry), and the
// GC figures behind it. Writes the figures to benchmark/results/tail/ (not committed).
//   node benchmark/tail.js [--mode for-await|serve] [--rate 16000] [--streams 64]
//        [--connections 1] [--seconds 5] [--node 24|current] [--helpers-priority N|idle]
//        [-- <extra node flags for the server>]
// --helpers-priority: after the warm-up, every thread of the server but the JS thread and the
// native I/O threads (V8's helpers, the inspector's, napi-rs's idle runtime) is set to nice N
// (renice) or to SCHED_IDLE (chrt -i): what the tail owes to those threads taking the core.
// Reading oha's database needs node:sqlite (Node >= 22.5): under an older Node the script
// runs itself again under the Node 24 the benchmark installs.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const os = require('node:os')
const { parseArgs } = require('node:util')
const { execFileSync } = require('node:child_process')
const tools = require('./lib/tools')
const proc = require('./lib/proc')
const { percentile } = require('./lib/load')

const { values: o, positionals: extra } = parseArgs({
  options: {
    mode: { type: 'string', default: 'for-await' },
    rate: { type: 'string', default: '16000' },
    streams: { type: 'string', default: '64' },
    connections: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '5' },
    node: { type: 'string', default: '24' },
    out: { type: 'string', default: path.join(__dirname, 'results', 'tail') },
    'helpers-priority': { type: 'string' },
  },
  allowPositionals: true,
})
if (!['for-await', 'serve'].includes(o.mode)) throw new Error(`--mode takes for-await or serve, not ${o.mode}`)
tools.checkNodeOption(o.node)
for (const k of ['rate', 'streams', 'connections', 'seconds']) {
  if (!(Number(o[k]) > 0)) throw new Error(`--${k} must be a positive number, not ${o[k]}`)
}

const helpers = o['helpers-priority']
if (helpers !== undefined && helpers !== 'idle' && !(/^\d+$/.test(helpers) && Number(helpers) <= 19)) {
  throw new Error(`--helpers-priority takes a nice value 0 to 19 or idle, not ${helpers}`)
}

/** Lowers the priority of every thread of `pid` but its main thread and h3node's I/O threads; returns their names. */
function lowerHelpers(pid, how) {
  const names = []
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
    if (Number(tid) === pid || name === 'h3node-io') continue
    if (how === 'idle') execFileSync('chrt', ['--idle', '-p', '0', tid])
    else execFileSync('renice', ['-n', how, '-p', tid], { stdio: 'ignore' })
    names.push(name)
  }
  return names
}

const KIND = { 1: 'scavenge', 2: 'minor mark-sweep', 4: 'mark-compact', 8: 'incremental marking', 16: 'weak callbacks' }

/** Sums of the `--trace-gc-nvp` lines: scavenges (count, pause, promoted) and full GCs. */
function nvpSummary(text) {
  const sc = { n: 0, pauseMs: 0, promoted: 0, survived: 0 }
  const full = { n: 0, pauseMs: 0 }
  for (const line of text.split('\n')) {
    const gc = / gc=(\w+)/.exec(line)
    if (!gc) continue
    const pause = Number(/ pause=([\d.]+)/.exec(line)?.[1] ?? 0)
    if (gc[1] === 's') {
      sc.n++
      sc.pauseMs += pause
      sc.promoted += Number(/ promoted=(\d+)/.exec(line)?.[1] ?? 0)
      sc.survived += Number(/ new_space_survived=(\d+)/.exec(line)?.[1] ?? 0)
    } else {
      full.n++
      full.pauseMs += pause
    }
  }
  return { scavenges: sc, full }
}

async function main() {
  fs.mkdirSync(o.out, { recursive: true })
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'h3node-tail-'))
  const cert = tools.makeCert(tmp)
  const oha = await tools.ensureOha()
  const nodeBin = await tools.nodeFor(o.node)
  const stallFile = path.join(tmp, 'stalls.json')
  const db = path.join(tmp, 'oha.db')
  const port = await proc.freePort()
  const args = ['--trace-gc-nvp', '-r', path.join(__dirname, 'lib', 'stalls.js'), ...extra,
    path.join(__dirname, 'peers', 'h3node-server.js'), '--mode', o.mode, '--port', String(port), '--cert', cert.cert, '--key', cert.key]
  const [c, a] = proc.pinned(0, nodeBin, args)
  const s = await proc.startProcess(c, a, { env: { H3NODE_TAIL_FILE: stallFile } })
  const url = `https://127.0.0.1:${port}/`
  const per = Math.max(1, Math.round(Number(o.streams) / Number(o.connections)))
  const ohaArgs = (secs) => ['--http-version', '3', '--insecure', '--no-tui', '-c', o.connections, '-p', String(per), '-z', `${secs}s`]
  // Warm-up at full speed, then arm the mark and measure at the rate.
  await proc.runMeasured(oha, ohaArgs(2), { core: 1 })
  const lowered = helpers === undefined ? [] : lowerHelpers(s.pid, helpers)
  await proc.sleep(500)
  // The measured period's GC lines, read off the server's stdout from here on (startProcess
  // keeps only a bounded tail of it).
  let nvpText = ''
  s.child.stdout.on('data', (d) => {
    nvpText += d
  })
  s.child.kill('SIGUSR2')
  await proc.sleep(100)
  const r = await proc.runMeasured(oha, [...ohaArgs(o.seconds), '-q', o.rate, '--db-url', db, url], { core: 1 })
  if (r.code !== 0) throw new Error(`oha failed (${r.code}): ${r.stderr.slice(-800)}`)
  const nvp = nvpSummary(nvpText)
  await s.stop()
  const srv = JSON.parse(fs.readFileSync(stallFile, 'utf8'))

  const { DatabaseSync } = require('node:sqlite')
  const rows = new DatabaseSync(db).prepare('SELECT start, duration FROM oha WHERE status = 200 ORDER BY start').all()
  if (!rows.length || srv.firstRequest == null) throw new Error('no measured requests')
  // oha's times are seconds from its own start; the first request reached the server about
  // when oha started it (loopback, well under a millisecond).
  const base = srv.firstRequest - rows[0].start * 1000
  const durs = rows.map((x) => x.duration * 1000).sort((x, y) => x - y)
  const p50 = percentile(durs, 50)
  const p99 = percentile(durs, 99)
  const p999 = percentile(durs, 99.9)
  const slow = rows.filter((x) => x.duration * 1000 >= p99)
  const stalls = srv.stalls.map(([at, ms, run, wait, io, cpu]) => {
    const kinds = new Set(srv.gcs.filter(([g, d]) => g + d > at && g < at + ms).map(([, , k]) => k))
    const cause = kinds.has(4) ? 'mark-compact' : kinds.has(1) ? 'scavenge' : kinds.size ? KIND[[...kinds][0]] ?? 'other GC' : 'no GC entry'
    return { at, ms, run, wait, io, cpu, cause }
  })
  const byCause = new Map()
  let inStall = 0
  for (const x of slow) {
    const t0 = base + x.start * 1000
    const t1 = t0 + x.duration * 1000
    const st = stalls.find((y) => y.at < t1 && y.at + y.ms > t0)
    if (!st) continue
    inStall++
    byCause.set(st.cause, (byCause.get(st.cause) || 0) + 1)
  }
  const stallCause = new Map()
  for (const st of stalls) {
    const e = stallCause.get(st.cause) || { n: 0, ms: 0, max: 0, run: 0, wait: 0, io: 0, cpu: 0 }
    e.n++
    e.ms += st.ms
    e.run += st.run
    e.wait += st.wait
    e.io += st.io
    e.cpu += st.cpu
    e.max = Math.max(e.max, st.ms)
    stallCause.set(st.cause, e)
  }
  const version = execFileSync(nodeBin, ['--version'], { encoding: 'utf8' }).trim()
  const pct = (n, d) => `${((100 * n) / d).toFixed(0)}%`
  const lines = [
    `# Half-load tail: h3node ${o.mode} on Node ${version}, ${per} streams x ${o.connections} connection(s), oha -q ${o.rate} for ${o.seconds} s`,
    '',
    ...(helpers === undefined ? [] : [`- helper threads set to ${helpers === 'idle' ? 'SCHED_IDLE' : `nice ${helpers}`}: ${lowered.length} (${[...new Set(lowered)].join(', ')})`]),
    `- ${rows.length} requests answered (${Math.round(rows.length / Number(o.seconds))} req/s); p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, p99.9 ${p999.toFixed(2)} ms`,
    `- requests at or above p99: ${slow.length}; overlapping an event-loop stall of the server: ${inStall} (${pct(inStall, slow.length)})`,
    ...[...byCause].sort((x, y) => y[1] - x[1]).map(([k, n]) => `  - stall with ${k}: ${n} (${pct(n, slow.length)})`),
    `- event-loop stalls over 4 ms: ${stalls.length}${srv.ioThreadFound ? '' : ' (no h3node-io thread found: its time is among the other threads)'}`,
    ...[...stallCause].sort((x, y) => y[1].n - x[1].n).map(([k, e]) => `  - ${k}: ${e.n}, ${(e.ms / e.n).toFixed(1)} ms on average (JS thread running ${(e.run / e.n).toFixed(1)}, ` +
      `waiting for the core ${(e.wait / e.n).toFixed(1)}; I/O thread running ${(e.io / e.n).toFixed(1)}, ` +
      `other threads ${((e.cpu - e.run - e.io) / e.n).toFixed(1)}), longest ${e.max.toFixed(1)} ms`),
    `- scavenges: ${nvp.scavenges.n}, ${(nvp.scavenges.pauseMs / Math.max(1, nvp.scavenges.n)).toFixed(2)} ms pause on average; ` +
      `${(nvp.scavenges.survived / Math.max(1, nvp.scavenges.n) / 1024).toFixed(0)} KiB kept in the young generation and ` +
      `${(nvp.scavenges.promoted / Math.max(1, nvp.scavenges.n) / 1024).toFixed(0)} KiB promoted per scavenge ` +
      `(${(nvp.scavenges.promoted / rows.length).toFixed(0)} bytes promoted per request)`,
    `- full GCs (mark-compact): ${nvp.full.n}, ${(nvp.full.pauseMs / Math.max(1, nvp.full.n)).toFixed(1)} ms pause on average`,
    '',
  ]
  const json = { date: new Date().toISOString(), node: version, options: o, extraNodeFlags: extra, loweredThreads: lowered, requests: rows.length, p50Ms: p50, p99Ms: p99, p999Ms: p999, slow: slow.length, slowInStall: inStall, slowByCause: Object.fromEntries(byCause), stalls: Object.fromEntries(stallCause), gc: nvp }
  fs.writeFileSync(path.join(o.out, `tail-${o.mode}.json`), JSON.stringify(json, null, 2))
  console.log(lines.join('\n'))
  fs.rmSync(tmp, { recursive: true, force: true })
}

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 5)) {
  // node:sqlite first came in 22.5: run again under the benchmark's Node 24.
  tools.ensureNode24().then((bin) => {
    execFileSync(bin, [__filename, ...process.argv.slice(2)], { stdio: 'inherit' })
  }).catch((e) => {
    console.error(e.message)
    process.exit(1)
  })
} else {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}
