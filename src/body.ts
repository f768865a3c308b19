/**
 * Body plumbing shared by the server and the client.
 *
 * - {@link IncomingBody}: a `ReadableStream` fed by native Data events. Bytes
 *   are granted back to the native side only as the reader consumes them, so
 *   a slow reader flow-controls the peer.
 * - {@link OutgoingBody}: pumps a `ReadableStream` into the stream, reading
 *   the source only while fewer than its write window of bytes are waiting
 *   for QUIC, so a slow peer slows the producer. The window adapts between
 *   `streamWriteWindow` and `maxStreamWriteWindow` ({@link nextWriteWindow}).
 *
 * @internal
 * @module
 */
import { H3Codes } from './errors'
import type { StreamPort } from './native'

export class IncomingBody {
  readonly stream: ReadableStream<Uint8Array>
  #controller!: ReadableStreamDefaultController<Uint8Array>
  #enqueued = 0
  #granted = 0
  #hwm: number
  #done = false
  #onDone: (() => void) | undefined
  #port: StreamPort

  /**
   * `onDone` runs once when the body ends, fails or is cancelled;
   * `stopCode` gives the STOP_SENDING code for a cancel reason
   * (default H3_NO_ERROR).
   */
  constructor(port: StreamPort, readWindow: number, onDone?: () => void, stopCode?: (reason: unknown) => number) {
    this.#onDone = onDone
    this.#hwm = readWindow
    this.#port = port
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#controller = c
        },
        pull: () => {
          const consumed = this.#consumed()
          if (consumed > this.#granted && !this.#done) {
            port.grant(consumed - this.#granted)
            this.#granted = consumed
          }
        },
        cancel: (reason) => {
          if (!this.#done) {
            this.#done = true
            // Tell the peer we will not read the rest (STOP_SENDING).
            port.stopSending(stopCode ? stopCode(reason) : H3Codes.NO_ERROR)
            this.#onDone?.()
          }
        },
      },
      { highWaterMark: readWindow, size: (chunk) => chunk.byteLength },
    )
  }

  get done(): boolean {
    return this.#done
  }

  /** Bytes the reader took: everything enqueued minus what still sits in the queue. */
  #consumed(): number {
    const queued = this.#hwm - (this.#controller.desiredSize ?? 0)
    return this.#enqueued - Math.max(0, queued)
  }

  /**
   * Whether the body was left alone: no reader took its stream and nothing
   * was read from it (what a garbage-collected `Response` must show before
   * its stream is cancelled for it).
   */
  get untouched(): boolean {
    return !this.stream.locked && this.#consumed() <= 0
  }

  /** Bytes the reader has taken so far. */
  get read(): number {
    return this.#consumed()
  }

  /** Whether bytes that arrived wait in the queue for the reader. */
  get waiting(): boolean {
    return this.#enqueued > this.#consumed()
  }

  /**
   * Gives the body up while a reader holds it: asks the peer to stop
   * sending (STOP_SENDING with `code`) and errors the stream with `err`,
   * dropping what waits in it, so the reader's reads reject with `err`.
   */
  abandon(err: unknown, code: number): void {
    if (this.#done) return
    this.#port.stopSending(code)
    this.fail(err)
  }

  push(chunk: Uint8Array): void {
    if (this.#done) return
    this.#enqueued += chunk.byteLength
    this.#controller.enqueue(chunk)
  }

  end(): void {
    if (this.#done) return
    this.#done = true
    this.#controller.close()
    this.#onDone?.()
  }

  fail(err: unknown): void {
    if (this.#done) return
    this.#done = true
    this.#controller.error(err)
    this.#onDone?.()
  }
}

/** The zero-length write that carries a body's FIN. */
const EMPTY = new Uint8Array(0)

/**
 * A wait for write credit that ended within this many milliseconds doubles a
 * body's write window (up to its maximum): QUIC took the whole window that
 * fast, so the stream drains at more than about 100 MB/s and JavaScript was
 * being woken for every few hundred KiB of it.
 */
export const WRITE_WINDOW_GROW_MS = 2
/** A wait for write credit longer than this halves the window (down to its minimum). */
export const WRITE_WINDOW_SHRINK_MS = 8

/**
 * The write window of a body after it waited `waitedMs` for credit with
 * `window` bytes outstanding. A fast drain grows it, so that a stream
 * QUIC empties quickly refills in fewer, larger turns (fewer wake-ups of the
 * JS thread per GiB); a slow one shrinks it back. A stream that drains
 * slowly never grows past `min`; one that was fast and then stalls holds at
 * most `max` until slow drains halve it back. Bytes held per stream thus
 * stay near what it drained in the last few milliseconds.
 */
export function nextWriteWindow(window: number, waitedMs: number, min: number, max: number): number {
  if (waitedMs < WRITE_WINDOW_GROW_MS) return Math.min(max, window * 2)
  if (waitedMs > WRITE_WINDOW_SHRINK_MS) return Math.max(min, Math.floor(window / 2))
  return window
}

export class OutgoingBody {
  #outstanding = 0
  #wake: (() => void) | null = null
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null
  #failed: unknown = undefined
  #window: number
  #min: number
  #max: number
  #now: () => number
  #port: StreamPort

  /**
   * `writeWindow`: the window a body starts with, and the least it shrinks
   * to; `maxWriteWindow`: the most it grows to (see {@link nextWriteWindow});
   * `now`: the clock, in milliseconds.
   */
  constructor(port: StreamPort, writeWindow: number, maxWriteWindow = writeWindow, now: () => number = () => performance.now()) {
    this.#port = port
    this.#window = writeWindow
    this.#min = writeWindow
    this.#max = Math.max(writeWindow, maxWriteWindow)
    this.#now = now
  }

  /** The current write window, in bytes. */
  get window(): number {
    return this.#window
  }

  /** Native side accepted `bytes` into QUIC. */
  sent(bytes: number): void {
    this.#outstanding -= bytes
    if (this.#outstanding < this.#window && this.#wake) {
      const w = this.#wake
      this.#wake = null
      w()
    }
  }

  /** The peer reset or stopped the stream: stop reading the source. */
  abort(reason: unknown): void {
    if (this.#failed !== undefined) return
    this.#failed = reason
    this.#reader?.cancel(reason).catch(() => {})
    const w = this.#wake
    this.#wake = null
    w?.()
  }

  get aborted(): boolean {
    return this.#failed !== undefined
  }

  /**
   * Sends `body` to the end; `trailers` (flat name/value list) follow it.
   * Resolves when everything was handed to the native side; rejects if the
   * source fails (the stream is then reset) or the peer aborted.
   */
  async pump(body: ReadableStream<Uint8Array>, trailers?: () => string[] | undefined): Promise<void> {
    const reader = body.getReader()
    this.#reader = reader
    try {
      for (;;) {
        if (this.#outstanding >= this.#window && this.#failed === undefined) {
          const waitFrom = this.#now()
          while (this.#outstanding >= this.#window && this.#failed === undefined) {
            await new Promise<void>((resolve) => {
              this.#wake = resolve
            })
          }
          this.#window = nextWriteWindow(this.#window, this.#now() - waitFrom, this.#min, this.#max)
        }
        if (this.#failed !== undefined) throw this.#failed
        const { value, done } = await reader.read()
        if (this.#failed !== undefined) throw this.#failed
        if (done) break
        const chunk = toBytes(value)
        if (chunk.byteLength === 0) continue
        this.#outstanding += chunk.byteLength
        this.#port.write(chunk, false)
      }
      const t = trailers?.()
      if (t && t.length > 0) this.#port.sendHeaders(t, true)
      else this.#port.write(EMPTY, true)
    } catch (err) {
      if (this.#failed === undefined) {
        // The source failed mid-body: the peer must not take a truncated
        // body for a complete one.
        this.#port.reset(H3Codes.INTERNAL_ERROR)
        this.#failed = err
        reader.cancel(err).catch(() => {})
      }
      throw err
    } finally {
      reader.releaseLock()
      // Done with the source: let it (and what it holds) go now, not when
      // the stream's last event arrives.
      this.#reader = null
    }
  }
}

/** A chunk as bytes: Uint8Array, other ArrayBuffer views, ArrayBuffer or string (UTF-8). */
export function toBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v
  if (typeof v === 'string') return Buffer.from(v)
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
  if (v instanceof ArrayBuffer) return new Uint8Array(v)
  throw new TypeError('chunks must be Uint8Array, ArrayBuffer, ArrayBuffer views or strings')
}

/** HTTP/1.1 connection-specific fields, which HTTP/3 forbids (RFC 9114 §4.2). */
const CONNECTION_FIELDS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'])

/**
 * Flattens `Headers` into `[name, value, ...]`, lowercase names, leaving out
 * the connection-specific fields HTTP/3 forbids (and the fields `connection`
 * names; `te` unless it is `trailers`): frameworks written for HTTP/1.1 set
 * them (Hono's `streamSSE` sets `transfer-encoding` and `connection`), and
 * a peer must treat a message carrying them as malformed.
 */
export function flattenHeaders(h: Headers, out: string[] = []): string[] {
  const start = out.length
  // One pass over the fields: `forEach` gives each set-cookie on its own
  // (the Fetch standard's "sort and combine" leaves them apart), and the
  // fields `connection` names are taken out afterwards.
  let named = null as string | null
  h.forEach((value, name) => {
    if (CONNECTION_FIELDS.has(name)) {
      if (name === 'connection') named = value
      return
    }
    if (name === 'te' && value.trim().toLowerCase() !== 'trailers') return
    out.push(name, value)
  })
  if (named !== null) {
    const drop = new Set(named.split(',').map((n) => n.trim().toLowerCase()))
    let w = start
    for (let r = start; r < out.length; r += 2) {
      if (drop.has(out[r])) continue
      out[w] = out[r]
      out[w + 1] = out[r + 1]
      w += 2
    }
    out.length = w
  }
  return out
}

/** Builds `Headers` from `[name, value, ...]`, leaving out pseudo-headers. */
export function toHeaders(fields: string[]): Headers {
  return appendFields(new Headers(), fields)
}

/**
 * Appends the fields of a header section (names and values joined with NUL,
 * as it crossed from the native side) to `h`, leaving out pseudo-headers;
 * returns `h`. Reads the section in place: no list of its pieces is made,
 * and the pseudo-headers are skipped without being cut out.
 */
export function appendSection(h: Headers, section: string): Headers {
  const n = section.length
  let i = 0
  while (i < n) {
    const nul = section.indexOf('\0', i)
    if (nul < 0) break
    let end = section.indexOf('\0', nul + 1)
    if (end < 0) end = n
    if (section.charCodeAt(i) !== 58 /* ':' */) h.append(section.slice(i, nul), section.slice(nul + 1, end))
    i = end + 1
  }
  return h
}

/** Appends `[name, value, ...]` to `h`, leaving out pseudo-headers; returns `h`. */
export function appendFields(h: Headers, fields: string[]): Headers {
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i].charCodeAt(0) !== 58 /* ':' */) h.append(fields[i], fields[i + 1])
  }
  return h
}
