/**
 * The native addon and the event kinds it reports (mirrors
 * `crate/src/bridge.rs`). Internal.
 *
 * @internal
 * @module
 */
import type * as Binding from '../binding'
import type { SessionPort } from './webtransport'

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: typeof Binding = require('../binding.js')

/** One event from the native side (see `crate/src/bridge.rs`). */
export interface NativeEvent {
  kind: number
  conn: number
  stream: number
  code: number
  fin: boolean
  early: boolean
  data: Buffer | undefined
  /** A header section: names and values joined with NUL (see {@link splitSection}). */
  section: string | undefined
  text: string | undefined
  /** Connection facts (ConnOpen, PeerAddress). */
  info: Binding.NativeConnInfo | undefined
}

/**
 * Takes the events the native side queued, unpacking its batch (five
 * numbers per event in one Float64Array; data, header sections, texts and
 * connection facts in arrays of their own, in event order). Header sections
 * stay joined (see {@link splitSection}). One N-API call
 * per batch, plain objects of one shape for the dispatchers.
 */
export function takeEvents(n: { takeBatch(): Binding.NativeBatch }): NativeEvent[] {
  const b = n.takeBatch()
  const m = b.meta
  const out: NativeEvent[] = new Array(m.length / 5)
  let d = 0
  let h = 0
  let x = 0
  let f = 0
  for (let i = 0, j = 0; j < m.length; i++, j += 5) {
    const flags = m[j + 4]
    out[i] = {
      kind: m[j],
      conn: m[j + 1],
      stream: m[j + 2],
      code: m[j + 3],
      fin: (flags & 1) !== 0,
      early: (flags & 2) !== 0,
      data: flags & 4 ? b.data[d++] : undefined,
      section: flags & 8 ? b.headers[h++] : undefined,
      text: flags & 16 ? b.texts[x++] : undefined,
      info: flags & 32 ? b.infos[f++] : undefined,
    }
  }
  return out
}

/**
 * A header section as names and values, alternating. Split only where the
 * list is needed: a request's URL is read off the section's front, and
 * splitting every request's section cost about 5,000 instructions.
 */
export function splitSection(section: string | undefined): string[] {
  return section ? section.split('\0') : []
}

export const enum Ev {
  ConnOpen = 1,
  Headers = 2,
  Data = 3,
  Trailers = 4,
  Reset = 5,
  StopSending = 6,
  Sent = 7,
  ConnClose = 8,
  GoAway = 9,
  ServerClosed = 10,
  Finished = 11,
  Datagram = 12,
  SessionClosed = 13,
  StreamOpen = 14,
  SessionDrain = 15,
  PeerAddress = 16,
}

/** The operations a body needs on its stream, bound to one connection and stream. */
export interface StreamPort {
  write(data: Uint8Array, fin: boolean): boolean
  sendHeaders(headers: string[], fin: boolean): boolean
  grant(bytes: number): boolean
  reset(code: number): boolean
  stopSending(code: number): boolean
}

/** The per-stream commands the native server and client both take. */
interface NativeStreams {
  write(conn: number, stream: number, data: Uint8Array, fin: boolean): boolean
  /** `headers`: names and values joined with NUL. */
  sendHeaders(conn: number, stream: number, headers: string, fin: boolean): boolean
  grant(conn: number, stream: number, bytes: number): boolean
  reset(conn: number, stream: number, code: number): boolean
  stopSending(conn: number, stream: number, code: number): boolean
  submit(ops: Float64Array, text: string, bytes: Uint8Array): void
}

/** Command codes of `submit` (crate/src/lib.rs). */
const enum Op {
  Headers = 1,
  Write = 2,
  Grant = 3,
  Reset = 4,
  StopSending = 5,
}

/**
 * Writes up to this size are copied into the queue's byte buffer; larger
 * ones flush the queue and go to the native side at once (which copies them
 * there), so a chunk is never copied twice and a caller may reuse its
 * buffer after `write`.
 */
const QUEUED_WRITE_MAX = 16 * 1024

/** Size of the byte buffer small writes are packed into (flushed when full). */
const QUEUED_BYTES = 256 * 1024

/**
 * The stream commands of one native server or client, queued during an
 * event-loop turn and handed over in one N-API call (`submit`) from
 * `setImmediate`: a turn that answers 64 requests makes one call, not 128+.
 * Three values cross: the commands as numbers (five per command), the names
 * and values of every header section joined with NUL into one string, and
 * every small write packed into one byte buffer, which the native side
 * copies out before `submit` returns, so the buffer is reused. Order is
 * kept: any other native call that must follow them (closing a session or
 * the connection, large writes) flushes the queue first.
 */
export class CommandQueue {
  #n: NativeStreams
  #ops = new Float64Array(5 * 256)
  #nops = 0
  #parts: string[] = []
  #bytes = Buffer.allocUnsafeSlow(QUEUED_BYTES)
  #nbytes = 0
  #scheduled = false
  /** Counts flushes: an op index is valid only within its generation. */
  #generation = 0
  /** Index in the queue of the last op pushed, -1 if the last call queued none. */
  #lastOp = -1
  #flushSoon = (): void => {
    this.#scheduled = false
    this.flush()
  }

  constructor(n: NativeStreams) {
    this.#n = n
  }

  #push(op: Op, conn: number, stream: number, arg: number, fin: boolean): boolean {
    let ops = this.#ops
    const i = this.#nops
    if (i + 5 > ops.length) {
      const bigger = new Float64Array(ops.length * 2)
      bigger.set(ops)
      this.#ops = ops = bigger
    }
    ops[i] = op
    ops[i + 1] = conn
    ops[i + 2] = stream
    ops[i + 3] = arg
    ops[i + 4] = fin ? 1 : 0
    this.#nops = i + 5
    this.#lastOp = i
    if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(this.#flushSoon)
    }
    return true
  }

  headers(conn: number, stream: number, fields: string[], fin: boolean): boolean {
    const parts = this.#parts
    for (let i = 0; i < fields.length; i++) parts.push(fields[i])
    return this.#push(Op.Headers, conn, stream, fields.length, fin)
  }

  write(conn: number, stream: number, data: Uint8Array, fin: boolean): boolean {
    const n = data.byteLength
    if (n > QUEUED_WRITE_MAX) {
      this.flush()
      this.#lastOp = -1
      return this.#n.write(conn, stream, data, fin)
    }
    if (this.#nbytes + n > QUEUED_BYTES) this.flush()
    this.#bytes.set(data, this.#nbytes)
    this.#nbytes += n
    return this.#push(Op.Write, conn, stream, n, fin)
  }

  /** Index of the last op queued, -1 if the last write went to the native side at once. */
  get lastOp(): number {
    return this.#lastOp
  }

  /** Which flush the queued ops belong to (see {@link finish}). */
  get generation(): number {
    return this.#generation
  }

  /**
   * Sets FIN on the head or write op at `at` (see {@link lastOp}) if it is
   * still queued and has none yet; false otherwise. A body's end then costs
   * no command of its own: the native side sends the FIN with the stream's
   * last bytes, whatever other streams queued in between.
   */
  finish(at: number, generation: number): boolean {
    if (at < 0 || generation !== this.#generation || at >= this.#nops) return false
    const ops = this.#ops
    if ((ops[at] !== Op.Write && ops[at] !== Op.Headers) || ops[at + 4] !== 0) return false
    ops[at + 4] = 1
    return true
  }

  grant(conn: number, stream: number, bytes: number): boolean {
    return this.#push(Op.Grant, conn, stream, bytes, false)
  }

  reset(conn: number, stream: number, code: number): boolean {
    return this.#push(Op.Reset, conn, stream, code, false)
  }

  stopSending(conn: number, stream: number, code: number): boolean {
    return this.#push(Op.StopSending, conn, stream, code, false)
  }

  /** Hands everything queued to the native side now. */
  flush(): void {
    if (this.#nops === 0) return
    const ops = this.#ops.subarray(0, this.#nops)
    const text = this.#parts.join('\0')
    const bytes = this.#bytes.subarray(0, this.#nbytes)
    this.#nops = 0
    this.#parts = []
    this.#nbytes = 0
    this.#generation++
    this.#n.submit(ops, text, bytes)
  }
}

const queues = new WeakMap<object, CommandQueue>()

/** The command queue of native server or client `n`. */
export function commandQueue(n: NativeStreams): CommandQueue {
  let q = queues.get(n)
  if (!q) {
    q = new CommandQueue(n)
    queues.set(n, q)
  }
  return q
}

/**
 * Binds the stream commands to one stream, through `n`'s command queue.
 * `stopSending` differs per side: the client cancels a response by
 * resetting the whole request (`cancelWithReset`).
 */
export function streamPort(n: NativeStreams, conn: number, stream: number, cancelWithReset = false): StreamPort {
  return new QueuedStreamPort(commandQueue(n), conn, stream, cancelWithReset)
}

/** One object per stream, not five closures: a port is made for every request. */
class QueuedStreamPort implements StreamPort {
  // `declare`d and assigned, not parameter properties: those compile to
  // class fields, which V8 defines through its slow path on every request.
  declare private readonly q: CommandQueue
  declare private readonly conn: number
  declare private readonly stream: number
  declare private readonly cancelWithReset: boolean

  constructor(q: CommandQueue, conn: number, stream: number, cancelWithReset: boolean) {
    this.q = q
    this.conn = conn
    this.stream = stream
    this.cancelWithReset = cancelWithReset
  }

  /** This stream's last head or write op in the queue, and its generation. */
  #at = -1
  #generation = -1

  write(data: Uint8Array, fin: boolean): boolean {
    // The end of a body rides on the stream's last op when it is still queued.
    if (fin && data.byteLength === 0 && this.q.finish(this.#at, this.#generation)) return true
    const ok = this.q.write(this.conn, this.stream, data, fin)
    this.#note()
    return ok
  }

  sendHeaders(h: string[], fin: boolean): boolean {
    const ok = this.q.headers(this.conn, this.stream, h, fin)
    this.#note()
    return ok
  }

  #note(): void {
    this.#at = this.q.lastOp
    this.#generation = this.q.generation
  }

  grant(bytes: number): boolean {
    return this.q.grant(this.conn, this.stream, bytes)
  }

  reset(code: number): boolean {
    this.#at = -1
    return this.q.reset(this.conn, this.stream, code)
  }

  stopSending(code: number): boolean {
    if (this.cancelWithReset) this.#at = -1
    return this.cancelWithReset ? this.q.reset(this.conn, this.stream, H3_REQUEST_CANCELLED) : this.q.stopSending(this.conn, this.stream, code)
  }
}

/** H3_REQUEST_CANCELLED (RFC 9114 §8.1). */
const H3_REQUEST_CANCELLED = 0x10c

/** The per-connection commands sessions (WebTransport, raw QUIC) need besides streams'. */
interface NativeSessions extends NativeStreams {
  openStream(conn: number, bidi: boolean, session: number): number
  sendDatagram(conn: number, stream: number, data: Uint8Array): boolean
  closeSession(conn: number, stream: number, code: number, reason: string): boolean
  closeConnection(conn: number, code: number, reason: string): boolean
  stats(conn: number): Promise<Binding.NativeStats | null>
}

/**
 * Binds the native commands to one session: WebTransport session `session`
 * on connection `conn`, or (`session` -1) the raw QUIC connection itself,
 * whose datagrams carry no flow id and whose close is CONNECTION_CLOSE.
 */
export function sessionPort(n: NativeSessions, conn: number, session: number): SessionPort {
  // The calls that bypass the command queue flush it first, so that they
  // follow what was queued before them (a session's 2xx, earlier writes).
  const q = commandQueue(n)
  return {
    openStream: (bidi) => {
      q.flush()
      return n.openStream(conn, bidi, session)
    },
    sendDatagram: (d) => {
      q.flush()
      return n.sendDatagram(conn, Math.max(session, 0), d)
    },
    close: (code, reason) => {
      q.flush()
      return session < 0 ? n.closeConnection(conn, code, reason) : n.closeSession(conn, session, code, reason)
    },
    stream: (id) => streamPort(n, conn, id),
    stats: async () => (await n.stats(conn)) as unknown as Record<string, number> | null,
  }
}

/** Dispatches a batch; one failing event does not cost the rest of the batch. */
export function dispatchAll(events: NativeEvent[], dispatch: (e: NativeEvent) => void): void {
  for (const e of events) {
    try {
      dispatch(e)
    } catch (err) {
      process.emitWarning(`h3node: dispatching event ${e.kind} failed: ${(err as Error)?.stack ?? err}`, { code: 'H3NODE_INTERNAL' })
    }
  }
}

/**
 * Warns (`H3_RUNTIME_SETTINGS_IGNORED`) when options that are process-wide
 * (`threads`, `eventBatchDelayUs`, `eventBatchSize`) ask for other values
 * than the running runtime was started with: the first server or client of
 * the process decided them. Called once the runtime runs.
 */
export function warnIfRuntimeDiffers(t: { threads: number; eventBatchDelayUs: number | undefined; eventBatchSize: number | undefined }): void {
  const s = native.runtimeSettings()
  if (!s) return
  const ignored: string[] = []
  if (t.threads !== 0 && t.threads !== s.threads) ignored.push(`threads ${t.threads} (runs with ${s.threads})`)
  if (t.eventBatchDelayUs !== undefined && t.eventBatchDelayUs !== s.eventBatchDelayUs) {
    ignored.push(`eventBatchDelayUs ${t.eventBatchDelayUs} (runs with ${s.eventBatchDelayUs})`)
  }
  if (t.eventBatchSize !== undefined && t.eventBatchSize !== s.eventBatchSize) {
    ignored.push(`eventBatchSize ${t.eventBatchSize} (runs with ${s.eventBatchSize})`)
  }
  if (ignored.length === 0) return
  process.emitWarning(`process-wide options ignored: ${ignored.join(', ')}; the first server or client of the process set them`, {
    code: 'H3_RUNTIME_SETTINGS_IGNORED',
  })
}
