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
  data?: Buffer
  headers?: string[]
  text?: string
  remoteAddress?: string
  remotePort?: number
  localAddress?: string
  localPort?: number
  alpn?: string
  resumed?: boolean
  serverName?: string | null
  maxDatagramSize?: number
}

/**
 * Takes the events the native side queued, unpacking its batch (five
 * numbers per event in one Float64Array; data, header sections, texts and
 * connection facts in arrays of their own, in event order). One N-API call
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
    const info = flags & 32 ? b.infos[f++] : undefined
    let headers: string[] | undefined
    if (flags & 8) {
      const joined = b.headers[h++]
      headers = joined === '' ? [] : joined.split('\0')
    }
    out[i] = {
      kind: m[j],
      conn: m[j + 1],
      stream: m[j + 2],
      code: m[j + 3],
      fin: (flags & 1) !== 0,
      early: (flags & 2) !== 0,
      data: flags & 4 ? b.data[d++] : undefined,
      headers,
      text: flags & 16 ? b.texts[x++] : undefined,
      remoteAddress: info?.remoteAddress,
      remotePort: info?.remotePort,
      localAddress: info?.localAddress,
      localPort: info?.localPort,
      alpn: info?.alpn,
      resumed: info?.resumed,
      serverName: info?.serverName,
      maxDatagramSize: info?.maxDatagramSize,
    }
  }
  return out
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
}

/** Binds the native commands to one stream; `stopSending` differs per side. */
export function streamPort(n: NativeStreams, conn: number, stream: number, stopSending: (code: number) => boolean): StreamPort {
  return {
    write: (data, fin) => n.write(conn, stream, data, fin),
    sendHeaders: (h, fin) => n.sendHeaders(conn, stream, h.join('\0'), fin),
    grant: (b) => n.grant(conn, stream, b),
    reset: (code) => n.reset(conn, stream, code),
    stopSending,
  }
}

/** The per-connection commands sessions (WebTransport, raw QUIC) need besides streams'. */
interface NativeSessions extends NativeStreams {
  openStream(conn: number, bidi: boolean, session: number): number
  sendDatagram(conn: number, stream: number, data: Uint8Array): boolean
  closeSession(conn: number, stream: number, code: number, reason: string): boolean
  closeConnection(conn: number, code: number, reason: string): boolean
  stopSending(conn: number, stream: number, code: number): boolean
  stats(conn: number): Promise<Binding.NativeStats | null>
}

/**
 * Binds the native commands to one session: WebTransport session `session`
 * on connection `conn`, or (`session` -1) the raw QUIC connection itself,
 * whose datagrams carry no flow id and whose close is CONNECTION_CLOSE.
 */
export function sessionPort(n: NativeSessions, conn: number, session: number): SessionPort {
  return {
    openStream: (bidi) => n.openStream(conn, bidi, session),
    sendDatagram: (d) => n.sendDatagram(conn, Math.max(session, 0), d),
    close: (code, reason) => (session < 0 ? n.closeConnection(conn, code, reason) : n.closeSession(conn, session, code, reason)),
    stream: (id) => streamPort(n, conn, id, (code) => n.stopSending(conn, id, code)),
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
