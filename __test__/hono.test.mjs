// h3node/hono: a real Hono app (from npm) served by h3node over real UDP on
// loopback, driven by the package's Client, by quic-go, and by WebTransport
// sessions; and examples/hono.js run as a child process.
import test from 'ava'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { fileURLToPath } from 'node:url'

import { Hono } from 'hono'
import { stream, streamSSE } from 'hono/streaming'

import { Client, H3Error } from '../dist/index.js'
import { serve, getConnInfo, upgradeWebTransport, isWebTransport } from '../dist/adapters/hono.js'
import { runClient, patternSha256 } from './helpers/independent.mjs'
import { readAll, writeAll } from './helpers/wt-echo.mjs'
import { waitFor } from './helpers/h3.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const enc = (s) => new TextEncoder().encode(s)
const sha256 = (data) => createHash('sha256').update(data).digest('hex')

/** Serves `app` on 127.0.0.1 and gives a client trusting its dev certificate; both close with `t`. */
async function start(t, app, options = {}) {
  const server = await serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0, ...options })
  const client = new Client({ ca: server.certificate.cert })
  t.teardown(async () => {
    await client.close()
    await server.close(200)
  })
  return { server, client, base: `https://127.0.0.1:${server.address().port}` }
}

function restApp() {
  const app = new Hono()
  app.get('/api/users/:id', (c) => c.json({ id: c.req.param('id'), q: c.req.query('q') ?? null }, 200, { 'x-route': 'user' }))
  app.get('/api/users/:id/posts/:post', (c) => c.json(c.req.param()))
  app.get('/files/*', (c) => c.text(`file:${c.req.path.slice('/files/'.length)}`))
  app.post('/api/items', async (c) => {
    const item = await c.req.json()
    c.header('location', '/api/items/1')
    return c.json({ created: item, trace: c.req.header('x-trace') ?? null }, 201)
  })
  app.post('/api/upload', async (c) => {
    const body = Buffer.from(await c.req.arrayBuffer())
    return c.json({ bytes: body.length, sha256: sha256(body) })
  })
  app.delete('/api/items/:id', (c) => c.body(null, 204))
  app.get('/old', (c) => c.redirect('/api/users/1', 301))
  app.get('/teapot', (c) => c.text('short and stout', 418))
  app.get('/cookies', (c) => {
    c.header('set-cookie', 'a=1; Path=/', { append: true })
    c.header('set-cookie', 'b=2; Path=/', { append: true })
    return c.text('two cookies')
  })
  app.get('/boom', () => {
    throw new Error('boom')
  })
  app.onError((err, c) => c.json({ error: err.message }, 500))
  return app
}

test('routes: params, wildcards, JSON bodies, headers, status codes, HEAD, 404 and errors', async (t) => {
  const { client, base } = await start(t, restApp())

  let res = await client.fetch(`${base}/api/users/42?q=hi`)
  t.is(res.status, 200)
  t.is(res.headers.get('x-route'), 'user')
  t.regex(res.headers.get('content-type'), /^application\/json/)
  t.deepEqual(await res.json(), { id: '42', q: 'hi' })

  res = await client.fetch(`${base}/api/users/7/posts/99`)
  t.deepEqual(await res.json(), { id: '7', post: '99' })

  res = await client.fetch(`${base}/files/docs/guide/readme.md`)
  t.is(await res.text(), 'file:docs/guide/readme.md')

  // A JSON body larger than the stream windows (256 KiB), read with c.req.json().
  const item = { name: 'widget', tags: Array.from({ length: 20_000 }, (_, i) => `tag-${i}`) }
  res = await client.fetch(`${base}/api/items`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-trace': 'abc' },
    body: JSON.stringify(item),
  })
  t.is(res.status, 201)
  t.is(res.headers.get('location'), '/api/items/1')
  t.deepEqual(await res.json(), { created: item, trace: 'abc' })

  res = await client.fetch(`${base}/api/items/1`, { method: 'DELETE' })
  t.is(res.status, 204)
  t.is(await res.text(), '')

  res = await client.fetch(`${base}/old`)
  t.is(res.status, 301)
  t.is(res.headers.get('location'), '/api/users/1')

  res = await client.fetch(`${base}/teapot`)
  t.is(res.status, 418)
  t.is(await res.text(), 'short and stout')

  res = await client.fetch(`${base}/cookies`)
  t.deepEqual(res.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/'])

  res = await client.fetch(`${base}/api/users/42`, { method: 'HEAD' })
  t.is(res.status, 200)
  t.is(res.headers.get('x-route'), 'user')
  t.is(await res.text(), '')

  res = await client.fetch(`${base}/nowhere`)
  t.is(res.status, 404)
  await res.arrayBuffer()

  res = await client.fetch(`${base}/api/users/42`, { method: 'PUT', body: 'x' })
  t.is(res.status, 404) // Hono answers an unrouted method with its 404
  await res.arrayBuffer()

  res = await client.fetch(`${base}/boom`)
  t.is(res.status, 500)
  t.deepEqual(await res.json(), { error: 'boom' })
})

test('streaming: c.body(ReadableStream) arrives chunk by chunk; hono/streaming sees the client abort; SSE', async (t) => {
  const app = new Hono()
  let release
  const gate = new Promise((r) => (release = r))
  app.get('/body', (c) => {
    const body = new ReadableStream({
      async start(ctl) {
        ctl.enqueue(enc('first;'))
        await gate // only after the client has read the first chunk
        ctl.enqueue(enc('second'))
        ctl.close()
      },
    })
    return c.body(body, 200, { 'content-type': 'text/plain' })
  })
  const seen = { ticks: 0, aborted: false, signalAborted: false }
  app.get('/ticks', (c) =>
    stream(c, async (s) => {
      s.onAbort(() => {
        seen.aborted = true
        seen.signalAborted = c.req.raw.signal.aborted
      })
      while (!s.aborted) {
        await s.write(`tick ${++seen.ticks}\n`)
        await s.sleep(10)
      }
    }),
  )
  app.get('/sse', (c) =>
    streamSSE(c, async (s) => {
      for (let i = 1; i <= 3; i++) await s.writeSSE({ event: 'n', id: String(i), data: `value ${i}` })
    }),
  )
  const { client, base, server } = await start(t, app)

  const res = await client.fetch(`${base}/body`)
  const reader = res.body.getReader()
  const first = await reader.read()
  t.is(Buffer.from(first.value).toString(), 'first;')
  release()
  let rest = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    rest += Buffer.from(value).toString()
  }
  t.is(rest, 'second')

  const ac = new AbortController()
  const ticks = await client.fetch(`${base}/ticks`, { signal: ac.signal })
  const tr = ticks.body.getReader()
  t.regex(Buffer.from((await tr.read()).value).toString(), /^tick 1\n/)
  ac.abort()
  t.true(await waitFor(() => seen.aborted), 'hono/streaming never saw the abort')
  t.true(seen.signalAborted, 'c.req.raw.signal was not aborted')
  const after = seen.ticks
  await new Promise((r) => setTimeout(r, 100))
  t.true(seen.ticks <= after + 1, 'the stream kept writing after the abort')

  const sse = await client.fetch(`${base}/sse`)
  t.is(sse.headers.get('content-type'), 'text/event-stream')
  // streamSSE sets transfer-encoding and connection, which HTTP/3 forbids: the adapter drops them.
  t.is(sse.headers.get('cache-control'), 'no-cache')
  t.is(sse.headers.get('transfer-encoding'), null)
  t.is(sse.headers.get('connection'), null)
  t.is(await sse.text(), [1, 2, 3].map((i) => `event: n\ndata: value ${i}\nid: ${i}\n\n`).join(''))
  t.true(await waitFor(() => server.activeRequests === 0))
})

test('getConnInfo: the QUIC peer over IPv4 and IPv6; outside h3node it throws ERR_H3_INVALID_ARGUMENT', async (t) => {
  const app = new Hono()
  app.get('/who', (c) => c.json({ info: getConnInfo(c), connection: c.env.connection, wt: isWebTransport(c) }))
  const errors = []
  app.onError((err, c) => {
    errors.push(err)
    return c.text(err.code ?? 'error', 500)
  })

  const v4 = await start(t, app)
  const a = await (await v4.client.fetch(`${v4.base}/who`)).json()
  t.deepEqual(a.info, { remote: { address: '127.0.0.1', port: a.connection.remotePort, transport: 'udp', addressType: 'IPv4' } })
  t.true(a.info.remote.port > 0)
  t.false(a.wt)

  const v6 = await start(t, app, { hostname: '::1' })
  const b = await (await v6.client.fetch(`https://[::1]:${v6.server.address().port}/who`)).json()
  t.deepEqual(b.info, { remote: { address: '::1', port: b.connection.remotePort, transport: 'udp', addressType: 'IPv6' } })

  // The same app called in-process (no h3node): a clear error, not a crash.
  const res = await app.request('/who')
  t.is(res.status, 500)
  t.is(await res.text(), 'ERR_H3_INVALID_ARGUMENT')
  t.true(errors[0] instanceof H3Error)
  t.regex(errors[0].message, /getConnInfo\(\).*c\.env is not an h3node IncomingRequest/)
})

test('WebTransport: a Hono route accepts with upgradeWebTransport; unmatched paths get 404; plain requests get a clear error', async (t) => {
  const app = new Hono()
  const sessions = []
  app.get('/wt/:room', (c) => {
    const room = c.req.param('room')
    const s = upgradeWebTransport(c, { headers: { 'x-room': room } })
    sessions.push(s)
    s.closed.catch(() => {})
    s.createUnidirectionalStream().then((w) => writeAll(w, enc(`room=${room} method=${c.req.method} wt=${isWebTransport(c)}`)))
    ;(async () => {
      for await (const { readable, writable } of s.incomingBidirectionalStreams) readable.pipeTo(writable).catch(() => {})
    })().catch(() => {})
    return c.body(null)
  })
  app.get('/page', (c) => c.text('a page, not a session'))
  const honoErrors = []
  app.onError((err, c) => {
    honoErrors.push(err)
    return c.json({ code: err.code }, err.code === 'ERR_H3_NOT_WEBTRANSPORT' ? 426 : 500)
  })
  const h3Errors = []
  const { client, base, server } = await start(t, app, { webTransport: true, onError: (e) => h3Errors.push(e) })

  const wt = client.webTransport(`${base}/wt/lobby`)
  await wt.ready
  const uni = wt.incomingUnidirectionalStreams.getReader()
  const { value } = await uni.read()
  t.is((await readAll(value)).toString(), 'room=lobby method=GET wt=true')
  const { readable, writable } = await wt.createBidirectionalStream()
  const big = Buffer.alloc(100_000, 7)
  const [back] = await Promise.all([readAll(readable), writeAll(writable, big)])
  t.true(back.equals(big))
  wt.close({ closeCode: 5, reason: 'done' })
  t.deepEqual(await sessions[0].closed, { closeCode: 5, reason: 'done' })

  // No route matches: Hono's 404 refuses the session.
  const nowhere = client.webTransport(`${base}/nowhere`)
  const e404 = await t.throwsAsync(nowhere.ready)
  t.is(e404.code, 'ERR_H3_WEBTRANSPORT_REFUSED')
  t.is(e404.status, 404)

  // A route that answers 2xx without accepting: refused all the same (h3node reports the mistake).
  const page = client.webTransport(`${base}/page`)
  const ePage = await t.throwsAsync(page.ready)
  t.is(ePage.code, 'ERR_H3_WEBTRANSPORT_REFUSED')
  t.true(ePage.status >= 400)
  t.true(await waitFor(() => h3Errors.length === 1))
  t.is(h3Errors[0].code, 'ERR_H3_INVALID_RESPONSE')

  // A plain GET on the session route: upgradeWebTransport throws ERR_H3_NOT_WEBTRANSPORT.
  const plain = await client.fetch(`${base}/wt/lobby`)
  t.is(plain.status, 426)
  t.deepEqual(await plain.json(), { code: 'ERR_H3_NOT_WEBTRANSPORT' })
  t.true(honoErrors[0] instanceof H3Error)
  t.is(sessions.length, 1)
  t.true(await waitFor(() => server.webTransportSessions === 0))
})

test('serve(): hostname or host, the listening callback, and option errors naming the option', async (t) => {
  const app = new Hono().get('/', (c) => c.text('ok'))
  let info
  const server = await serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (i) => (info = i))
  t.teardown(() => server.close(100))
  t.deepEqual(info, server.address())
  t.is(info.family, 'IPv4')
  const byHost = await serve({ fetch: app.fetch, host: '127.0.0.1', port: 0 })
  t.teardown(() => byHost.close(100))
  t.is(byHost.address().address, '127.0.0.1')

  const bad = async (options, re, code = 'ERR_H3_INVALID_OPTION', listener) => {
    const err = await t.throwsAsync(serve(options, listener))
    t.true(err instanceof H3Error)
    t.is(err.code, code)
    t.regex(err.message, re)
  }
  await bad(undefined, /options must be an object/)
  await bad({ port: 0 }, /option fetch must be a function/)
  await bad({ fetch: app, port: 0 }, /option fetch must be a function \(pass app\.fetch\)/)
  await bad({ fetch: app.fetch, hostname: 'localhost', port: 0 }, /option hostname must be an IPv4 or IPv6 address/)
  await bad({ fetch: app.fetch, host: '127.0.0.1', hostname: '::1', port: 0 }, /host .* and hostname .* disagree/)
  await bad({ fetch: app.fetch, port: 70000 }, /option port/)
  await bad({ fetch: app.fetch, port: 0 }, /listeningListener must be a function/, 'ERR_H3_INVALID_ARGUMENT', 'yes')
})

test('quic-go (independent client) reaches Hono routes: params, wildcard, streamed body, POST upload', async (t) => {
  const app = restApp()
  app.get('/chunks', (c) =>
    stream(c, async (s) => {
      for (let i = 0; i < 50; i++) await s.write(`chunk ${i}\n`)
    }),
  )
  const { base } = await start(t, app)
  const get = await runClient('quic-go', [
    '--url', `${base}/api/users/7?q=go`,
    '--url', `${base}/files/a/b/c.txt`,
    '--url', `${base}/chunks`,
    '--url', `${base}/nowhere`,
    '--count', '1', '--insecure',
  ])
  if (get.code !== 0) t.log(get.stderr)
  const byPath = Object.fromEntries(get.results.map((r) => [new URL(r.url).pathname, r]))
  const user = byPath['/api/users/7']
  t.is(user.status, 200)
  t.is(user.headers['x-route'], 'user')
  t.is(user.sha256, sha256(JSON.stringify({ id: '7', q: 'go' })))
  t.is(byPath['/files/a/b/c.txt'].sha256, sha256('file:a/b/c.txt'))
  const chunks = Array.from({ length: 50 }, (_, i) => `chunk ${i}\n`).join('')
  t.is(byPath['/chunks'].bytes, chunks.length)
  t.is(byPath['/chunks'].sha256, sha256(chunks))
  t.is(byPath['/nowhere'].status, 404)

  const size = 300_000
  const post = await runClient('quic-go', ['--url', `${base}/api/upload`, '--method', 'POST', '--body-size', String(size), '--count', '1', '--insecure'])
  if (post.code !== 0) t.log(post.stderr)
  t.is(post.results[0].status, 200)
  t.is(post.results[0].sha256, sha256(JSON.stringify({ bytes: size, sha256: patternSha256(size) })))
})

test('examples/hono.js runs: routes, stream, getConnInfo and a WebTransport room, from the package client and quic-go', async (t) => {
  const child = spawn(process.execPath, ['examples/hono.js'], { cwd: root, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  let err = ''
  child.stderr.on('data', (d) => (err += d))
  const { origin, pin } = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`examples/hono.js printed no URL:\n${out}\n${err}`)), 20_000)
    child.stdout.on('data', (d) => {
      out += d
      const o = /on (https:\/\/\S+?)\/ /.exec(out)
      const p = /certificate sha256: ([0-9a-f]{64})/.exec(out)
      if (o && p) {
        clearTimeout(timer)
        resolve({ origin: o[1], pin: p[1] })
      }
    })
    child.on('exit', (code) => reject(new Error(`examples/hono.js exited (${code}):\n${out}\n${err}`)))
  })
  const client = new Client({ pinnedCertificates: [pin] })
  t.teardown(() => client.close())

  t.is(await (await client.fetch(`${origin}/`)).text(), 'Hello from Hono over HTTP/3!\n')
  let res = await client.fetch(`${origin}/api/users/42`)
  t.is(res.headers.get('x-powered-by'), 'hono+h3node')
  t.deepEqual(await res.json(), { id: '42', name: 'user 42' })
  res = await client.fetch(`${origin}/api/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: [1, 2] }) })
  t.is(res.status, 201)
  t.deepEqual(await res.json(), { youSent: { a: [1, 2] } })
  res = await client.fetch(`${origin}/api/echo`, { method: 'POST', body: 'not json' })
  t.is(res.status, 400)
  await res.arrayBuffer()
  t.is(await (await client.fetch(`${origin}/files/docs/readme.md`)).text(), 'file: docs/readme.md\n')
  t.is(await (await client.fetch(`${origin}/stream?n=3`)).text(), 'line 1 of 3\nline 2 of 3\nline 3 of 3\n')
  const who = await (await client.fetch(`${origin}/whoami`)).json()
  t.is(who.address, '127.0.0.1')
  t.is(who.transport, 'udp')
  t.is(who.addressType, 'IPv4')

  // The session shares the connection that carried the requests above (its
  // stream id is above the server's first stream: the case that used to
  // park the welcome stream, fixed in Session::process_reads).
  const wt = client.webTransport(`${origin}/wt/lobby`)
  await wt.ready
  const { value: welcome } = await wt.incomingUnidirectionalStreams.getReader().read()
  t.is((await readAll(welcome)).toString(), 'welcome to lobby, 1 here\n')
  const { readable, writable } = await wt.createBidirectionalStream()
  const [echo] = await Promise.all([readAll(readable), writeAll(writable, enc('ping'))])
  t.is(echo.toString(), 'ping')
  // Datagrams are relayed to the room, the sender included (they may be lost: retry).
  const dr = wt.datagrams.readable.getReader()
  const dw = wt.datagrams.writable.getWriter()
  const got = (async () => Buffer.from((await dr.read()).value).toString())()
  let relayed
  for (let i = 0; i < 20 && relayed === undefined; i++) {
    await dw.write(enc('hi room'))
    relayed = await Promise.race([got, new Promise((r) => setTimeout(r, 100))])
  }
  t.is(relayed, 'hi room')
  wt.close()
  await wt.closed
  const refused = client.webTransport(`${origin}/nope`)
  t.is((await t.throwsAsync(refused.ready)).status, 404)

  const go = await runClient('quic-go', ['--url', `${origin}/api/users/7`, '--count', '1', '--insecure'])
  t.is(go.results[0].status, 200)
  t.is(go.results[0].sha256, sha256(JSON.stringify({ id: '7', name: 'user 7' })))
  t.regex(out, /WebTransport 127\.0\.0\.1:\d+ joined lobby/)
})
