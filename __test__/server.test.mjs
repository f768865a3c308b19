// End-to-end tests of the server with the package's own client, over real
// UDP on loopback.
import test from 'ava'

import { pair, closeAfter, handle, serve, Client, listen, patternStream, patternSha256, digest, sleep, waitFor } from './helpers/h3.mjs'
import { H3Error } from '../dist/index.js'

test('GET: a real Request in, a real Response out, absolute URL and connection info', async (t) => {
  const p = await pair(t)
  let seen
  handle(p.server, (req) => {
    seen = req
    const r = req.request
    t.true(r instanceof Request)
    req.respond(new Response(`hello ${r.method} ${new URL(r.url).pathname}${new URL(r.url).search}`, {
      headers: { 'x-ua': r.headers.get('user-agent') ?? '', 'set-cookie': 'a=1' },
    }))
  })
  const res = await p.client.fetch(`${p.base}/path/x?q=1`, { headers: { 'user-agent': 'h3node-test' } })
  t.is(res.status, 200)
  t.is(await res.text(), 'hello GET /path/x?q=1')
  t.is(res.headers.get('x-ua'), 'h3node-test')
  t.is(res.headers.get('set-cookie'), 'a=1')
  t.is(seen.url, `https://127.0.0.1:${p.port}/path/x?q=1`)
  t.is(seen.request.body, null)
  t.is(seen.connection.remoteAddress, '127.0.0.1')
  t.true(seen.connection.remotePort > 0)
  t.is(seen.connection.alpn, 'h3')
  t.is(seen.earlyData, false)
  await p.close()
})

test('POST echo with a streamed request body', async (t) => {
  const p = await pair(t)
  handle(p.server, async (req) => {
    const body = await req.request.arrayBuffer()
    req.respond(new Response(body, { status: 201, headers: { 'content-type': req.request.headers.get('content-type') } }))
  })
  const res = await p.client.fetch(`${p.base}/echo`, { method: 'POST', body: JSON.stringify({ a: 1 }), headers: { 'content-type': 'application/json' } })
  t.is(res.status, 201)
  t.deepEqual(await res.json(), { a: 1 })
  const n = 3 * 1024 * 1024 + 17
  const res2 = await p.client.fetch(`${p.base}/echo`, { method: 'PUT', body: patternStream(n), duplex: 'half' })
  const d = await digest(res2.body)
  t.is(d.bytes, n)
  t.is(d.sha256, patternSha256(n))
  await p.close()
})

test('request.headers and req.headers hold the same fields the client sent, for GET and for a POST with a body', async (t) => {
  const p = await pair(t)
  const seen = []
  handle(p.server, async (req) => {
    const r = req.request
    seen.push({ method: r.method, viaRequest: [...r.headers], direct: [...req.headers], body: await r.text() })
    req.respond(new Response('ok'))
  })
  // Sent sorted by name, so the GET's section ends with the empty value.
  const headers = [['x-a', '1'], ['x-empty', ''], ['accept', 'text/plain'], ['cookie', 'a=1'], ['content-type', 'application/json']]
  await (await p.client.fetch(`${p.base}/g`, { headers: headers.slice(0, 4) })).text()
  await (await p.client.fetch(`${p.base}/p`, { method: 'POST', headers, body: '{"n":1}' })).text()
  t.is(seen.length, 2)
  for (const s of seen) t.deepEqual(s.viaRequest, s.direct)
  t.is(seen[0].method, 'GET')
  t.is(seen[1].method, 'POST')
  t.is(seen[1].body, '{"n":1}')
  const get = Object.fromEntries(seen[0].viaRequest)
  t.is(get['x-a'], '1')
  t.is(get.cookie, 'a=1')
  t.is(get['x-empty'], '')
  t.is(get['content-type'], undefined)
  t.deepEqual(seen[0].viaRequest.map(([n]) => n), ['accept', 'cookie', 'x-a', 'x-empty'])
  t.is(Object.fromEntries(seen[1].viaRequest)['content-type'], 'application/json')
  await p.close()
})

test('requests repeating the last request\'s fields on a connection each get exactly their own headers', async (t) => {
  // The server copies a repeated field set from a Headers it made once
  // (IncomingRequest.request): no request may see another's fields, or a
  // change a handler made to its own Request.
  const p = await pair(t)
  const seen = []
  handle(p.server, async (req) => {
    const early = req.url.endsWith('/early') ? [...req.headers] : null
    const r = req.request
    seen.push({ conn: req.connection.id, fields: [...r.headers], early, body: await r.text() })
    r.headers.set('x-mutated', 'yes')
    r.headers.delete('x-a')
    req.respond(new Response('ok'))
  })
  const a = { 'x-a': '1', accept: 'text/plain', cookie: 'k=v' }
  const b = { 'x-a': '2', accept: 'text/plain', cookie: 'k=v' }
  const sent = [
    ['/1', a], ['/2', a], ['/3', a], ['/4', b], ['/5', a], ['/6', a], ['/early', a],
    ['/post', a, 'body'], ['/none', {}], ['/none2', {}],
  ]
  for (const [path, headers, body] of sent) {
    const res = await p.client.fetch(`${p.base}${path}`, body ? { method: 'POST', headers, body } : { headers })
    t.is(await res.text(), 'ok')
  }
  t.is(seen.length, sent.length)
  t.true(seen.every((s) => s.conn === seen[0].conn), 'all on one connection')
  const expect = (h, body) => Object.entries({ ...h, ...(body ? { 'content-type': 'text/plain;charset=UTF-8' } : {}) }).sort(([x], [y]) => (x < y ? -1 : 1))
  for (let i = 0; i < sent.length; i++) {
    const [path, headers, body] = sent[i]
    const got = seen[i].fields.filter(([n]) => n !== 'content-length')
    t.deepEqual(got, expect(headers, body), path)
    t.is(seen[i].body, body ?? '')
  }
  t.deepEqual(seen[6].early, seen[6].fields)
  await p.close()
})

test('100 concurrent streams on one connection', async (t) => {
  const p = await pair(t)
  handle(p.server, async (req) => {
    await sleep(Math.random() * 20)
    req.respond(new Response(new URL(req.url).pathname))
  })
  const results = await Promise.all(
    Array.from({ length: 100 }, (_, i) => p.client.fetch(`${p.base}/r/${i}`).then((r) => r.text())),
  )
  t.deepEqual(results, Array.from({ length: 100 }, (_, i) => `/r/${i}`))
  t.is(p.client.connections, 1)
  t.is(p.server.connections, 1)
  await p.close()
})

test('more concurrent requests than the stream limit wait for credit instead of failing', async (t) => {
  const p = await pair(t, { maxConcurrentBidiStreams: 8 })
  let inFlight = 0
  let peak = 0
  handle(p.server, async (req) => {
    inFlight++
    peak = Math.max(peak, inFlight)
    await sleep(10)
    inFlight--
    req.respond(new Response('ok'))
  })
  const all = await Promise.all(Array.from({ length: 40 }, () => p.client.fetch(`${p.base}/`).then((r) => r.text())))
  t.is(all.length, 40)
  t.true(peak <= 8, `peak ${peak} concurrent requests with a limit of 8`)
  await p.close()
})

test('many connections at once', async (t) => {
  const p = await pair(t)
  handle(p.server, (req) => req.respond(new Response(String(req.connection.id))))
  const clients = Array.from({ length: 20 }, () => new Client({ pinnedCertificates: [p.server.certificate.sha256] }))
  const ids = await Promise.all(clients.map((c) => c.fetch(`${p.base}/`).then((r) => r.text())))
  t.is(new Set(ids).size, 20)
  t.is(await waitFor(() => p.server.connections === 20), true)
  await Promise.all(clients.map((c) => c.close()))
  await p.close()
})

test('serve({ fetch }) style, with the IncomingRequest as second argument', async (t) => {
  const server = closeAfter(t, await serve({
    host: '127.0.0.1',
    port: 0,
    fetch: async (request, info) => Response.json({ path: new URL(request.url).pathname, remote: info.connection.remoteAddress }),
  }))
  const client = new Client({ pinnedCertificates: [server.certificate.sha256] })
  const res = await client.fetch(`https://127.0.0.1:${server.address().port}/api/users/7`)
  t.deepEqual(await res.json(), { path: '/api/users/7', remote: '127.0.0.1' })
  await client.close()
  await server.close()
})

test('a throwing or rejecting handler gives 500, is reported to onError, and the server keeps serving', async (t) => {
  const errors = []
  const server = closeAfter(t, await serve({
    host: '127.0.0.1',
    port: 0,
    onError: (e) => errors.push(e),
    fetch: (request) => {
      const path = new URL(request.url).pathname
      if (path === '/throw') throw new Error('boom')
      if (path === '/reject') return Promise.reject(new Error('nope'))
      if (path === '/not-a-response') return 'hello'
      return new Response('fine')
    },
  }))
  const client = new Client({ pinnedCertificates: [server.certificate.sha256] })
  const base = `https://127.0.0.1:${server.address().port}`
  for (const path of ['/throw', '/reject', '/not-a-response']) {
    const res = await client.fetch(base + path)
    t.is(res.status, 500, path)
    await res.text()
  }
  t.is(errors.length, 3)
  t.is(errors[0].message, 'boom')
  t.is(errors[2].code, 'ERR_H3_INVALID_RESPONSE')
  t.is(await (await client.fetch(base + '/ok')).text(), 'fine')
  await client.close()
  await server.close()
})

test('a body that fails after the headers resets the stream; the server keeps serving', async (t) => {
  const errors = []
  const p = await pair(t, { onError: (e) => errors.push(e) })
  handle(p.server, (req) => {
    if (req.url.endsWith('/fail')) {
      let n = 0
      req.respond(new Response(new ReadableStream({
        pull(c) {
          if (n++ < 3) c.enqueue(new Uint8Array(1000))
          else c.error(new Error('source broke'))
        },
      })))
    } else req.respond(new Response('ok'))
  })
  // The reset may overtake the head (RESET_STREAM discards unsent data):
  // either fetch or the body read fails, with H3_INTERNAL_ERROR, never a
  // silently truncated body.
  const err = await t.throwsAsync(p.client.fetch(`${p.base}/fail`).then((res) => res.arrayBuffer()))
  t.is(err.code, 'ERR_H3_STREAM_RESET')
  t.is(err.wireCode, 0x102)
  t.is(errors.length, 1)
  t.is(errors[0].message, 'source broke')
  t.is(await (await p.client.fetch(`${p.base}/ok`)).text(), 'ok')
  await p.close()
})

test('responding twice throws ERR_H3_ALREADY_RESPONDED', async (t) => {
  const p = await pair(t)
  let second
  handle(p.server, (req) => {
    req.respond(new Response('first'))
    try {
      req.respond(new Response('second'))
    } catch (e) {
      second = e
    }
  })
  t.is(await (await p.client.fetch(p.base)).text(), 'first')
  t.true(second instanceof H3Error)
  t.is(second.code, 'ERR_H3_ALREADY_RESPONDED')
  await p.close()
})

test('trailers in both directions', async (t) => {
  const p = await pair(t)
  handle(p.server, async (req) => {
    const text = await req.request.text()
    req.respond(new Response(`got ${text} with checksum ${req.trailers?.get('x-checksum')}`), {
      trailers: () => ({ 'x-server-trailer': 'done', 'server-timing': 'app;dur=1' }),
    })
  })
  const res = await p.client.fetch(`${p.base}/t`, { method: 'POST', body: 'payload', trailers: { 'x-checksum': 'abc123' } })
  t.is(await res.text(), 'got payload with checksum abc123')
  const trailers = await res.trailers
  t.is(trailers.get('x-server-trailer'), 'done')
  t.is(trailers.get('server-timing'), 'app;dur=1')
  await p.close()
})

test('HEAD, 204 and 304 responses carry no body', async (t) => {
  const p = await pair(t)
  handle(p.server, (req) => {
    const path = new URL(req.url).pathname
    if (path === '/204') req.respond(new Response(null, { status: 204 }))
    else if (path === '/304') req.respond(new Response(null, { status: 304 }))
    else req.respond(new Response('body that HEAD must not send', { headers: { 'x-m': req.method } }))
  })
  const head = await p.client.fetch(`${p.base}/`, { method: 'HEAD' })
  t.is(head.status, 200)
  t.is(head.headers.get('x-m'), 'HEAD')
  t.is(await head.text(), '')
  t.is((await p.client.fetch(`${p.base}/204`)).status, 204)
  t.is((await p.client.fetch(`${p.base}/304`)).status, 304)
  await p.close()
})

test('IPv6 and dual-stack listeners', async (t) => {
  const v6 = closeAfter(t, await listen({ host: '::1', port: 0 }))
  handle(v6, (req) => req.respond(new Response(req.connection.remoteAddress)))
  const c6 = new Client({ pinnedCertificates: [v6.certificate.sha256] })
  t.is(v6.address().family, 'IPv6')
  t.is(await (await c6.fetch(`https://[::1]:${v6.address().port}/`)).text(), '::1')
  await c6.close()
  await v6.close()

  const dual = closeAfter(t, await listen({ host: '::', port: 0 }))
  handle(dual, (req) => req.respond(new Response(req.connection.remoteAddress)))
  const c = new Client({ pinnedCertificates: [dual.certificate.sha256] })
  const port = dual.address().port
  t.is(await (await c.fetch(`https://127.0.0.1:${port}/`)).text(), '::ffff:127.0.0.1')
  t.is(await (await c.fetch(`https://[::1]:${port}/`)).text(), '::1')
  await c.close()
  await dual.close()
})

test('the development certificate: ECDSA P-256, at most 14 days, hash exposed, rejected without the pin', async (t) => {
  const { createHash, X509Certificate } = await import('node:crypto')
  const p = await pair(t)
  const cert = p.server.certificate
  const x = new X509Certificate(cert.cert)
  t.is(createHash('sha256').update(x.raw).digest('hex'), cert.sha256)
  t.is(x.publicKey.asymmetricKeyDetails.namedCurve, 'prime256v1')
  const span = Date.parse(x.validTo) - Date.parse(x.validFrom)
  t.true(span <= 14 * 86400_000, `validity ${span / 86400_000} days`)
  t.true(Date.parse(x.validFrom) <= Date.now())
  t.true(x.checkHost('localhost') !== undefined)
  handle(p.server, (req) => req.respond(new Response('ok')))
  const stranger = new Client()
  const err = await t.throwsAsync(stranger.fetch(p.base))
  t.is(err.code, 'ERR_H3_CONNECT')
  await stranger.close()
  const wrongPin = new Client({ pinnedCertificates: ['00'.repeat(32)] })
  t.is((await t.throwsAsync(wrongPin.fetch(p.base))).code, 'ERR_H3_CONNECT')
  await wrongPin.close()
  const byCa = new Client({ ca: cert.cert })
  t.is(await (await byCa.fetch(`https://127.0.0.1:${p.port}/`)).text(), 'ok')
  await byCa.close()
  await p.close()
})

test('a dev certificate on a non-loopback address warns', async (t) => {
  const warnings = []
  const onWarning = (w) => warnings.push(w)
  process.on('warning', onWarning)
  const s = closeAfter(t, await listen({ host: '0.0.0.0', port: 0 }))
  await sleep(20)
  process.off('warning', onWarning)
  t.true(warnings.some((w) => w.code === 'H3NODE_DEV_CERT'))
  await s.close()
})

test('the client announces content-length for bodies of known size, and not for streams', async (t) => {
  const p = await pair(t)
  handle(p.server, async (req) => {
    const len = req.request.headers.get('content-length')
    const body = await req.request.text()
    req.respond(new Response(`${len}:${body.length}`))
  })
  t.is(await (await p.client.fetch(`${p.base}/`, { method: 'POST', body: 'héllo' })).text(), '6:5')
  t.is(await (await p.client.fetch(`${p.base}/`, { method: 'POST', body: new Uint8Array(10) })).text(), '10:10')
  const stream = new ReadableStream({ start: (c) => (c.enqueue(new Uint8Array(3)), c.close()) })
  t.is(await (await p.client.fetch(`${p.base}/`, { method: 'POST', body: stream, duplex: 'half' })).text(), 'null:3')
})

test('HTTP/1.1 connection fields in a response are left out, not sent malformed', async (t) => {
  const p = await pair(t)
  handle(p.server, (req) =>
    req.respond(
      new Response('sse', {
        // `connection` names one field that sorts before it and one after.
        headers: [
          ['transfer-encoding', 'chunked'],
          ['connection', 'keep-alive, X-Hop, a-hop'],
          ['keep-alive', 'timeout=5'],
          ['a-hop', '0'],
          ['x-hop', '1'],
          ['te', 'gzip'],
          ['x-kept', 'yes'],
          ['b-kept', 'also'],
          ['set-cookie', 'a=1'],
          ['set-cookie', 'b=2'],
        ],
      }),
    ),
  )
  const res = await p.client.fetch(`${p.base}/`)
  t.is(await res.text(), 'sse')
  t.is(res.headers.get('x-kept'), 'yes')
  t.is(res.headers.get('b-kept'), 'also')
  t.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2'])
  for (const n of ['transfer-encoding', 'connection', 'keep-alive', 'x-hop', 'a-hop', 'te']) t.false(res.headers.has(n), n)
})
