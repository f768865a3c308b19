// The smallest h3node server: `node examples/hello.js`, then
//   python __test__/clients/aioquic_client.py --insecure --url https://127.0.0.1:4433/
// or examples/client.js with H3_PIN set to the printed hash. PORT / HOST move it.
'use strict'
const { listen } = require('..')

async function main() {
  const server = await listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 4433) })
  const { address, port } = server.address()
  console.log(`hello on https://${address}:${port}/ (HTTP/3 only, UDP)`)
  console.log(`certificate sha256: ${server.certificate.sha256}`)
  process.on('SIGINT', () => server.close())
  for await (const req of server) {
    req.respond(new Response(`Hello over ${req.connection.alpn} from ${req.connection.remoteAddress}!\n`))
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
