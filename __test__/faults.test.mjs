// The server and clients on a bad network: client → UDP proxy (helpers/udp-proxy.mjs:
// loss, corruption, reordering, black-holing, NAT rebinding, address change;
// seeded, so runs are reproducible) → h3node server on loopback.
//
// Every body must arrive whole and checksummed, or the client must get a
// clean error (never a silently truncated body), and the server must keep
// serving a second, un-proxied client meanwhile.
//
// Figures (completion, time, proxy counters) go to t.log and to
// __test__/.results/faults.json for a generated results table.
// H3NODE_INTEROP_FULL=1 makes bodies larger and adds attempts and cases;
// H3NODE_FAULTS_QLOG=<dir> writes qlogs of both ends (one directory per test).
import test from 'ava'
import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { listen, Client, patternStream, patternSha256, digest, sleep, waitFor } from './helpers/h3.mjs'
import { runClient, patternSha256 as goPatternSha256 } from './helpers/independent.mjs'
import { udpProxy } from './helpers/udp-proxy.mjs'

const FULL = !!process.env.H3NODE_INTEROP_FULL && process.env.H3NODE_INTEROP_FULL !== '0'
const QLOG = process.env.H3NODE_FAULTS_QLOG
const MiB = 1024 * 1024
const BODY = (FULL ? 50 : 10) * MiB // loss, corruption, reordering, rebinding
const BIG = (FULL ? 50 : 20) * MiB // black hole
const BLACKHOLE_MS = 5000
const HANDSHAKE_ATTEMPTS = FULL ? 30 : 10
const GO_HANDSHAKE_ATTEMPTS = FULL ? 20 : 6
const PROBE_BYTES = 64 * 1024
const RESULTS = fileURLToPath(new URL('./.results/faults.json', import.meta.url))

const sha = (s) => createHash('sha256').update(s).digest('hex')
const expected = new Map()
const patternHash = (n) => {
  if (!expected.has(n)) expected.set(n, patternSha256(n))
  return expected.get(n)
}
const ms = (t0) => Math.round(performance.now() - t0)
const mbps = (bytes, millis) => (millis > 0 ? +((bytes * 8) / millis / 1000).toFixed(1) : null)

// ---------------------------------------------------------------- results

const results = []
function record(t, entry) {
  const row = { case: t.title, ...entry }
  results.push(row)
  const { proxy, ...rest } = row
  t.log(JSON.stringify(rest))
  if (proxy) t.log('proxy', JSON.stringify(compact(proxy)))
}

/** The proxy counters worth a table column (zeros left out), plus events. */
function compact(stats) {
  const pick = (c) => Object.fromEntries(Object.entries(c).filter(([, v]) => v !== 0 && v !== null))
  return { up: pick(stats.up), down: pick(stats.down), upstream: stats.upstream, events: stats.events.filter((e) => e.what !== 'flow') }
}

test.after.always(async () => {
  if (results.length === 0) return
  await fs.mkdir(path.dirname(RESULTS), { recursive: true })
  const doc = {
    generatedAt: new Date().toISOString(),
    full: FULL,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpus: os.cpus().length,
    sizes: { body: BODY, big: BIG, blackholeMs: BLACKHOLE_MS },
    cases: results,
    closeHangs,
  }
  await fs.writeFile(RESULTS, `${JSON.stringify(doc, null, 2)}\n`)
})

// ---------------------------------------------------------------- server and clients

async function qlogDir(t, who) {
  if (!QLOG) return undefined
  const dir = path.join(QLOG, t.title.replace(/[^a-z0-9]+/gi, '-').slice(0, 80), who)
  await fs.mkdir(dir, { recursive: true })
  return dir
}

/**
 * A server on 127.0.0.1 serving:
 *   GET  /bytes/N  N bytes of the helpers' deterministic pattern
 *   POST /sha256   { bytes, sha256 } of the upload (also kept in seen.uploads)
 *   GET  /whoami   the address the server reports for this request's connection
 */
async function faultServer(t, options = {}) {
  const errors = []
  const server = await listen({
    host: '127.0.0.1',
    port: 0,
    qlogDir: await qlogDir(t, 'server'),
    onError: (e) => errors.push(e),
    ...options,
  })
  closing(t, 'server.close(500)', () => server.close(500))
  const seen = { uploads: [], requests: 0, errors }
  ;(async () => {
    for await (const req of server) {
      seen.requests++
      const url = new URL(req.url)
      ;(async () => {
        if (url.pathname.startsWith('/bytes/')) return req.respond(new Response(patternStream(Number(url.pathname.slice(7)))))
        if (url.pathname === '/sha256') {
          const d = await digest(req.request.body)
          seen.uploads.push(d)
          return req.respond(Response.json(d))
        }
        if (url.pathname === '/whoami') {
          const { remoteAddress, remotePort, id } = req.connection
          return req.respond(Response.json({ remoteAddress, remotePort, id }))
        }
        req.respond(new Response('not found', { status: 404 }))
      })().catch((e) => {
        if (!req.responded) req.respond(Promise.reject(e))
      })
    }
  })()
  const port = server.address().port
  const ca = server.certificate.cert

  // A second client that does not go through the proxy: the server must keep serving it.
  const direct = new Client({ ca })
  closing(t, 'direct client.close()', () => direct.close())
  const probes = []
  async function probe(label) {
    const t0 = performance.now()
    let out
    try {
      const res = await direct.fetch(`https://127.0.0.1:${port}/bytes/${PROBE_BYTES}`, { signal: AbortSignal.timeout(10_000) })
      const d = await digest(res.body)
      out = { label, ok: res.status === 200 && d.bytes === PROBE_BYTES && d.sha256 === patternHash(PROBE_BYTES), ms: ms(t0) }
    } catch (e) {
      out = { label, ok: false, ms: ms(t0), error: `${e.code ?? e.name}: ${e.message}` }
    }
    probes.push(out)
    return out
  }

  return { server, port, ca, seen, probe, probes }
}

async function proxyTo(t, port, options) {
  const proxy = await udpProxy({ target: { host: '127.0.0.1', port }, ...options })
  closing(t, 'proxy.close()', () => proxy.close())
  return proxy
}

async function ownClient(t, ca, options = {}) {
  const client = new Client({ ca, qlogDir: await qlogDir(t, 'client'), ...options })
  closing(t, 'client.close()', () => client.close())
  return client
}

/**
 * Runs `fn(signal)` with a watchdog: if it has not settled after `limitMs`,
 * the signal aborts and the outcome says where it hung (code TEST_HANG),
 * so a hang fails the case instead of the whole suite's timeout.
 */
async function watched(limitMs, what, fn) {
  const ac = new AbortController()
  let hung = false
  const timer = setTimeout(() => {
    hung = true
    ac.abort(new Error(`${what}: no outcome within ${limitMs} ms`))
  }, limitMs)
  try {
    const run = fn(ac.signal)
    // If the abort itself is ignored, give up waiting 2 s later.
    const giveUp = new Promise((resolve) => {
      ac.signal.addEventListener('abort', () => setTimeout(resolve, 2000).unref(), { once: true })
    })
    const value = await Promise.race([run, giveUp])
    return { value, hung }
  } finally {
    clearTimeout(timer)
  }
}

const HANG = (what, limitMs, extra = '') => ({ code: 'TEST_HANG', message: `${what} had no outcome (end or error) within ${limitMs} ms${extra}` })

/** Teardown that cannot hang the suite: a close that takes over 5 s is reported and left behind. */
const closeHangs = []
function closing(t, what, close) {
  t.teardown(async () => {
    let timer
    const late = new Promise((resolve) => { timer = setTimeout(() => resolve('hung'), 5000) })
    const r = await Promise.race([Promise.resolve().then(close).then(() => 'ok', () => 'ok'), late])
    clearTimeout(timer)
    if (r === 'hung') {
      closeHangs.push({ case: t.title, what })
      console.error(`[faults] ${t.title}: ${what} did not finish within 5 s`)
    }
  })
}

/**
 * GET /bytes/n and hash the body. `onBytes(sofar)` sees progress.
 * Returns { ok, bytes, sha256, status, ms, error? }: never throws.
 */
async function download(client, base, n, { onBytes, limitMs = 60_000 } = {}) {
  const t0 = performance.now()
  const out = { ok: false, bytes: 0, status: null }
  const { hung } = await watched(limitMs, 'download', async (signal) => {
    try {
      const res = await client.fetch(`${base}/bytes/${n}`, { signal })
      out.status = res.status
      const h = createHash('sha256')
      for await (const c of res.body) {
        h.update(c)
        out.bytes += c.byteLength
        onBytes?.(out.bytes)
      }
      out.sha256 = h.digest('hex')
      out.ok = out.status === 200 && out.bytes === n && out.sha256 === patternHash(n)
    } catch (e) {
      out.error = { code: e.code ?? null, name: e.name, message: e.message }
    }
  })
  if (hung) out.error = HANG('download', limitMs, `, at ${out.bytes} bytes`)
  out.ms = ms(t0)
  out.mbps = out.ok ? mbps(n, out.ms) : null
  return out
}

/** POST n pattern bytes to /sha256; the server's digest must match. Never throws. */
async function upload(client, base, n, { limitMs = 60_000 } = {}) {
  const t0 = performance.now()
  const out = { ok: false, status: null }
  const { hung } = await watched(limitMs, 'upload', async (signal) => {
    try {
      const res = await client.fetch(`${base}/sha256`, { method: 'POST', duplex: 'half', body: patternStream(n), signal })
      out.status = res.status
      const d = await res.json()
      out.bytes = d.bytes
      out.ok = res.status === 200 && d.bytes === n && d.sha256 === patternHash(n)
    } catch (e) {
      out.error = { code: e.code ?? null, name: e.name, message: e.message }
    }
  })
  if (hung) out.error = HANG('upload', limitMs)
  out.ms = ms(t0)
  out.mbps = out.ok ? mbps(n, out.ms) : null
  return out
}

/** quic-go: one request; the result line plus exit code. */
async function goRequest(url, args = [], timeoutS = 60) {
  const t0 = performance.now()
  const r = await runClient('quic-go', ['--url', url, '--count', '1', '--insecure', '--timeout', String(timeoutS), ...args], { timeoutMs: (timeoutS + 15) * 1000 })
  const res = r.results[0] ?? {}
  return { code: r.code, timedOut: r.timedOut, status: res.status ?? null, bytes: res.bytes ?? 0, sha256: res.sha256, error: res.error, stderr: r.stderr, ms: ms(t0) }
}

async function goDownload(base, n, timeoutS) {
  const r = await goRequest(`${base}/bytes/${n}`, [], timeoutS)
  const ok = r.code === 0 && r.status === 200 && r.bytes === n && r.sha256 === patternHash(n)
  return { ...r, ok, mbps: ok ? mbps(n, r.ms) : null }
}

/** The go client sends byte i = i % 251; the server answers with JSON.stringify({ bytes, sha256 }). */
async function goUpload(base, n, seen, timeoutS) {
  const before = seen.uploads.length
  const r = await goRequest(`${base}/sha256`, ['--method', 'POST', '--body-size', String(n)], timeoutS)
  const want = { bytes: n, sha256: goPatternSha256(n) }
  const got = seen.uploads[before]
  const ok = r.code === 0 && r.status === 200 && r.sha256 === sha(JSON.stringify(want)) && got?.sha256 === want.sha256
  // bytes: what the server hashed (the client only reports its response body)
  return { ...r, bytes: got?.bytes ?? null, ok, serverSaw: got, mbps: ok ? mbps(n, r.ms) : null }
}

/**
 * The invariant of every case: a whole, checksummed body, or a clean error
 * (an H3Error code, or a quic-go error line). Never a short body that looks fine.
 */
function assertWholeOrClean(t, out, n, what) {
  if (out.ok) return
  if (out.error?.code === 'TEST_HANG') {
    t.fail(`${what}: neither a whole body nor an error: ${out.error.message}`)
  } else if (out.error) {
    t.truthy(out.error.code ?? out.error, `${what}: failed without a clean error: ${JSON.stringify(out)}`)
  } else {
    t.fail(`${what}: body ended without error but is not whole: ${out.bytes}/${n} bytes, sha256 ${out.sha256}`)
  }
}

function slim(out) {
  const { stderr, serverSaw, ...rest } = out
  if (!out.ok && stderr) rest.stderr = stderr.slice(-500)
  return rest
}

// ---------------------------------------------------------------- handshake under loss

function summarize(attempts) {
  const done = attempts.filter((a) => a.ok)
  const times = done.map((a) => a.ms).sort((a, b) => a - b)
  const q = (p) => (times.length ? times[Math.min(times.length - 1, Math.floor(p * times.length))] : null)
  return {
    attempts: attempts.length,
    completed: done.length,
    completionRate: +(done.length / attempts.length).toFixed(2),
    ms: { min: times[0] ?? null, median: q(0.5), p90: q(0.9), max: times.at(-1) ?? null },
    failures: attempts.filter((a) => !a.ok).map((a) => ({ seed: a.seed, ms: a.ms, error: a.error })),
    errors: countBy(attempts.filter((a) => !a.ok).map((a) => a.error?.code ?? String(a.error))),
  }
}

function countBy(keys) {
  const out = {}
  for (const k of keys) out[k] = (out[k] ?? 0) + 1
  return out
}

function sumCounters(stats) {
  const acc = { up: {}, down: {} }
  for (const s of stats) {
    for (const dir of ['up', 'down']) {
      for (const [k, v] of Object.entries(s[dir])) if (typeof v === 'number') acc[dir][k] = (acc[dir][k] ?? 0) + v
    }
  }
  return { ...acc, upstream: [], events: [] }
}

test.serial('handshake under 30% loss both ways: own client', async (t) => {
  const { port, ca, probe, probes } = await faultServer(t)
  const during = sleep(1000).then(() => probe('during'))
  const attempts = await Promise.all(Array.from({ length: HANDSHAKE_ATTEMPTS }, async (_, i) => {
    const seed = 1000 + i
    const proxy = await proxyTo(t, port, { seed, up: { loss: 0.3 }, down: { loss: 0.3 } })
    const client = await ownClient(t, ca) // default handshakeTimeoutMs: 10 s
    const t0 = performance.now()
    const out = { seed, ok: false }
    try {
      const res = await client.fetch(`https://127.0.0.1:${proxy.port}/bytes/1000`)
      const d = await digest(res.body)
      out.ok = d.bytes === 1000 && d.sha256 === patternHash(1000)
      if (!out.ok) out.error = { code: null, message: `short or wrong body: ${d.bytes} bytes` }
    } catch (e) {
      out.error = { code: e.code ?? null, message: e.message }
    }
    out.ms = ms(t0)
    out.stats = proxy.stats()
    await client.close()
    return out
  }))
  await during
  const after = await probe('after')
  const summary = summarize(attempts)
  record(t, { client: 'h3node', loss: 0.3, handshakeTimeoutMs: 10_000, ...summary, probes, proxy: sumCounters(attempts.map((a) => a.stats)) })
  // Failures are handshake timeouts (ERR_H3_CONNECT): with quiche's initial
  // PTO of ~1 s doubling each time, 3 lost flights eat the 10 s budget.
  for (const a of attempts) if (!a.ok) t.regex(String(a.error?.code), /^ERR_H3_/, `attempt seed ${a.seed}: ${JSON.stringify(a.error)}`)
  t.true(summary.completionRate >= 0.5, `completion ${summary.completionRate}`)
  t.true(probes.every((p) => p.ok), JSON.stringify(probes))
  t.true(after.ok)
})

test.serial('handshake under 30% loss both ways: quic-go', async (t) => {
  const { port, probe, probes } = await faultServer(t)
  const during = sleep(500).then(() => probe('during'))
  const attempts = await Promise.all(Array.from({ length: GO_HANDSHAKE_ATTEMPTS }, async (_, i) => {
    const seed = 2000 + i
    const proxy = await proxyTo(t, port, { seed, up: { loss: 0.3 }, down: { loss: 0.3 } })
    // quic-go's handshake idle timeout is its default, 5 s
    const r = await goRequest(`https://127.0.0.1:${proxy.port}/bytes/1000`, [], 12)
    const ok = r.code === 0 && r.bytes === 1000 && r.sha256 === patternHash(1000)
    return { seed, ok, ms: r.ms, error: ok ? undefined : (r.error ?? r.stderr.slice(-300)), stats: proxy.stats() }
  }))
  await during
  const after = await probe('after')
  const summary = summarize(attempts)
  record(t, { client: 'quic-go', loss: 0.3, handshakeIdleTimeoutMs: 5000, ...summary, probes, proxy: sumCounters(attempts.map((a) => a.stats)) })
  // A "PROTOCOL_VIOLATION (remote)" here is a server bug, not the loss: quiche
  // closes the connection when a retransmitted RETIRE_CONNECTION_ID (quic-go
  // retires the handshake CID at once, and repeats the frame) arrives in the
  // same batch as the first while only one source CID is left. It depends on
  // timing (a few % of quic-go connections through the proxy, with or
  // without loss), so it is reported, not asserted. A "timeout" after 20 s is
  // the same close whose CONNECTION_CLOSE was lost: the server forgets the
  // connection at once and answers nothing more.
  if (summary.errors['PROTOCOL_VIOLATION (remote)'] || summary.errors['http3: parsing frame failed: PROTOCOL_VIOLATION (remote)']) {
    t.log('server closed a connection with PROTOCOL_VIOLATION: the RETIRE_CONNECTION_ID bug')
  }
  for (const a of attempts) if (!a.ok) t.truthy(a.error, `attempt seed ${a.seed} failed without an error`)
  t.true(summary.completionRate >= 0.5, `completion ${summary.completionRate}`)
  t.true(probes.every((p) => p.ok), JSON.stringify(probes))
  t.true(after.ok)
})

// ---------------------------------------------------------------- bulk under loss, corruption, reordering

const bulkCases = [
  { name: '2% loss both ways', seed: 11, faults: { loss: 0.02 }, go: true },
  { name: '2% corruption both ways', seed: 12, faults: { corrupt: 0.02 }, go: true },
  { name: 'reordering: 10% held 5-20 ms both ways', seed: 13, faults: { reorder: 0.1, reorderMs: [5, 20] }, go: FULL },
  // All at once; 10 MiB even in the full run (the delay and reordering keep cubic slow: ~10 Mbit/s).
  ...(FULL ? [{ name: '1% loss, 1% corruption, 5% reordering, 1% duplication, 2 ms delay', seed: 14, bytes: 10 * MiB, faults: { loss: 0.01, corrupt: 0.01, reorder: 0.05, duplicate: 0.01, delayMs: 2 }, go: true }] : []),
]

for (const c of bulkCases) {
  const size = c.bytes ?? BODY
  test.serial(`${size / MiB} MiB download and upload, ${c.name}: own client`, async (t) => {
    const { port, ca, probe, probes, seen } = await faultServer(t)
    const proxy = await proxyTo(t, port, { seed: c.seed, up: c.faults, down: c.faults })
    const client = await ownClient(t, ca)
    const base = `https://127.0.0.1:${proxy.port}`
    let probing
    const down = await download(client, base, size, { onBytes: (b) => { if (!probing && b > size / 2) probing = probe('during download') } })
    await probing
    const up = await upload(client, base, size)
    await probe('after')
    record(t, { client: 'h3node', faults: c.faults, seed: c.seed, bytes: size, download: slim(down), upload: slim(up), probes, serverErrors: seen.errors.length, proxy: proxy.stats() })
    assertWholeOrClean(t, down, size, 'download')
    assertWholeOrClean(t, up, size, 'upload')
    t.true(down.ok, `download: ${JSON.stringify(down)}`)
    t.true(up.ok, `upload: ${JSON.stringify(up)}`)
    t.true(probes.every((p) => p.ok), JSON.stringify(probes))
    t.deepEqual(seen.errors, [])
  })

  if (c.go) {
    test.serial(`${size / MiB} MiB download and upload, ${c.name}: quic-go`, async (t) => {
      const { port, probe, probes, seen } = await faultServer(t)
      const proxy = await proxyTo(t, port, { seed: c.seed + 100, up: c.faults, down: c.faults })
      const base = `https://127.0.0.1:${proxy.port}`
      const during = sleep(300).then(() => probe('during download'))
      const down = await goDownload(base, size, 60)
      await during
      const up = await goUpload(base, size, seen, 60)
      await probe('after')
      record(t, { client: 'quic-go', faults: c.faults, seed: c.seed + 100, bytes: size, download: slim(down), upload: slim(up), probes, serverErrors: seen.errors.length, proxy: proxy.stats() })
      t.true(down.ok, `download: ${JSON.stringify(slim(down))}`)
      t.true(up.ok, `upload: ${JSON.stringify(slim(up))} server saw ${JSON.stringify(up.serverSaw)}`)
      t.true(probes.every((p) => p.ok), JSON.stringify(probes))
      t.deepEqual(seen.errors, [])
    })
  }
}

// ---------------------------------------------------------------- black hole

test.serial(`${BLACKHOLE_MS / 1000} s black hole in the middle of a ${BIG / MiB} MiB download: own client`, async (t) => {
  const idleTimeoutMs = BLACKHOLE_MS * 4 // well above the black hole on both ends
  const { port, ca, probe, probes, seen } = await faultServer(t, { idleTimeoutMs })
  const proxy = await proxyTo(t, port, { seed: 21 })
  const client = await ownClient(t, ca, { idleTimeoutMs })
  const base = `https://127.0.0.1:${proxy.port}`
  let hole = null
  let holeEnd = null
  let firstAfter = null
  let bytesAtHole = 0
  const down = await download(client, base, BIG, {
    onBytes: (b) => {
      if (!hole && b >= BIG / 3) {
        bytesAtHole = b
        hole = proxy.blackhole(BLACKHOLE_MS).then(() => { holeEnd = performance.now() })
        probe('during black hole') // must not wait for the hole
      } else if (holeEnd && firstAfter === null) {
        firstAfter = performance.now()
      }
    },
  })
  await hole
  await waitFor(() => probes.length >= 1, 10_000)
  await probe('after')
  const recoveryMs = firstAfter && holeEnd ? Math.round(firstAfter - holeEnd) : null
  record(t, { client: 'h3node', blackholeMs: BLACKHOLE_MS, idleTimeoutMs, bytes: BIG, bytesAtHole, download: slim(down), recoveryMsAfterHole: recoveryMs, probes, proxy: proxy.stats() })
  assertWholeOrClean(t, down, BIG, 'download')
  t.true(down.ok, `the download must survive a ${BLACKHOLE_MS} ms hole with idle timeouts of ${idleTimeoutMs} ms: ${JSON.stringify(down)}`)
  t.true(probes.every((p) => p.ok), JSON.stringify(probes))
  t.true(probes[0].ms < BLACKHOLE_MS, 'the direct client was served during the hole')
  t.deepEqual(seen.errors, [])
})

if (FULL) {
  test.serial(`${BLACKHOLE_MS / 1000} s black hole in the middle of a ${BIG / MiB} MiB download: quic-go`, async (t) => {
    const idleTimeoutMs = BLACKHOLE_MS * 4
    const { port, probe, probes } = await faultServer(t, { idleTimeoutMs })
    const proxy = await proxyTo(t, port, { seed: 22 })
    const base = `https://127.0.0.1:${proxy.port}`
    const pending = goDownload(base, BIG, 60) // its idle timeout: 61 s
    await proxy.when('down', BIG / 3)
    const hole = proxy.blackhole(BLACKHOLE_MS)
    await sleep(500)
    await probe('during black hole')
    await hole
    const down = await pending
    await probe('after')
    record(t, { client: 'quic-go', blackholeMs: BLACKHOLE_MS, bytes: BIG, download: slim(down), probes, proxy: proxy.stats() })
    t.true(down.ok, JSON.stringify(slim(down)))
    t.true(probes.every((p) => p.ok), JSON.stringify(probes))
  })
}

// ---------------------------------------------------------------- NAT rebinding and address change
//
// rebind() moves the proxy's upstream socket to a new port (a NAT rebinding)
// or, with host 127.0.0.2, to a new address, at the instant a third of the
// body has gone through the proxy (in the middle of a burst). By default the
// old mapping is gone: whatever the server still sends there is lost
// (counted as down.unroutable), as behind a NAT that dropped it. With
// keepOld the old mapping still delivers for 2 s (down.viaRetired), so
// nothing is lost by the move itself. Either way the server must validate
// the new path and carry on (RFC 9000 §9.3).
//
// KNOWN BUG (server side, quiche 0.30 + tokio-quiche 0.20 as used by the
// addon): when the old mapping is gone, a move in the middle of a download
// stalls the response for good, until the idle timeout closes the
// connection. quiche migrates at once to the new path (on_peer_migrated)
// and validates it (PATH_CHALLENGE/PATH_RESPONSE succeed, see the qlog), but
// the packets that were in flight on the old path stay in the old path's
// recovery state: their loss is never detected, because every later ACK
// acknowledges only new-path packets and loss detection runs on the newly
// acked packets of a path (the early return of RFC 9002's OnAckReceived),
// while on_path_change() applies only the time threshold, once, at the
// instant of migration, when those packets are a few ms old. So the stream
// data they carried is never retransmitted: the old path's PTO fires instead
// and sends bare PINGs to the old, dead address (the proxy counts 43-byte
// `unroutable` datagrams at growing intervals), the new path has nothing in
// flight, the client holds a hole in the stream (in the client's qlog: all
// of the body up to the flow-control limit except ~10 KB sent once just
// before the move), cannot extend flow control, and the connection idles
// out. The client gets a clean error (ERR_H3_CONNECTION_CLOSED "idle
// timeout" for ours, "timeout: no recent network activity" for quic-go),
// never a truncated body, and the server keeps serving other clients; but
// any transfer a NAT rebinding interrupts is lost. The same can happen to
// an upload when a flow-control update (MAX_DATA / MAX_STREAM_DATA) was in
// flight to the old address: seen in 1 of 6 runs here, the upload stuck at
// the 4 MiB connection window; being a matter of timing, that variant is
// not a test (the upload cases keep the old mapping). Reproduce with
// H3NODE_FAULTS_QLOG=<dir> and proxy option `trace`.
//
// Rarely (2 suite runs in ~35 here, both in the first case below) the stall
// is worse: no idle timeout comes, because the two ends keep exchanging
// tiny packets (~2,600 datagrams a second each way, all under 100 bytes,
// through the new mapping) while the body makes no progress, so the client
// gets neither data nor an error; the connection is otherwise alive (a
// later request on it succeeds). The server's sendTimeoutMs is what ends
// that case: the response takes no bytes for that long, so the server
// resets the stream (H3_REQUEST_CANCELLED) and the client gets a clean
// ERR_H3_STREAM_RESET. (Before that option existed, the "nothing hangs"
// test failed here with TEST_HANG; the trace is still logged.)
//
// Whether the bug strikes depends on timing, so the correct outcome is not
// a test of its own (it was a `failing` test until a full CI run saw it
// pass). The stranded packets are still declared lost, and resent, when
// either (a) an ACK that arrives after the move newly acknowledges packets
// sent on the old path, since loss detection then runs on the old path and
// arms its time threshold (with 30 ms of delay added to the server's
// datagrams in the proxy, packets sent before the move are still on their
// way and get acknowledged later: the transfer survived in 6 of 6 runs with
// our client, 1 of 3 with quic-go), or (b) they are already older than 9/8
// of the RTT when quiche migrates, as when the server's thread was held off
// the CPU (our guess for the pass in CI, which left no trace). On bare
// loopback here the first case stalled in 10 of 10 runs, idle or with both
// cores busy.
//
// The idle timeouts of these cases are short so that the failure costs
// seconds, not 30 s; a stack that recovers needs milliseconds.
const MIGRATION_IDLE_MS = 3000
const MIGRATION_SEND_TIMEOUT_MS = 4000

async function migration(t, { host, seed, direction, client: kind, keepOld = false, knownBug = null }) {
  const { port, ca, probe, probes, seen } = await faultServer(t, { idleTimeoutMs: MIGRATION_IDLE_MS, sendTimeoutMs: MIGRATION_SEND_TIMEOUT_MS })
  const proxy = await proxyTo(t, port, { seed, trace: 4000 }) // the last datagrams, to describe a hang
  const base = `https://127.0.0.1:${proxy.port}`
  const dir = direction === 'download' ? 'down' : 'up'
  const moves = []
  let client = null
  if (kind === 'own') {
    client = await ownClient(t, ca, { idleTimeoutMs: MIGRATION_IDLE_MS })
    await (await client.fetch(`${base}/bytes/1`)).arrayBuffer() // connect first: the move must hit the transfer
  }
  const start = proxy.stats()[dir].forwardedBytes
  let done = false
  let during = null
  const moved = proxy.when(dir, start + BODY / 3)
    .then(() => (done ? [] : proxy.rebind({ host, keepOld })))
    .then((m) => {
      moves.push(...m)
      during = sleep(200).then(() => probe('during, 200 ms after the move'))
    })
  let out
  let who = null
  if (kind === 'own') {
    const limitMs = 20_000 // the outcome is due within ~MIGRATION_IDLE_MS
    out = direction === 'download' ? await download(client, base, BODY, { limitMs }) : await upload(client, base, BODY, { limitMs })
    done = true
    await Promise.race([moved, sleep(100)])
    const { hung } = await watched(15_000, 'whoami', async (signal) => {
      try {
        who = await (await client.fetch(`${base}/whoami`, { signal })).json()
        who.connections = client.connections
      } catch (e) {
        who = { error: e.code ?? e.message }
      }
    })
    if (hung) who = { error: 'TEST_HANG: a request after the failed transfer had no outcome within 15 s' }
  } else {
    out = direction === 'download' ? await goDownload(base, BODY, 20) : await goUpload(base, BODY, seen, 20)
    done = true
    await Promise.race([moved, sleep(100)])
  }
  await during
  await probe('after')
  const { trace, ...stats } = proxy.stats()
  if (out.error?.code === 'TEST_HANG') {
    // What the two ends were still exchanging: datagrams by direction, fate and size.
    const span = trace.length ? [trace[0].at, trace.at(-1).at] : []
    const mix = countBy(trace.map((x) => `${x.dir} ${x.fate.split(' ')[0]} ${x.len < 100 ? '<100' : x.len < 1000 ? '<1000' : '>=1000'} B`))
    t.log('last datagrams before the end of the case', JSON.stringify({ spanMs: span, mix }))
    stats.hangTrace = { spanMs: span, mix }
  }
  record(t, { client: kind === 'own' ? 'h3node' : 'quic-go', direction, keepOld, knownBug, bytes: BODY, idleTimeoutMs: MIGRATION_IDLE_MS, [direction]: slim(out), moves, whoamiAfter: who, probes, serverErrors: seen.errors.length, proxy: stats })
  return { out, who, moves, stats, probes, host, direction }
}

/** Whatever happens: whole, or a clean error; the client and the server keep serving. */
function assertUnharmed(t, r) {
  assertWholeOrClean(t, r.out, BODY, r.direction)
  t.true(r.probes.every((p) => p.ok), JSON.stringify(r.probes))
  t.is(r.moves.length, 1, 'the proxy moved the flow mid-transfer')
  if (r.host) t.true(r.moves.every((m) => m.to.startsWith(`${r.host}:`)), JSON.stringify(r.moves))
  t.false(String(r.who?.error).startsWith('TEST_HANG'), `the client must still serve requests: ${r.who?.error}`)
}

/** What a correct stack does: the transfer survives the move, on the same connection. */
function assertSurvived(t, r) {
  t.true(r.out.ok, `${r.direction} across the move: ${JSON.stringify(slim(r.out))}; unroutable ${r.stats.down.unroutable}`)
  if (r.who && !r.who.error) t.is(r.who.connections, 1, 'one connection carried it all')
}

/**
 * One case. With `knownBug`, only the invariant is asserted (whole, or a clean
 * error; nothing hangs; others are served), and whether the transfer survived
 * is recorded: the known bug strikes in most runs but not all (see above), so
 * a `failing` test of the correct outcome would pass now and then and turn a
 * green run red.
 */
function migrationCase(title, options, { knownBug = false, skip } = {}) {
  if (!knownBug) {
    test.serial(title, async (t) => {
      if (skip && (await skip())) return t.pass()
      const r = await migration(t, options)
      assertUnharmed(t, r)
      assertSurvived(t, r)
    })
    return
  }
  test.serial(`${title}: whole or a clean error, nothing hangs, the server serves others`, async (t) => {
    if (skip && (await skip())) return t.pass()
    const r = await migration(t, { ...options, knownBug: 'stall after migration: old-path losses never detected (quiche)' })
    assertUnharmed(t, r)
    t.log(r.out.ok
      ? 'the transfer survived the move this time (the known bug did not strike)'
      : 'the known bug struck: the transfer stalled after the move and ended in a clean error')
  })
}

let loopback2 = null
async function haveLoopback2() {
  if (loopback2 !== null) return loopback2
  const { createSocket } = await import('node:dgram')
  loopback2 = await new Promise((resolve) => {
    const s = createSocket('udp4')
    s.once('error', () => resolve(false))
    s.bind(0, '127.0.0.2', () => s.close(() => resolve(true)))
  })
  return loopback2
}

const no127002 = async () => {
  if (await haveLoopback2()) return false
  console.error('[faults] 127.0.0.2 cannot be bound here: address-change case skipped')
  return true
}

migrationCase(`NAT rebinding (new source port, old mapping gone) mid-download of ${BODY / MiB} MiB: own client`,
  { seed: 31, direction: 'download', client: 'own' }, { knownBug: true })
migrationCase(`NAT rebinding (new source port, old mapping kept) mid-download of ${BODY / MiB} MiB: own client`,
  { seed: 32, direction: 'download', client: 'own', keepOld: true })
migrationCase(`NAT rebinding (new source port, old mapping kept) mid-upload of ${BODY / MiB} MiB: own client`,
  { seed: 33, direction: 'upload', client: 'own', keepOld: true })
migrationCase(`address change (127.0.0.1 → 127.0.0.2, old address gone) mid-download of ${BODY / MiB} MiB: own client`,
  { host: '127.0.0.2', seed: 34, direction: 'download', client: 'own' }, { knownBug: true, skip: no127002 })
migrationCase(`address change (127.0.0.1 → 127.0.0.2, old address kept) mid-upload of ${BODY / MiB} MiB: own client`,
  { host: '127.0.0.2', seed: 35, direction: 'upload', client: 'own', keepOld: true }, { skip: no127002 })
migrationCase(`NAT rebinding (old mapping gone) mid-download of ${BODY / MiB} MiB: quic-go`,
  { seed: 36, direction: 'download', client: 'quic-go' }, { knownBug: true })
migrationCase(`NAT rebinding (old mapping kept) mid-upload of ${BODY / MiB} MiB: quic-go`,
  { seed: 37, direction: 'upload', client: 'quic-go', keepOld: true })

// After a migration, req.connection (and Hono's getConnInfo) must name the
// address the request came from: the driver watches quiche's active path
// and sends JS a PeerAddress event when it moves.
test.serial('after a NAT rebinding, the server reports the client\'s new address on the same connection', async (t) => {
  // Moved while idle (nothing in flight, so the stall above cannot happen).
  const { port, ca } = await faultServer(t)
  const proxy = await proxyTo(t, port, { seed: 37 })
  const client = await ownClient(t, ca)
  const base = `https://127.0.0.1:${proxy.port}`
  const before = await (await client.fetch(`${base}/whoami`)).json()
  const [move] = await proxy.rebind({ host: (await haveLoopback2()) ? '127.0.0.2' : undefined })
  const after = await (await client.fetch(`${base}/whoami`)).json()
  const stats = proxy.stats()
  record(t, { client: 'h3node', before, after, move, proxy: stats })
  t.is(stats.down.unroutable, 0, 'the answer came back through the new socket only')
  t.is(after.id, before.id, 'same connection')
  t.is(`${before.remoteAddress}:${before.remotePort}`, move.from)
  t.is(`${after.remoteAddress}:${after.remotePort}`, move.to, 'req.connection names the address the request came from')
})
