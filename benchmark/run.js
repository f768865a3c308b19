#!/usr/bin/env node
// `npm run bench`: h3node and its peers side by side on this machine, in one run, with the
// same load generators; writes benchmark/results/latest.json (raw figures, ratios,
// environment), latest.md (ratio table, targets with pass/miss) and throughput.svg.
// See benchmark/README.md for the figures, the flags and what each number means.
// No figure is asserted anywhere: the numbers are reported, not judged by tests.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('node:util')
const tools = require('./lib/tools')
const proc = require('./lib/proc')
const load = require('./lib/load')
const report = require('./lib/report')
const { PEERS } = require('./peers')

const FIGURES = ['small', 'latency', 'bulk', 'idle', 'connections']
const GiB = 1024 ** 3
const MiB = 1024 ** 2

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    peers: { type: 'string' },
    node: { type: 'string', default: '24' },
    figures: { type: 'string' },
    seconds: { type: 'string' },
    rounds: { type: 'string' },
    'peak-rounds': { type: 'string' },
    'step-warmup': { type: 'string' },
    'bulk-bytes': { type: 'string' },
    idle: { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    spin: { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(__dirname, 'results') },
    help: { type: 'boolean', short: 'h', default: false },
  },
})

if (flags.help) {
  console.log(`usage: node benchmark/run.js [--quick] [--peers ${PEERS.map((p) => p.id).join(',')}]
       [--node 24|current] [--figures ${FIGURES.join(',')}] [--seconds N] [--step-warmup N] [--rounds N] [--peak-rounds N] [--bulk-bytes N] [--idle N] [--no-pin] [--spin] [--out DIR]

  --node 24       (default) the h3node peers and node-http2 run on Node ${tools.NODE24_VERSION}, the binary
                  currentspace runs on (installed into ${tools.cache} when missing)
  --node current  they run on the Node running this script (${process.version}, ${process.execPath})
  ${PEERS.find((p) => p.hostOf)?.id} (the for-await server on ${process.version}) comes with h3node-for-await
  when the two binaries differ.
  --spin          a SCHED_IDLE busy loop on each pinned core for the whole run, so that neither
                  vCPU halts between packets; it lengthens the p99 figures (benchmark/README.md,
                  "Spinners"); off by default
  --step-warmup N seconds of the same load, not measured, before every measured small-request
                  and half-load step (default 0: none); in an isolated test a Node server that sat
                  idle was slower for its first seconds of load (benchmark/README.md, "Warm-up
                  before each step")`)
  process.exit(0)
}
tools.checkNodeOption(flags.node)

const quick = flags.quick
const settings = {
  mode: quick ? 'quick' : 'full',
  seconds: Number(flags.seconds ?? (quick ? 3 : 5)),
  warmupSeconds: quick ? 1 : 2,
  // Seconds of the step's own load (layout and rate), not measured, right before each measured
  // small-request and half-load step (--step-warmup; off by default): every server idles while
  // the others are measured (benchmark/README.md, "Warm-up before each step").
  stepWarmupSeconds: Number(flags['step-warmup'] ?? 0),
  // Small-request steps, half-load latency and bulk transfers are measured this many times,
  // interleaved; each figure is the median round (benchmark/README.md, "Rounds").
  rounds: Number(flags.rounds ?? (quick ? 1 : 3)),
  // Then every server's peak layout is loaded this many more times, interleaved, and the
  // small-request targets are judged on the ratios of these paired rounds (benchmark/README.md,
  // "Paired peak rounds").
  peakRounds: Number(flags['peak-rounds'] ?? (quick ? 0 : 5)),
  // [concurrent streams, connections]: streams are spread evenly over the connections.
  steps: quick
    ? [[1, 1], [16, 1], [64, 1], [256, 4]]
    : [[1, 1], [16, 1], [64, 1], [256, 1], [16, 16], [64, 4], [256, 4], [64, 64], [256, 64]],
  // Half-load latency is also taken at this one step for every server, so that its p50 and p99
  // compare like with like: at its own peak step a server serving 1,024 streams and one serving
  // 64 are not loaded the same way (benchmark/README.md, "Figures"). One of `steps`.
  latencyStep: [64, 1],
  bulkBytes: Number(flags['bulk-bytes'] ?? (quick ? 256 * MiB : GiB)),
  idleConnections: Number(flags.idle ?? (quick ? 1000 : 10_000)),
  // Seconds the idle client keeps starting connections (it is given up on at 180): a server
  // that accepts them slowly is measured on those opened by then.
  idleOpenSeconds: 120,
  connectSeconds: quick ? 3 : 5,
  connectWorkers: 16,
  // QUIC idle timeout of every HTTP/3 server. oha waits at the end of each step until the server
  // closes its connections (most servers wait for the idle timeout), so it is kept short;
  // the idle-connection client sends keep-alives every 2 s.
  idleTimeoutMs: 5000,
  cores: flags['no-pin'] ? null : { server: 0, client: 1 },
  // A SCHED_IDLE busy loop on each pinned core (--spin): it runs only when no real thread wants
  // the core, and keeps the cores from halting (on a VM a halted vCPU is slow to wake). It
  // lengthens the half-load tail (benchmark/README.md, "Spinners").
  spin: Boolean(flags.spin) && !flags['no-pin'],
  // The Node the h3node peers and node-http2 run on (environment.versions.peerNode says which binary).
  node: flags.node,
}
const selectedPeers = flags.peers ? flags.peers.split(',').map((s) => s.trim()) : PEERS.map((p) => p.id)
const selectedFigures = new Set(flags.figures ? flags.figures.split(',').map((s) => s.trim()) : FIGURES)
for (const id of selectedPeers) if (!PEERS.some((p) => p.id === id)) throw new Error(`unknown peer ${id}`)
for (const f of selectedFigures) if (!FIGURES.includes(f)) throw new Error(`unknown figure ${f}`)

if (!Number.isInteger(settings.stepWarmupSeconds) || settings.stepWarmupSeconds < 0) throw new Error(`--step-warmup takes a whole number of seconds >= 0, not ${flags['step-warmup']}`)
if (!Number.isInteger(settings.rounds) || settings.rounds < 1) throw new Error(`--rounds takes a whole number >= 1, not ${flags.rounds}`)
if (!Number.isInteger(settings.peakRounds) || settings.peakRounds < 0) throw new Error(`--peak-rounds takes a whole number >= 0, not ${flags['peak-rounds']}`)

const SERVER_CORE = settings.cores?.server
const CLIENT_CORE = settings.cores?.client
const log = tools.log

function mtu() {
  try {
    return Number(fs.readFileSync('/sys/class/net/lo/mtu', 'utf8').trim())
  } catch {
    return null
  }
}

function environment(toolsFound) {
  const cpu = os.cpus()
  return {
    cpuModel: cpu[0]?.model,
    cores: cpu.length,
    memoryBytes: os.totalmem(),
    kernel: os.release(),
    loopbackMtu: mtu(),
    loadAverageAtStart: os.loadavg(),
    pinning: settings.cores ? { serverCore: SERVER_CORE, loadGeneratorCore: CLIENT_CORE, tool: 'taskset -c' } : null,
    versions: {
      // The Node running run.js and the HTTP/2 bulk client (clients/h2-bulk.js); the servers'
      // Nodes are in peerNode.
      node: process.version,
      nodeBin: process.execPath,
      serverNode: null,
      // Peer id -> { bin, version } of the Node that peer's server ran on (Node peers only).
      peerNode: {},
      oha: toolsFound.oha ? tools.version(toolsFound.oha) : null,
      h2load: toolsFound.h2load ? tools.version(toolsFound.h2load) : null,
      go: tools.version('go', ['version']),
      rustc: tools.version('rustc'),
      quicGoClient: 'quic-go v0.65.0 (benchmark/clients/quic-bench)',
      h3nodeAddon: (() => {
        try {
          const st = fs.statSync(path.join(__dirname, '..', 'h3node.linux-x64-gnu.node'))
          return { builtAt: st.mtime.toISOString(), bytes: st.size }
        } catch {
          return null
        }
      })(),
    },
  }
}

async function startServer(peer, prep, cert, { retry = false } = {}) {
  const port = await proc.freePort()
  const [cmd, args, env] = peer.command(prep, { port, retry, cert: cert.cert, key: cert.key, idleMs: settings.idleTimeoutMs })
  const [c, a] = proc.pinned(SERVER_CORE, cmd, args)
  const s = await proc.startProcess(c, a, { env })
  await proc.sleep(300)
  return { ...s, port, url: `https://127.0.0.1:${port}` }
}

function alive(server) {
  return server && server.child.exitCode == null && server.child.signalCode == null
}

/** Runs fn, recording its error on the peer instead of throwing. */
async function attempt(result, what, fn) {
  try {
    return await fn()
  } catch (e) {
    const msg = String(e?.message ?? e).slice(0, 2000)
    log(`  ${what}: FAILED ${msg.split('\n')[0]}`)
    result.errors.push({ figure: what, error: msg })
    return undefined
  }
}

/** Share of the wall time since `mark` that the hypervisor stole from the server's and the load generator's cores. */
function stealSince(mark) {
  const now = proc.stealTicks()
  const wall = performance.now() - mark.t
  return { serverCore: proc.stealShare(mark.ticks, now, SERVER_CORE, wall), loadCore: proc.stealShare(mark.ticks, now, CLIENT_CORE, wall) }
}
const stealMark = () => ({ ticks: proc.stealTicks(), t: performance.now() })

async function smallStep(peer, prep, server, [streams, connections], extra = {}) {
  const opts = { connections, streams, seconds: extra.seconds ?? settings.seconds, qps: extra.qps, core: CLIENT_CORE }
  const generate = (o) => peer.protocol === 'h2'
    ? load.h2load(prep.h2load, `${server.url}/`, o)
    : load.oha(toolsFound.oha, `${server.url}/`, o)
  // The same load, unmeasured, first (settings.stepWarmupSeconds); its result is not looked at.
  if (extra.warm !== false && settings.stepWarmupSeconds > 0) await generate({ ...opts, seconds: settings.stepWarmupSeconds })
  const before = proc.cpuMicros(server.pid)
  const mark = stealMark()
  const r = await generate(opts)
  const wall = performance.now() - mark.t
  const cpu = proc.cpuMicros(server.pid) - before
  const steal = stealSince(mark)
  if (!alive(server)) throw new Error(`server exited during the step: ${server.stderr().slice(-500)}`)
  return {
    ...r,
    serverCpuMicros: cpu,
    serverCpuMicrosPerRequest: r.ok ? cpu / r.ok : null,
    serverCpuShare: cpu / 1000 / wall,
    serverRssBytes: proc.rssBytes(server.pid),
    steal,
    loopbackMtu: mtu(),
  }
}

// The machine's speed drifts over a run (benchmark/README.md), so the servers are not measured one
// after the other: all of them run at once (idle ones cost nothing measurable) and every step
// loads each in turn, starting with a different one at each step.
function rotated(list, k) {
  return list.map((_, i) => list[(i + k) % list.length])
}

/**
 * The median of a figure's rounds: the whole record of the middle round by `key` (the lower
 * middle for an even count), with every round's value of `key` kept as `rounds`.
 */
function medianRound(list, key) {
  const ok = list.filter((m) => m && Number.isFinite(m[key]))
  if (!ok.length) return null
  const sorted = [...ok].sort((a, b) => a[key] - b[key])
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]
  return { ...mid, rounds: ok.map((m) => m[key]), failedRounds: list.length - ok.length }
}

async function runSmall(runs) {
  log(`small requests: warm-up ${settings.warmupSeconds}s each`)
  for (const r of runs) {
    r.smallRounds = settings.steps.map(() => [])
    await attempt(r.result, 'small:warmup', () => smallStep(r.peer, r.prep, r.server, [16, 1], { seconds: settings.warmupSeconds, warm: false }))
  }
  for (let round = 0; round < settings.rounds; round++) {
    if (settings.rounds > 1) log(`  round ${round + 1} of ${settings.rounds}`)
    for (const [k, step] of settings.steps.entries()) {
      log(`  ${String(step[0]).padStart(3)} streams / ${String(step[1]).padStart(2)} conn`)
      for (const r of rotated(runs, k + round)) {
        if (!alive(r.server)) continue
        const m = await attempt(r.result, `small:${step[0]}x${step[1]}`, () => smallStep(r.peer, r.prep, r.server, step))
        if (m) log(`    ${r.peer.label}: ${Math.round(m.reqPerSec)} req/s, ${m.serverCpuMicrosPerRequest?.toFixed(1)} µs/req server CPU, client CPU ${(m.clientCpuShare * 100).toFixed(0)}%${m.errors ? `, ${m.errors} errors` : ''}`)
        r.smallRounds[k].push(m && m.reqPerSec > 0 ? m : null)
      }
    }
  }
  for (const r of runs) {
    r.result.small = settings.steps.map(([streams, connections], k) => medianRound(r.smallRounds[k], 'reqPerSec') ?? { streams, connections, failed: true })
  }
}

/**
 * Paired peak rounds: every server's peak layout (from its median rounds) loaded
 * `settings.peakRounds` more times, all servers in turn in each round, starting with a
 * different one each time. Two servers' figures of one round were taken within a minute of
 * each other, so their ratio is less exposed to the machine's drift than a ratio of two
 * medians; report.js judges the small-request targets on the median of these per-round ratios.
 */
async function runPeak(runs) {
  const live = runs.filter((r) => report.peakStep(r.result))
  if (!live.length) return
  log(`paired peak rounds: ${settings.peakRounds}, each server at its peak layout`)
  for (const r of live) {
    const p = report.peakStep(r.result)
    r.result.peak = { streams: p.streams, connections: p.connections, rounds: [] }
  }
  for (let round = 0; round < settings.peakRounds; round++) {
    log(`  peak round ${round + 1} of ${settings.peakRounds}`)
    for (const r of rotated(live, round)) {
      const pk = r.result.peak
      if (!alive(r.server)) {
        pk.rounds.push(null)
        continue
      }
      const m = await attempt(r.result, `peak:${round + 1}`, () => smallStep(r.peer, r.prep, r.server, [pk.streams, pk.connections]))
      if (m) log(`    ${r.peer.label} (${pk.streams}x${pk.connections}): ${Math.round(m.reqPerSec)} req/s, ${m.serverCpuMicrosPerRequest?.toFixed(1)} µs/req, steal ${(100 * (m.steal.serverCore ?? 0)).toFixed(0)}%/${(100 * (m.steal.loadCore ?? 0)).toFixed(0)}%`)
      pk.rounds.push(m && m.reqPerSec > 0 ? { round, reqPerSec: m.reqPerSec, serverCpuMicrosPerRequest: m.serverCpuMicrosPerRequest, clientCpuShare: m.clientCpuShare, errors: m.errors, steal: m.steal } : null)
    }
  }
}

/**
 * p50/p99 at half load. Without `step`: on the server's own peak step, at half its peak (the
 * paired peak rounds' median when there are any: the best of the sweep's steps is the highest
 * of several noisy medians, so half of it can sit close to the server's real capacity). With
 * `step` ([streams, connections], one of settings.steps): on that step, at half the server's
 * req/s there (its median round).
 */
async function runLatency(peer, prep, server, result, step) {
  let layout, peakRate
  if (step) {
    const at = report.measuredSteps(result).find((s) => s.streams === step[0] && s.connections === step[1])
    if (!at) throw new Error(`no small-request figure at ${step[0]}x${step[1]} to take the rate from`)
    layout = step
    peakRate = at.reqPerSec
  } else {
    const peak = report.peakStep(result)
    if (!peak) throw new Error('no small-request figure to take the peak rate from')
    layout = [peak.streams, peak.connections]
    peakRate = report.summarize(result).pairedPeakReqPerSec ?? peak.reqPerSec
  }
  const qps = Math.max(1, Math.round(peakRate / 2))
  const r = await smallStep(peer, prep, server, layout, { qps })
  log(`  ${peer.label}: half load (${qps} req/s on ${layout[0]}x${layout[1]}): p50 ${r.p50Ms?.toFixed(2)} ms, p99 ${r.p99Ms?.toFixed(2)} ms`)
  return { ...r, targetRate: qps, peakRate }
}

/**
 * How long a bulk transfer of `n` bytes may take, ms: 30 s plus the time at 100 Mbit/s
 * (116 s for 1 GiB). An upload to plain tokio-quiche sometimes stalls for good (README,
 * "Known effects"); the round's figure is then missing instead of the run waiting 10 minutes.
 */
function bulkTimeoutMs(n) {
  return 30_000 + Math.ceil((n * 8) / 100e6) * 1000
}

async function runBulk(peer, prep, server, result, dir) {
  const n = settings.bulkBytes
  const timeoutMs = bulkTimeoutMs(n)
  const r = await attempt(result, `bulk:${dir}`, async () => {
    const before = proc.cpuMicros(server.pid)
    const mark = stealMark()
    let out
    if (peer.protocol === 'h2') {
      out = await load.h2Bulk(dir === 'download' ? `${server.url}/bytes/${n}` : `${server.url}/sink`, dir, n, { core: CLIENT_CORE, timeoutMs })
      out.client = 'node:http2 (one stream)'
    } else {
      const qb = await tools.ensureQuicBench()
      out = dir === 'download'
        ? await load.quicBench(qb, 'download', ['-url', `${server.url}/bytes/${n}`], { core: CLIENT_CORE, timeoutMs })
        : await load.quicBench(qb, 'upload', ['-url', `${server.url}/sink`, '-bytes', String(n)], { core: CLIENT_CORE, timeoutMs })
      out.client = 'quic-go v0.65.0 (benchmark/clients/quic-bench, one stream)'
    }
    if (out.bytes !== n) throw new Error(`transferred ${out.bytes} of ${n} bytes`)
    return { ...out, serverCpuMicros: proc.cpuMicros(server.pid) - before, steal: stealSince(mark), loopbackMtu: mtu() }
  })
  if (r) log(`  ${peer.label}: bulk ${dir}: ${r.gbps.toFixed(2)} Gbit/s (${(n / MiB).toFixed(0)} MiB in ${r.seconds.toFixed(2)} s)`)
  return r
}

async function runIdle(peer, prep, cert, result) {
  const qb = await tools.ensureQuicBench()
  const server = await startServer(peer, prep, cert)
  let child = null
  try {
    await proc.sleep(500)
    const before = proc.rssBytes(server.pid)
    const n = settings.idleConnections
    // Open the connections, then keep the client alive (stdin open) while RSS is read.
    const { spawn } = require('node:child_process')
    // A server that accepts connections slowly is measured on those opened in the first
    // settings.idleOpenSeconds (the report says how many): @currentspace/http3 took 9.8 s for 1,000.
    const [c, a] = proc.pinned(CLIENT_CORE, qb, ['idle', '-url', `${server.url}/`, '-n', String(n), '-c', '64', '-open-seconds', String(settings.idleOpenSeconds)])
    child = spawn(c, a, { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stderr.on('data', (d) => (err += d))
    const ready = await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('idle client: no answer within 180 s')), 180_000)
      child.stdout.on('data', (d) => {
        out += d
        const line = out.split('\n').find((l) => l.includes('"ready"'))
        if (line) {
          clearTimeout(t)
          resolve(JSON.parse(line))
        }
      })
      child.on('exit', (code) => {
        clearTimeout(t)
        reject(new Error(`idle client exited (${code}): ${(err + out).slice(-500)}`))
      })
    })
    await proc.sleep(2000) // let the server settle after the burst
    const after = proc.rssBytes(server.pid)
    const open = ready.opened
    child.stdin.end()
    await new Promise((r) => child.once('exit', r))
    result.idle = {
      client: 'quic-go v0.65.0 (benchmark/clients/quic-bench idle: one GET per connection, then keep-alives)',
      requested: n,
      opened: open,
      failed: ready.failed,
      notStarted: ready.notStarted,
      firstError: ready.firstError,
      openSeconds: ready.seconds,
      rssBeforeBytes: before,
      rssWithConnectionsBytes: after,
      bytesPerConnection: open ? (after - before) / open : null,
      loopbackMtu: mtu(),
    }
    log(`  idle: ${open}/${n} connections open, ${(result.idle.bytesPerConnection / 1024).toFixed(1)} KiB each (RSS ${(before / MiB).toFixed(0)} -> ${(after / MiB).toFixed(0)} MiB)`)
  } finally {
    // A client that never became ready (or did not leave) would keep its
    // 10,000 connections alive on the load-generator core for the rest of the run.
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await server.stop()
  }
}

/**
 * New connections per second: `settings.rounds` rounds, each going round every HTTP/3 server
 * (starting with a different one each round), Retry off then on, on a server started for that
 * measurement alone; each figure is the median round. Measured one server after the other, the
 * machine's drift over those minutes landed in the ratios (2026-11-24: h3node 927/s against
 * tokio-quiche's 1,235 at the end of a full run, 1,332 against 1,043 measured alone).
 */
async function runConnections(runs, cert, qb) {
  const rounds = new Map(runs.map((r) => [r, { retryOff: [], retryOn: [] }]))
  for (let round = 0; round < settings.rounds; round++) {
    log(`new connections, round ${round + 1} of ${settings.rounds}`)
    for (const r of rotated(runs, round)) {
      for (const retry of [false, true]) {
        const key = retry ? 'retryOn' : 'retryOff'
        const m = await attempt(r.result, `connections:${key}`, () => connectionRate(qb, r.peer, r.prep, cert, retry))
        if (m) log(`  ${r.peer.label}, Retry ${retry ? 'on' : 'off'}: ${Math.round(m.connPerSec)}/s${m.failed ? ` (${m.failed} failed: ${m.firstError})` : ''}`)
        rounds.get(r)[key].push(m)
      }
    }
  }
  for (const r of runs) {
    for (const key of ['retryOff', 'retryOn']) {
      const m = medianRound(rounds.get(r)[key], 'connPerSec')
      if (m) (r.result.connections ??= {})[key] = m
    }
  }
}

/** One connection-rate measurement: a fresh server (`retry`), quic-go connecting for `connectSeconds`. */
async function connectionRate(qb, peer, prep, cert, retry) {
  const server = await startServer(peer, prep, cert, { retry })
  try {
    const before = proc.cpuMicros(server.pid)
    const out = await load.quicBench(qb, 'connect', ['-url', `${server.url}/`, '-d', String(settings.connectSeconds), '-c', String(settings.connectWorkers)], { core: CLIENT_CORE })
    const cpu = proc.cpuMicros(server.pid) - before
    return { ...out, client: 'quic-go v0.65.0 (new connection, one GET, close)', workers: settings.connectWorkers, serverCpuMicrosPerConnection: out.connections ? cpu / out.connections : null, loopbackMtu: mtu() }
  } finally {
    await server.stop()
  }
}

const toolsFound = {}

/**
 * The Node binary of the h3node peers and node-http2 (--node), resolved once: every peer
 * awaits the same promise, so a failed Node 24 install is tried once and fails each of them
 * with the same message.
 */
let serverNodePromise
function serverNode() {
  serverNodePromise ??= flags.node === 'current'
    ? Promise.resolve(process.execPath)
    : tools.ensureNode24().catch((e) => {
      throw new Error(`Node ${tools.NODE24_VERSION} unavailable (${e.message}); --node current runs these servers on ${process.version}`)
    })
  return serverNodePromise
}

/**
 * The peers to run: those of --peers (all by default), plus a peer's host-Node copy (hostOf)
 * when that peer runs; a host-Node copy only when the servers' Node is not the host's (it
 * would measure the same binary twice).
 */
function choosePeers(serverBin) {
  const sameNode = serverBin === process.execPath
  const chosen = PEERS.filter((p) => selectedPeers.includes(p.id) || (p.hostOf && selectedPeers.includes(p.hostOf)))
  for (const p of chosen) if (p.hostOf && sameNode && selectedPeers.includes(p.id) && flags.peers) log(`${p.id} left out: --node ${flags.node} is already ${process.version}`)
  return chosen.filter((p) => !(p.hostOf && sameNode))
}

/**
 * Starts a SCHED_IDLE busy loop pinned to each of `cores`; returns a function that stops them.
 * `chrt` runs each one with the idle policy or not at all (a normal-priority spinner would take
 * half of its core from the servers): one that cannot start, or stops early, is logged and the
 * run goes on without it.
 */
function startSpinners(cores) {
  const { spawn } = require('node:child_process')
  const kids = cores.map((core) =>
    spawn('chrt', ['--idle', '0', 'taskset', '-c', String(core), process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' }),
  )
  const stop = () => {
    for (const k of kids) k.kill('SIGKILL')
  }
  process.on('exit', stop)
  for (const k of kids) {
    k.on('error', (e) => log(`spinner failed to start: ${e.message}`))
    k.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') log(`spinner exited (${signal ?? code}): is chrt (util-linux) there?`)
    })
  }
  return stop
}

async function main() {
  const t0 = Date.now()
  const runMark = stealMark()
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'h3node-bench-'))
  const cert = tools.makeCert(tmp)
  // null when Node 24 cannot be installed: the peers on it then fail in prepare, the host copy runs.
  const serverBin = await serverNode().catch((e) => (log(e.message), null))
  const peers = choosePeers(serverBin)
  if (peers.some((p) => p.protocol === 'h3')) {
    if (selectedFigures.has('small') || selectedFigures.has('latency')) toolsFound.oha = await tools.ensureOha().catch((e) => (log(`oha unavailable: ${e.message}`), null))
    await tools.ensureQuicBench().catch((e) => log(`quic-bench unavailable: ${e.message}`))
  }
  if (peers.some((p) => p.protocol === 'h2')) toolsFound.h2load = await tools.ensureH2load().catch((e) => (log(`h2load unavailable: ${e.message}`), null))

  const results = {
    date: new Date().toISOString(),
    command: `node benchmark/run.js ${process.argv.slice(2).join(' ')}`.trim(),
    settings,
    environment: environment(toolsFound),
    peers: {},
  }
  if (serverBin) results.environment.versions.serverNode = { choice: flags.node, bin: serverBin, version: tools.version(serverBin) }
  // After the environment is read: the spinners would count in its load average.
  const stopSpinners = settings.spin ? startSpinners([SERVER_CORE, CLIENT_CORE]) : () => {}
  log(`${settings.mode} run: peers ${peers.map((p) => p.id).join(', ')}; figures ${[...selectedFigures].join(', ')}; loopback MTU ${results.environment.loopbackMtu}`)
  log(`Node servers on ${results.environment.versions.serverNode?.version ?? `Node ${tools.NODE24_VERSION} (unavailable)`} (--node ${flags.node}); run.js and the HTTP/2 bulk client on ${process.version}`)

  // Every peer is prepared first; then the load figures run interleaved across all of them
  // (see runSmall); idle connections, which start servers of their own, run per peer at the
  // end, and connection rates (a server of their own for each measurement) go round the
  // peers in rounds after them.
  const runs = []
  for (const peer of peers) {
    const result = { label: peer.label, protocol: peer.protocol, status: 'ok', errors: [] }
    results.peers[peer.id] = result
    log(`== ${peer.label}`)
    const prep = await attempt(result, 'prepare', () => peer.prepare({ serverNode }))
    if (!prep) {
      result.status = 'failed'
      continue
    }
    result.version = peer.version(prep)
    if (prep.node) results.environment.versions.peerNode[peer.id] = { bin: prep.node, version: tools.version(prep.node) }
    log(`  ${result.version}`)
    if (peer.protocol === 'h3' && !toolsFound.oha && (selectedFigures.has('small') || selectedFigures.has('latency'))) result.errors.push({ figure: 'small', error: 'oha unavailable' })
    runs.push({ peer, prep, result, server: null })
  }
  const needsLoad = selectedFigures.has('small') || selectedFigures.has('latency') || selectedFigures.has('bulk')
  if (needsLoad) {
    for (const r of runs) r.server = await attempt(r.result, 'start', () => startServer(r.peer, r.prep, cert))
    const live = runs.filter((r) => r.server)
    try {
      if (selectedFigures.has('small') || selectedFigures.has('latency')) await runSmall(live)
      if (selectedFigures.has('small') && settings.peakRounds > 0) await runPeak(live)
      if (selectedFigures.has('latency')) {
        const [ls, lc] = settings.latencyStep
        for (const [key, step, what] of [
          ['latency', null, 'half of each server\'s peak, on its own peak step'],
          ['latencyCommon', settings.latencyStep, `half of each server's req/s on ${ls} streams over ${lc} connection${lc > 1 ? 's' : ''} (one step for all)`],
        ]) {
          log(`latency at ${what}`)
          const rounds = new Map(live.map((r) => [r, []]))
          for (let round = 0; round < settings.rounds; round++) {
            for (const r of rotated(live, round)) if (alive(r.server)) rounds.get(r).push(await attempt(r.result, key, () => runLatency(r.peer, r.prep, r.server, r.result, step)))
          }
          for (const r of live) {
            const m = medianRound(rounds.get(r), 'p99Ms')
            if (m) r.result[key] = m
          }
        }
      }
      if (selectedFigures.has('bulk')) {
        log('bulk')
        const rounds = new Map(live.map((r) => [r, { download: [], upload: [] }]))
        for (let round = 0; round < settings.rounds; round++) {
          for (const [k, dir] of ['download', 'upload'].entries()) {
            for (const r of rotated(live, k + round)) if (alive(r.server)) rounds.get(r)[dir].push(await runBulk(r.peer, r.prep, r.server, r.result, dir))
          }
        }
        for (const r of live) {
          for (const dir of ['download', 'upload']) {
            const m = medianRound(rounds.get(r)[dir], 'gbps')
            if (m) (r.result.bulk ??= {})[dir] = m
          }
        }
      }
    } finally {
      for (const r of live) {
        if (!alive(r.server)) r.result.errors.push({ figure: 'server', error: `server exited: ${r.server.stderr().slice(-1000)}` })
        await r.server.stop()
      }
    }
  }
  const h3 = runs.filter((r) => r.peer.protocol === 'h3')
  if (selectedFigures.has('idle')) {
    for (const { peer, prep, result } of h3) {
      log(`== ${peer.label}: idle connections`)
      await attempt(result, 'idle', () => runIdle(peer, prep, cert, result))
    }
  }
  if (selectedFigures.has('connections') && h3.length) {
    const qb = await tools.ensureQuicBench().catch((e) => {
      for (const { result } of h3) result.errors.push({ figure: 'connections', error: `quic-bench unavailable: ${e?.message ?? e}` })
      return null
    })
    if (qb) await runConnections(h3, cert, qb)
  }
  for (const { result } of runs) {
    if (result.errors.length) result.status = result.small?.some((s) => !s.failed) || result.bulk ? 'partial' : 'failed'
  }

  stopSpinners()
  results.durationSeconds = (Date.now() - t0) / 1000
  results.environment.loadAverageAtEnd = os.loadavg()
  results.environment.stealDuringRun = stealSince(runMark)
  const derived = report.derive(results)
  results.summary = derived.summary
  results.ratios = derived.ratios
  results.targets = derived.targets
  fs.mkdirSync(flags.out, { recursive: true })
  fs.writeFileSync(path.join(flags.out, 'latest.json'), JSON.stringify(results, null, 2) + '\n')
  fs.writeFileSync(path.join(flags.out, 'latest.md'), report.markdown(results))
  fs.writeFileSync(path.join(flags.out, 'throughput.svg'), report.svg(results))
  fs.rmSync(tmp, { recursive: true, force: true })
  log(`done in ${results.durationSeconds.toFixed(0)} s: ${path.relative(process.cwd(), flags.out)}/latest.{json,md}, throughput.svg`)
  console.log(report.markdown(results))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
