// Streaming both ways with progress, server and client in one process:
//   node examples/streaming.js [MiB]
// Uploads MiB (default 32) to /upload, counting on the server as bytes arrive
// (the body is read as it comes, with backpressure), then downloads the same
// amount from /download, counting on the client as it reads. Progress lines
// go to stdout; the process exits when both are done.
'use strict'
const { listen, Client } = require('..')

const MiB = 1024 * 1024

/** A ReadableStream of `total` bytes that reports how far it was pulled. */
function source(total, onPull) {
  const chunk = new Uint8Array(256 * 1024).fill(0x68)
  let sent = 0
  return new ReadableStream({
    pull(c) {
      if (sent >= total) return c.close()
      const n = Math.min(chunk.length, total - sent)
      c.enqueue(chunk.subarray(0, n))
      sent += n
      onPull(sent)
    },
  })
}

function progress(label) {
  let last = -1
  return (done, total) => {
    const pct = Math.floor((done / total) * 100)
    if (pct >= last + 25 || done === total) {
      last = pct
      console.log(`${label}: ${(done / MiB).toFixed(1)} of ${(total / MiB).toFixed(1)} MiB (${pct}%)`)
    }
  }
}

async function main() {
  const total = Number(process.argv[2] ?? 32) * MiB
  const server = await listen({ host: '127.0.0.1', port: 0 })
  ;(async () => {
    for await (const req of server) {
      const path = new URL(req.url).pathname
      if (path === '/upload') {
        const report = progress('server received')
        let got = 0
        for await (const c of req.request.body) {
          got += c.byteLength
          report(got, total)
        }
        req.respond(new Response(`${got}`))
      } else if (path === '/download') {
        req.respond(new Response(source(total, () => {})))
      } else {
        req.respond(new Response('not found', { status: 404 }))
      }
    }
  })()

  const client = new Client({ pinnedCertificates: [server.certificate.sha256] })
  const base = `https://127.0.0.1:${server.address().port}`
  const sendReport = progress('client sent')
  let t = Date.now()
  const up = await client.fetch(`${base}/upload`, { method: 'POST', body: source(total, (n) => sendReport(n, total)), duplex: 'half' })
  console.log(`upload: server counted ${await up.text()} bytes in ${Date.now() - t} ms`)

  t = Date.now()
  const down = await client.fetch(`${base}/download`)
  const recvReport = progress('client received')
  let got = 0
  for await (const c of down.body) {
    got += c.byteLength
    recvReport(got, total)
  }
  console.log(`download: ${got} bytes in ${Date.now() - t} ms`)
  await client.close()
  await server.close()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
