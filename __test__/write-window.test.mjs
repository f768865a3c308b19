// How an outgoing body's write window adapts (dist/body.js): a body pumped
// into a recording stand-in for the native stream port, with a clock the test
// sets, so that "QUIC took the window in 1 ms" or "in 20 ms" is exact. What
// the window bounds on the wire (a slow peer holds the producer) is covered
// over UDP in streaming.test.mjs; what the growth is worth, in
// benchmark/README.md (the bulk download points).
import test from 'ava'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { OutgoingBody, nextWriteWindow, WRITE_WINDOW_GROW_MS, WRITE_WINDOW_SHRINK_MS } = require('../dist/body.js')

const KiB = 1024
const CHUNK = 64 * KiB

/** A native stream port stand-in: counts the body bytes written and notes the FIN. */
function recorder() {
  const r = { written: 0, fin: false, resets: [] }
  r.port = {
    write(data, fin) {
      r.written += data.byteLength
      if (fin) r.fin = true
      return true
    },
    sendHeaders(_h, fin) {
      if (fin) r.fin = true
      return true
    },
    reset(code) {
      r.resets.push(code)
      return true
    },
  }
  return r
}

/** `n` chunks of 64 KiB, each made when the pump asks for it. */
function chunks(n) {
  let left = n
  return new ReadableStream({
    pull(c) {
      if (left-- > 0) c.enqueue(new Uint8Array(CHUNK))
      else c.close()
    },
  })
}

/** Lets the pump run until it waits for credit again. */
const settle = () => new Promise((r) => setImmediate(r))

/**
 * QUIC's side, played by hand: `drain(ms)` lets `ms` pass, then gives back
 * credit for all but 64 KiB of what is outstanding (as the native side
 * does, see SENT_LOW_WATER in crate/src/h3/session.rs), and resolves with
 * how many bytes the pump wrote in the turn that followed.
 */
function quic(body, r, clock) {
  let credited = 0
  return async (ms) => {
    clock.now += ms
    const give = Math.max(0, r.written - 64 * KiB - credited) || r.written - credited
    credited += give
    const before = r.written
    body.sent(give)
    await settle()
    return r.written - before
  }
}

test('nextWriteWindow: a fast drain doubles the window up to its maximum, a slow one halves it down to its minimum', (t) => {
  const min = 256 * KiB
  const max = 1024 * KiB
  t.is(nextWriteWindow(min, 0.5, min, max), 512 * KiB)
  t.is(nextWriteWindow(512 * KiB, WRITE_WINDOW_GROW_MS - 0.01, min, max), max)
  t.is(nextWriteWindow(max, 0, min, max), max, 'never past the maximum')
  t.is(nextWriteWindow(max, WRITE_WINDOW_GROW_MS, min, max), max, 'a wait of 2 ms or more does not grow it')
  t.is(nextWriteWindow(max, WRITE_WINDOW_SHRINK_MS, min, max), max, 'nor does 8 ms shrink it')
  t.is(nextWriteWindow(max, WRITE_WINDOW_SHRINK_MS + 0.01, min, max), 512 * KiB)
  t.is(nextWriteWindow(min, 1000, min, max), min, 'never below the minimum')
  t.is(nextWriteWindow(min, 0, min, min), min, 'maximum = minimum: a fixed window')
})

test('a body refills its queue in larger turns while QUIC takes it fast, and in smaller ones again once it is slow', async (t) => {
  const r = recorder()
  const clock = { now: 0 }
  const body = new OutgoingBody(r.port, 256 * KiB, 1024 * KiB, () => clock.now)
  const total = 64 // 4 MiB in 64 KiB chunks
  const done = body.pump(chunks(total))
  await settle()
  t.is(r.written, 256 * KiB, 'the first turn fills the starting window')
  t.is(body.window, 256 * KiB)

  // QUIC takes all but 64 KiB of it within 1 ms: the window doubles, and the
  // pump refills up to it in one turn.
  const drain = quic(body, r, clock)
  t.is(await drain(1), 448 * KiB, 'window 512 KiB: 448 KiB more in one turn')
  t.is(body.window, 512 * KiB)
  t.is(await drain(1), 960 * KiB, 'window 1 MiB')
  t.is(body.window, 1024 * KiB)
  t.is(await drain(1), 960 * KiB, 'the maximum holds')
  t.is(body.window, 1024 * KiB)
  // A drain of 20 ms (a slow peer): halved.
  t.is(await drain(20), 448 * KiB)
  t.is(body.window, 512 * KiB)
  // 5 ms: in between, unchanged.
  t.is(await drain(5), 448 * KiB)
  t.is(body.window, 512 * KiB)
  t.is(await drain(30), 192 * KiB)
  t.is(body.window, 256 * KiB, 'back to the starting window, and no lower')
  t.is(await drain(30), 192 * KiB)
  t.is(body.window, 256 * KiB)

  // The rest goes out with the FIN; every byte was written once.
  while (!r.fin) await drain(0)
  await done
  t.is(r.written, total * CHUNK)
  t.deepEqual(r.resets, [])
})

test('maxWriteWindow equal to the window keeps it fixed, however fast QUIC takes it', async (t) => {
  const r = recorder()
  const body = new OutgoingBody(r.port, 128 * KiB, 128 * KiB, () => 0)
  const done = body.pump(chunks(16))
  await settle()
  const drain = quic(body, r, { now: 0 })
  for (let i = 0; i < 4; i++) {
    t.is(await drain(0), 64 * KiB)
    t.is(body.window, 128 * KiB)
  }
  while (!r.fin) await drain(0)
  await done
  t.is(r.written, 16 * CHUNK)
})
