// Opt-in stress reproducer (not part of `npm test`): the race in which a
// response whose FIN was written after its body never ended (see
// docs/design.md, "A late zero-length FIN"). Three exchanges run at once:
// a 128 MiB upload to a handler that waits before reading, a 300 KB echo,
// and a 256 MiB upload answered without being read. Before the fix about one
// iteration in ten failed with an idle timeout; it must print 0 failures.
//   node __test__/stress/late-fin.mjs [iterations=10]
import { pair, handle, sleep, patternStream, digest } from '../helpers/h3.mjs'

const MiB = 1024 * 1024
const noTeardown = { teardown() {} }

async function slowReader() {
  const p = await pair(noTeardown)
  handle(p.server, async (req) => {
    await sleep(1500)
    req.respond(Response.json(await digest(req.request.body)))
  })
  await (await p.client.fetch(`${p.base}/up`, { method: 'POST', duplex: 'half', body: patternStream(128 * MiB) })).json()
  await p.close()
}

async function echo() {
  const p = await pair(noTeardown, { idleTimeoutMs: 5000 }, { idleTimeoutMs: 5000 })
  handle(p.server, async (req) => req.respond(new Response(req.method === 'POST' ? await req.request.text() : 'x'.repeat(100_000))))
  try {
    await (await p.client.fetch(`${p.base}/a`)).text()
    const body = await (await p.client.fetch(`${p.base}/b`, { method: 'POST', body: 'y'.repeat(300_000) })).text()
    if (body.length !== 300_000) throw new Error(`echo returned ${body.length} bytes`)
    return true
  } catch (e) {
    console.log('failure:', e.message)
    return false
  } finally {
    await p.close()
  }
}

async function unreadUpload() {
  const p = await pair(noTeardown)
  handle(p.server, (req) => req.respond(new Response('answered without reading', { status: 413 })))
  await (await p.client.fetch(`${p.base}/upload`, { method: 'POST', duplex: 'half', body: patternStream(256 * MiB) })).text()
  await sleep(600)
  await p.close()
}

const iterations = Number(process.argv[2] ?? 10)
let failures = 0
for (let i = 0; i < iterations; i++) {
  const [, ok] = await Promise.all([slowReader(), echo(), unreadUpload()])
  if (!ok) failures++
}
console.log(`${iterations} iterations, ${failures} failures`)
process.exitCode = failures === 0 ? 0 : 1
