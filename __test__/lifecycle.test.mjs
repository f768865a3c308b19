// Timers, shutdown, process exit, and the errors bad input to listen() gets.
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { pair, closeAfter, handle, listen, serve, Client, sleep, waitFor } from './helpers/h3.mjs'
import { H3Error, generateDevCertificate } from '../dist/index.js'

test('an idle peer is reaped after the idle timeout; traffic reschedules the timer', async (t) => {
  const p = await pair(t, { idleTimeoutMs: 800 }, { idleTimeoutMs: 60_000 })
  handle(p.server, (req) => req.respond(new Response(String(req.connection.id))))
  const first = await (await p.client.fetch(p.base)).text()
  // Traffic every 300 ms for 2.4 s (three idle timeouts): the same connection lives on.
  for (let i = 0; i < 8; i++) {
    await sleep(300)
    t.is(await (await p.client.fetch(p.base)).text(), first)
  }
  t.is(p.server.connections, 1)
  // Then silence: the server reaps it (no packet is sent for an idle close).
  const start = Date.now()
  t.true(await waitFor(() => p.server.connections === 0, 5000))
  const took = Date.now() - start
  t.log(`connection reaped ${took} ms after the last request (idle timeout 800 ms)`)
  t.true(took >= 500, `reaped after only ${took} ms`)
  // A new request opens a new connection.
  await sleep(100)
  const again = await (await p.client.fetch(p.base)).text()
  t.not(again, first)
})

test('close(): GOAWAY, in-flight requests finish, new ones are refused, the loop ends', async (t) => {
  const server = closeAfter(t, await listen({ host: '127.0.0.1', port: 0 }))
  const base = `https://127.0.0.1:${server.address().port}`
  let started
  const startedP = new Promise((r) => (started = r))
  const loop = (async () => {
    let n = 0
    for await (const req of server) {
      n++
      started()
      sleep(300).then(() => req.respond(new Response('finished in flight')))
    }
    return n
  })()
  const client = closeAfter(t, new Client({ pinnedCertificates: [server.certificate.sha256] }))
  const inflight = client.fetch(`${base}/slow`).then((r) => r.text())
  await startedP
  const closing = server.close(5000)
  t.is(await inflight, 'finished in flight')
  await closing
  t.is(await loop, 1)
  t.is(server.connections, 0)
  const late = new Client({ pinnedCertificates: [server.certificate.sha256] })
  await t.throwsAsync(late.fetch(`${base}/late`))
  await late.close()
})

test('close(grace): a request that never finishes is cut off after the grace period', async (t) => {
  const server = closeAfter(t, await listen({ host: '127.0.0.1', port: 0 }))
  let signal
  let got
  const gotP = new Promise((r) => (got = r))
  handle(server, (req) => {
    signal = req.signal
    got()
  })
  const client = closeAfter(t, new Client({ pinnedCertificates: [server.certificate.sha256] }))
  const pending = client.fetch(`https://127.0.0.1:${server.address().port}/`).catch((e) => e)
  await gotP
  const start = Date.now()
  await server.close(300)
  const took = Date.now() - start
  t.true(took >= 250 && took < 3000, `close took ${took} ms with a 300 ms grace`)
  t.true(signal.aborted)
  const err = await pending
  t.is(err.code, 'ERR_H3_CONNECTION_CLOSED')
})

test('await using closes the server at the end of the scope', async (t) => {
  let port
  const major = Number(process.versions.node.split('.')[0])
  if (major >= 24) {
    // Syntax Node 20 cannot parse, so it is compiled only where it runs.
    const src = `export default async (listen) => { let port; { await using s = await listen({ host: '127.0.0.1', port: 0 }); port = s.address().port } return port }`
    const mod = await import('data:text/javascript,' + encodeURIComponent(src))
    port = await mod.default(listen)
  } else {
    // What \`await using\` desugars to.
    const server = await listen({ host: '127.0.0.1', port: 0 })
    port = server.address().port
    await server[Symbol.asyncDispose]()
  }
  // The port is free again.
  const again = closeAfter(t, await listen({ host: '127.0.0.1', port }))
  t.is(again.address().port, port)
})

/**
 * Runs `fixtures/<name>` in a Node process of its own (with `nodeArgs`,
 * pinned to core 0 with `pin`) and returns the JSON of its last line.
 */
async function runFixture(name, { args = [], nodeArgs = [], pin = false } = {}) {
  const script = fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
  const node = [process.execPath, ...nodeArgs, script, ...args]
  const [file, argv] = pin ? ['taskset', ['-c', '0', ...node]] : [node[0], node.slice(1)]
  const stdout = await new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stdout, stderr }))
      else resolve(stdout)
    })
  })
  return JSON.parse(stdout.trim().split('\n').pop())
}

test('the process exits on its own after close, with no native thread left', async (t) => {
  const started = Date.now()
  const out = await runFixture('exit-after-close.mjs')
  t.is(out.body, 'bye')
  t.false(out.runtimeRunning)
  t.log(`child served, closed and exited in ${Date.now() - started} ms`)
})

/** Runs fixtures/runtime-settings.mjs (pinned to core 0 with `pin`) and returns what it printed. */
async function runtimeSettingsOf(t, args, pin = false) {
  const out = await runFixture('runtime-settings.mjs', { args, pin })
  t.log(JSON.stringify(out))
  return out
}

test('threads, eventBatchDelayUs and eventBatchSize: the first server of the process sets them, a later one that differs is warned', async (t) => {
  const first = { threads: 1, eventBatchDelayUs: 500, eventBatchSize: 8 }
  const out = await runtimeSettingsOf(t, [JSON.stringify(first), JSON.stringify({ eventBatchDelayUs: 100, threads: 1 }), JSON.stringify({ eventBatchSize: 8 })])
  t.deepEqual(out.settings, first)
  // Both servers answer, whatever the settings.
  t.deepEqual(out.bodies, ['0', '1', '2'])
  // The second asked for another delay: one warning, naming that option only.
  t.is(out.warnings.length, 1)
  t.is(out.warnings[0].code, 'H3_RUNTIME_SETTINGS_IGNORED')
  t.regex(out.warnings[0].message, /eventBatchDelayUs 100 \(runs with 500\)/)
  t.false(out.warnings[0].message.includes('threads'))
  t.false(out.warnings[0].message.includes('eventBatchSize'))
})

test('the default wake-up limits follow the cores the process may use: 2000 us / 64 events on one, 200 us / no count limit on more', async (t) => {
  const pinned = await runtimeSettingsOf(t, ['{}'], true)
  t.deepEqual(pinned.settings, { threads: 1, eventBatchDelayUs: 2000, eventBatchSize: 64 })
  t.deepEqual(pinned.warnings, [])
  const free = await runtimeSettingsOf(t, ['{}'])
  if (free.cores > 1) t.like(free.settings, { eventBatchDelayUs: 200, eventBatchSize: 0 })
  else t.like(free.settings, { eventBatchDelayUs: 2000, eventBatchSize: 64 })
})

test('once answered, a request is not kept by the server while its stream stays open (its Request is garbage)', async (t) => {
  const out = await runFixture('request-released.mjs', { nodeArgs: ['--expose-gc'] })
  t.is(out.text, 'answered early')
  t.true(out.connected)
  t.true(out.collected, 'the Request the handler got was still reachable from the server')
})

test('client: a Response collected with its body unread has its stream cancelled (H3_REQUEST_CANCELLED); a body whose reader is kept is left alone', async (t) => {
  const out = await runFixture('response-abandoned.mjs', { nodeArgs: ['--expose-gc'] })
  t.log(JSON.stringify(out))
  t.deepEqual(out.statuses, [200, 200])
  t.true(out.gotThrough, 'the unread stream kept its slot: the next request never got one')
  t.is(out.text, 'small')
  t.is(out.keptBytes, 4 * 1024 * 1024)
  // Only the dropped exchange was cancelled, with H3_REQUEST_CANCELLED.
  t.deepEqual(out.aborts, [0x10c])
})

test('bad options give ERR_H3_INVALID_OPTION naming the option', async (t) => {
  const cases = [
    [{ port: -1 }, 'port'],
    [{ port: 70000 }, 'port'],
    [{ host: 'not-an-ip' }, 'host'],
    [{ idleTimeoutMs: 'soon' }, 'idleTimeoutMs'],
    [{ congestionControl: 'vegas' }, 'congestionControl'],
    [{ maxHeaderSize: 5 }, 'maxHeaderSize'],
    [{ streamWindow: 1.5 }, 'streamWindow'],
    [{ retry: 'yes' }, 'retry'],
    [{ devCertDays: 30 }, 'devCertDays'],
    [{ cert: 'x' }, 'key'],
    [{ threads: 65 }, 'threads'],
    [{ eventBatchDelayUs: -1 }, 'eventBatchDelayUs'],
    [{ eventBatchSize: 1.5 }, 'eventBatchSize'],
    [{ unreadBodyTimeoutMs: -1 }, 'unreadBodyTimeoutMs'],
    [{ streamWriteWindow: 512 * 1024, maxStreamWriteWindow: 256 * 1024 }, 'maxStreamWriteWindow'],
  ]
  for (const [opts, name] of cases) {
    const err = await t.throwsAsync(listen({ host: '127.0.0.1', port: 0, ...opts }), undefined, name)
    t.true(err instanceof H3Error)
    t.is(err.code, 'ERR_H3_INVALID_OPTION', name)
    t.true(err.message.includes(name), `${name}: ${err.message}`)
  }
  const err = await t.throwsAsync(serve({ port: 0 }))
  t.is(err.code, 'ERR_H3_INVALID_OPTION')
  t.true(err.message.includes('fetch'))
})

test('port in use gives ERR_H3_ADDRESS_IN_USE', async (t) => {
  const a = closeAfter(t, await listen({ host: '127.0.0.1', port: 0 }))
  const err = await t.throwsAsync(listen({ host: '127.0.0.1', port: a.address().port }))
  t.is(err.code, 'ERR_H3_ADDRESS_IN_USE')
})

test('certificates: from files, unreadable, garbage and mismatched', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'h3node-cert-'))
  const a = generateDevCertificate({ days: 3 })
  const b = generateDevCertificate()
  writeFileSync(join(dir, 'cert.pem'), a.cert)
  writeFileSync(join(dir, 'key.pem'), a.key)
  const s = closeAfter(t, await listen({ host: '127.0.0.1', port: 0, cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }))
  t.is(s.certificate, null)
  handle(s, (req) => req.respond(new Response('from files')))
  const c = closeAfter(t, new Client({ pinnedCertificates: [a.sha256] }))
  t.is(await (await c.fetch(`https://127.0.0.1:${s.address().port}/`)).text(), 'from files')

  const code = async (opts) => (await t.throwsAsync(listen({ host: '127.0.0.1', port: 0, ...opts }))).code
  t.is(await code({ cert: join(dir, 'missing.pem'), key: a.key }), 'ERR_H3_INVALID_CERT')
  t.is(await code({ cert: a.cert, key: join(dir, 'missing.pem') }), 'ERR_H3_INVALID_KEY')
  t.is(await code({ cert: '-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n', key: a.key }), 'ERR_H3_INVALID_CERT')
  t.is(await code({ cert: a.cert, key: Buffer.from('garbage') }), 'ERR_H3_INVALID_KEY')
  t.is(await code({ cert: a.cert, key: b.key }), 'ERR_H3_CERT_KEY_MISMATCH')
})

test('Retry on: connections are validated and still served', async (t) => {
  const p = await pair(t, { retry: true })
  handle(p.server, (req) => req.respond(new Response('validated')))
  t.is(await (await p.client.fetch(p.base)).text(), 'validated')
})

test('oversized and overlong header sections get 431; the connection keeps serving', async (t) => {
  const p = await pair(t, { maxHeaderSize: 4096, maxHeaderCount: 32 })
  let seen = 0
  handle(p.server, (req) => {
    seen++
    req.respond(new Response('ok'))
  })
  const big = await p.client.fetch(p.base, { headers: { 'x-big': 'a'.repeat(8000) } })
  t.is(big.status, 431)
  const many = {}
  for (let i = 0; i < 40; i++) many[`x-h${i}`] = String(i)
  const lots = await p.client.fetch(p.base, { headers: many })
  t.is(lots.status, 431)
  t.is(seen, 0)
  t.is(await (await p.client.fetch(p.base)).text(), 'ok')
  t.is(p.client.connections, 1)
})
