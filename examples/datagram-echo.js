// Datagram echo over WebTransport, server and client in one process:
//   node examples/datagram-echo.js [count]
// The server echoes every datagram of a session; the client (the same
// `WebTransport` class as in browsers) sends `count` datagrams (default 200)
// and counts the echoes. Datagrams are unreliable: what was lost or dropped
// is counted by both sides, never hidden.
'use strict'
const { listen, WebTransport } = require('..')

async function main() {
  const count = Number(process.argv[2] ?? 200)
  const server = await listen({ host: '127.0.0.1', port: 0, webTransport: true })
  ;(async () => {
    for await (const req of server) {
      if (!req.isWebTransport) {
        req.respond(new Response('WebTransport only', { status: 400 }))
        continue
      }
      const session = req.acceptWebTransport()
      const writer = session.datagrams.writable.getWriter()
      ;(async () => {
        for await (const d of session.datagrams.readable) await writer.write(d)
      })().catch(() => {})
      session.closed.then(() => console.log(`server session: ${JSON.stringify(session.datagrams.stats)}`), () => {})
    }
  })()

  const hash = Buffer.from(server.certificate.sha256, 'hex')
  const wt = new WebTransport(`https://127.0.0.1:${server.address().port}/echo`, {
    serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }],
  })
  await wt.ready
  console.log(`session ready; datagrams up to ${wt.datagrams.maxDatagramSize} bytes`)
  let echoed = 0
  const reading = (async () => {
    for await (const d of wt.datagrams.readable) {
      void d
      if (++echoed === count) break
    }
  })()
  const writer = wt.datagrams.writable.getWriter()
  for (let i = 0; i < count; i++) await writer.write(new TextEncoder().encode(`datagram ${i}`))
  await Promise.race([reading, new Promise((r) => setTimeout(r, 2000))])
  console.log(`client: sent ${count}, echoed ${echoed}`)
  wt.close({ closeCode: 0, reason: 'done' })
  await wt.closed
  await server.close(200)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
