// Load generators: oha (HTTP/3) and h2load (HTTP/2) for small requests, the quic-go bench
// client for connections and bulk over HTTP/3, and a Node http2 client for bulk over HTTP/2.
// Every run is pinned to the load-generator core and reports its own CPU time, so a figure
// limited by the client (client CPU near 100% of its core) can be told apart.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { runMeasured } = require('./proc')

function percentile(sorted, p) {
  if (!sorted.length) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/**
 * One oha run: `streams` concurrent requests spread over `connections` QUIC connections.
 * Resolves to { reqPerSec, requests, ok, errors, p50Ms, p99Ms, clientCpuMicros, wallMs }.
 */
async function oha(bin, url, { connections, streams, seconds, qps, core, timeoutMs }) {
  const per = Math.max(1, Math.round(streams / connections))
  const args = ['--http-version', '3', '--insecure', '--no-tui', '--output-format', 'json', '-c', String(connections), '-p', String(per), '-z', `${seconds}s`, '-t', '10s']
  if (qps) args.push('-q', String(qps))
  args.push(url)
  const r = await runMeasured(bin, args, { core, timeoutMs: timeoutMs ?? (seconds + 60) * 1000 })
  let j
  try {
    j = JSON.parse(r.stdout)
  } catch {
    throw new Error(`oha failed (${r.signal ?? r.code}): ${(r.stderr || r.stdout).slice(-800)}`)
  }
  const codes = j.statusCodeDistribution || {}
  const ok = Number(codes['200'] || 0)
  // Requests still in flight when -z runs out are reported as errors by oha: not failures.
  const dist = { ...(j.errorDistribution || {}) }
  const aborted = Number(dist['aborted due to deadline'] || 0)
  delete dist['aborted due to deadline']
  const errors = Object.values(dist).reduce((a, b) => a + b, 0)
  const total = Object.values(codes).reduce((a, b) => a + Number(b), 0)
  const s = j.summary || {}
  return {
    tool: 'oha',
    connections,
    streamsPerConnection: per,
    streams: per * connections,
    requests: total,
    ok,
    errors,
    abortedAtDeadline: aborted,
    errorDistribution: dist,
    firstError: Object.keys(dist)[0],
    // oha's total includes waiting for the server to close the connection after the deadline
    // (up to the idle timeout): the rate is taken over the -z duration instead.
    seconds,
    ohaTotalSeconds: s.total,
    reqPerSec: ok / seconds,
    p50Ms: j.latencyPercentiles?.p50 * 1000,
    p99Ms: j.latencyPercentiles?.p99 * 1000,
    clientCpuMicros: r.cpuMicros,
    // over the -z duration: after it oha mostly waits for the connection to close
    clientCpuShare: r.cpuMicros / 1000 / Math.min(r.wallMs, seconds * 1000),
  }
}

/** One h2load run (HTTP/2 over TLS): same shape as oha(). */
async function h2load(bin, url, { connections, streams, seconds, qps, core, warmup = 0 }) {
  const per = Math.max(1, Math.round(streams / connections))
  const args = ['-c', String(connections), '-m', String(per), '-t', '1', '-D', String(seconds)]
  if (warmup) args.push('--warm-up-time', String(warmup))
  let log
  if (qps) {
    log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'h2load-')), 'log.tsv')
    args.push('--rps', String(Math.max(1, qps / connections)), '--log-file', log)
  }
  args.push(url)
  const r = await runMeasured(bin, args, { core, timeoutMs: (seconds + warmup + 60) * 1000 })
  const fin = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(r.stdout)
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.stdout)
  if (!fin || !req) throw new Error(`h2load failed (${r.signal ?? r.code}): ${(r.stdout + r.stderr).slice(-800)}`)
  const secs = Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1)
  const out = {
    tool: 'h2load',
    connections,
    streamsPerConnection: per,
    streams: per * connections,
    requests: Number(req[3]),
    ok: Number(req[4]),
    errors: Number(req[5]) + Number(req[6]),
    seconds: secs,
    reqPerSec: Number(req[4]) / secs,
    clientCpuMicros: r.cpuMicros,
    clientCpuShare: r.cpuMicros / 1000 / r.wallMs,
  }
  if (log) {
    const lat = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => Number(l.split('\t')[2]) / 1000).filter(Number.isFinite).sort((a, b) => a - b)
    out.p50Ms = percentile(lat, 50)
    out.p99Ms = percentile(lat, 99)
    fs.rmSync(path.dirname(log), { recursive: true, force: true })
  }
  return out
}

/** The quic-go bench client in a given mode; resolves to its last JSON line. */
async function quicBench(bin, mode, args, { core, timeoutMs = 600_000, input } = {}) {
  const r = await runMeasured(bin, [mode, ...args], { core, timeoutMs, input })
  const lines = r.stdout.trim().split('\n').filter(Boolean)
  let last
  try {
    last = JSON.parse(lines.at(-1))
  } catch {
    throw new Error(`quic-bench ${mode} failed (${r.signal ?? r.code}): ${(r.stderr + r.stdout).slice(-800)}`)
  }
  if (last.event === 'error') throw new Error(`quic-bench ${mode}: ${last.error}`)
  return { ...last, clientCpuMicros: r.cpuMicros }
}

/** Bulk over HTTP/2 with Node's http2 client (download or upload, one stream). */
async function h2Bulk(url, mode, bytes, { core, timeoutMs = 600_000 }) {
  const r = await runMeasured(process.execPath, [path.join(__dirname, '..', 'clients', 'h2-bulk.js'), mode, url, String(bytes)], { core, timeoutMs })
  try {
    return { ...JSON.parse(r.stdout.trim().split('\n').at(-1)), clientCpuMicros: r.cpuMicros }
  } catch {
    throw new Error(`h2-bulk ${mode} failed (${r.signal ?? r.code}): ${(r.stderr + r.stdout).slice(-800)}`)
  }
}

module.exports = { oha, h2load, quicBench, h2Bulk, percentile }
