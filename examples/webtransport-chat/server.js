// WebTransport chat: a browser page and an h3node server, one command:
//
//   node examples/webtransport-chat/server.js
//
// then open http://localhost:8080 in Chromium (two tabs to chat). The page is
// served over plain HTTP from localhost (a secure context); it connects with
// `new WebTransport(url, { serverCertificateHashes })` to the server's
// generated development certificate, so no certificate setup is needed.
//
// On the wire, per session:
//   - the browser opens one bidirectional stream and writes one JSON line per
//     message: {"text": "..."}; the server answers {"welcome": name} on it;
//   - the server opens one unidirectional stream to each browser and writes
//     every chat event as a JSON line: {"from", "text"} / {"joined"} / {"left"};
//   - "typing" indicators are datagrams (unreliable, fine to lose), relayed to
//     everyone else as datagrams.
//
// PORT (UDP, default 4433) and HTTP_PORT (default 8080) may be 0 for any free
// port; the chosen ones are printed.
'use strict'

const http = require('node:http')
const fs = require('node:fs')
const path = require('node:path')
const { listen } = require('../../index.js')

const enc = new TextEncoder()
const dec = new TextDecoder()

/** Splits a byte stream into JSON lines. */
async function* jsonLines(readable) {
  let buf = ''
  for await (const chunk of readable) {
    buf += dec.decode(chunk, { stream: true })
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      if (line.trim()) yield JSON.parse(line)
    }
  }
}

async function main() {
  const server = await listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 4433), webTransport: true })
  const wtPort = server.address().port
  /** @type {Map<object, { name: string, out: WritableStreamDefaultWriter, dg: WritableStreamDefaultWriter }>} */
  const members = new Map()
  let nextId = 1

  const broadcast = (event, except) => {
    const line = enc.encode(JSON.stringify(event) + '\n')
    for (const [s, m] of members) if (s !== except) m.out.write(line).catch(() => {})
  }

  async function join(session) {
    const name = `guest-${nextId++}`
    const out = (await session.createUnidirectionalStream()).getWriter()
    const dg = session.datagrams.writable.getWriter()
    members.set(session, { name, out, dg })
    broadcast({ joined: name })
    session.closed.catch(() => {}).finally(() => {
      members.delete(session)
      broadcast({ left: name })
    })
    // Typing indicators: datagrams relayed to the others, prefixed with the name.
    ;(async () => {
      for await (const d of session.datagrams.readable) {
        const msg = enc.encode(`${name}:${dec.decode(d).slice(0, 64)}`)
        for (const [s, m] of members) if (s !== session && msg.byteLength <= s.datagrams.maxDatagramSize) m.dg.write(msg).catch(() => {})
      }
    })().catch(() => {})
    // Messages: JSON lines on the browser's bidirectional stream.
    for await (const { readable, writable } of session.incomingBidirectionalStreams) {
      const reply = writable.getWriter()
      reply.write(enc.encode(JSON.stringify({ welcome: name }) + '\n')).catch(() => {})
      ;(async () => {
        for await (const m of jsonLines(readable)) {
          if (typeof m.text === 'string' && m.text.length > 0) broadcast({ from: name, text: m.text.slice(0, 2000) })
        }
      })().catch(() => {})
    }
  }

  ;(async () => {
    for await (const req of server) {
      if (req.isWebTransport && new URL(req.url).pathname === '/chat') {
        join(req.acceptWebTransport()).catch(() => {})
      } else {
        req.respond(new Response('WebTransport chat: open the page served over HTTP', { status: req.isWebTransport ? 404 : 200 }))
      }
    }
  })()

  const page = fs.readFileSync(path.join(__dirname, 'index.html'))
  const web = http.createServer((req, res) => {
    if (req.url === '/config.json') {
      res.setHeader('content-type', 'application/json')
      return res.end(JSON.stringify({ url: `https://127.0.0.1:${wtPort}/chat`, certificateSha256: server.certificate.sha256 }))
    }
    res.setHeader('content-type', 'text/html; charset=utf-8')
    res.end(page)
  })
  web.listen(Number(process.env.HTTP_PORT ?? 8080), '127.0.0.1', () => {
    console.log(`WebTransport chat: open http://localhost:${web.address().port}/ (WebTransport on UDP ${wtPort})`)
  })
  const stop = async () => {
    web.close()
    await server.close(500)
    process.exit(0)
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
