// Every example runs: the demo server (`npm start`) answers the example
// client and an independent client.
import test from 'ava'
import { spawn, execFile } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { runClient } from './helpers/independent.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))

test('npm start demo answers examples/client.js and quic-go', async (t) => {
  const demo = spawn(process.execPath, ['examples/demo.js'], { cwd: root, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => demo.kill('SIGKILL'))
  const lines = createInterface({ input: demo.stdout })
  let origin
  let pin
  for await (const line of lines) {
    const m = /on (https:\/\/\S+?)\/ /.exec(line)
    if (m) origin = m[1]
    const s = /certificate sha256: ([0-9a-f]{64})/.exec(line)
    if (s) pin = s[1]
    if (origin && pin) break
  }
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, ['examples/client.js'], { cwd: root, env: { ...process.env, ORIGIN: origin, H3_PIN: pin }, timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(Object.assign(err, { stderr })) : resolve(stdout))
  })
  t.regex(out, /^200 Hello, HTTP\/3!/)
  t.regex(out, /200 ping over HTTP\/3/)
  t.regex(out, /chunk 3 of 3/)
  const go = await runClient('quic-go', ['--url', `${origin}/echo`, '--method', 'POST', '--body-size', '100000', '--count', '1', '--insecure'])
  t.is(go.results[0].status, 200)
  t.is(go.results[0].bytes, 100000)
})

test('examples/webtransport-chat: a browser and a Node client chat through the server', async (t) => {
  const { openPage } = await import('./helpers/browser.mjs')
  const { WebTransport } = await import('../dist/index.js')
  const chat = spawn(process.execPath, ['examples/webtransport-chat/server.js'], {
    cwd: root,
    env: { ...process.env, PORT: '0', HTTP_PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  t.teardown(() => chat.kill('SIGKILL'))
  let pageUrl
  for await (const line of createInterface({ input: chat.stdout })) {
    const m = /open (http:\/\/localhost:\d+\/)/.exec(line)
    if (m) {
      pageUrl = m[1]
      break
    }
  }
  const config = await (await fetch(new URL('/config.json', pageUrl))).json()

  // A Node participant, with the browser-shaped constructor.
  const hash = Buffer.from(config.certificateSha256, 'hex')
  const node = new WebTransport(config.url, { serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }] })
  t.teardown(() => node.close())
  await node.ready
  const events = []
  ;(async () => {
    for await (const s of node.incomingUnidirectionalStreams) {
      let buf = ''
      for await (const chunk of s) {
        buf += Buffer.from(chunk).toString()
        const lines = buf.split('\n')
        buf = lines.pop()
        for (const l of lines) if (l) events.push(JSON.parse(l))
      }
    }
  })().catch((e) => t.log('node participant:', e))
  const typing = []
  ;(async () => {
    for await (const d of node.datagrams.readable) typing.push(Buffer.from(d).toString())
  })().catch(() => {})
  const { writable } = await node.createBidirectionalStream()
  const nodeWriter = writable.getWriter()

  // The browser participant: the example's own page.
  const { page } = await openPage(t)
  await page.goto(pageUrl)
  await page.waitForFunction(() => window.chat?.events?.some((e) => e.welcome), null, { timeout: 20_000 })
  const browserName = await page.evaluate(() => window.chat.events.find((e) => e.welcome).welcome)
  await page.evaluate(() => window.chat.send('hello from chromium'))
  await page.type('#text', 'x') // a typing datagram
  await nodeWriter.write(new TextEncoder().encode(JSON.stringify({ text: 'hello from node' }) + '\n'))

  const deadline = Date.now() + 10_000
  while (Date.now() < deadline && !events.some((e) => e.text === 'hello from chromium')) await new Promise((r) => setTimeout(r, 50))
  t.true(events.some((e) => e.from === browserName && e.text === 'hello from chromium'), JSON.stringify(events))
  await page.waitForFunction(() => window.chat.events.some((e) => e.text === 'hello from node'), null, { timeout: 10_000 })
  t.true(typing.some((d) => d.startsWith(`${browserName}:`)), `typing datagrams: ${JSON.stringify(typing)}`)
})

/** Runs an example to completion; resolves with its stdout. */
function runExample(file, args = [], timeout = 60_000) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [file, ...args], { cwd: root, timeout }, (err, stdout, stderr) =>
      err ? reject(Object.assign(err, { stdout, stderr })) : resolve(stdout))
  })
}

test('examples/hello.js answers the package client', async (t) => {
  const hello = spawn(process.execPath, ['examples/hello.js'], { cwd: root, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => hello.kill('SIGKILL'))
  let origin
  let pin
  for await (const line of createInterface({ input: hello.stdout })) {
    origin ??= /on (https:\/\/\S+?)\//.exec(line)?.[1]
    pin ??= /certificate sha256: ([0-9a-f]{64})/.exec(line)?.[1]
    if (origin && pin) break
  }
  const { Client } = await import('../dist/index.js')
  const client = new Client({ pinnedCertificates: [pin] })
  t.teardown(() => client.close())
  const res = await client.fetch(`${origin}/`)
  t.regex(await res.text(), /^Hello over h3 from 127\.0\.0\.1!/)
})

test('examples/streaming.js uploads and downloads with progress', async (t) => {
  const out = await runExample('examples/streaming.js', ['8'])
  t.regex(out, /client sent: 8\.0 of 8\.0 MiB \(100%\)/)
  t.regex(out, /server received: 8\.0 of 8\.0 MiB \(100%\)/)
  t.regex(out, /upload: server counted 8388608 bytes/)
  t.regex(out, /client received: 8\.0 of 8\.0 MiB \(100%\)/)
  t.regex(out, /download: 8388608 bytes/)
})

test('examples/datagram-echo.js echoes datagrams and reports the counts', async (t) => {
  const out = await runExample('examples/datagram-echo.js', ['100'])
  const m = /client: sent 100, echoed (\d+)/.exec(out)
  t.truthy(m, out)
  t.true(Number(m[1]) >= 90, out)
  t.regex(out, /server session: \{"received":\d+,"sent":\d+,"droppedIncoming":\d+,"droppedTooLarge":0\}/)
})
