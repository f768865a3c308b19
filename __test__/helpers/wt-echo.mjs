// The server half of the WebTransport scenarios that the independent clients
// run (__test__/fixtures/wt-page.js in Chromium, clients/aioquic_wt_client.py):
//
//   /echo   (1) opens a bidi stream, writes "server-bidi" + FIN and records the
//           reply; (2) opens a uni stream with "server-uni"; (3) echoes every
//           datagram; (4) echoes each client bidi stream; (5) answers each
//           client uni stream with a new uni stream "echo:" + data;
//           (6) records how the client closed the session.
//   /close  closes the session at once with code 7, reason "server-bye".
//   /refuse answers 403.
//
// `wtEchoServer(t, options)` starts a server with webTransport on and returns
// { server, port, certPem, seen } where `seen` collects what the server saw;
// `serveEcho(session, seen, note)` is that server behaviour for any
// WebTransport-shaped session (a raw QuicConnection too).

import { listen } from '../../dist/index.js'

/** Every byte of a readable stream, as one Buffer. */
export async function readAll(readable) {
  const chunks = []
  for await (const c of readable) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

/** Writes `bytes` and closes (FIN). */
export async function writeAll(writable, bytes) {
  const w = writable.getWriter()
  await w.write(bytes)
  await w.close()
}

export async function wtEchoServer(t, options = {}) {
  const server = await listen({ host: '127.0.0.1', port: 0, webTransport: true, ...options })
  t.teardown(() => server.close(300))
  const seen = { sessions: 0, serverBidiReply: null, closes: [], errors: [], datagrams: 0, uniEchoed: 0, bidiEchoed: 0 }
  const note = (where) => (err) => seen.errors.push(`${where}: ${err?.code ?? ''} ${err?.message ?? err}`)
  ;(async () => {
    for await (const req of server) {
      if (!req.isWebTransport) {
        req.respond(new Response('not a WebTransport request', { status: 400 }))
        continue
      }
      const path = new URL(req.url).pathname
      if (path === '/refuse') {
        req.respond(new Response(null, { status: 403 }))
        continue
      }
      const session = req.acceptWebTransport()
      seen.sessions++
      seen.connectionId = req.connection.id
      seen.session = session
      session.closed.then((info) => seen.closes.push(info), note('closed'))
      if (path === '/close') {
        session.close({ closeCode: 7, reason: 'server-bye' })
        continue
      }
      serveEcho(session, seen, note).catch(note('session'))
    }
  })().catch(note('accept loop'))
  const { port } = server.address()
  return { server, port, certPem: server.certificate.cert, seen }
}

export async function serveEcho(session, seen, note) {
  // (1) server bidi with a reply expected
  session.createBidirectionalStream().then(async ({ readable, writable }) => {
    await writeAll(writable, Buffer.from('server-bidi'))
    seen.serverBidiReply = (await readAll(readable)).toString()
  }).catch(note('server bidi'))
  // (2) server uni
  session.createUnidirectionalStream().then((w) => writeAll(w, Buffer.from('server-uni'))).catch(note('server uni'))
  // (3) datagram echo
  ;(async () => {
    const writer = session.datagrams.writable.getWriter()
    for await (const d of session.datagrams.readable) {
      seen.datagrams++
      await writer.write(d)
    }
  })().catch(note('datagrams'))
  // (5) uni echo
  ;(async () => {
    for await (const r of session.incomingUnidirectionalStreams) {
      readAll(r).then(async (data) => {
        const w = await session.createUnidirectionalStream()
        await writeAll(w, Buffer.concat([Buffer.from('echo:'), data]))
        seen.uniEchoed++
      }).catch(note('uni echo'))
    }
  })().catch(note('incoming uni'))
  // (4) bidi echo
  for await (const { readable, writable } of session.incomingBidirectionalStreams) {
    readable.pipeTo(writable).then(() => seen.bidiEchoed++, note('bidi echo'))
  }
}
