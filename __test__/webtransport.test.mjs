// WebTransport end to end over real UDP on loopback: the server's sessions
// against headless Chromium, aioquic and the package's own client, with the
// same scenarios (helpers/wt-echo.mjs); close races; limits; 10,000 datagrams.
import test from 'ava'

import { Client, WebTransport, listen } from '../dist/index.js'
import { runWtScenario } from './helpers/browser.mjs'
import { runClient } from './helpers/independent.mjs'
import { readAll, writeAll, wtEchoServer } from './helpers/wt-echo.mjs'
import { waitFor } from './helpers/h3.mjs'

const enc = (s) => new TextEncoder().encode(s)
const dec = (b) => new TextDecoder().decode(b)


function client(t, certPem) {
  const c = new Client({ ca: certPem })
  t.teardown(() => c.close())
  return c
}

// ---- browsers ------------------------------------------------------------------

test.serial('Chromium: datagrams, bidi and uni streams both ways, close with code and reason', async (t) => {
  const { port, certPem, seen } = await wtEchoServer(t)
  const r = await runWtScenario(t, { port, certPem, path: '/echo', scenario: 'echoScenario' })
  t.deepEqual(r.errors, [])
  t.true(r.ready)
  t.is(r.datagramsSent, 20)
  t.true(r.datagramsMatched >= 18, `only ${r.datagramsMatched} of 20 datagrams came back`)
  t.is(r.bidiBytes, 256 * 1024)
  t.true(r.bidiEchoOk)
  t.is(r.serverBidiText, 'server-bidi')
  t.deepEqual(r.uniTexts, ['echo:uni-hello', 'server-uni'])
  t.deepEqual(r.closed, { closeCode: 42, reason: 'bye' })
  // What the server saw of the same session.
  t.true(await waitFor(() => seen.closes.length === 1))
  t.deepEqual(seen.closes[0], { closeCode: 42, reason: 'bye' })
  t.is(seen.serverBidiReply, 'echo:server-bidi')
  t.is(seen.uniEchoed, 1)
  t.is(seen.bidiEchoed, 1)
  t.true(seen.datagrams >= 18)
  t.deepEqual(seen.errors, [])
})

test.serial('Chromium: a server close reaches the page; a refusal rejects ready', async (t) => {
  const { port, certPem } = await wtEchoServer(t)
  const closed = await runWtScenario(t, { port, certPem, path: '/close', scenario: 'serverCloseScenario' })
  t.deepEqual(closed, { ready: true, closed: { closeCode: 7, reason: 'server-bye' }, error: null })
  const refused = await runWtScenario(t, { port, certPem, path: '/refuse', scenario: 'refuseScenario' })
  t.true(refused.readyRejected)
  t.is(refused.errorName, 'WebTransportError')
})

// ---- aioquic ------------------------------------------------------------------

async function aioquic(t, port, scenario, extra = []) {
  const r = await runClient('aioquic', ['--url', `https://127.0.0.1:${port}`, '--insecure', '--scenario', scenario, ...extra], {
    script: 'aioquic_wt_client.py',
    timeoutMs: 90_000,
  })
  if (!r.summary?.ok) t.log(r.stderr.slice(-3000))
  return r.summary
}

test.serial('aioquic: the echo scenario, a server close and a refusal', async (t) => {
  const { port, seen } = await wtEchoServer(t)
  const echo = await aioquic(t, port, 'echo')
  t.deepEqual(echo.errors, [])
  t.true(echo.ok)
  t.is(echo.datagramsMatched, 20)
  t.true(echo.bidiEchoOk)
  t.is(echo.serverBidiText, 'server-bidi')
  t.deepEqual(echo.uniTexts, ['echo:uni-hello', 'server-uni'])
  t.true(echo.serverFin, 'the server did not answer the close with FIN')
  t.true(await waitFor(() => seen.closes.length === 1))
  t.deepEqual(seen.closes[0], { closeCode: 42, reason: 'bye' })

  const closed = await aioquic(t, port, 'server-close')
  t.deepEqual(closed.closed, { closeCode: 7, reason: 'server-bye' })
  t.true(closed.serverFin)

  const refused = await aioquic(t, port, 'refuse')
  t.is(refused.status, 403)
  t.false(refused.ready)
})

test.serial('10,000 datagrams: every one accounted for, nothing left behind', async (t) => {
  const { server, port, seen } = await wtEchoServer(t)
  // Sample the connection's native counters while the client runs (the
  // connection is gone once it finishes).
  let native = null
  const timer = setInterval(async () => {
    if (seen.connectionId === undefined) return
    const s = await server.stats(seen.connectionId)
    if (s) native = s
  }, 50)
  const r = await aioquic(t, port, 'many-datagrams', ['--count', '10000'])
  clearInterval(timer)
  t.true(r.ok)
  t.is(r.sent, 10000)
  const js = seen.session.datagrams.stats
  t.log(`client: sent ${r.sent}, echoes back ${r.received} in ${r.elapsedMs} ms`)
  t.log(`server session: ${JSON.stringify(js)}`)
  t.log(`server connection (last sample): ${JSON.stringify(native)}`)
  t.true(r.received > 0)
  // Every datagram the session read was echoed or counted as dropped.
  t.is(js.received, seen.datagrams + js.droppedIncoming)
  t.is(js.sent, seen.datagrams)
  t.true(js.received <= 10000)
  // The session is gone on the server and nothing is held for it.
  t.true(await waitFor(() => server.webTransportSessions === 0 && server.activeRequests === 0))
})

// ---- the package's own client ---------------------------------------------------

test('own client: the echo scenario with WebTransport (browser constructor shape)', async (t) => {
  const { port, certPem, seen } = await wtEchoServer(t)
  const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, { ca: certPem })
  await wt.ready
  t.true(wt.sessionId >= 0)
  // Server-initiated streams.
  const bidiReply = (async () => {
    const reader = wt.incomingBidirectionalStreams.getReader()
    const { value } = await reader.read()
    reader.releaseLock()
    const text = dec(await readAll(value.readable))
    await writeAll(value.writable, enc('echo:' + text))
    return text
  })()
  const uniTexts = (async () => {
    const out = []
    for await (const r of wt.incomingUnidirectionalStreams) {
      out.push(dec(await readAll(r)))
      if (out.length === 2) break
    }
    return out.sort()
  })()
  // Datagrams.
  const w = wt.datagrams.writable.getWriter()
  const echoes = []
  const dgReader = (async () => {
    for await (const d of wt.datagrams.readable) {
      echoes.push(dec(d))
      if (echoes.length === 20) break
    }
  })()
  for (let i = 0; i < 20; i++) await w.write(enc(`dg-${i}`))
  t.true(wt.datagrams.maxDatagramSize > 1000, `maxDatagramSize ${wt.datagrams.maxDatagramSize}`)
  // Bidi echo of 256 KiB.
  const big = Buffer.alloc(256 * 1024, 0).map((_, i) => i % 251)
  const { readable, writable } = await wt.createBidirectionalStream()
  const [back] = await Promise.all([readAll(readable), writeAll(writable, big)])
  t.true(back.equals(big))
  await writeAll(await wt.createUnidirectionalStream(), enc('uni-hello'))
  t.is(await bidiReply, 'server-bidi')
  t.deepEqual(await uniTexts, ['echo:uni-hello', 'server-uni'])
  await Promise.race([dgReader, new Promise((r) => setTimeout(r, 2000))])
  t.true(echoes.length >= 18)
  const stats = await wt.getStats()
  t.is(stats.datagrams.sent, 20)
  wt.close({ closeCode: 42, reason: 'bye' })
  t.deepEqual(await wt.closed, { closeCode: 42, reason: 'bye' })
  t.true(await waitFor(() => seen.closes.length === 1))
  t.deepEqual(seen.closes[0], { closeCode: 42, reason: 'bye' })
  t.is(seen.serverBidiReply, 'echo:server-bidi')
})

test('own client: server close, refusal, and the session limit', async (t) => {
  const { port, certPem } = await wtEchoServer(t, { maxWebTransportSessions: 1 })
  const c = client(t, certPem)
  const closed = c.webTransport(`https://127.0.0.1:${port}/close`)
  t.deepEqual(await closed.closed, { closeCode: 7, reason: 'server-bye' })
  const refused = c.webTransport(`https://127.0.0.1:${port}/refuse`)
  const err = await t.throwsAsync(refused.ready)
  t.is(err.code, 'ERR_H3_WEBTRANSPORT_REFUSED')
  t.is(err.status, 403)
  await t.throwsAsync(refused.closed)
  // One session at a time on this connection: the second gets 429.
  const first = c.webTransport(`https://127.0.0.1:${port}/echo`)
  await first.ready
  const second = c.webTransport(`https://127.0.0.1:${port}/echo`)
  const e2 = await t.throwsAsync(second.ready)
  t.is(e2.status, 429)
  first.close()
  await first.closed
})

test('stream errors carry application codes both ways', async (t) => {
  const server = await listen({ host: '127.0.0.1', port: 0, webTransport: true })
  t.teardown(() => server.close(100))
  const got = {}
  ;(async () => {
    for await (const req of server) {
      const s = req.acceptWebTransport()
      for await (const { readable, writable } of s.incomingBidirectionalStreams) {
        // The client aborts its writable: the server's readable fails with the code.
        readAll(readable).catch((e) => (got.resetCode = e.streamErrorCode))
        // The server cancels nothing here but aborts its own writable with 9.
        writable.getWriter().abort({ streamErrorCode: 9 }).catch(() => {})
      }
    }
  })().catch(() => {}) // the streams end with the connection
  const c = client(t, server.certificate.cert)
  const wt = c.webTransport(`https://127.0.0.1:${server.address().port}/codes`)
  await wt.ready
  const { readable, writable } = await wt.createBidirectionalStream()
  const writer = writable.getWriter()
  await writer.write(enc('partial'))
  const readErr = await t.throwsAsync(readAll(readable))
  t.is(readErr.streamErrorCode, 9)
  await writer.abort({ streamErrorCode: 77 })
  t.true(await waitFor(() => got.resetCode !== undefined))
  t.is(got.resetCode, 77)
  wt.close()
})

test('close races: mid-write close, close twice, connection lost before accept, server shutdown drains', async (t) => {
  const server = await listen({ host: '127.0.0.1', port: 0, webTransport: true })
  let serverSessions = []
  const acceptErrors = []
  ;(async () => {
    for await (const req of server) {
      if (new URL(req.url).pathname === '/late') {
        // Accept only after the client is gone.
        await new Promise((r) => setTimeout(r, 300))
      }
      try {
        const s = req.acceptWebTransport()
        serverSessions.push(s)
        s.closed.catch(() => {})
        ;(async () => {
          for await (const { readable } of s.incomingBidirectionalStreams) readAll(readable).catch(() => {})
        })().catch(() => {})
      } catch (e) {
        acceptErrors.push(e.code)
      }
    }
  })()
  const { port } = server.address()
  const certPem = server.certificate.cert

  // 1. Close while a stream is being written in a loop.
  const c1 = new Client({ ca: certPem })
  const wt = c1.webTransport(`https://127.0.0.1:${port}/a`)
  await wt.ready
  const { writable } = await wt.createBidirectionalStream()
  const writer = writable.getWriter()
  const pumping = (async () => {
    for (let i = 0; i < 10_000; i++) await writer.write(Buffer.alloc(16 * 1024))
  })()
  await new Promise((r) => setTimeout(r, 50))
  wt.close({ closeCode: 1, reason: 'mid-write' })
  wt.close({ closeCode: 2, reason: 'twice' }) // does nothing
  const pumpErr = await t.throwsAsync(pumping)
  t.is(pumpErr.code, 'ERR_H3_SESSION_CLOSED')
  t.deepEqual(await wt.closed, { closeCode: 1, reason: 'mid-write' })
  await t.throwsAsync(wt.createBidirectionalStream())

  // 2. The connection dies before the server accepts.
  const c2 = new Client({ ca: certPem })
  const late = c2.webTransport(`https://127.0.0.1:${port}/late`)
  await new Promise((r) => setTimeout(r, 100))
  await c2.close()
  await t.throwsAsync(late.ready)
  t.true(await waitFor(() => acceptErrors.length === 1 || serverSessions.length === 2, 3000))

  // 3. Server shutdown: GOAWAY + DRAIN, then the session ends.
  const c3 = new Client({ ca: certPem })
  const s3 = c3.webTransport(`https://127.0.0.1:${port}/c`)
  await s3.ready
  let drained = false
  s3.draining.then(() => (drained = true))
  const closing = server.close(200)
  t.true(await waitFor(() => drained, 3000), 'the client never saw the drain')
  await closing
  await t.throwsAsync(s3.closed)
  await c1.close()
  await c3.close()
  t.is(server.webTransportSessions, 0)
})

test('serve({ fetch }): a WebTransport request reaches fetch as GET + upgrade and is accepted there', async (t) => {
  const { serve } = await import('../dist/index.js')
  const server = await serve({
    host: '127.0.0.1',
    port: 0,
    webTransport: true,
    fetch: (request, info) => {
      if (request.headers.get('upgrade') !== 'webtransport') return new Response('plain')
      if (new URL(request.url).pathname !== '/wt') return new Response('no such session', { status: 404 })
      const session = info.acceptWebTransport()
      session.createUnidirectionalStream().then((w) => writeAll(w, Buffer.from(`method seen: ${request.method}`)))
      return new Response(null, { status: 200 })
    },
  })
  t.teardown(() => server.close(100))
  const c = new Client({ ca: server.certificate.cert })
  t.teardown(() => c.close())
  const base = `https://127.0.0.1:${server.address().port}`
  t.is(await (await c.fetch(`${base}/`)).text(), 'plain')
  const wt = c.webTransport(`${base}/wt`)
  await wt.ready
  const reader = wt.incomingUnidirectionalStreams.getReader()
  const { value } = await reader.read()
  t.is((await readAll(value)).toString(), 'method seen: GET')
  const refused = c.webTransport(`${base}/other`)
  const err = await t.throwsAsync(refused.ready)
  t.is(err.status, 404)
  wt.close()
})
