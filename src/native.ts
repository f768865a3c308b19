/**
 * The native addon and the event kinds it reports (mirrors
 * `crate/src/bridge.rs`). Internal.
 *
 * @internal
 * @module
 */
import type * as Binding from '../binding'

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: typeof Binding = require('../binding.js')

export type NativeEvent = Binding.NativeEvent

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
  sendHeaders(conn: number, stream: number, headers: string[], fin: boolean): boolean
  grant(conn: number, stream: number, bytes: number): boolean
  reset(conn: number, stream: number, code: number): boolean
}

/** Binds the native commands to one stream; `stopSending` differs per side. */
export function streamPort(n: NativeStreams, conn: number, stream: number, stopSending: (code: number) => boolean): StreamPort {
  return {
    write: (data, fin) => n.write(conn, stream, data, fin),
    sendHeaders: (h, fin) => n.sendHeaders(conn, stream, h, fin),
    grant: (b) => n.grant(conn, stream, b),
    reset: (code) => n.reset(conn, stream, code),
    stopSending,
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
