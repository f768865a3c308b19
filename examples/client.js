// The package's HTTP/3 client against the demo server (`npm start` first).
// Trusts the demo's dev certificate by its SHA-256 (printed by the demo), or
// pass H3_INSECURE=1 to skip verification.
'use strict'
const { Client } = require('..')

async function main() {
  const origin = process.env.ORIGIN ?? 'https://127.0.0.1:4433'
  const pin = process.env.H3_PIN
  const client = new Client(pin ? { pinnedCertificates: [pin] } : { insecure: true })
  try {
    const hello = await client.fetch(`${origin}/`)
    console.log(hello.status, await hello.text())
    const echo = await client.fetch(`${origin}/echo`, { method: 'POST', body: 'ping over HTTP/3' })
    console.log(echo.status, await echo.text())
    const stream = await client.fetch(`${origin}/stream?n=3`)
    for await (const chunk of stream.body) process.stdout.write(Buffer.from(chunk))
  } finally {
    await client.close()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
