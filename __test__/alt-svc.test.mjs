// h3node/alt-svc: the header value and its four integrations, each against
// the real thing: node:http, node:https and node:http2 servers on loopback
// (TLS with an h3node development certificate), Hono (from npm) through its
// fetch, and Fastify (from npm) through inject() and a real listen.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import http from 'node:http'
import https from 'node:https'
import http2 from 'node:http2'
import { fileURLToPath } from 'node:url'

import Fastify from 'fastify'
import { Hono } from 'hono'

import { H3Error, generateDevCertificate } from '../dist/index.js'
import { altSvc, altSvcFastify, altSvcHono, altSvcMiddleware, withAltSvc } from '../dist/adapters/alt-svc.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const dev = generateDevCertificate({ days: 1 })

/** Listens on 127.0.0.1:0, closes with `t`; resolves to the port. */
async function listenOn(t, server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => {
    server.closeAllConnections?.()
    server.close(() => resolve())
  }))
  return server.address().port
}

/** GET over node:http or node:https: status, headers, body. */
function get(mod, url, options = {}) {
  return new Promise((resolve, reject) => {
    mod.get(url, { agent: false, ...options }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }))
    }).on('error', reject)
  })
}

/** GET over HTTP/2 (TLS): status, headers, body. */
function get2(t, origin, path) {
  const session = http2.connect(origin, { ca: dev.cert })
  t.teardown(() => session.close())
  return new Promise((resolve, reject) => {
    session.on('error', reject)
    const req = session.request({ ':path': path })
    let headers
    let body = ''
    req.setEncoding('utf8')
    req.on('response', (h) => (headers = h))
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      session.close()
      resolve({ status: headers[':status'], headers, body })
    })
    req.on('error', reject)
    req.end()
  })
}

test('altSvc(): the header value, and errors naming the option', (t) => {
  t.is(altSvc({ port: 443 }), 'h3=":443"; ma=86400')
  t.is(altSvc({ port: 8443, maxAge: 3600 }), 'h3=":8443"; ma=3600')
  t.is(altSvc({ port: 443, maxAge: 0 }), 'h3=":443"; ma=0')
  t.is(altSvc({ port: 443, host: 'h3.example.com' }), 'h3="h3.example.com:443"; ma=86400')
  t.is(altSvc({ port: 443, host: '192.0.2.7' }), 'h3="192.0.2.7:443"; ma=86400')
  t.is(altSvc({ port: 443, host: '2001:db8::1' }), 'h3="[2001:db8::1]:443"; ma=86400')
  t.is(altSvc({ port: 443, host: '[2001:db8::1]' }), 'h3="[2001:db8::1]:443"; ma=86400')

  const bad = (options, re) => {
    const err = t.throws(() => altSvc(options))
    t.true(err instanceof H3Error)
    t.is(err.code, 'ERR_H3_INVALID_OPTION')
    t.regex(err.message, re)
  }
  bad(undefined, /options must be an object with port/)
  bad({}, /option port must be an integer from 1 to 65535, got undefined/)
  bad({ port: 0 }, /option port .* got 0/)
  bad({ port: 65536 }, /option port/)
  bad({ port: '443' }, /option port/)
  bad({ port: 44.3 }, /option port/)
  bad({ port: 443, maxAge: -1 }, /option maxAge must be an integer from 0 to 2147483647, got -1/)
  bad({ port: 443, maxAge: 1.5 }, /option maxAge/)
  bad({ port: 443, maxAge: 2 ** 31 }, /option maxAge/)
  bad({ port: 443, host: '' }, /option host must be a DNS name or an IP address/)
  bad({ port: 443, host: 'two words' }, /option host .*"two words"/)
  bad({ port: 443, host: 'a"b' }, /option host/)
  bad({ port: 443, host: 'example.com:443' }, /option host/)
  bad({ port: 443, host: '[192.0.2.7]' }, /option host/)
  bad({ port: 443, host: 443 }, /option host .* got 443/)
  // Every integration checks its options when it is made, not per request.
  for (const make of [altSvcMiddleware, altSvcHono, altSvcFastify, (o) => withAltSvc(() => {}, o)]) {
    t.is(t.throws(() => make({ port: 0 })).code, 'ERR_H3_INVALID_OPTION')
  }
  t.is(t.throws(() => withAltSvc('not a function', { port: 443 })).code, 'ERR_H3_INVALID_ARGUMENT')
})

test('h3node/alt-svc loads neither the native addon nor Hono nor Fastify', (t) => {
  const out = execFileSync(process.execPath, ['-e', `
    const m = require('./dist/adapters/alt-svc.js')
    m.altSvc({ port: 443 })
    console.log(JSON.stringify(Object.keys(require.cache).filter((k) => /native|\\.node$|node_modules/.test(k))))
  `], { cwd: root, encoding: 'utf8' })
  t.deepEqual(JSON.parse(out), [])
})

test('node:http: withAltSvc wraps a listener; altSvcMiddleware works in a listener and Connect-style with next()', async (t) => {
  const wrapped = await listenOn(t, http.createServer(withAltSvc((req, res) => res.end(`hello ${req.url}`), { port: 443 })))
  let r = await get(http, `http://127.0.0.1:${wrapped}/a`)
  t.is(r.status, 200)
  t.is(r.headers['alt-svc'], 'h3=":443"; ma=86400')
  t.is(r.body, 'hello /a')

  const mw = altSvcMiddleware({ port: 8443, maxAge: 60, host: 'h3.example.com' })
  const plain = await listenOn(t, http.createServer((req, res) => {
    if (req.url === '/next') return mw(req, res, () => res.end('after next'))
    mw(req, res)
    res.statusCode = 404
    res.end('plain')
  }))
  r = await get(http, `http://127.0.0.1:${plain}/next`)
  t.is(r.headers['alt-svc'], 'h3="h3.example.com:8443"; ma=60')
  t.is(r.body, 'after next')
  r = await get(http, `http://127.0.0.1:${plain}/x`)
  t.is(r.status, 404)
  t.is(r.headers['alt-svc'], 'h3="h3.example.com:8443"; ma=60')

  // After the head went out, the middleware leaves the response alone (no ERR_HTTP_HEADERS_SENT).
  const late = await listenOn(t, http.createServer((req, res) => {
    res.writeHead(200)
    res.write('head sent;')
    mw(req, res, () => res.end('still fine'))
  }))
  r = await get(http, `http://127.0.0.1:${late}/`)
  t.is(r.headers['alt-svc'], undefined)
  t.is(r.body, 'head sent;still fine')
})

test('node:https and node:http2 (TLS with the h3node dev certificate): the header on HTTP/1.1 and HTTP/2 responses', async (t) => {
  const tls = { cert: dev.cert, key: dev.key }
  const h1 = await listenOn(t, https.createServer(tls, withAltSvc((req, res) => res.end('over TLS'), { port: 4433 })))
  let r = await get(https, `https://127.0.0.1:${h1}/`, { ca: dev.cert })
  t.is(r.status, 200)
  t.is(r.headers['alt-svc'], 'h3=":4433"; ma=86400')
  t.is(r.body, 'over TLS')

  const h2server = http2.createSecureServer({ ...tls, allowHTTP1: true }, withAltSvc((req, res) => res.end(`h${req.httpVersion}`), { port: 4433, maxAge: 600 }))
  const h2 = await listenOn(t, h2server)
  r = await get2(t, `https://127.0.0.1:${h2}`, '/')
  t.is(r.status, 200)
  t.is(r.headers['alt-svc'], 'h3=":4433"; ma=600')
  t.is(r.body, 'h2.0')
  // The same server answering HTTP/1.1 (allowHTTP1).
  r = await get(https, `https://127.0.0.1:${h2}/`, { ca: dev.cert })
  t.is(r.headers['alt-svc'], 'h3=":4433"; ma=600')
  t.is(r.body, 'h1.1')

  const mw = altSvcMiddleware({ port: 443 })
  const h2mw = await listenOn(t, http2.createSecureServer(tls, (req, res) => {
    mw(req, res)
    res.end('middleware')
  }))
  r = await get2(t, `https://127.0.0.1:${h2mw}`, '/')
  t.is(r.headers['alt-svc'], 'h3=":443"; ma=86400')
  t.is(r.body, 'middleware')
})

test('Hono: app.use(altSvcHono()) sets the header on routes, 404s, errors and immutable responses', async (t) => {
  const app = new Hono()
  app.use(altSvcHono({ port: 443 }))
  app.use('/v2/*', altSvcHono({ port: 8443, maxAge: 5 }))
  app.get('/', (c) => c.text('hi'))
  app.get('/json', (c) => c.json({ ok: true }, 201, { 'x-other': '1' }))
  app.get('/raw', () => Response.redirect('https://example.com/', 302)) // its headers are immutable
  app.get('/boom', () => {
    throw new Error('boom')
  })
  app.get('/v2/thing', (c) => c.text('v2'))
  app.onError((err, c) => c.text(err.message, 500)) // Hono's default one logs

  let res = await app.fetch(new Request('http://localhost/'))
  t.is(res.headers.get('alt-svc'), 'h3=":443"; ma=86400')
  t.is(await res.text(), 'hi')
  res = await app.fetch(new Request('http://localhost/json'))
  t.is(res.status, 201)
  t.is(res.headers.get('x-other'), '1')
  t.is(res.headers.get('alt-svc'), 'h3=":443"; ma=86400')
  res = await app.fetch(new Request('http://localhost/raw'))
  t.is(res.status, 302)
  t.is(res.headers.get('location'), 'https://example.com/')
  t.is(res.headers.get('alt-svc'), 'h3=":443"; ma=86400')
  res = await app.fetch(new Request('http://localhost/nowhere'))
  t.is(res.status, 404)
  t.is(res.headers.get('alt-svc'), 'h3=":443"; ma=86400')
  res = await app.fetch(new Request('http://localhost/boom'))
  t.is(res.status, 500)
  t.is(res.headers.get('alt-svc'), 'h3=":443"; ma=86400')
  // Both run; the outer one sets the header last (after next()), so its value wins.
  res = await app.fetch(new Request('http://localhost/v2/thing'))
  t.is(res.headers.get('alt-svc'), 'h3=":443"; ma=86400')
  const scoped = new Hono()
  scoped.use('/v2/*', altSvcHono({ port: 8443, maxAge: 5 }))
  scoped.get('/v2/thing', (c) => c.text('v2'))
  scoped.get('/other', (c) => c.text('other'))
  t.is((await scoped.fetch(new Request('http://localhost/v2/thing'))).headers.get('alt-svc'), 'h3=":8443"; ma=5')
  t.is((await scoped.fetch(new Request('http://localhost/other'))).headers.get('alt-svc'), null)
})

test('Fastify: register(altSvcFastify()) and addHook(\'onSend\', altSvcFastify()), with inject() and a real listen', async (t) => {
  const value = 'h3=":443"; ma=86400'
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/before', async () => 'registered before the plugin')
  await app.register(altSvcFastify({ port: 443 }))
  app.get('/after', async () => ({ ok: true }))
  app.get('/fail', async () => {
    throw new Error('fail')
  })
  app.register(async (child) => {
    child.get('/child', async () => 'in a child context')
  })
  for (const [url, status] of [['/before', 200], ['/after', 200], ['/child', 200], ['/fail', 500], ['/nowhere', 404]]) {
    const res = await app.inject({ method: 'GET', url })
    t.is(res.statusCode, status, url)
    t.is(res.headers['alt-svc'], value, url)
  }
  t.deepEqual((await app.inject({ url: '/after' })).json(), { ok: true })

  // Registered inside a child context: it covers that context only.
  const scoped = Fastify()
  t.teardown(() => scoped.close())
  scoped.get('/outside', async () => 'outside')
  scoped.register(async (child) => {
    await child.register(altSvcFastify({ port: 8443 }))
    child.get('/inside', async () => 'inside')
  })
  t.is((await scoped.inject({ url: '/inside' })).headers['alt-svc'], 'h3=":8443"; ma=86400')
  t.is((await scoped.inject({ url: '/outside' })).headers['alt-svc'], undefined)

  // As an onSend hook, over a real TCP listen.
  const hooked = Fastify()
  t.teardown(() => hooked.close())
  hooked.addHook('onSend', altSvcFastify({ port: 443, maxAge: 120, host: 'quic.example.com' }))
  hooked.get('/', async () => 'hooked')
  await hooked.listen({ port: 0, host: '127.0.0.1' })
  const r = await get(http, `http://127.0.0.1:${hooked.server.address().port}/`)
  t.is(r.status, 200)
  t.is(r.headers['alt-svc'], 'h3="quic.example.com:443"; ma=120')
  t.is(r.body, 'hooked')

  // Called any other way: a clear error.
  const misuse = t.throws(() => altSvcFastify({ port: 443 })({}, {}, undefined))
  t.is(misuse.code, 'ERR_H3_INVALID_ARGUMENT')
})
