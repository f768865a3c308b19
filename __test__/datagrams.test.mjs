// HTTP/3 datagrams on plain requests (RFC 9297) and raw QUIC with a custom
// ALPN (listenQuic / connectQuic), against aioquic and the package's own
// client, over real UDP on loopback.
import test from 'ava'

import { connectQuic, listen, listenQuic } from '../dist/index.js'
import { runClient } from './helpers/independent.mjs'
import { readAll, serveEcho, writeAll } from './helpers/wt-echo.mjs'
import { waitFor } from './helpers/h3.mjs'

const enc = (s) => new TextEncoder().encode(s)
const dec = (b) => new TextDecoder().decode(b)


test('HTTP/3 datagrams: echoed on the request flow; datagrams for unknown flows dropped and counted', async (t) => {
  const server = await listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close(100))
  const seen = { echoed: 0, conn: null }
  ;(async () => {
    for await (const req of server) {
      seen.conn = req.connection.id
      const dg = req.datagrams // before any arrive
      const writer = dg.writable.getWriter()
      let end
      const body = new ReadableStream({ start: (c) => (end = c) })
      req.respond(new Response(body))
      ;(async () => {
        for await (const d of dg.readable) {
          seen.echoed++
          await writer.write(d)
        }
      })().catch(() => {})
      const text = await req.request.text()
      seen.stats = await server.stats(req.connection.id)
      end.enqueue(enc(JSON.stringify({ body: text, echoed: seen.echoed })))
      end.close()
    }
  })()
  const r = await runClient('aioquic', ['--url', `https://127.0.0.1:${server.address().port}/dgram`, '--insecure', '--count', '50'], {
    script: 'aioquic_h3dgram_client.py',
    timeoutMs: 60_000,
  })
  const s = r.summary
  if (!s?.ok) t.log(r.stderr.slice(-3000))
  t.deepEqual(s.errors, [])
  t.is(s.status, 200)
  t.is(s.sent, 50)
  t.true(s.matched >= 45, `only ${s.matched} of 50 echoed`)
  t.is(s.strayEchoed, 0)
  t.true(s.responseEnded)
  t.is(JSON.parse(s.body).body, 'bye')
  t.true(seen.stats.datagramsDroppedUnknownFlow >= s.straySent, JSON.stringify(seen.stats))
})

const ALPN = 'h3node-echo'

async function rawEchoServer(t, options = {}) {
  const server = await listenQuic({ host: '127.0.0.1', port: 0, alpn: [ALPN], ...options })
  t.teardown(() => server.close())
  const seen = { conns: [], errors: [], datagrams: 0, uniEchoed: 0, bidiEchoed: 0, serverBidiReply: null, closes: [] }
  const note = (where) => (err) => seen.errors.push(`${where}: ${err?.code ?? ''} ${err?.message ?? err}`)
  ;(async () => {
    for await (const conn of server) {
      seen.conns.push(conn)
      conn.closed.then((i) => seen.closes.push(i))
      serveEcho(conn, seen, () => () => {}).catch(() => {})
    }
  })().catch(note('accept'))
  return { server, port: server.address().port, certPem: server.certificate.cert, seen }
}

test('raw QUIC: aioquic with a custom ALPN: streams both ways, datagrams, close code; a wrong ALPN is refused', async (t) => {
  const { port, seen } = await rawEchoServer(t)
  const r = await runClient('aioquic', ['--url', `https://127.0.0.1:${port}`, '--insecure', '--alpn', ALPN], {
    script: 'aioquic_raw_client.py',
    timeoutMs: 60_000,
  })
  const s = r.summary
  if (!s?.ok) t.log(r.stderr.slice(-3000))
  t.deepEqual(s.errors, [])
  t.is(s.alpn, ALPN)
  t.true(s.datagramsMatched >= 18)
  t.true(s.bidiEchoOk)
  t.is(s.serverBidiText, 'server-bidi')
  t.deepEqual(s.uniTexts, ['echo:uni-hello', 'server-uni'])
  t.true(await waitFor(() => seen.closes.length === 1))
  t.deepEqual(seen.closes[0], { closeCode: 42, reason: 'bye' })
  t.is(seen.serverBidiReply, 'echo:server-bidi')

  const bad = await runClient('aioquic', ['--url', `https://127.0.0.1:${port}`, '--insecure', '--scenario', 'bad-alpn'], {
    script: 'aioquic_raw_client.py',
    timeoutMs: 60_000,
  })
  t.false(bad.summary.connected)
  t.true(bad.summary.ok, JSON.stringify(bad.summary))
})

test('raw QUIC: the own client end to end', async (t) => {
  const { port, certPem, seen } = await rawEchoServer(t)
  const conn = await connectQuic({ host: '127.0.0.1', port, alpn: ALPN, ca: certPem })
  t.is(conn.alpn, ALPN)
  const serverBidi = (async () => {
    const reader = conn.incomingBidirectionalStreams.getReader()
    const { value } = await reader.read()
    reader.releaseLock()
    const text = dec(await readAll(value.readable))
    await writeAll(value.writable, enc('echo:' + text))
    return text
  })()
  const uni = (async () => {
    const out = []
    for await (const r of conn.incomingUnidirectionalStreams) {
      out.push(dec(await readAll(r)))
      if (out.length === 2) break
    }
    return out.sort()
  })()
  const big = Buffer.alloc(1024 * 1024).map((_, i) => i % 251)
  const { readable, writable } = await conn.createBidirectionalStream()
  const [back] = await Promise.all([readAll(readable), writeAll(writable, big)])
  t.true(back.equals(big))
  await writeAll(await conn.createUnidirectionalStream(), enc('uni-hello'))
  t.is(await serverBidi, 'server-bidi')
  t.deepEqual(await uni, ['echo:uni-hello', 'server-uni'])
  const w = conn.datagrams.writable.getWriter()
  const r = conn.datagrams.readable.getReader()
  await w.write(enc('ping'))
  t.is(dec((await r.read()).value), 'ping')
  conn.close({ closeCode: 5, reason: 'done' })
  t.deepEqual(await conn.closed, { closeCode: 5, reason: 'done' })
  t.true(await waitFor(() => seen.closes.length === 1))
  t.deepEqual(seen.closes[0], { closeCode: 5, reason: 'done' })
})

test('raw QUIC: datagrams to a peer that does not accept them fail clearly; bad options name the option', async (t) => {
  const { port, certPem } = await rawEchoServer(t, { datagrams: false })
  const conn = await connectQuic({ host: '127.0.0.1', port, alpn: ALPN, ca: certPem })
  t.is(conn.datagrams.maxDatagramSize, 0)
  const err = await t.throwsAsync(conn.datagrams.writable.getWriter().write(enc('x')))
  t.is(err.code, 'ERR_H3_DATAGRAMS_DISABLED')
  conn.close()
  const e1 = await t.throwsAsync(listenQuic({ port: 0 }))
  t.is(e1.code, 'ERR_H3_INVALID_OPTION')
  t.regex(e1.message, /alpn/)
  const e2 = await t.throwsAsync(listenQuic({ port: 0, alpn: 'x', datagramQueueLength: 0 }))
  t.regex(e2.message, /datagramQueueLength/)
  const e3 = await t.throwsAsync(connectQuic({ host: '127.0.0.1', port, alpn: 'nope', ca: certPem, handshakeTimeoutMs: 2000 }))
  t.is(e3.code, 'ERR_H3_CONNECT')
})
