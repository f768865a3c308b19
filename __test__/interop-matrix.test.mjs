// The interop matrix: the server against independent clients, case by case,
// modelled on the QUIC interop runner's test cases. Each cell is checked from
// evidence (the server's own view of each request and connection, its qlog,
// and what the client reports), and recorded in __test__/.results/ for
// scripts/interop-report.js, which writes docs/interop.md.
//
// Clients: h3node's own Client, aioquic (PyPI), quic-go (Go module proxy),
// oha with `http3` (crate registry), headless Chromium (Debian `chromium`).
// Every one is installed by the suite itself (see helpers/independent.mjs,
// helpers/interop.mjs, helpers/browser.mjs).
//
// `npm test` runs the quick subset (handshake, GET/POST, transfer up to
// 1 MiB); H3NODE_INTEROP_FULL=1 (`npm run test:interop`) runs every case and
// the 10 MiB transfer. A case a client cannot do is recorded as "n/a" with the
// reason, never left out.
import test from 'ava'
import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import path from 'node:path'

import { listen, Client, handle, digest, sleep } from './helpers/h3.mjs'
import { runClient, patternSha256, patternBytes, ensureQuicGo, AIOQUIC_VERSION, QUIC_GO_VERSION } from './helpers/independent.mjs'
import {
  ensureOha, ohaVersion, ensureGoInterop, runJson, runAioquicInterop, tempDir, readQlogs, qlogFacts, Results, OHA_VERSION,
} from './helpers/interop.mjs'
import { openPage, spkiHash, chromiumPath } from './helpers/browser.mjs'

const FULL = process.env.H3NODE_INTEROP_FULL === '1'
const KiB = 1024
const MiB = 1024 * 1024
const SIZES = FULL ? [KiB, 64 * KiB, MiB, 10 * MiB] : [KiB, 64 * KiB, MiB]
const MUX_REQUESTS = 2000
const MUX_STREAM_LIMIT = 100 // the server's maxConcurrentBidiStreams in the multiplexing case
const CHROMIUM_MUX_OUTSTANDING = 3 * MUX_STREAM_LIMIT
const CONNECTIONS = 4
const POST_BYTES = 64 * KiB
const ZERO_RTT_ATTEMPTS = 5
const CHROMIUM_ZERO_RTT_ATTEMPTS = 3 // a browser start each: slower
const HELLO = 'Hello, HTTP/3!'
const sha = (s) => createHash('sha256').update(s).digest('hex')

const CLIENTS = ['h3node', 'aioquic', 'quic-go', 'oha', 'chromium']
export const CASES = [
  ['handshake', 'Handshake'],
  ['transfer', 'Transfer'],
  ['multiplexing', 'Multiplexing'],
  ['retry', 'Retry'],
  ['resumption', 'Resumption'],
  ['zerortt', '0-RTT'],
  ['chacha20', 'ChaCha20-only client'],
  ['keyupdate', 'Key update'],
  ['connections', 'Several connections'],
  ['getpost', 'GET and POST with bodies'],
]
const QUICK = new Set(['handshake', 'transfer', 'getpost'])

const results = new Results(FULL ? 'interop' : 'interop-quick', {
  mode: FULL ? 'full' : 'quick',
  cases: CASES.map(([id, title]) => ({ id, title })),
  clientOrder: CLIENTS,
})

test.after.always(async () => {
  await results.write()
})

// ---- the server -----------------------------------------------------------

const CORS = { 'access-control-allow-origin': '*', 'timing-allow-origin': '*', 'access-control-expose-headers': '*' }

/**
 * A server on 127.0.0.1 with a qlog per connection. `seen` has one entry
 * per request (connection id, resumed, earlyData, alpn, path) and the
 * highest number of requests in flight at once.
 */
async function interopServer(t, options = {}) {
  const qlogDir = await tempDir(t, 'interop-qlog')
  const server = await listen({ host: '127.0.0.1', port: 0, qlogDir, ...options })
  t.teardown(() => server.close(500))
  const seen = { requests: [], inFlight: 0, maxInFlight: 0 }
  handle(server, async (req) => {
    const url = new URL(req.url)
    const r = req.request
    seen.requests.push({
      conn: req.connection.id, resumed: req.connection.resumed, early: req.earlyData,
      alpn: req.connection.alpn, method: r.method, path: url.pathname,
    })
    seen.inFlight++
    seen.maxInFlight = Math.max(seen.maxInFlight, seen.inFlight)
    try {
      if (r.method === 'OPTIONS') {
        return req.respond(new Response(null, { status: 204, headers: { ...CORS, 'access-control-allow-methods': 'GET, POST', 'access-control-allow-headers': '*' } }))
      }
      if (url.pathname === '/hello') return req.respond(new Response(HELLO, { headers: CORS }))
      if (url.pathname === '/mux') {
        // hold each request a moment so that many are in flight at once
        await sleep(2)
        return req.respond(new Response(HELLO, { headers: CORS }))
      }
      if (url.pathname.startsWith('/bytes/')) {
        return req.respond(new Response(patternBytes(Number(url.pathname.slice(7))), { headers: CORS }))
      }
      if (url.pathname === '/echo' && r.method === 'POST') {
        return req.respond(new Response(r.body, { headers: { ...CORS, 'x-method': 'POST' } }))
      }
      req.respond(new Response('not found', { status: 404, headers: CORS }))
    } finally {
      // counted until the handler has answered (the response may still stream)
      seen.inFlight--
    }
  })
  const { port } = server.address()
  return {
    server, seen, port, qlogDir, base: `https://127.0.0.1:${port}`,
    connections: () => new Set(seen.requests.map((x) => x.conn)),
    async qlog() {
      // qlogs are flushed when the connection closes
      await server.close(500)
      return (await readQlogs(qlogDir)).map(qlogFacts)
    },
  }
}

// ---- cells ------------------------------------------------------------------

/** Collects the reasons a cell fails; `check(cond, reason)`. */
function checker() {
  const failures = []
  const check = (cond, reason) => {
    if (!cond) failures.push(reason)
    return Boolean(cond)
  }
  return { failures, check }
}

/**
 * Runs one cell as an ava test. `fn({ check, note })` does the work; the
 * cell passes when nothing failed and nothing threw. `note(text)` adds to
 * the evidence shown in the table.
 */
function cell(caseId, client, fn, { quick = QUICK.has(caseId) } = {}) {
  if (!FULL && !quick) return
  test.serial(`${caseId} × ${client}`, async (t) => {
    const { failures, check } = checker()
    const notes = []
    const note = (s) => notes.push(s)
    try {
      await fn({ t, check, note })
    } catch (err) {
      failures.push(`${err?.message ?? err}`.split('\n')[0].slice(0, 300))
    }
    if (failures.length) results.record(caseId, client, 'fail', failures.join('; '))
    else results.record(caseId, client, 'pass', notes.join('; '))
    for (const n of notes) t.log(n)
    t.deepEqual(failures, [], `${caseId} × ${client}`)
  })
}

/** A case the client cannot do: recorded with the reason (the table shows it). */
function unsupported(caseId, client, reason) {
  results.record(caseId, client, 'n/a', reason)
}

// The server's Handshake flight: a full handshake carries the Certificate
// (hundreds of bytes of CRYPTO), a resumed one only EncryptedExtensions + Finished.
function checkNoCertificate(check, note, facts) {
  check(facts.length === 2, `${facts.length} server qlogs, expected 2`)
  if (facts.length !== 2) return
  const [full, resumed] = facts.map((f) => f.handshakeCryptoSent)
  check(full - resumed >= 200, `server's Handshake CRYPTO bytes: full ${full}, resumed ${resumed}: no Certificate-sized difference`)
  note(`server qlog: Handshake CRYPTO ${full} bytes on the full handshake, ${resumed} on the resumed one (no Certificate)`)
}

const allOk = (list) => list.length > 0 && list.every((x) => x.status === 200 && !x.error)

// Retry evidence from the server's qlog, and a control without Retry on the
// same client: without Retry the first Initial goes to the ODCID itself.
function checkRetryQlog(check, note, facts, { retry }) {
  check(facts.length >= 1, 'no server qlog written')
  for (const f of facts) {
    if (retry) {
      check(f.retryValidated, `server qlog ${f.file}: the connection's first Initial (DCID ${f.firstInitialDcid}) was not sent to the Retry SCID (ODCID ${f.odcid})`)
    } else {
      check(!f.retryValidated, `control without Retry: first Initial DCID ${f.firstInitialDcid} differs from ODCID ${f.odcid}`)
    }
  }
  if (retry && facts.length) note(`server qlog: ODCID ${facts[0].odcid.slice(0, 8)}… ≠ DCID of the first accepted Initial ${facts[0].firstInitialDcid.slice(0, 8)}… (token validated)`)
}

// ---- h3node's own Client --------------------------------------------------

async function h3nodeClient(t, s, options = {}) {
  const client = new Client({ pinnedCertificates: [s.server.certificate.sha256], ...options })
  t.teardown(() => client.close())
  return client
}

async function h3nodeGet(client, url) {
  const res = await client.fetch(url)
  const d = await digest(res.body)
  return { status: res.status, ...d }
}

cell('handshake', 'h3node', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const c = await h3nodeClient(t, s)
  const r = await h3nodeGet(c, `${s.base}/hello`)
  check(r.status === 200 && r.sha256 === sha(HELLO), `GET /hello: ${JSON.stringify(r)}`)
  check(s.seen.requests[0]?.alpn === 'h3', `server saw ALPN ${s.seen.requests[0]?.alpn}`)
  note('ALPN h3')
})

cell('transfer', 'h3node', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const c = await h3nodeClient(t, s)
  const got = await Promise.all(SIZES.map((n) => h3nodeGet(c, `${s.base}/bytes/${n}`)))
  SIZES.forEach((n, i) => check(got[i].status === 200 && got[i].bytes === n && got[i].sha256 === patternSha256(n), `/bytes/${n}: ${got[i].status} ${got[i].bytes} bytes, sha256 mismatch or short`))
  check(s.connections().size === 1, `${s.connections().size} connections`)
  note(`${SIZES.length} files on one connection, sha256 checked`)
})

cell('multiplexing', 'h3node', async ({ t, check, note }) => {
  const s = await interopServer(t, { maxConcurrentBidiStreams: MUX_STREAM_LIMIT })
  const c = await h3nodeClient(t, s)
  const got = await Promise.all(Array.from({ length: MUX_REQUESTS }, () => h3nodeGet(c, `${s.base}/mux`)))
  checkMux(check, note, s, got.filter((r) => r.status === 200 && r.sha256 === sha(HELLO)).length)
})

function checkMux(check, note, s, okCount) {
  check(okCount === MUX_REQUESTS, `${okCount}/${MUX_REQUESTS} answered`)
  check(s.seen.requests.length === MUX_REQUESTS, `server saw ${s.seen.requests.length} requests`)
  check(s.connections().size === 1, `${s.connections().size} connections on the server`)
  check(s.seen.maxInFlight <= MUX_STREAM_LIMIT, `${s.seen.maxInFlight} requests in flight > stream limit ${MUX_STREAM_LIMIT}`)
  note(`${MUX_REQUESTS} requests on 1 connection, stream limit ${MUX_STREAM_LIMIT}, at most ${s.seen.maxInFlight} in flight`)
}

cell('retry', 'h3node', async ({ t, check, note }) => {
  for (const retry of [false, true]) {
    const s = await interopServer(t, { retry })
    const c = await h3nodeClient(t, s)
    const r = await h3nodeGet(c, `${s.base}/hello`)
    check(r.status === 200, `GET with retry=${retry}: ${r.status}`)
    await c.close()
    checkRetryQlog(check, note, await s.qlog(), { retry })
  }
})

cell('resumption', 'h3node', async ({ t, check, note }) => {
  // The connection idles out after 300 ms; the next fetch opens a new one,
  // which resumes with the ticket the first one got (resumeSessions, on by
  // default). A client with it off does a full handshake.
  const s = await interopServer(t, { idleTimeoutMs: 300 })
  const c = await h3nodeClient(t, s)
  const first = await h3nodeGet(c, `${s.base}/hello`)
  await sleep(800)
  const second = await h3nodeGet(c, `${s.base}/hello`)
  check(first.status === 200 && second.status === 200, `GETs: ${first.status}, ${second.status}`)
  const conns = [...s.connections()]
  check(conns.length === 2, `${conns.length} server connections, expected 2`)
  const seen = (conn) => s.seen.requests.filter((x) => x.conn === conn)
  check(seen(conns[0]).every((x) => x.resumed === false), 'server: the first connection claims resumption')
  check(seen(conns[1]).length > 0 && seen(conns[1]).every((x) => x.resumed === true), 'server: req.connection.resumed is not true on the second connection')
  checkNoCertificate(check, note, await s.qlog())
  note('server: req.connection.resumed === true on the second connection')
  // The control: with resumeSessions off, two full handshakes.
  const s2 = await interopServer(t, { idleTimeoutMs: 300 })
  const c2 = await h3nodeClient(t, s2, { resumeSessions: false })
  await h3nodeGet(c2, `${s2.base}/hello`)
  await sleep(800)
  await h3nodeGet(c2, `${s2.base}/hello`)
  check(s2.connections().size === 2 && s2.seen.requests.every((x) => x.resumed === false), 'resumeSessions: false still resumed')
}, { quick: true })
unsupported('zerortt', 'h3node', "h3node's Client resumes sessions but does not send early data: it sends a request only once the handshake is complete")
unsupported('chacha20', 'h3node', "h3node's Client has no cipher-suite option (BoringSSL's default TLS 1.3 suites)")
unsupported('keyupdate', 'h3node', "h3node's Client has no API to initiate a key update")

cell('connections', 'h3node', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => h3nodeClient(t, s)))
  const got = await Promise.all(clients.map((c) => h3nodeGet(c, `${s.base}/hello`)))
  check(allOk(got), `responses: ${got.map((r) => r.status)}`)
  check(s.connections().size === CONNECTIONS, `server saw ${s.connections().size} connections`)
  note(`${CONNECTIONS} connections at once`)
})

cell('getpost', 'h3node', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const c = await h3nodeClient(t, s)
  const g = await h3nodeGet(c, `${s.base}/hello`)
  const res = await c.fetch(`${s.base}/echo`, { method: 'POST', body: patternBytes(POST_BYTES) })
  const p = { status: res.status, ...(await digest(res.body)) }
  check(g.status === 200 && g.sha256 === sha(HELLO), `GET: ${g.status}`)
  check(p.status === 200 && p.bytes === POST_BYTES && p.sha256 === patternSha256(POST_BYTES), `POST echo: ${p.status} ${p.bytes} bytes`)
  note(`GET + POST of ${POST_BYTES / KiB} KiB echoed, sha256 checked`)
})

// ---- aioquic ----------------------------------------------------------------

async function aioquic(t, s, args, timeoutMs = 180_000) {
  const r = await runAioquicInterop(['--url', s.base, ...args], { timeoutMs })
  if (!r.json) throw new Error(`aioquic_interop.py printed no report (exit ${r.code}): ${r.stderr.slice(-500)}`)
  return r.json
}
const responsesOf = (report) => (report.connections ?? []).flatMap((c) => c.responses)

cell('handshake', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await aioquic(t, s, ['--get', '/hello'])
  const [res] = responsesOf(r)
  check(r.ok && res?.status === 200 && res.sha256 === sha(HELLO), `GET /hello: ${JSON.stringify(res ?? r)}`)
  check(s.seen.requests[0]?.alpn === 'h3', 'server saw no h3 request')
  note(`cipher ${r.connections[0].cipher_suite}`)
})

cell('transfer', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await aioquic(t, s, SIZES.flatMap((n) => ['--get', `/bytes/${n}`]))
  const got = responsesOf(r)
  SIZES.forEach((n, i) => check(got[i]?.status === 200 && got[i].bytes === n && got[i].sha256 === patternSha256(n), `/bytes/${n}: ${JSON.stringify(got[i])}`))
  check(s.connections().size === 1, `${s.connections().size} connections`)
  note(`${SIZES.length} files on one connection, sha256 checked`)
})

cell('multiplexing', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t, { maxConcurrentBidiStreams: MUX_STREAM_LIMIT })
  const r = await aioquic(t, s, ['--get', '/mux', '--count', String(MUX_REQUESTS)])
  const got = responsesOf(r)
  checkMux(check, note, s, got.filter((x) => x.status === 200 && x.sha256 === sha(HELLO)).length)
})

cell('retry', 'aioquic', async ({ t, check, note }) => {
  for (const retry of [false, true]) {
    const s = await interopServer(t, { retry })
    const r = await aioquic(t, s, ['--get', '/hello'])
    const c = r.connections?.[0] ?? {}
    check(r.ok, `GET with retry=${retry}: ${JSON.stringify(c.error ?? responsesOf(r))}`)
    if (retry) {
      check(c.retry_received === 1, `aioquic received ${c.retry_received} Retry packets`)
      check(c.token_length > 0, `aioquic's Initial after the Retry carried a ${c.token_length}-byte token`)
      note(`aioquic: Retry received, next Initial carried a ${c.token_length}-byte token`)
    } else {
      check(c.retry_received === 0, 'a Retry was sent with retry: false')
    }
    checkRetryQlog(check, note, await s.qlog(), { retry })
  }
})

cell('resumption', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await aioquic(t, s, ['--get', '/hello', '--resume'])
  const c = r.connections?.[0] ?? {}
  check(r.ok, `requests: ${JSON.stringify(c.error ?? responsesOf(r))}`)
  check(r.first?.session_resumed === false, 'the first connection claims resumption')
  check(c.session_resumed === true, 'aioquic: the second handshake did not resume (PSK not accepted)')
  const conns = [...s.connections()]
  const second = s.seen.requests.filter((x) => x.conn === conns[1])
  check(conns.length === 2 && s.seen.requests.find((x) => x.conn === conns[0])?.resumed === false, 'server: first connection')
  check(second.length > 0 && second.every((x) => x.resumed === true), 'server: req.connection.resumed is not true on the second connection')
  note('aioquic: session_resumed; server: req.connection.resumed === true')
  checkNoCertificate(check, note, await s.qlog())
})

cell('zerortt', 'aioquic', async ({ t, check, note }) => {
  // enabled: the request is sent in 0-RTT; the server must answer it from early data
  let early = 0
  const missed = []
  for (let i = 0; i < ZERO_RTT_ATTEMPTS; i++) {
    const s = await interopServer(t, { earlyData: true })
    const r = await aioquic(t, s, ['--get', '/hello', '--resume', '--early'])
    const c = r.connections?.[0] ?? {}
    check(r.ok, `earlyData: true, attempt ${i + 1}: ${JSON.stringify(c.error ?? responsesOf(r))}`)
    check(c.zero_rtt_packets_sent > 0 && c.early_data_accepted === true, `attempt ${i + 1}: aioquic sent ${c.zero_rtt_packets_sent} 0-RTT packets, accepted=${c.early_data_accepted}`)
    const last = s.seen.requests.at(-1)
    const facts = await s.qlog()
    if (last?.resumed && last.early) early++
    else missed.push(`attempt ${i + 1}: req.earlyData ${last?.early}, 0-RTT packets in the server's qlog of the resumed connection: ${facts.at(-1)?.zeroRttPackets}`)
  }
  check(early === ZERO_RTT_ATTEMPTS, `earlyData: true: only ${early}/${ZERO_RTT_ATTEMPTS} resumed requests were answered from early data (${missed.join(', ')}); aioquic sent its request in 0-RTT every time and the TLS layer accepted early data`)
  note(`earlyData: true → req.earlyData === true in ${early}/${ZERO_RTT_ATTEMPTS} attempts`)
  // disabled: aioquic is made to offer 0-RTT anyway; the server refuses it and
  // the request is answered after the handshake
  const s = await interopServer(t, { earlyData: false })
  const r = await aioquic(t, s, ['--get', '/hello', '--resume', '--early', '--force-early'])
  const c = r.connections?.[0] ?? {}
  check(r.ok, `earlyData: false: ${JSON.stringify(c.error ?? responsesOf(r))}`)
  check(r.ticket_max_early_data == null, `earlyData: false but the ticket allows ${r.ticket_max_early_data} bytes of early data`)
  check(c.zero_rtt_packets_sent > 0, 'aioquic did not offer 0-RTT')
  check(c.session_resumed === true && c.early_data_accepted === false, `earlyData: false: resumed=${c.session_resumed}, early data accepted=${c.early_data_accepted}`)
  check(s.seen.requests.at(-1)?.early === false, 'earlyData: false but req.earlyData is true')
  note('earlyData: false → 0-RTT offered, refused, answered after the handshake')
})

cell('chacha20', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await aioquic(t, s, ['--get', `/bytes/${MiB}`, '--cipher', 'chacha20'])
  const c = r.connections?.[0] ?? {}
  const [res] = responsesOf(r)
  check(r.ok && res?.sha256 === patternSha256(MiB), `GET 1 MiB: ${JSON.stringify(c.error ?? res)}`)
  check(c.cipher_suite === 'CHACHA20_POLY1305_SHA256', `aioquic negotiated ${c.cipher_suite}`)
  const facts = await s.qlog()
  check(/chacha20/i.test(facts[0]?.cipher ?? ''), `server qlog says tls_cipher ${facts[0]?.cipher}`)
  note(`client offered only TLS_CHACHA20_POLY1305_SHA256; server qlog tls_cipher ${facts[0]?.cipher}`)
})

cell('keyupdate', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const size = FULL ? 10 * MiB : MiB
  const r = await aioquic(t, s, ['--get', `/bytes/${size}`, '--key-update-after', String(size / 10)])
  const c = r.connections?.[0] ?? {}
  const [res] = responsesOf(r)
  check(r.ok && res?.bytes === size && res.sha256 === patternSha256(size), `GET ${size}: ${JSON.stringify(c.error ?? res)}`)
  check(c.key_update_requested_at != null && c.key_phase === 1, `key update requested at ${c.key_update_requested_at}, key phase ${c.key_phase}`)
  const facts = await s.qlog()
  const remote = facts[0]?.keyUpdates.filter((k) => k.endsWith(':remote_update')) ?? []
  check(remote.length === 2, `server qlog key_updated events: ${JSON.stringify(facts[0]?.keyUpdates)}`)
  note(`request_key_update() after ${c.key_update_requested_at} bytes, key phase 1, ${size / MiB} MiB checksummed; server qlog: key_updated (${remote.join(', ')})`)
})

cell('connections', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await aioquic(t, s, ['--get', '/hello', '--connections', String(CONNECTIONS)])
  check(r.ok && allOk(responsesOf(r)), `responses: ${JSON.stringify(responsesOf(r).map((x) => x.status))}`)
  check(s.connections().size === CONNECTIONS, `server saw ${s.connections().size} connections`)
  note(`${CONNECTIONS} connections at once`)
})

cell('getpost', 'aioquic', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await aioquic(t, s, ['--get', '/hello', '--post', `/echo:${POST_BYTES}`])
  const [g, p] = responsesOf(r)
  check(g?.status === 200 && g.sha256 === sha(HELLO), `GET: ${JSON.stringify(g)}`)
  check(p?.status === 200 && p.bytes === POST_BYTES && p.sha256 === patternSha256(POST_BYTES), `POST: ${JSON.stringify(p)}`)
  note(`GET + POST of ${POST_BYTES / KiB} KiB echoed, sha256 checked`)
})

// ---- quic-go ----------------------------------------------------------------

const goRun = (args, timeoutMs = 180_000) => runClient('quic-go', [...args, '--insecure'], { timeoutMs })

cell('handshake', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await goRun(['--url', `${s.base}/hello`, '--count', '1'])
  check(r.code === 0 && r.results[0]?.status === 200 && r.results[0].sha256 === sha(HELLO), `GET: ${r.stderr.slice(-300)} ${JSON.stringify(r.results[0])}`)
  check(s.seen.requests[0]?.alpn === 'h3', 'server saw no h3 request')
  note('ALPN h3')
})

cell('transfer', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await goRun([...SIZES.flatMap((n) => ['--url', `${s.base}/bytes/${n}`]), '--count', '1', '--parallel', String(SIZES.length)])
  for (const n of SIZES) {
    const x = r.results.find((y) => y.url.endsWith(`/bytes/${n}`))
    check(x?.status === 200 && x.bytes === n && x.sha256 === patternSha256(n), `/bytes/${n}: ${JSON.stringify(x)}`)
  }
  check(s.connections().size === 1, `${s.connections().size} connections`)
  note(`${SIZES.length} files on one connection, sha256 checked`)
})

cell('multiplexing', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t, { maxConcurrentBidiStreams: MUX_STREAM_LIMIT })
  const r = await goRun(['--url', `${s.base}/mux`, '--count', String(MUX_REQUESTS), '--parallel', String(MUX_REQUESTS)])
  checkMux(check, note, s, r.results.filter((x) => x.status === 200 && x.sha256 === sha(HELLO)).length)
})

async function goInterop(s, args, env = {}) {
  const bin = await ensureGoInterop()
  const r = await runJson(bin, ['--url', s.base, ...args], { timeoutMs: 60_000, env })
  if (!r.json) throw new Error(`go-interop printed no report (exit ${r.code}): ${r.stderr.slice(-500)}`)
  return r.json
}

cell('retry', 'quic-go', async ({ t, check, note }) => {
  for (const retry of [false, true]) {
    const s = await interopServer(t, { retry })
    const clientQlog = await tempDir(t, 'quic-go-qlog')
    const r = await goInterop(s, ['--get', '/hello'], { QLOGDIR: clientQlog })
    check(r.ok, `GET with retry=${retry}: ${JSON.stringify(r.connection)}`)
    const [trace] = await readQlogs(clientQlog)
    const ev = trace?.events ?? []
    const retries = ev.filter((e) => /packet_received/.test(e.name) && e.data?.header?.packet_type === 'retry').length
    const rscid = ev.find((e) => /parameters_set/.test(e.name) && e.data?.retry_source_connection_id)?.data.retry_source_connection_id
    if (retry) {
      check(retries === 1, `quic-go's qlog shows ${retries} Retry packets received`)
      check(Boolean(rscid), "the server's transport parameters (quic-go's qlog) carry no retry_source_connection_id")
      note(`quic-go: Retry received; server's retry_source_connection_id ${rscid?.slice(0, 8)}… verified`)
    } else {
      check(retries === 0 && !rscid, 'a Retry was sent with retry: false')
    }
    checkRetryQlog(check, note, await s.qlog(), { retry })
  }
})

cell('resumption', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await goInterop(s, ['--get', '/hello', '--resume'])
  check(r.ok, `requests: ${JSON.stringify(r)}`)
  check(r.first?.didResume === false && r.connection?.didResume === true, `quic-go DidResume: first ${r.first?.didResume}, second ${r.connection?.didResume}`)
  const conns = [...s.connections()]
  check(conns.length === 2, `server saw ${conns.length} connections`)
  check(s.seen.requests.filter((x) => x.conn === conns[1]).every((x) => x.resumed === true), 'server: req.connection.resumed is not true on the second connection')
  note('quic-go: DidResume; server: req.connection.resumed === true')
  checkNoCertificate(check, note, await s.qlog())
})

cell('zerortt', 'quic-go', async ({ t, check, note }) => {
  let early = 0
  for (let i = 0; i < ZERO_RTT_ATTEMPTS; i++) {
    const s = await interopServer(t, { earlyData: true })
    const r = await goInterop(s, ['--get', '/hello', '--resume', '--early'])
    check(r.ok, `earlyData: true, attempt ${i + 1}: ${JSON.stringify(r.connection)}`)
    check(r.connection?.used0RTT === true, `attempt ${i + 1}: quic-go Used0RTT ${r.connection?.used0RTT}`)
    const last = s.seen.requests.at(-1)
    if (last?.resumed && last.early) early++
    await s.server.close(200)
  }
  check(early === ZERO_RTT_ATTEMPTS, `earlyData: true: only ${early}/${ZERO_RTT_ATTEMPTS} resumed requests were answered from early data (req.earlyData)`)
  note(`earlyData: true → req.earlyData === true in ${early}/${ZERO_RTT_ATTEMPTS} attempts`)
  const s = await interopServer(t, { earlyData: false })
  const r = await goInterop(s, ['--get', '/hello', '--resume', '--early'])
  check(r.ok, `earlyData: false: ${JSON.stringify(r.connection)}`)
  check(r.connection?.didResume === true && r.connection?.used0RTT === false, `earlyData: false: DidResume ${r.connection?.didResume}, Used0RTT ${r.connection?.used0RTT}`)
  check(s.seen.requests.at(-1)?.early === false, 'earlyData: false but req.earlyData is true')
  note('earlyData: false → ticket without early data, GET_0RTT answered after the handshake (quic-go cannot be forced to offer 0-RTT)')
})

unsupported('chacha20', 'quic-go', "Go's crypto/tls does not let a client choose TLS 1.3 cipher suites (tls.Config.CipherSuites ignores them); quic-go offers no option")
// quic-go has no API to request a key update, but it initiates the first one
// by itself once 100 packets have been sent or received with the first keys
// (a test hook, left on in releases): a transfer of more than 100 packets
// exercises it, and both qlogs show it.
cell('keyupdate', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const size = FULL ? 10 * MiB : MiB
  const clientQlog = await tempDir(t, 'quic-go-qlog')
  const r = await goInterop(s, ['--get', `/bytes/${size}`], { QLOGDIR: clientQlog })
  const res = r.connection?.responses?.[0]
  check(r.ok && res?.bytes === size && res.sha256 === patternSha256(size), `GET ${size}: ${JSON.stringify(r.connection)}`)
  const [trace] = await readQlogs(clientQlog)
  const local = (trace?.events ?? []).filter((e) => /key_updated/.test(e.name) && e.data?.trigger === 'local_update')
  check(local.length > 0, "quic-go's qlog shows no key update it initiated")
  const facts = await s.qlog()
  const remote = facts[0]?.keyUpdates.filter((k) => k.endsWith(':remote_update')) ?? []
  check(remote.length >= 2, `server qlog key_updated events: ${JSON.stringify(facts[0]?.keyUpdates)}`)
  note(`quic-go initiated ${local.length / 2} key update(s) on its own (after 100 packets; no API to request one); server qlog: ${remote.length / 2} remote key update(s); ${size / MiB} MiB checksummed`)
})

cell('connections', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const r = await goRun(['--url', `${s.base}/hello`, '--connections', String(CONNECTIONS), '--count', '1'])
  check(r.code === 0 && allOk(r.results) && r.results.length === CONNECTIONS, `responses: ${JSON.stringify(r.results.map((x) => x.status))}`)
  check(s.connections().size === CONNECTIONS, `server saw ${s.connections().size} connections`)
  note(`${CONNECTIONS} connections at once`)
})

cell('getpost', 'quic-go', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const g = await goRun(['--url', `${s.base}/hello`, '--count', '1'])
  const p = await goRun(['--url', `${s.base}/echo`, '--method', 'POST', '--body-size', String(POST_BYTES), '--count', '1'])
  check(g.results[0]?.status === 200 && g.results[0].sha256 === sha(HELLO), `GET: ${JSON.stringify(g.results[0])}`)
  const x = p.results[0]
  check(x?.status === 200 && x.bytes === POST_BYTES && x.sha256 === patternSha256(POST_BYTES), `POST: ${JSON.stringify(x)}`)
  note(`GET + POST of ${POST_BYTES / KiB} KiB echoed, sha256 checked`)
})

// ---- oha ----------------------------------------------------------------------

async function oha(url, args) {
  const bin = await ensureOha()
  const t0 = performance.now()
  const r = await runJson(bin, ['--http-version', '3', '--insecure', '--no-tui', '--output-format', 'json', ...args, url], { timeoutMs: 180_000 })
  const ms = performance.now() - t0
  if (!r.json) throw new Error(`oha printed no JSON (exit ${r.code}): ${r.stderr.slice(-500)}`)
  // oha waits for the server to close after its GOAWAY: a run as long as
  // the idle timeout means the server held the connection open instead.
  if (ms > OHA_MAX_MS) throw new Error(`oha took ${Math.round(ms)} ms: the server did not close after the client's GOAWAY`)
  const codes = r.json.statusCodeDistribution ?? {}
  return { ...r.json, codes, errors: r.json.errorDistribution ?? {} }
}
// oha ends by sending GOAWAY and then waits for the server to close the
// connection; the server closes once the client's requests are answered.
// The oha cells keep the default 30 s idle timeout and time each run: one
// that lasted the idle timeout would mean that close no longer happens.
const OHA_SERVER = {}
const OHA_MAX_MS = 15_000
const ohaDetail = (o) => `status ${JSON.stringify(o.codes)}, errors ${JSON.stringify(o.errors)}`

cell('handshake', 'oha', async ({ t, check, note }) => {
  const s = await interopServer(t, OHA_SERVER)
  const o = await oha(`${s.base}/hello`, ['-n', '1', '-c', '1'])
  check(o.codes['200'] === 1 && Object.keys(o.errors).length === 0, ohaDetail(o))
  check(s.seen.requests[0]?.alpn === 'h3', 'server saw no h3 request')
  note('ALPN h3; after its GOAWAY the server closed the connection at once')
})

unsupported('transfer', 'oha', 'oha is a load generator: it counts response bytes but cannot checksum a body')

cell('multiplexing', 'oha', async ({ t, check, note }) => {
  const s = await interopServer(t, { ...OHA_SERVER, maxConcurrentBidiStreams: MUX_STREAM_LIMIT })
  // one connection, 2 × the stream limit requests in parallel on it
  const o = await oha(`${s.base}/mux`, ['-n', String(MUX_REQUESTS), '-c', '1', '-p', String(2 * MUX_STREAM_LIMIT)])
  check(Object.keys(o.errors).length === 0, ohaDetail(o))
  checkMux(check, note, s, o.codes['200'] ?? 0)
})

cell('retry', 'oha', async ({ t, check, note }) => {
  for (const retry of [false, true]) {
    const s = await interopServer(t, { ...OHA_SERVER, retry })
    const o = await oha(`${s.base}/hello`, ['-n', '1', '-c', '1'])
    check(o.codes['200'] === 1, `retry=${retry}: ${ohaDetail(o)}`)
    checkRetryQlog(check, note, await s.qlog(), { retry })
  }
})

unsupported('resumption', 'oha', 'oha has no option to resume a TLS session on a new connection')
unsupported('zerortt', 'oha', 'oha has no 0-RTT option')
unsupported('chacha20', 'oha', 'oha has no cipher-suite option')
unsupported('keyupdate', 'oha', 'oha has no key-update option')

cell('connections', 'oha', async ({ t, check, note }) => {
  const s = await interopServer(t, OHA_SERVER)
  const o = await oha(`${s.base}/hello`, ['-n', String(CONNECTIONS * 5), '-c', String(CONNECTIONS)])
  check(o.codes['200'] === CONNECTIONS * 5 && Object.keys(o.errors).length === 0, ohaDetail(o))
  check(s.connections().size === CONNECTIONS, `server saw ${s.connections().size} connections`)
  note(`${CONNECTIONS} connections at once, ${CONNECTIONS * 5} requests`)
})

cell('getpost', 'oha', async ({ t, check, note }) => {
  const s = await interopServer(t, OHA_SERVER)
  const dir = await tempDir(t, 'oha-body')
  const bodyFile = path.join(dir, 'body')
  await fs.writeFile(bodyFile, patternBytes(POST_BYTES))
  const g = await oha(`${s.base}/hello`, ['-n', '1', '-c', '1'])
  const p = await oha(`${s.base}/echo`, ['-n', '1', '-c', '1', '-m', 'POST', '-D', bodyFile])
  check(g.codes['200'] === 1, `GET: ${ohaDetail(g)}`)
  check(p.codes['200'] === 1, `POST: ${ohaDetail(p)}`)
  const post = s.seen.requests.find((x) => x.method === 'POST')
  check(post?.path === '/echo', 'the server saw no POST')
  // oha does not expose response bodies: it reports the bytes it read
  const bytes = p.details?.sizePerRequest ?? p.summary?.sizePerRequest
  check(bytes == null || bytes === POST_BYTES, `oha read ${bytes} response bytes, expected ${POST_BYTES}`)
  note(`GET + POST of ${POST_BYTES / KiB} KiB (echo size ${bytes ?? '?'}; oha cannot checksum bodies)`)
})

// ---- Chromium -------------------------------------------------------------------

async function chromiumPage(t, s, extra = {}) {
  const certPem = s.server.certificate.cert
  return openPage(t, { quicOrigins: [`127.0.0.1:${s.port}`], spki: [spkiHash(certPem)], ...extra })
}

// in the page: fetch each URL and hash its body with WebCrypto
async function pageFetchAll([base, reqs, concurrency]) {
  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('')
  const pattern = (n) => {
    const b = new Uint8Array(n)
    for (let i = 0; i < n; i++) b[i] = i % 251
    return b
  }
  const one = async ([method, p, size]) => {
    try {
      const res = await fetch(base + p, { method, body: size ? pattern(size) : undefined, cache: 'no-store' })
      const buf = await res.arrayBuffer()
      const entry = performance.getEntriesByName(base + p).at(-1)
      return { status: res.status, bytes: buf.byteLength, sha256: hex(await crypto.subtle.digest('SHA-256', buf)), protocol: entry?.nextHopProtocol ?? null }
    } catch (err) {
      return { error: String(err) }
    }
  }
  if (!concurrency) return Promise.all(reqs.map(one))
  // at most `concurrency` fetches outstanding
  const out = []
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < reqs.length) {
      const i = next++
      out[i] = await one(reqs[i])
    }
  }))
  return out
}

async function chromiumFetch(t, s, reqs, { timeout = 120_000, concurrency = 0 } = {}) {
  const page = await chromiumPage(t, s)
  try {
    return await page.evaluate(pageFetchAll, [s.base, reqs, concurrency], { timeout })
  } finally {
    await page.close()
  }
}

function checkH3(check, s, got) {
  check(s.seen.requests.length > 0 && s.seen.requests.every((x) => x.alpn === 'h3'), 'the server saw no HTTP/3 request')
  const protocols = new Set(got.map((x) => x.protocol))
  check(protocols.size === 1 && protocols.has('h3'), `page's resource timing nextHopProtocol: ${[...protocols]}`)
}

cell('handshake', 'chromium', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const got = await chromiumFetch(t, s, [['GET', '/hello', 0]])
  check(got[0]?.status === 200 && got[0].sha256 === sha(HELLO), `GET: ${JSON.stringify(got[0])}`)
  checkH3(check, s, got)
  note('fetch() over h3 (nextHopProtocol h3)')
})

cell('transfer', 'chromium', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const got = await chromiumFetch(t, s, SIZES.map((n) => ['GET', `/bytes/${n}`, 0]))
  SIZES.forEach((n, i) => check(got[i]?.status === 200 && got[i].bytes === n && got[i].sha256 === patternSha256(n), `/bytes/${n}: ${JSON.stringify(got[i])}`))
  checkH3(check, s, got)
  check(s.connections().size === 1, `${s.connections().size} connections`)
  note(`${SIZES.length} files on one connection, sha256 checked with WebCrypto`)
})

cell('multiplexing', 'chromium', async ({ t, check, note }) => {
  const s = await interopServer(t, { maxConcurrentBidiStreams: MUX_STREAM_LIMIT })
  // The page keeps at most CHROMIUM_MUX_OUTSTANDING fetches outstanding (3 ×
  // the stream limit): with all 2000 at once Chromium closes its own
  // connection (QUIC_TOO_MANY_BUFFERED_CONTROL_FRAMES, "More than 1000
  // buffered control frames"), because it queues one STREAMS_BLOCKED frame
  // per request waiting for stream credit (seen in its NetLog).
  const got = await chromiumFetch(t, s, Array.from({ length: MUX_REQUESTS }, (_, i) => ['GET', `/mux?${i}`, 0]), { timeout: 180_000, concurrency: CHROMIUM_MUX_OUTSTANDING })
  checkMux(check, note, s, got.filter((x) => x.status === 200 && x.sha256 === sha(HELLO)).length)
  const errors = got.filter((x) => x.error)
  check(errors.length === 0, `${errors.length} fetches failed, e.g. ${errors[0]?.error}`)
  note(`the page keeps ${CHROMIUM_MUX_OUTSTANDING} fetches outstanding (with all 2000 at once Chromium closes its own connection: more than 1000 buffered STREAMS_BLOCKED frames)`)
})

cell('retry', 'chromium', async ({ t, check, note }) => {
  for (const retry of [false, true]) {
    const s = await interopServer(t, { retry })
    const got = await chromiumFetch(t, s, [['GET', '/hello', 0]])
    check(got[0]?.status === 200, `retry=${retry}: ${JSON.stringify(got[0])}`)
    checkRetryQlog(check, note, await s.qlog(), { retry })
  }
})

// A page cannot close Chromium's QUIC session, but an idle timeout can: the
// server advertises 1 s, both ends drop the connection after it, and the next
// fetch makes a new connection with the session ticket Chromium kept.
async function chromiumTwoConnections(t, options) {
  const s = await interopServer(t, { idleTimeoutMs: 1000, ...options })
  const page = await chromiumPage(t, s)
  try {
    const first = await page.evaluate(pageFetchAll, [s.base, [['GET', '/hello?1', 0]]])
    await sleep(2500)
    const second = await page.evaluate(pageFetchAll, [s.base, [['GET', '/hello?2', 0]]])
    return { s, got: [...first, ...second] }
  } finally {
    await page.close()
  }
}

cell('resumption', 'chromium', async ({ t, check, note }) => {
  const { s, got } = await chromiumTwoConnections(t)
  check(allOk(got), `responses: ${JSON.stringify(got)}`)
  const conns = [...s.connections()]
  check(conns.length === 2, `server saw ${conns.length} connections (expected a new one after the idle timeout)`)
  const [a, b] = s.seen.requests
  check(a?.resumed === false && b?.resumed === true, `server: req.connection.resumed ${a?.resumed} then ${b?.resumed}`)
  note('new connection after a 1 s idle timeout; server: req.connection.resumed === true')
  checkNoCertificate(check, note, await s.qlog())
})

cell('zerortt', 'chromium', async ({ t, check, note }) => {
  let early = 0
  const missed = []
  for (let i = 0; i < CHROMIUM_ZERO_RTT_ATTEMPTS; i++) {
    const { s, got } = await chromiumTwoConnections(t, { earlyData: true })
    check(allOk(got), `earlyData: true: ${JSON.stringify(got)}`)
    const [a, b] = s.seen.requests
    const facts = await s.qlog()
    check(b?.resumed === true, `earlyData: true, attempt ${i + 1}: the second connection did not resume`)
    check(a?.early === false, 'the first connection claims early data')
    if (b?.early === true) early++
    else missed.push(`attempt ${i + 1}: req.earlyData ${b?.early}, 0-RTT packets in the server's qlog of that connection: ${facts.at(-1)?.zeroRttPackets}`)
  }
  check(early === CHROMIUM_ZERO_RTT_ATTEMPTS, `earlyData: true: only ${early}/${CHROMIUM_ZERO_RTT_ATTEMPTS} resumed requests were answered from early data (${missed.join(', ')})`)
  note(`earlyData: true → the resumed connection's request answered from early data (req.earlyData) in ${early}/${CHROMIUM_ZERO_RTT_ATTEMPTS} attempts`)
  {
    const { s, got } = await chromiumTwoConnections(t, { earlyData: false })
    check(allOk(got), `earlyData: false: ${JSON.stringify(got)}`)
    const [, b] = s.seen.requests
    check(b?.resumed === true && b?.early === false, `earlyData: false: second connection resumed ${b?.resumed}, req.earlyData ${b?.early}`)
    note('earlyData: false → resumed without early data, answered after the handshake')
  }
})
unsupported('chacha20', 'chromium', 'Chromium has no switch to restrict TLS 1.3 cipher suites')
unsupported('keyupdate', 'chromium', 'Chromium has no switch to initiate a QUIC key update')

cell('connections', 'chromium', async ({ t, check, note }) => {
  // one browser, several isolated contexts: each has its own network session
  const s = await interopServer(t)
  const page = await chromiumPage(t, s)
  try {
    const contexts = await Promise.all(Array.from({ length: CONNECTIONS }, () => page.browser.newContext()))
    const pages = await Promise.all(contexts.map(async (ctx) => {
      const p = await ctx.newPage()
      await p.goto(`${page.origin}/`)
      return p
    }))
    const got = (await Promise.all(pages.map((p) => p.evaluate(pageFetchAll, [s.base, [['GET', '/hello', 0]]])))).flat()
    check(allOk(got), `responses: ${JSON.stringify(got)}`)
    checkH3(check, s, got)
    check(s.connections().size === CONNECTIONS, `server saw ${s.connections().size} connections`)
    note(`${CONNECTIONS} browser contexts at once, one connection each`)
  } finally {
    await page.close()
  }
})

cell('getpost', 'chromium', async ({ t, check, note }) => {
  const s = await interopServer(t)
  const [g, p] = await chromiumFetch(t, s, [['GET', '/hello', 0], ['POST', '/echo', POST_BYTES]])
  check(g?.status === 200 && g.sha256 === sha(HELLO), `GET: ${JSON.stringify(g)}`)
  check(p?.status === 200 && p.bytes === POST_BYTES && p.sha256 === patternSha256(POST_BYTES), `POST: ${JSON.stringify(p)}`)
  checkH3(check, s, [g, p])
  note(`GET + POST of ${POST_BYTES / KiB} KiB echoed, sha256 checked`)
})

// ---- versions -----------------------------------------------------------------------

test.serial('client versions', async (t) => {
  results.client('h3node', { version: JSON.parse(await fs.readFile(new URL('../package.json', import.meta.url), 'utf8')).version, source: 'this repository' })
  results.client('aioquic', { version: AIOQUIC_VERSION, source: 'PyPI' })
  results.client('quic-go', { version: QUIC_GO_VERSION, source: 'Go module proxy' })
  await ensureQuicGo()
  try {
    results.client('oha', { version: (await ohaVersion(await ensureOha())).replace(/^oha\s*/, ''), source: 'crates.io (--features http3)' })
  } catch (err) {
    results.client('oha', { version: `${OHA_VERSION} (not installed: ${err.message.split('\n')[0]})`, source: 'crates.io' })
  }
  try {
    const { stdout } = await runJson(chromiumPath(), ['--version'], { timeoutMs: 30_000 })
    results.client('chromium', { version: stdout.trim(), source: 'Debian package chromium' })
  } catch {}
  t.pass()
})
