// Backpressure both ways and what aborts do, over real UDP.
import test from 'ava'

import { pair, handle, patternStream, patternSha256, digest, sleep, waitFor } from './helpers/h3.mjs'

const MiB = 1024 * 1024

test('a slow JS reader flow-controls the client upload', async (t) => {
  const p = await pair(t)
  const total = 128 * MiB
  let pulled = 0
  let atStall = -1
  handle(p.server, async (req) => {
    await sleep(1500) // the handler does not read yet
    atStall = pulled
    const d = await digest(req.request.body)
    req.respond(Response.json(d))
  })
  const res = await p.client.fetch(`${p.base}/up`, {
    method: 'POST',
    duplex: 'half',
    body: patternStream(total, { onPull: (n) => (pulled = n) }),
  })
  const d = await res.json()
  t.is(d.bytes, total)
  t.is(d.sha256, patternSha256(total))
  t.log(`client source pulled ${(atStall / MiB).toFixed(1)} MiB while the server did not read`)
  t.true(atStall >= 0 && atStall < 32 * MiB, `pulled ${atStall} bytes during the stall`)
})

test('body pieces that arrive while JS is busy reach the reader joined, not one chunk per read', async (t) => {
  const p = await pair(t)
  const total = 192 * 1024 // under the 256 KiB read window: all of it is read while JS is busy
  handle(p.server, async (req) => {
    const until = Date.now() + 500
    while (Date.now() < until) {} // the JS thread is busy; the body arrives meanwhile
    const sizes = []
    for await (const c of req.request.body) sizes.push(c.byteLength)
    req.respond(Response.json(sizes))
  })
  const body = new Uint8Array(total).map((_, i) => i % 251)
  const res = await p.client.fetch(`${p.base}/up`, { method: 'POST', body })
  const sizes = await res.json()
  t.is(sizes.reduce((a, b) => a + b, 0), total)
  t.log(`${sizes.length} chunks: ${sizes.join(', ')}`)
  // A single read of QUIC takes at most 64 KiB; a bigger chunk is pieces joined.
  t.true(Math.max(...sizes) > 64 * 1024, `largest chunk ${Math.max(...sizes)} bytes`)
})

test('a slow client flow-controls the Response body source', async (t) => {
  const p = await pair(t)
  const total = 128 * MiB
  let pulled = 0
  handle(p.server, (req) => req.respond(new Response(patternStream(total, { onPull: (n) => (pulled = n) }))))
  const res = await p.client.fetch(`${p.base}/down`)
  await sleep(1500) // the client does not read yet
  const atStall = pulled
  const d = await digest(res.body)
  t.is(d.bytes, total)
  t.is(d.sha256, patternSha256(total))
  t.log(`server source pulled ${(atStall / MiB).toFixed(1)} MiB while the client did not read`)
  t.true(atStall < 32 * MiB, `pulled ${atStall} bytes during the stall`)
})

test('request.signal aborts when the client aborts; the response source is cancelled', async (t) => {
  const p = await pair(t)
  let serverSignal
  let cancelled
  const cancelledP = new Promise((r) => (cancelled = r))
  handle(p.server, (req) => {
    serverSignal = req.request.signal
    req.respond(new Response(new ReadableStream({
      pull: async (c) => {
        await sleep(5)
        c.enqueue(new Uint8Array(16 * 1024))
      },
      cancel: (reason) => cancelled(reason),
    })))
  })
  const ac = new AbortController()
  const res = await p.client.fetch(`${p.base}/stream`, { signal: ac.signal })
  const reader = res.body.getReader()
  await reader.read()
  ac.abort()
  const readErr = await reader.read().then(() => null, (e) => e)
  t.is(readErr?.name, 'AbortError')
  // The client sends RESET_STREAM and STOP_SENDING together; whichever the
  // server meets first aborts it, with the client's code.
  const resetCodes = ['ERR_H3_STREAM_RESET', 'ERR_H3_STOP_SENDING']
  const reason = await cancelledP
  t.true(resetCodes.includes(reason.code), reason.code)
  t.true(await waitFor(() => serverSignal.aborted))
  t.true(resetCodes.includes(serverSignal.reason.code))
  t.is(serverSignal.reason.wireCode, 0x10c) // H3_REQUEST_CANCELLED
})

test('request.signal is the same signal on clone() and on a Request made with the request as its init', async (t) => {
  const p = await pair(t)
  const seen = {}
  handle(p.server, (req) => {
    const r = req.request
    seen.instance = r instanceof Request
    seen.stable = r.signal === r.signal && r.signal === req.signal
    seen.clone = r.clone()
    seen.cloneIsRequest = seen.clone instanceof Request
    seen.derived = new Request('https://upstream.example/x', r)
    // A real Request: undici's own brand checks accept it as an input.
    seen.rewrapped = new Request(r).url === r.url
    req.respond(new Response(patternStream(64 * MiB)))
  })
  const ac = new AbortController()
  const res = await p.client.fetch(`${p.base}/long`, { signal: ac.signal })
  const reader = res.body.getReader()
  await reader.read()
  t.true(seen.instance && seen.stable && seen.cloneIsRequest && seen.rewrapped)
  t.false(seen.clone.signal.aborted)
  t.false(seen.derived.signal.aborted)
  ac.abort()
  await reader.read().catch(() => {})
  t.true(await waitFor(() => seen.clone.signal.aborted && seen.derived.signal.aborted))
  t.is(seen.clone.signal.reason.wireCode, 0x10c)
})

test('cancelling the response body on the client aborts the server side too', async (t) => {
  const p = await pair(t)
  let serverSignal
  handle(p.server, (req) => {
    serverSignal = req.signal
    req.respond(new Response(patternStream(64 * MiB)))
  })
  const res = await p.client.fetch(`${p.base}/big`)
  const reader = res.body.getReader()
  await reader.read()
  await reader.cancel()
  t.true(await waitFor(() => serverSignal?.aborted))
})

test('request.signal does not abort on normal completion', async (t) => {
  const p = await pair(t)
  const signals = []
  handle(p.server, async (req) => {
    signals.push(req.request.signal)
    const body = req.method === 'POST' ? await req.request.text() : 'x'.repeat(100_000)
    req.respond(new Response(body))
  })
  await (await p.client.fetch(`${p.base}/a`)).text()
  await (await p.client.fetch(`${p.base}/b`, { method: 'POST', body: 'y'.repeat(300_000) })).text()
  await sleep(200)
  t.is(signals.length, 2)
  t.false(signals[0].aborted)
  t.false(signals[1].aborted)
})

test('request.signal aborts when the connection dies before the response is complete', async (t) => {
  const p = await pair(t)
  let serverSignal
  let got
  const gotP = new Promise((r) => (got = r))
  handle(p.server, (req) => {
    serverSignal = req.signal
    got()
    // never responds
  })
  const pending = p.client.fetch(`${p.base}/hang`).catch((e) => e)
  await gotP
  await p.client.close()
  const err = await pending
  t.is(err.code, 'ERR_H3_CLIENT_CLOSED')
  t.true(await waitFor(() => serverSignal.aborted, 5000))
  t.is(serverSignal.reason.code, 'ERR_H3_CONNECTION_CLOSED')
})

test('a response sent without reading the upload stops the client sending it (STOP_SENDING), and frees its stream', async (t) => {
  // Two request streams per connection: a stream quiche never frees after
  // the exchange would leave the later requests waiting for stream credit.
  const p = await pair(t, { maxConcurrentBidiStreams: 2 })
  let serverSignal
  handle(p.server, (req) => {
    serverSignal = req.signal
    req.respond(new Response('answered without reading', { status: 413 }))
  })
  let pulled = 0
  const total = 256 * MiB
  const res = await p.client.fetch(`${p.base}/upload`, {
    method: 'POST',
    duplex: 'half',
    body: patternStream(total, { onPull: (n) => (pulled = n) }),
  })
  t.is(res.status, 413)
  t.is(await res.text(), 'answered without reading')
  await sleep(300)
  const after = pulled
  await sleep(300)
  t.is(pulled, after, 'the client stopped pulling its body source')
  t.true(pulled < total)
  t.false(serverSignal.aborted, 'a complete response is not an abort')
  for (let i = 0; i < 4; i++) {
    const r = await p.client.fetch(`${p.base}/upload`, { method: 'POST', duplex: 'half', body: patternStream(8 * MiB) })
    t.is(await r.text(), 'answered without reading')
  }
  t.is(await (await p.client.fetch(`${p.base}/next`)).text(), 'answered without reading')
})

test('a request body the handler holds a reader for but leaves unread after a complete response is stopped after unreadBodyTimeoutMs; a reader that goes on reading is not', async (t) => {
  // Two request streams per connection, so a stream that is never let go
  // shows as a third request that cannot start.
  const p = await pair(t, { unreadBodyTimeoutMs: 300, streamReadWindow: 64 * 1024, maxConcurrentBidiStreams: 2 })
  const kept = [] // the handler's readers stay reachable: nothing here depends on GC
  const ends = []
  const signals = []
  let slow = null
  handle(p.server, async (req) => {
    const path = new URL(req.url).pathname
    if (path === '/next') return req.respond(new Response('next'))
    const reader = req.request.body.getReader()
    if (path === '/abandon') {
      await reader.read() // one chunk, then never again
      kept.push(reader)
      ends.push(reader.closed.then(() => 'closed', (e) => e.code))
      signals.push(req.signal)
      return req.respond(new Response('partial'))
    }
    // /slow: answers first, then reads on with a pause of a third of the
    // period after each chunk for 1.5 s (five periods), then at full speed.
    req.respond(new Response('reading on'))
    const s = { bytes: 0, pauses: 0, error: null, done: false }
    slow = s
    const until = Date.now() + 1500
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        s.bytes += value.byteLength
        if (Date.now() < until) {
          await sleep(100)
          s.pauses++
        }
      }
      s.done = true
    } catch (e) {
      s.error = e.code ?? String(e)
    }
  })
  const pulled = [0, 0]
  const upload = (i) => p.client.fetch(`${p.base}/abandon`, { method: 'POST', duplex: 'half', body: patternStream(64 * MiB, { onPull: (n) => (pulled[i] = n) }) })
  const [a, b] = await Promise.all([upload(0), upload(1)])
  t.is(await a.text(), 'partial')
  t.is(await b.text(), 'partial')
  // Both streams are held by unread bodies until the watch gives them up:
  // only then can a third request start.
  const started = Date.now()
  t.is(await (await p.client.fetch(`${p.base}/next`)).text(), 'next')
  t.log(`third request answered ${Date.now() - started} ms after both bodies were left unread`)
  t.deepEqual(await Promise.all(ends), ['ERR_H3_BODY_ABANDONED', 'ERR_H3_BODY_ABANDONED'])
  t.false(signals.some((x) => x.aborted), 'the responses were complete: no abort')
  t.true(await waitFor(() => p.server.activeRequests === 0, 3000), `${p.server.activeRequests} requests still tracked`)
  const after = [...pulled]
  await sleep(300)
  t.deepEqual(pulled, after, 'the client stopped pulling its body sources')
  t.true(pulled[0] < 64 * MiB && pulled[1] < 64 * MiB)

  const total = 4 * MiB
  const res = await p.client.fetch(`${p.base}/slow`, { method: 'POST', duplex: 'half', body: patternStream(total) })
  t.is(await res.text(), 'reading on')
  t.true(await waitFor(() => slow?.done || slow?.error, 15_000))
  t.log(`slow reader: ${slow.pauses} pauses of 100 ms, ${slow.bytes} bytes`)
  t.is(slow.error, null)
  t.is(slow.bytes, total)
  t.true(slow.pauses >= 10, 'the reader paused through several periods')
})

test('no per-request state is left behind after aborts, resets and failures', async (t) => {
  const p = await pair(t, { onError: () => {} })
  handle(p.server, (req) => {
    const path = new URL(req.url).pathname
    if (path === '/fail') {
      let n = 0
      return req.respond(new Response(new ReadableStream({ pull: (c) => (n++ < 2 ? c.enqueue(new Uint8Array(1000)) : c.error(new Error('x'))) })))
    }
    if (path === '/never-read') return req.respond(new Response('early'))
    // A long body the client will abandon.
    req.respond(new Response(patternStream(8 * MiB)))
  })
  const work = []
  for (let i = 0; i < 20; i++) {
    const ac = new AbortController()
    work.push(p.client.fetch(`${p.base}/long`, { signal: ac.signal }).then(async (r) => {
      const reader = r.body.getReader()
      await reader.read()
      ac.abort()
    }).catch(() => {}))
    work.push(p.client.fetch(`${p.base}/fail`).then((r) => r.arrayBuffer()).catch(() => {}))
    work.push(p.client.fetch(`${p.base}/never-read`, { method: 'POST', duplex: 'half', body: patternStream(2 * MiB) }).then((r) => r.text()))
  }
  await Promise.all(work)
  t.true(await waitFor(() => p.server.activeRequests === 0, 5000), `${p.server.activeRequests} requests still tracked`)
  t.is(await (await p.client.fetch(`${p.base}/never-read`)).text(), 'early')
})
