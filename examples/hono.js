// A Hono app on HTTP/3 (h3node/hono), on a generated development certificate.
//   GET  /                 hello
//   GET  /api/users/:id    JSON, with a route parameter
//   POST /api/echo         echoes a JSON body back (400 on bad JSON)
//   GET  /files/*          the wildcard part of the path
//   GET  /stream?n=5       n lines, one every 100 ms (hono/streaming)
//   GET  /whoami           the QUIC peer (getConnInfo)
//   WebTransport /wt/:room a session per client: the server opens a
//                          unidirectional stream with a welcome line, echoes
//                          bidirectional streams, and relays datagrams to
//                          everyone in the same room (the sender too)
// Set PORT and HOST to move it (default 127.0.0.1:4433).
'use strict'
const { Hono } = require('hono')
const { stream } = require('hono/streaming')
const { serve, getConnInfo, upgradeWebTransport } = require('h3node/hono')

const app = new Hono()
const rooms = new Map() // room name -> Map of session -> its datagram writer

app.get('/', (c) => c.text('Hello from Hono over HTTP/3!\n'))

app.get('/api/users/:id', (c) => {
  c.header('x-powered-by', 'hono+h3node')
  return c.json({ id: c.req.param('id'), name: `user ${c.req.param('id')}` })
})

app.post('/api/echo', async (c) => {
  let body
  try {
    body = await c.req.json()
  } catch {
    return c.json({ error: 'the body is not JSON' }, 400)
  }
  return c.json({ youSent: body }, 201)
})

app.get('/files/*', (c) => c.text(`file: ${c.req.path.slice('/files/'.length)}\n`))

app.get('/stream', (c) => {
  const n = Math.min(Number(c.req.query('n') ?? 5), 100)
  return stream(c, async (s) => {
    s.onAbort(() => console.log('stream: the client went away'))
    for (let i = 1; i <= n && !s.aborted; i++) {
      await s.write(`line ${i} of ${n}\n`)
      await s.sleep(100)
    }
  })
})

app.get('/whoami', (c) => c.json(getConnInfo(c).remote))

app.get('/wt/:room', (c) => {
  const room = c.req.param('room')
  const session = upgradeWebTransport(c)
  let members = rooms.get(room)
  if (!members) rooms.set(room, (members = new Map()))
  members.set(session, session.datagrams.writable.getWriter())
  const { address, port } = getConnInfo(c).remote
  console.log(`WebTransport ${address}:${port} joined ${room} (${members.size} here)`)
  session.closed
    .catch(() => {})
    .finally(() => {
      members.delete(session)
      if (members.size === 0) rooms.delete(room)
    })
  ;(async () => {
    const w = (await session.createUnidirectionalStream()).getWriter()
    await w.write(new TextEncoder().encode(`welcome to ${room}, ${members.size} here\n`))
    await w.close()
  })().catch(() => {})
  ;(async () => {
    for await (const { readable, writable } of session.incomingBidirectionalStreams) readable.pipeTo(writable).catch(() => {})
  })().catch(() => {})
  ;(async () => {
    for await (const d of session.datagrams.readable) {
      for (const writer of members.values()) writer.write(d).catch(() => {})
    }
  })().catch(() => {})
  return c.body(null)
})

async function main() {
  const host = process.env.HOST ?? '127.0.0.1'
  const port = Number(process.env.PORT ?? 4433)
  const server = await serve({ fetch: app.fetch, hostname: host, port, webTransport: true })
  const { address, port: bound } = server.address()
  const hostPart = address.includes(':') ? `[${address}]` : address
  console.log(`h3node + Hono on https://${hostPart}:${bound}/  (HTTP/3 only, UDP)`)
  console.log(`certificate sha256: ${server.certificate.sha256}`)
  console.log('\nTry it with an independent client:')
  console.log(`  (cd __test__/clients/go-h3client && go run . --insecure --url https://${hostPart}:${bound}/api/users/42)`)
  console.log(`Or in Node: new (require('h3node').Client)({ pinnedCertificates: ['${server.certificate.sha256}'] }).fetch('https://${hostPart}:${bound}/whoami')\n`)
  process.on('SIGINT', () => {
    console.log('closing (GOAWAY, then up to 5 s for requests in flight)')
    server.close().then(() => console.log('closed'))
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
