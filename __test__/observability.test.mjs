// What a failing case needs to be read in a qlog viewer and in Wireshark:
// qlogDir writes one qlog per connection; SSLKEYLOGFILE gets the TLS secrets
// in NSS key log format (both ends, since the client is ours too).
import test from 'ava'
import { execFile } from 'node:child_process'
import { promises as fs } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const fixture = fileURLToPath(new URL('./fixtures/keylog-qlog.mjs', import.meta.url))

test('qlogDir writes a qlog per connection and SSLKEYLOGFILE gets the TLS secrets', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'h3node-obs-'))
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }))
  const keylog = path.join(dir, 'keys.log')
  const qlogs = path.join(dir, 'qlog')
  await fs.mkdir(qlogs)
  const out = await new Promise((resolve, reject) =>
    execFile(process.execPath, [fixture, qlogs], { env: { ...process.env, SSLKEYLOGFILE: keylog }, timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(Object.assign(err, { stderr })) : resolve(stdout)),
  )
  t.is(out.trim(), 'logged')

  const keys = (await fs.readFile(keylog, 'utf8')).trim().split('\n')
  const labels = new Set(keys.map((l) => l.split(' ')[0]))
  for (const l of ['CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'SERVER_HANDSHAKE_TRAFFIC_SECRET', 'CLIENT_TRAFFIC_SECRET_0', 'SERVER_TRAFFIC_SECRET_0']) {
    t.true(labels.has(l), `${l} missing from ${[...labels]}`)
  }
  t.true(keys.every((l) => /^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]{64,}$/.test(l)), keys.join('\n'))

  const files = await fs.readdir(qlogs)
  t.true(files.length >= 2, `qlogs: ${files}`) // the server's connection and the client's
  const text = await fs.readFile(path.join(qlogs, files[0]), 'utf8')
  t.regex(text, /packet_sent|packet_received/)
})
