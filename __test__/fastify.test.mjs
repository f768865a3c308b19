// h3node/fastify: a real Fastify app (from npm) served over HTTP/3 on
// loopback UDP, driven by the package's Client, by quic-go, and over
// HTTP/1.1 (global fetch) at the same time. No mocked transport.
import test from 'ava'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'

import Fastify from 'fastify'
import { Client, listen } from 'h3node'
import { serveFastify, fastifyHandler, H3IncomingMessage, H3ServerResponse } from 'h3node/fastify'

import { blockAt, digest, patternSha256, patternStream, sleep, waitFor } from './helpers/h3.mjs'
import { runClient, patternSha256 as goPatternSha256 } from './helpers/independent.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const MiB = 1024 * 1024
const sha256 = (data) => createHash('sha256').update(data).digest('hex')

/** A Node Readable of the first `n` bytes of the deterministic stream of helpers/h3.mjs; `counter.produced` tells how far it got. */
function patternReadable(n, counter = {}) {
  let off = 0
  let index = -1
  let block = null
  counter.produced = 0
  return new Readable({
    highWaterMark: 64 * 1024,
    read() {
      if (off >= n) return void this.push(null)
      const i = Math.floor(off / MiB)
      if (i !== index) {
        index = i
        block = blockAt(i)
      }
      const start = off % MiB
      const len = Math.min(64 * 1024, MiB - start, n - off)
      off += len
      counter.produced = off
      this.push(block.subarray(start, start + len))
    },
  })
}

/**
 * Serves `app` over HTTP/3 on a free loopback port with a client that
 * trusts its development certificate; both are closed when `t` ends
 * (`app.close()` closes the HTTP/3 server too).
 */
async function start(t, app, listenOptions = {}, clientOptions = {}) {
  const server = await serveFastify(app, { host: '127.0.0.1', port: 0, closeGraceMs: 500, ...listenOptions })
  const client = new Client({ ca: server.certificate.cert, ...clientOptions })
  t.teardown(async () => {
    await client.close()
    await app.close()
    await server.close(200)
  })
  return { server, client, base: `https://127.0.0.1:${server.address().port}` }
}

test('routes with params and querystring; request.ip, protocol, host and socket as the route sees them', async (t) => {
  const app = Fastify()
  app.get('/users/:id/files/*', async (request) => ({
    id: request.params.id,
    rest: request.params['*'],
    query: request.query,
    url: request.url,
    ip: request.ip,
    protocol: request.protocol,
    host: request.host,
    hostname: request.hostname,
    port: request.port,
    httpVersion: request.raw.httpVersion,
    isH3: request.raw instanceof H3IncomingMessage && request.raw.httpVersionMajor === 3,
    remotePort: request.socket.remotePort,
    alpn: request.socket.alpnProtocol,
    encrypted: request.socket.encrypted,
    stream: request.raw.h3.streamId,
  }))
  const { client, base, server } = await start(t, app)
  const res = await client.fetch(`${base}/users/42/files/a/b.txt?x=1&y=two&y=three`)
  t.is(res.status, 200)
  t.is(res.headers.get('content-type'), 'application/json; charset=utf-8')
  t.truthy(res.headers.get('date'))
  const body = await res.json()
  t.like(body, {
    id: '42',
    rest: 'a/b.txt',
    query: { x: '1', y: ['two', 'three'] },
    url: '/users/42/files/a/b.txt?x=1&y=two&y=three',
    ip: '127.0.0.1',
    protocol: 'https',
    host: `127.0.0.1:${server.address().port}`,
    hostname: '127.0.0.1',
    port: server.address().port,
    httpVersion: '3.0',
    isH3: true,
    alpn: 'h3',
    encrypted: true,
    stream: 0,
  })
  t.true(body.remotePort > 0)
})

test('JSON bodies are parsed; bad JSON gives 400, an oversized body 413, and the server keeps serving', async (t) => {
  const app = Fastify()
  app.post('/json', async (request) => ({ got: request.body, type: request.headers['content-type'], length: request.headers['content-length'] }))
  app.post('/small', { bodyLimit: 1000 }, async (request) => ({ bytes: JSON.stringify(request.body).length }))
  app.get('/ok', async () => 'ok')
  const { client, base, server } = await start(t, app)
  const payload = { name: 'h3', list: [1, 2, 3], nested: { deep: true }, text: 'é'.repeat(5000) }
  let res = await client.fetch(`${base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) })
  t.is(res.status, 200)
  const body = await res.json()
  t.deepEqual(body.got, payload)
  t.is(body.type, 'application/json')
  // A string body has a known size: h3node's Client announces it.
  t.is(body.length, String(Buffer.byteLength(JSON.stringify(payload))))

  // A streamed body (no content-length) is parsed too.
  const bytes = Buffer.from(JSON.stringify(payload))
  const streamed = new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 1000) c.enqueue(bytes.subarray(i, i + 1000))
      c.close()
    },
  })
  res = await client.fetch(`${base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: streamed })
  t.deepEqual((await res.json()).got, payload)

  res = await client.fetch(`${base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"broken": ' })
  t.is(res.status, 400)
  t.is((await res.json()).code, 'FST_ERR_CTP_INVALID_JSON_BODY')

  res = await client.fetch(`${base}/small`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ big: 'x'.repeat(200_000) }) })
  t.is(res.status, 413)
  t.is((await res.json()).code, 'FST_ERR_CTP_BODY_TOO_LARGE')

  res = await client.fetch(`${base}/ok`)
  t.is(await res.text(), 'ok')
  // Every exchange is over, the refused upload included (its rest was stopped).
  t.truthy(await waitFor(() => server.activeRequests === 0), `${server.activeRequests} requests still active`)
})

test('hooks run in Fastify order: onRequest, preParsing, preValidation, preHandler, handler, preSerialization, onSend, onResponse', async (t) => {
  const app = Fastify()
  const seen = new Map()
  const mark = (request, name) => {
    if (!seen.has(request.id)) seen.set(request.id, [])
    seen.get(request.id).push(name)
  }
  app.addHook('onRequest', async (request) => mark(request, 'onRequest'))
  app.addHook('preParsing', async (request, reply, payload) => {
    mark(request, 'preParsing')
    return payload
  })
  app.addHook('preValidation', async (request) => mark(request, 'preValidation'))
  app.addHook('preHandler', async (request) => mark(request, 'preHandler'))
  app.addHook('preSerialization', async (request, reply, payload) => {
    mark(request, 'preSerialization')
    return { ...payload, serialized: true }
  })
  app.addHook('onSend', async (request, reply, payload) => {
    mark(request, 'onSend')
    reply.header('x-on-send', 'yes')
    return payload
  })
  app.addHook('onResponse', async (request, reply) => mark(request, `onResponse ${reply.statusCode}`))
  app.post('/hooks', async (request) => {
    mark(request, 'handler')
    return { id: request.id, body: request.body }
  })
  const { client, base } = await start(t, app)
  const res = await client.fetch(`${base}/hooks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' })
  t.is(res.headers.get('x-on-send'), 'yes')
  const body = await res.json()
  t.deepEqual(body.body, { a: 1 })
  t.true(body.serialized)
  await waitFor(() => seen.get(body.id)?.length === 8)
  t.deepEqual(seen.get(body.id), ['onRequest', 'preParsing', 'preValidation', 'preHandler', 'handler', 'preSerialization', 'onSend', 'onResponse 200'])
})

test.serial('reply.send(stream): 8 MiB streamed with backpressure, sha256 checked at the client; web streams and Response too', async (t) => {
  const app = Fastify()
  const counter = {}
  const size = 8 * MiB
  app.get('/big', (request, reply) => {
    reply.type('application/octet-stream').send(patternReadable(size, counter))
  })
  app.get('/web', () => patternStream(3 * MiB + 17))
  app.get('/response', () => new Response(patternStream(100_000), { status: 203, headers: { 'x-from': 'Response' } }))
  // Small client windows so that a paused reader stops the producer early.
  const { client, base } = await start(t, app, {}, { streamWindow: 256 * 1024, maxStreamWindow: MiB, connectionWindow: MiB, maxConnectionWindow: 2 * MiB })
  const started = performance.now()
  const res = await client.fetch(`${base}/big`)
  t.is(res.status, 200)
  t.is(res.headers.get('content-length'), null)
  const reader = res.body.getReader()
  const h = createHash('sha256')
  let bytes = 0
  const first = await reader.read()
  h.update(first.value)
  bytes += first.value.byteLength
  await sleep(500)
  const producedWhilePaused = counter.produced
  t.log(`paused after ${bytes} bytes read: the route produced ${(producedWhilePaused / MiB).toFixed(2)} MiB of ${size / MiB}`)
  t.true(producedWhilePaused < 4 * MiB, `producer ran ahead: ${producedWhilePaused}`)
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    h.update(value)
    bytes += value.byteLength
  }
  t.log(`8 MiB through Fastify over HTTP/3 in ${(performance.now() - started).toFixed(0)} ms (500 ms of it paused)`)
  t.is(bytes, size)
  t.is(h.digest('hex'), patternSha256(size))

  const web = await client.fetch(`${base}/web`)
  t.deepEqual(await digest(web.body), { bytes: 3 * MiB + 17, sha256: patternSha256(3 * MiB + 17) })
  const r = await client.fetch(`${base}/response`)
  t.is(r.status, 203)
  t.is(r.headers.get('x-from'), 'Response')
  t.deepEqual(await digest(r.body), { bytes: 100_000, sha256: patternSha256(100_000) })
})

test('reply.raw after hijack: writeHead signatures, write and end callbacks, headers API, trailers', async (t) => {
  const app = Fastify()
  const log = {}
  app.get('/raw/:form', (request, reply) => {
    reply.hijack()
    const res = reply.raw
    log.isH3 = res instanceof H3ServerResponse
    res.setHeader('x-set', 'before')
    res.setHeader('X-Mixed-Case', ['a', 'b'])
    res.appendHeader('x-set', 'appended')
    log.names = res.getHeaderNames()
    log.raw = res.getRawHeaderNames()
    log.has = res.hasHeader('X-SET')
    log.value = res.getHeader('x-set')
    res.removeHeader('x-mixed-case')
    try {
      res.setHeader('bad name', 'x')
    } catch (e) {
      log.badName = e.code
    }
    try {
      res.setHeader('x-bad', 'a\r\nb')
    } catch (e) {
      log.badValue = e.code
    }
    try {
      res.writeHead(99)
    } catch (e) {
      log.badStatus = e.code
    }
    const form = request.params.form
    if (form === 'object') res.writeHead(201, { 'content-type': 'text/plain', 'x-form': 'object' })
    else if (form === 'message') res.writeHead(202, 'Accepted Indeed', { 'x-form': 'message' })
    else if (form === 'flat') res.writeHead(200, ['x-form', 'flat', 'x-dup', '1', 'x-dup', '2'])
    else if (form === 'pairs') res.writeHead(200, [['x-form', 'pairs'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2']])
    else res.writeHead(200)
    log.headersSent = res.headersSent
    log.statusMessage = res.statusMessage
    try {
      res.setHeader('x-late', '1')
    } catch (e) {
      log.late = e.code
    }
    const order = (log.order = [])
    res.write('one,', () => order.push('write 1'))
    res.write(Buffer.from('two,'), () => order.push('write 2'))
    res.write('74687265652c', 'hex', () => order.push('write 3'))
    res.addTrailers({ 'x-trailer': 'done' })
    res.on('finish', () => order.push('finish'))
    res.on('close', () => order.push('close'))
    res.end('four', () => order.push('end'))
    log.ended = res.writableEnded
    log.finished = res.finished
    res.end(() => order.push('second end'))
    res.write('late', (err) => (log.afterEnd = err?.code))
  })
  let release
  const gate = new Promise((r) => (release = r))
  app.get('/events', (request, reply) => {
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream' })
    reply.raw.flushHeaders()
    gate.then(() => reply.raw.end('data: hello\n\n'))
  })
  app.get('/trailer', (request, reply) => {
    reply.trailer('x-digest', async (reply, payload) => sha256(payload))
    reply.send('trailers over HTTP/3')
  })
  const { client, base } = await start(t, app)

  let res = await client.fetch(`${base}/raw/object`)
  t.is(res.status, 201)
  t.is(res.headers.get('x-form'), 'object')
  t.is(res.headers.get('content-type'), 'text/plain')
  t.is(res.headers.get('x-set'), 'before, appended')
  t.is(res.headers.get('x-mixed-case'), null)
  t.is(await res.text(), 'one,two,three,four')
  t.deepEqual(Object.fromEntries((await res.trailers) ?? []), { 'x-trailer': 'done' })
  await waitFor(() => log.order.includes('close'))
  t.like(log, {
    isH3: true,
    names: ['x-set', 'x-mixed-case'],
    raw: ['x-set', 'X-Mixed-Case'],
    has: true,
    value: ['before', 'appended'],
    badName: 'ERR_H3_INVALID_ARGUMENT',
    badValue: 'ERR_H3_INVALID_ARGUMENT',
    badStatus: 'ERR_H3_INVALID_ARGUMENT',
    headersSent: true,
    statusMessage: 'Created',
    late: 'ERR_H3_ALREADY_RESPONDED',
    ended: true,
    finished: true,
    afterEnd: 'ERR_H3_ALREADY_RESPONDED',
  })
  t.deepEqual(log.order, ['write 1', 'write 2', 'write 3', 'end', 'finish', 'second end', 'close'])

  res = await client.fetch(`${base}/raw/message`)
  t.is(res.status, 202)
  t.is(res.headers.get('x-form'), 'message')
  await res.text()
  t.is(log.statusMessage, 'Accepted Indeed')
  res = await client.fetch(`${base}/raw/flat`)
  t.is(res.headers.get('x-form'), 'flat')
  t.is(res.headers.get('x-dup'), '1, 2')
  await res.text()
  res = await client.fetch(`${base}/raw/pairs`)
  t.is(res.headers.get('x-form'), 'pairs')
  t.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2'])
  await res.text()

  // flushHeaders(): the client has the head before the body exists.
  res = await client.fetch(`${base}/events`)
  t.is(res.headers.get('content-type'), 'text/event-stream')
  release()
  t.is(await res.text(), 'data: hello\n\n')

  res = await client.fetch(`${base}/trailer`)
  t.is(await res.text(), 'trailers over HTTP/3')
  t.is(res.headers.get('trailer'), 'x-digest')
  t.is(res.headers.get('transfer-encoding'), null)
  t.is((await res.trailers)?.get('x-digest'), sha256('trailers over HTTP/3'))
})

test('headers and cookies: set-cookie values kept apart, request cookies joined, connection fields dropped', async (t) => {
  const app = Fastify()
  app.get('/cookies', (request, reply) => {
    reply
      .header('set-cookie', ['session=abc; Path=/; HttpOnly; Secure', 'theme=dark; Max-Age=3600'])
      .header('x-multi', ['1', '2'])
      .header('connection', 'close')
      .header('keep-alive', 'timeout=5')
      .header('cache-control', 'no-store')
      .send({ cookie: request.headers.cookie, accept: request.headers.accept, custom: request.headers['x-custom'], raw: request.raw.rawHeaders.includes('x-custom') })
  })
  const { client, base } = await start(t, app)
  const res = await client.fetch(`${base}/cookies`, { headers: { cookie: 'a=1; b=2', accept: 'application/json', 'X-Custom': 'Value' } })
  t.is(res.status, 200)
  t.deepEqual(res.headers.getSetCookie(), ['session=abc; Path=/; HttpOnly; Secure', 'theme=dark; Max-Age=3600'])
  t.is(res.headers.get('x-multi'), '1, 2')
  t.is(res.headers.get('connection'), null)
  t.is(res.headers.get('keep-alive'), null)
  t.is(res.headers.get('cache-control'), 'no-store')
  t.deepEqual(await res.json(), { cookie: 'a=1; b=2', accept: 'application/json', custom: 'Value', raw: true })
})

test('status codes: 201, 204 and 304 without a body, redirects, HEAD with content-length and no body', async (t) => {
  const app = Fastify()
  app.post('/created', (request, reply) => reply.code(201).header('location', '/items/1').send({ id: 1 }))
  app.delete('/items/:id', (request, reply) => reply.code(204).send('ignored'))
  app.get('/cached', (request, reply) => {
    if (request.headers['if-none-match'] === '"v1"') return reply.code(304).header('etag', '"v1"').send()
    return reply.header('etag', '"v1"').send('fresh')
  })
  app.get('/old', (request, reply) => reply.redirect('/new', 301))
  app.get('/teapot', (request, reply) => reply.code(418).send('short and stout'))
  app.get('/doc', async () => ({ text: 'x'.repeat(1000) }))
  const { client, base } = await start(t, app)

  let res = await client.fetch(`${base}/created`, { method: 'POST' })
  t.is(res.status, 201)
  t.is(res.headers.get('location'), '/items/1')
  t.deepEqual(await res.json(), { id: 1 })
  res = await client.fetch(`${base}/items/1`, { method: 'DELETE' })
  t.is(res.status, 204)
  t.is(res.headers.get('content-length'), null)
  t.is(await res.text(), '')
  res = await client.fetch(`${base}/cached`)
  t.is(await res.text(), 'fresh')
  res = await client.fetch(`${base}/cached`, { headers: { 'if-none-match': '"v1"' } })
  t.is(res.status, 304)
  t.is(res.headers.get('etag'), '"v1"')
  t.is(await res.text(), '')
  res = await client.fetch(`${base}/old`)
  t.is(res.status, 301)
  t.is(res.headers.get('location'), '/new')
  await res.text()
  res = await client.fetch(`${base}/teapot`)
  t.is(res.status, 418)
  t.is(await res.text(), 'short and stout')
  res = await client.fetch(`${base}/doc`, { method: 'HEAD' })
  t.is(res.status, 200)
  t.is(res.headers.get('content-length'), String(JSON.stringify({ text: 'x'.repeat(1000) }).length))
  t.is(await res.text(), '')
})

test('404 handler, error handlers, a throwing route gets Fastify\'s 500, a failing stream resets, and the server keeps serving', async (t) => {
  const app = Fastify()
  const reported = []
  app.setNotFoundHandler((request, reply) => reply.code(404).send({ missing: request.url, method: request.method }))
  app.get('/throws', () => {
    throw new Error('sync failure')
  })
  app.get('/rejects', async () => {
    throw Object.assign(new Error('teapot failure'), { statusCode: 418 })
  })
  app.addHook('onRequest', async (request) => {
    if (request.url === '/hook-fails') throw new Error('hook failure')
  })
  app.register(async (scoped) => {
    scoped.setErrorHandler((error, request, reply) => reply.code(422).send({ handled: error.message }))
    scoped.get('/scoped', async () => {
      throw new Error('scoped failure')
    })
  })
  app.get('/fails-midway', (request, reply) => {
    let sent = 0
    reply.send(new Readable({
      read() {
        if (sent >= 256 * 1024) return void this.destroy(new Error('source broke'))
        sent += 64 * 1024
        this.push(Buffer.alloc(64 * 1024, 1))
      },
    }))
  })
  app.get('/ok', async () => ({ ok: true }))
  const { client, base } = await start(t, app, { onError: (e) => reported.push(e) })

  let res = await client.fetch(`${base}/nowhere?x=1`, { method: 'PUT', body: 'x' })
  t.is(res.status, 404)
  t.deepEqual(await res.json(), { missing: '/nowhere?x=1', method: 'PUT' })
  res = await client.fetch(`${base}/throws`)
  t.is(res.status, 500)
  t.deepEqual(await res.json(), { statusCode: 500, error: 'Internal Server Error', message: 'sync failure' })
  res = await client.fetch(`${base}/rejects`)
  t.is(res.status, 418)
  t.is((await res.json()).message, 'teapot failure')
  res = await client.fetch(`${base}/hook-fails`)
  t.is(res.status, 500)
  t.is((await res.json()).message, 'hook failure')
  res = await client.fetch(`${base}/scoped`)
  t.is(res.status, 422)
  t.deepEqual(await res.json(), { handled: 'scoped failure' })

  // Headers went out before the source failed: the client must see a reset, not a short body.
  // The reset can overtake the response head on the client (a receiver may drop a reset
  // stream's unread data, RFC 9000 §3.2), so fetch itself may reject with it.
  const midway = await client.fetch(`${base}/fails-midway`).then(
    async (r) => ({ status: r.status, body: await r.arrayBuffer().then(() => 'complete', (e) => e.code) }),
    (e) => ({ status: null, body: e.code }),
  )
  t.true(midway.status === 200 || midway.status === null, `status ${midway.status}`)
  t.is(midway.body, 'ERR_H3_STREAM_RESET')
  t.true(reported.length >= 1)

  for (let i = 0; i < 5; i++) {
    res = await client.fetch(`${base}/ok`)
    t.deepEqual(await res.json(), { ok: true })
  }
})

test.serial('an upload is read with backpressure: a slow route bounds what the client sends', async (t) => {
  const app = Fastify()
  const size = 24 * MiB
  let opened
  const gate = new Promise((r) => (opened = r))
  const state = { paused: false, consumedAtPause: 0 }
  app.addContentTypeParser('application/octet-stream', (request, payload, done) => done(null))
  app.post('/upload', async (request) => {
    const h = createHash('sha256')
    let bytes = 0
    for await (const chunk of request.raw) {
      h.update(chunk)
      bytes += chunk.length
      if (!state.paused && bytes >= MiB) {
        state.paused = true
        state.consumedAtPause = bytes
        await gate
      }
    }
    return { bytes, sha256: h.digest('hex'), complete: request.raw.complete }
  })
  // Small server receive windows: flow control must hold the client back.
  const { client, base } = await start(t, app, { streamWindow: 256 * 1024, maxStreamWindow: MiB, connectionWindow: MiB, maxConnectionWindow: 2 * MiB })
  let pulled = 0
  const started = performance.now()
  const pending = client.fetch(`${base}/upload`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: patternStream(size, { onPull: (n) => (pulled = n) }),
  })
  t.truthy(await waitFor(() => state.paused, 10_000))
  await sleep(500)
  const atPause = pulled
  t.log(`route paused after ${(state.consumedAtPause / MiB).toFixed(2)} MiB; the client had produced ${(atPause / MiB).toFixed(2)} MiB of ${size / MiB}`)
  t.true(atPause - state.consumedAtPause < 4 * MiB, `client ran ahead: ${atPause}`)
  await sleep(200)
  t.true(pulled - atPause < 128 * 1024, 'the client kept sending while the route was paused')
  opened()
  const res = await pending
  t.deepEqual(await res.json(), { bytes: size, sha256: patternSha256(size), complete: true })
  t.log(`24 MiB upload in ${(performance.now() - started).toFixed(0)} ms (700 ms of it paused)`)
})

test.serial('a client abort mid-response aborts the Fastify request: req aborted/close, res close without finish, source destroyed', async (t) => {
  const app = Fastify()
  const ev = { events: [], sourceDestroyed: false, abortHook: null }
  app.addHook('onRequestAbort', async (request) => {
    ev.abortHook = request.url
  })
  app.get('/endless', (request, reply) => {
    request.raw.on('aborted', () => ev.events.push('req aborted'))
    request.raw.on('close', () => ev.events.push('req close'))
    reply.raw.on('close', () => ev.events.push('res close'))
    reply.raw.on('finish', () => ev.events.push('res finish'))
    request.signal.addEventListener('abort', () => ev.events.push('signal'))
    let n = 0
    reply.send(new Readable({
      read() {
        setTimeout(() => this.push(Buffer.alloc(16 * 1024, n++ & 0xff)), 2)
      },
      destroy(err, cb) {
        ev.sourceDestroyed = true
        cb(err)
      },
    }))
  })
  app.get('/slow', async (request) => {
    const signal = request.signal // Fastify listens for 'close' from the first access on
    ev.slowStarted = true
    await sleep(300)
    ev.slowSignal = signal.aborted
    return 'too late'
  })
  app.get('/after', async () => 'still serving')
  const { client, base, server } = await start(t, app)
  const ac = new AbortController()
  const res = await client.fetch(`${base}/endless`, { signal: ac.signal })
  const reader = res.body.getReader()
  let got = 0
  while (got < 200 * 1024) got += (await reader.read()).value.byteLength
  const t0 = performance.now()
  ac.abort()
  await reader.read().catch(() => {})
  t.truthy(await waitFor(() => ev.sourceDestroyed && ev.events.includes('req close') && ev.events.includes('res close')))
  t.log(`server side saw the abort within ${(performance.now() - t0).toFixed(0)} ms`)
  t.false(ev.events.includes('res finish'))
  t.true(ev.events.includes('req aborted'))
  t.true(ev.events.includes('signal'))
  t.is(ev.abortHook, '/endless')
  t.true(ev.events.indexOf('req aborted') < ev.events.indexOf('req close'))

  // An abort before the route answered: its late reply goes nowhere and breaks nothing.
  const ac2 = new AbortController()
  const slow = client.fetch(`${base}/slow`, { signal: ac2.signal })
  t.truthy(await waitFor(() => ev.slowStarted))
  ac2.abort()
  await slow.then(() => t.fail('the aborted fetch resolved'), (e) => t.is(e.name, 'AbortError'))
  t.truthy(await waitFor(() => ev.slowSignal !== undefined))
  t.true(ev.slowSignal)
  t.is(ev.abortHook, '/slow')

  const again = await client.fetch(`${base}/after`)
  t.is(await again.text(), 'still serving')
  t.truthy(await waitFor(() => server.activeRequests === 0), `${server.activeRequests} requests still active`)
})

test('WebTransport next to the Fastify routes (onWebTransport); without it a session is refused with 405', async (t) => {
  const app = Fastify()
  app.get('/page', async () => 'fastify page')
  const { client, base } = await start(t, app, {
    webTransport: true,
    onWebTransport: (req) => {
      const session = req.acceptWebTransport()
      ;(async () => {
        for await (const { readable, writable } of session.incomingBidirectionalStreams) readable.pipeTo(writable).catch(() => {})
      })().catch(() => {})
    },
  })
  const wt = client.webTransport(`${base}/wt`)
  await wt.ready
  const { readable, writable } = await wt.createBidirectionalStream()
  const writer = writable.getWriter()
  await writer.write(new TextEncoder().encode('echo me'))
  await writer.close()
  let text = ''
  for await (const chunk of readable) text += Buffer.from(chunk).toString()
  t.is(text, 'echo me')
  t.is(await (await client.fetch(`${base}/page`)).text(), 'fastify page')
  wt.close()

  const plain = Fastify()
  const other = await start(t, plain, { webTransport: true })
  const refused = other.client.webTransport(`${other.base}/wt`)
  const err = await t.throwsAsync(refused.ready)
  t.is(err.code, 'ERR_H3_WEBTRANSPORT_REFUSED')
  t.is(err.status, 405)
})

test.serial('the same app over HTTP/1.1 (app.listen) and HTTP/3 at once; app.close() closes both', async (t) => {
  const app = Fastify()
  const hits = []
  app.addHook('onRequest', async (request) => hits.push(request.raw.httpVersion))
  app.get('/where', async (request) => ({ httpVersion: request.raw.httpVersion, protocol: request.protocol, ip: request.ip }))
  app.post('/sum', async (request) => ({ sum: request.body.numbers.reduce((a, b) => a + b, 0) }))
  // The app listens first (its own listener); HTTP/3 is added after.
  await app.listen({ host: '127.0.0.1', port: 0 })
  const tcp = app.server.address().port
  const server = await serveFastify(app, { host: '127.0.0.1', port: 0 })
  const client = new Client({ ca: server.certificate.cert })
  t.teardown(() => client.close())
  const h3 = `https://127.0.0.1:${server.address().port}`
  const h1 = `http://127.0.0.1:${tcp}`
  const both = await Promise.all([
    fetch(`${h1}/where`).then((r) => r.json()),
    client.fetch(`${h3}/where`).then((r) => r.json()),
    fetch(`${h1}/sum`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"numbers":[1,2,3]}' }).then((r) => r.json()),
    client.fetch(`${h3}/sum`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"numbers":[4,5,6]}' }).then((r) => r.json()),
  ])
  t.deepEqual(both, [
    { httpVersion: '1.1', protocol: 'http', ip: '127.0.0.1' },
    { httpVersion: '3.0', protocol: 'https', ip: '127.0.0.1' },
    { sum: 6 },
    { sum: 15 },
  ])
  t.deepEqual(hits.sort(), ['1.1', '1.1', '3.0', '3.0'])
  const closing = performance.now()
  await app.close()
  await Promise.race([server.closed, sleep(5000).then(() => t.fail('the HTTP/3 server did not close with the app'))])
  t.log(`app.close() closed TCP and HTTP/3 in ${(performance.now() - closing).toFixed(0)} ms`)
  t.false(app.server.listening)
})

test('app.close() lets an HTTP/3 request in flight finish, then closes the server (closeWithApp, preClose)', async (t) => {
  const app = Fastify()
  const order = []
  app.register(async (plugin) => {
    plugin.addHook('onClose', async () => order.push('plugin onClose'))
  })
  app.get('/slow', async () => {
    await sleep(300)
    order.push('route done')
    return 'finished'
  })
  const server = await serveFastify(app, { host: '127.0.0.1', port: 0 })
  const client = new Client({ ca: server.certificate.cert })
  t.teardown(() => client.close())
  const pending = client.fetch(`https://127.0.0.1:${server.address().port}/slow`).then((r) => r.text())
  await sleep(100)
  server.closed.then(() => order.push('h3 closed'))
  await app.close()
  t.is(await pending, 'finished')
  t.deepEqual(order, ['route done', 'h3 closed', 'plugin onClose'])
})

test.serial('quic-go (an independent HTTP/3 client) against the Fastify app: GET, streamed upload echoed back, reset upload aborts the request', async (t) => {
  const app = Fastify()
  const aborted = []
  app.addContentTypeParser('*', (request, payload, done) => done(null, payload))
  app.get('/users/:id', async (request, reply) => {
    reply.header('set-cookie', ['a=1', 'b=2']).header('x-agent', request.headers['user-agent'] ?? '')
    return { id: request.params.id, q: request.query.q ?? null }
  })
  app.post('/echo', (request, reply) => reply.type('application/octet-stream').header('x-request-length', request.headers['content-length']).send(request.body))
  app.post('/drain', async (request) => {
    request.raw.on('aborted', () => aborted.push(request.url))
    let bytes = 0
    try {
      for await (const chunk of request.body) bytes += chunk.length
    } catch (err) {
      aborted.push(err.code)
    }
    return { bytes }
  })
  const { base } = await start(t, app)
  const get = await runClient('quic-go', ['--url', `${base}/users/7?q=go`, '--count', '1', '--insecure'])
  if (get.code !== 0) t.log(get.stderr)
  t.is(get.results[0].status, 200)
  t.is(get.results[0].sha256, sha256(JSON.stringify({ id: '7', q: 'go' })))
  t.is(get.results[0].headers['set-cookie'], 'a=1, b=2')
  t.is(get.results[0].headers['content-type'], 'application/json; charset=utf-8')

  const size = 3 * MiB + 5
  const post = await runClient('quic-go', ['--url', `${base}/echo`, '--method', 'POST', '--body-size', String(size), '--count', '1', '--insecure'])
  if (post.code !== 0) t.log(post.stderr)
  t.is(post.results[0].status, 200)
  t.is(post.results[0].bytes, size)
  t.is(post.results[0].sha256, goPatternSha256(size))
  t.is(post.results[0].headers['x-request-length'], String(size))

  const reset = await runClient('quic-go', ['--url', `${base}/drain`, '--method', 'POST', '--body-size', String(4 * MiB), '--reset-after', String(MiB), '--count', '1', '--insecure'])
  t.true(reset.results[0].reset, JSON.stringify(reset.results[0]))
  t.truthy(await waitFor(() => aborted.includes('/drain')))
  t.true(aborted.some((c) => typeof c === 'string' && c.startsWith('ERR_H3_')), JSON.stringify(aborted))
})

test('fastifyHandler: the app inside your own for-await loop, next to plain h3node routes', async (t) => {
  const app = Fastify()
  app.get('/from-fastify', async (request) => ({ fastify: true, stream: request.raw.h3.streamId }))
  // Not ready yet: the first request waits for app.ready().
  const handle = fastifyHandler(app)
  const server = await listen({ host: '127.0.0.1', port: 0 })
  const client = new Client({ ca: server.certificate.cert })
  t.teardown(async () => {
    await client.close()
    await server.close(200)
    await app.close()
  })
  ;(async () => {
    for await (const req of server) {
      if (new URL(req.url).pathname === '/native') req.respond(new Response('native h3node'))
      else handle(req)
    }
  })()
  const base = `https://127.0.0.1:${server.address().port}`
  const [a, b] = await Promise.all([client.fetch(`${base}/from-fastify`), client.fetch(`${base}/native`)])
  t.like(await a.json(), { fastify: true })
  t.is(await b.text(), 'native h3node')
  const c = await client.fetch(`${base}/missing`)
  t.is(c.status, 404)
  await c.text()
})

test('options and arguments are validated with H3Error codes naming the option', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await t.throwsAsync(serveFastify({}), { code: 'ERR_H3_INVALID_ARGUMENT', message: /Fastify instance/ })
  await t.throwsAsync(serveFastify(null), { code: 'ERR_H3_INVALID_ARGUMENT' })
  await t.throwsAsync(serveFastify(app, { closeWithApp: 'yes' }), { code: 'ERR_H3_INVALID_OPTION', message: /closeWithApp/ })
  await t.throwsAsync(serveFastify(app, { onWebTransport: 1 }), { code: 'ERR_H3_INVALID_OPTION', message: /onWebTransport/ })
  await t.throwsAsync(serveFastify(app, { host: '127.0.0.1', port: 70000 }), { code: 'ERR_H3_INVALID_OPTION', message: /port/ })
  t.throws(() => fastifyHandler(app, { onError: 'log' }), { code: 'ERR_H3_INVALID_OPTION', message: /onError/ })
  t.throws(() => fastifyHandler({ ready() {} }), { code: 'ERR_H3_INVALID_ARGUMENT' })
  const first = await serveFastify(app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => first.close(100))
  await t.throwsAsync(serveFastify(app, { host: '127.0.0.1', port: first.address().port }), { code: 'ERR_H3_ADDRESS_IN_USE' })
})

test.serial('examples/fastify.js serves one app over HTTP/1.1 (with Alt-Svc) and HTTP/3', async (t) => {
  const child = spawn(process.execPath, ['examples/fastify.js'], { cwd: root, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  let h3
  let h1
  let pin
  for await (const line of createInterface({ input: child.stdout })) {
    h3 ??= /HTTP\/3\s+(https:\/\/\S+?)\/\s/.exec(line)?.[1]
    h1 ??= /HTTP\/1\.1\s+(http:\/\/\S+?)\/\s/.exec(line)?.[1]
    pin ??= /certificate sha256: ([0-9a-f]{64})/.exec(line)?.[1]
    if (h3 && h1 && pin) break
  }
  t.truthy(h3 && h1 && pin)
  const h3port = new URL(h3).port

  const r1 = await fetch(`${h1}/`)
  t.is(r1.status, 200)
  t.is(r1.headers.get('alt-svc'), `h3=":${h3port}"; ma=86400`)
  t.regex(await r1.text(), /HTTP\/1\.1/)

  const client = new Client({ pinnedCertificates: [pin] })
  t.teardown(() => client.close())
  const r3 = await client.fetch(`${h3}/`)
  t.is(r3.status, 200)
  t.is(r3.headers.get('alt-svc'), null)
  t.regex(await r3.text(), /HTTP\/3/)
  const echo = await client.fetch(`${h3}/echo`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: 'ping over HTTP/3' })
  t.is(await echo.text(), 'ping over HTTP/3')

  const go = await runClient('quic-go', ['--url', `${h3}/echo`, '--method', 'POST', '--body-size', '100000', '--count', '1', '--insecure', '--header', 'content-type:application/octet-stream'])
  t.is(go.results[0].status, 200)
  t.is(go.results[0].bytes, 100000)
  t.is(go.results[0].sha256, goPatternSha256(100000))

  // SIGINT closes both listeners and the process exits on its own.
  const exited = new Promise((r) => child.once('exit', (code) => r(code)))
  child.kill('SIGINT')
  t.is(await Promise.race([exited, sleep(10_000).then(() => 'timeout')]), 0)
})
