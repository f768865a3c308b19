// The server against HTTP/3 stacks that share no code with ours: aioquic
// (Python) and quic-go (Go), each installed by the suite from its registry.
// A quick subset runs in `npm test`; H3NODE_INTEROP_FULL=1 (npm run
// test:interop) makes the bodies and fan-out larger.
import test from 'ava'
import { createHash } from 'node:crypto'

import { listen, handle, digest, sleep, waitFor } from './helpers/h3.mjs'
import { runClient, patternSha256, patternBytes } from './helpers/independent.mjs'

const FULL = process.env.H3NODE_INTEROP_FULL === '1'
const ECHO_BYTES = FULL ? 10 * 1024 * 1024 : 1024 * 1024
const PARALLEL = FULL ? 500 : 100
const sha = (s) => createHash('sha256').update(s).digest('hex')

async function interopServer(t, options = {}) {
  const server = await listen({ host: '127.0.0.1', port: 0, ...options })
  t.teardown(() => server.close(500))
  const seen = { resets: [], arrivals: 0, connections: new Set() }
  handle(server, async (req) => {
    seen.connections.add(req.connection.id)
    const url = new URL(req.url)
    if (url.pathname === '/hello') return req.respond(new Response('Hello, HTTP/3!'))
    if (url.pathname === '/echo') {
      return req.respond(new Response(req.request.body, { headers: { 'x-echo': '1' } }))
    }
    if (url.pathname.startsWith('/bytes/')) return req.respond(new Response(patternBytes(Number(url.pathname.slice(7)))))
    if (url.pathname === '/throw') throw new Error('handler failure on purpose')
    // Answered without reading the upload: STOP_SENDING once the response is complete.
    if (url.pathname === '/unread') return req.respond(new Response('not reading that', { status: 413 }))
    if (url.pathname === '/sink') {
      seen.arrivals++
      // The reset may have arrived in the same batch as the head.
      if (req.signal.aborted) seen.resets.push(req.signal.reason)
      else req.signal.addEventListener('abort', () => seen.resets.push(req.signal.reason))
      try {
        await digest(req.request.body)
      } catch {}
      if (!req.signal.aborted) req.respond(new Response('drained'))
      return
    }
    req.respond(new Response('not found', { status: 404 }))
  })
  return { server, seen, base: `https://127.0.0.1:${server.address().port}` }
}

/** What a failed client run said: its stderr, and the per-request errors it reported on stdout. */
function failure(r) {
  const errors = r.results.filter((x) => x && x.error).map((x) => x.error)
  return `exit ${r.code}; stderr: ${r.stderr.trim() || '(empty)'}; errors: ${errors.length ? JSON.stringify(errors.slice(0, 5)) : 'none reported'}; stdout head: ${r.stdout.slice(0, 600)}`
}

// RFC 9000 §19.16: a RETIRE_CONNECTION_ID may be retransmitted, so the
// second copy of one must be ignored. quiche 0.30 closes the connection with
// PROTOCOL_VIOLATION when it arrives while only one connection ID is left
// (cloudflare/quiche#1833): a client that retransmits it before the server
// answered the first (a server stalled for a probe timeout) lost its
// connection. The server now keeps more connection IDs issued (see
// crate/src/server.rs), so one is never the last.
test('aioquic: RETIRE_CONNECTION_ID for the same connection ID twice in one packet leaves the connection up', async (t) => {
  const { base } = await interopServer(t)
  const r = await runClient('aioquic', ['--url', `${base}/hello`, '--count', '2', '--retire-cid-twice', '--insecure'], { timeoutMs: 60_000 })
  t.log(JSON.stringify(r.summary))
  t.true(r.summary?.retiredTwice, `the client did not get to send the duplicate: ${JSON.stringify(r.summary)}`)
  t.is(r.code, 0, failure(r))
  t.deepEqual(
    r.results.filter((x) => !x.summary).map((x) => x.status),
    [200, 200],
  )
})

for (const kind of ['aioquic', 'quic-go']) {
  const run = (args, opts) => runClient(kind, [...args, '--insecure'], { timeoutMs: 120_000, ...opts })

  test(`${kind}: GET`, async (t) => {
    const { base } = await interopServer(t)
    const r = await run(['--url', `${base}/hello`, '--count', '1'])
    t.is(r.code, 0, failure(r))
    t.is(r.results.length, 1)
    t.is(r.results[0].status, 200)
    t.is(r.results[0].sha256, sha('Hello, HTTP/3!'))
  })

  test(`${kind}: POST echo of ${ECHO_BYTES} bytes, checksummed`, async (t) => {
    const { base } = await interopServer(t)
    const r = await run(['--url', `${base}/echo`, '--method', 'POST', '--body-size', String(ECHO_BYTES), '--count', '1'])
    t.is(r.code, 0, failure(r))
    t.is(r.results[0].status, 200)
    t.is(r.results[0].bytes, ECHO_BYTES)
    t.is(r.results[0].sha256, patternSha256(ECHO_BYTES))
    t.is(r.results[0].headers['x-echo'], '1')
  })

  test(`${kind}: ${PARALLEL} concurrent streams on one connection`, async (t) => {
    const { base, seen } = await interopServer(t)
    const r = await run(['--url', `${base}/bytes/2000`, '--parallel', String(PARALLEL)])
    t.is(r.code, 0, failure(r))
    t.is(r.results.length, PARALLEL)
    t.true(r.results.every((x) => x.status === 200 && x.sha256 === patternSha256(2000)))
    t.is(seen.connections.size, 1)
  })

  test(`${kind}: several connections`, async (t) => {
    const { base, seen } = await interopServer(t)
    const r = await run(['--url', `${base}/hello`, '--connections', '4', '--count', '3', '--parallel', '3'])
    t.is(r.code, 0, failure(r))
    t.is(r.results.length, 12)
    t.is(seen.connections.size, 4)
  })

  test(`${kind}: a handler error is a 500 and the server keeps serving`, async (t) => {
    const { base } = await interopServer(t)
    const r = await run(['--url', `${base}/throw`, '--url', `${base}/hello`, '--count', '1'])
    t.is(r.code, 0, failure(r))
    const byUrl = Object.fromEntries(r.results.map((x) => [new URL(x.url).pathname, x.status]))
    t.deepEqual(byUrl, { '/throw': 500, '/hello': 200 })
  })

  // quiche 0.30 kept such a stream when the client's ACK of the response
  // came before its RESET_STREAM (cloudflare/quiche#1968): on a connection
  // allowing two request streams, the third upload then never started.
  test(`${kind}: uploads answered without being read free their streams (six in a row on a two-stream connection)`, async (t) => {
    const { base } = await interopServer(t, { maxConcurrentBidiStreams: 2 })
    const r = await run(['--url', `${base}/unread`, '--method', 'POST', '--body-size', String(8 * 1024 * 1024), '--count', '6', '--parallel', '1'], { timeoutMs: 60_000 })
    t.is(r.code, 0, failure(r))
    t.deepEqual(
      r.results.filter((x) => !x.summary).map((x) => x.status),
      [413, 413, 413, 413, 413, 413],
    )
  })

  test(`${kind}: a client reset mid-upload aborts request.signal with the client's code`, async (t) => {
    const { base, seen } = await interopServer(t)
    // Resetting after 2 MiB (twice the 1 MiB stream window) means the server
    // has read the head and part of the body before the reset arrives.
    const r = await run(['--url', `${base}/sink`, '--method', 'POST', '--body-size', String(4 * 1024 * 1024), '--reset-after', String(2 * 1024 * 1024), '--count', '1'])
    t.is(r.code, 0, failure(r))
    if (kind === 'aioquic' && seen.arrivals === 0) {
      // aioquic queues the body without waiting for the server to read it,
      // so on a loaded machine its reset can overtake the head: quiche then
      // drops the stream unread and no handler ever sees it. That is correct;
      // what must hold is that the server is unharmed (checked below).
      t.log('the reset overtook the request head: nothing reached the handler')
    } else {
      t.true(await waitFor(() => seen.resets.length === 1, 10_000), 'request.signal aborted')
      t.true(['ERR_H3_STREAM_RESET', 'ERR_H3_STOP_SENDING'].includes(seen.resets[0].code))
      t.is(seen.resets[0].wireCode, 0x10c)
    }
    // And the server still answers.
    const again = await run(['--url', `${base}/hello`, '--count', '1'])
    t.is(again.results[0].status, 200)
  })
}

test('quic-go: a download cut by server.close() ends cleanly, never as a silently truncated body', async (t) => {
  const { server, base } = await interopServer(t)
  const size = 256 * 1024 * 1024
  const pending = runClient('quic-go', ['--url', `${base}/bytes/${size}`, '--count', '1', '--insecure'], { timeoutMs: 60_000 })
  await sleep(300)
  await server.close(200)
  const r = await pending
  const res = r.results[0]
  // Either the whole body arrived intact, or the client saw an error.
  if (res && !res.error) {
    t.is(res.bytes, size)
    t.is(res.sha256, patternSha256(size))
  } else {
    t.truthy(res?.error ?? r.stderr, 'the client reported an error')
  }
})
