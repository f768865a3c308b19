// The command queue that carries stream commands from JS to the native side
// in one call per turn (dist/native.js), against a recording stand-in for the
// native `submit`: what crosses, in which order, and where a body's FIN goes.
// The wire behaviour of the same paths is covered over UDP by the server,
// streaming and interop tests.
import test from 'ava'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { commandQueue, streamPort, splitSection } = require('../dist/native.js')

const Op = { Headers: 1, Write: 2, Grant: 3, Reset: 4 }

/** A native stand-in that records every submit as readable ops. */
function recorder() {
  const calls = []
  const n = {
    submit(ops, text, bytes) {
      const list = []
      let off = 0
      for (let i = 0; i < ops.length; i += 5) {
        const op = { op: ops[i], conn: ops[i + 1], stream: ops[i + 2], fin: ops[i + 4] === 1 }
        if (ops[i] === Op.Write) {
          op.bytes = Buffer.from(bytes.subarray(off, off + ops[i + 3])).toString()
          off += ops[i + 3]
        }
        list.push(op)
      }
      calls.push({ ops: list, text })
    },
    write(conn, stream, data, fin) {
      calls.push({ direct: { conn, stream, size: data.byteLength, fin } })
      return true
    },
  }
  return { n, calls }
}

test('a body end rides on its stream’s last queued op, whatever other streams queued in between', (t) => {
  const { n, calls } = recorder()
  const a = streamPort(n, 1, 0)
  const b = streamPort(n, 2, 4)
  a.sendHeaders([':status', '200'], false)
  b.sendHeaders([':status', '204'], false)
  a.write(Buffer.from('hello'), false)
  b.write(new Uint8Array(0), true) // b ends with no body: FIN on its head
  a.write(new Uint8Array(0), true) // a's FIN joins its write
  const before = calls.length
  // Flushed from setImmediate in the server; here by hand.
  commandQueue(n).flush()
  t.is(calls.length, before + 1)
  const { ops, text } = calls.at(-1)
  t.deepEqual(ops, [
    { op: Op.Headers, conn: 1, stream: 0, fin: false },
    { op: Op.Headers, conn: 2, stream: 4, fin: true },
    { op: Op.Write, conn: 1, stream: 0, fin: true, bytes: 'hello' },
  ])
  t.deepEqual(splitSection(text), [':status', '200', ':status', '204'])
})

test('a FIN after a flush, after a reset or after a direct large write is an op of its own', (t) => {
  const { n, calls } = recorder()
  const queue = commandQueue(n)
  const a = streamPort(n, 1, 0)
  a.write(Buffer.from('x'), false)
  queue.flush()
  a.write(new Uint8Array(0), true) // the write it would ride on has crossed already
  queue.flush()
  t.deepEqual(calls.at(-1).ops, [{ op: Op.Write, conn: 1, stream: 0, fin: true, bytes: '' }])

  const b = streamPort(n, 1, 4)
  b.write(Buffer.from('y'), false)
  b.reset(0x10c)
  b.write(new Uint8Array(0), true)
  queue.flush()
  t.deepEqual(
    calls.at(-1).ops.map((o) => [o.op, o.fin]),
    [
      [Op.Write, false],
      [Op.Reset, false],
      [Op.Write, true],
    ],
  )

  const c = streamPort(n, 1, 8)
  c.write(Buffer.alloc(64 * 1024), false) // larger than the queue takes: goes at once
  c.write(new Uint8Array(0), true)
  queue.flush()
  t.deepEqual(calls.at(-2), { direct: { conn: 1, stream: 8, size: 64 * 1024, fin: false } })
  t.deepEqual(calls.at(-1).ops, [{ op: Op.Write, conn: 1, stream: 8, fin: true, bytes: '' }])
})

test('splitSection: names and values alternate; an empty section has no fields', (t) => {
  t.deepEqual(splitSection(''), [])
  t.deepEqual(splitSection(undefined), [])
  t.deepEqual(splitSection('a\0\0b\0c'), ['a', '', 'b', 'c'])
})
