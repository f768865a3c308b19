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
}

/** The operations a body needs on its stream, bound to one connection and stream. */
export interface StreamPort {
  write(data: Uint8Array, fin: boolean): boolean
  sendHeaders(headers: string[], fin: boolean): boolean
  grant(bytes: number): boolean
  reset(code: number): boolean
  stopSending(code: number): boolean
}
