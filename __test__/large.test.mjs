// 1 GiB each way over one connection, checksummed at the far end, with the
// server in its own process so its peak RSS can be read from /proc.
import test from 'ava'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { Client, patternStream, patternSha256, digest } from './helpers/h3.mjs'

const GiB = 1024 * 1024 * 1024
const MB = 1e6

function peakRss(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024
}

async function startServer(t) {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./fixtures/bulk-server.mjs', import.meta.url))], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  t.teardown(() => child.kill('SIGKILL'))
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve)
    child.once('exit', (code) => reject(new Error(`bulk server exited with ${code}`)))
  })
  return { child, ...JSON.parse(line) }
}

test('1 GiB download and 1 GiB upload, sha256 checked, server peak RSS under 300 MB', async (t) => {
  const srv = await startServer(t)
  const client = new Client({ pinnedCertificates: [srv.sha256] })
  t.teardown(() => client.close())
  const base = `https://127.0.0.1:${srv.port}`
  const expected = patternSha256(GiB)
  const baseline = peakRss(srv.child.pid)

  let start = performance.now()
  const res = await client.fetch(`${base}/bytes/${GiB}`)
  const down = await digest(res.body)
  const downS = (performance.now() - start) / 1000
  t.is(down.bytes, GiB)
  t.is(down.sha256, expected)

  start = performance.now()
  const up = await (await client.fetch(`${base}/sha256`, { method: 'POST', duplex: 'half', body: patternStream(GiB) })).json()
  const upS = (performance.now() - start) / 1000
  t.is(up.bytes, GiB)
  t.is(up.sha256, expected)

  const peak = peakRss(srv.child.pid)
  t.is(client.connections, 1)
  t.log(`download ${downS.toFixed(2)} s (${((GiB * 8) / downS / 1e9).toFixed(2)} Gbit/s), upload ${upS.toFixed(2)} s (${((GiB * 8) / upS / 1e9).toFixed(2)} Gbit/s)`)
  t.log(`server peak RSS ${(peak / MB).toFixed(0)} MB (after start-up ${(baseline / MB).toFixed(0)} MB); both ends share 2 cores and hash every byte`)
  t.true(peak < 300 * MB, `server peak RSS ${peak} bytes`)
})
