// `npm start`: a demo HTTP/3 server on a generated development certificate.
//   GET  /            hello
//   POST /echo        echoes the request body back, streamed
//   GET  /stream?n=5  n chunks, one every 200 ms
//   GET  /bytes/N     N bytes, streamed with backpressure
// Set PORT and HOST to move it (default 127.0.0.1:4433).
'use strict'
const { listen } = require('..')

async function main() {
  const host = process.env.HOST ?? '127.0.0.1'
  const port = Number(process.env.PORT ?? 4433)
  const server = await listen({ host, port })
  const { address, port: bound } = server.address()
  const hostPart = address.includes(':') ? `[${address}]` : address
  console.log(`h3node demo on https://${hostPart}:${bound}/  (HTTP/3 only, UDP)`)
  console.log(`certificate sha256: ${server.certificate.sha256}`)
  console.log('\nTry it with an independent client:')
  console.log(`  pip install aioquic && python __test__/clients/aioquic_client.py --insecure --url https://${hostPart}:${bound}/`)
  console.log(`  (cd __test__/clients/go-h3client && go run . --insecure --url https://${hostPart}:${bound}/echo --method POST --body-size 1000000)`)
  console.log('Or with the package client: node examples/client.js\n')
  process.on('SIGINT', () => {
    console.log('closing (GOAWAY, then up to 5 s for requests in flight)')
    server.close().then(() => console.log('closed'))
  })

  for await (const req of server) {
    const url = new URL(req.url)
    console.log(`${req.connection.remoteAddress}:${req.connection.remotePort} ${req.method} ${url.pathname}${url.search}`)
    if (url.pathname === '/') {
      req.respond(new Response('Hello, HTTP/3!\n', { headers: { 'content-type': 'text/plain' } }))
    } else if (url.pathname === '/echo' && req.method === 'POST') {
      req.respond(new Response(req.request.body, { headers: { 'content-type': req.request.headers.get('content-type') ?? 'application/octet-stream' } }))
    } else if (url.pathname === '/stream') {
      const n = Math.min(Number(url.searchParams.get('n') ?? 5), 100)
      let i = 0
      req.respond(new Response(new ReadableStream({
        async pull(c) {
          if (i >= n) return c.close()
          await new Promise((r) => setTimeout(r, 200))
          c.enqueue(new TextEncoder().encode(`chunk ${++i} of ${n}\n`))
        },
      })))
    } else if (url.pathname.startsWith('/bytes/')) {
      let left = Math.min(Number(url.pathname.slice(7)) || 0, 2 ** 34)
      const chunk = new Uint8Array(64 * 1024).fill(0x61)
      req.respond(new Response(new ReadableStream({
        pull(c) {
          if (left <= 0) return c.close()
          const n = Math.min(left, chunk.length)
          c.enqueue(chunk.subarray(0, n))
          left -= n
        },
      })))
    } else {
      req.respond(new Response('not found\n', { status: 404 }))
    }
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
