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
