/**
 * Errors thrown or rejected by h3node. Every one is an {@link H3Error} with
 * a stable `code`; the message text is for humans and may change.
 *
 * @module
 */

const kH3Error = Symbol.for('h3node.H3Error')

/** Stable error codes. */
export type H3ErrorCode =
  | 'ERR_H3_INVALID_OPTION'
  | 'ERR_H3_INVALID_CERT'
  | 'ERR_H3_INVALID_KEY'
  | 'ERR_H3_CERT_KEY_MISMATCH'
  | 'ERR_H3_CERT_GENERATION'
  | 'ERR_H3_ADDRESS_IN_USE'
  | 'ERR_H3_LISTEN'
  | 'ERR_H3_RUNTIME'
  | 'ERR_H3_ALREADY_RESPONDED'
  | 'ERR_H3_INVALID_RESPONSE'
  | 'ERR_H3_STREAM_RESET'
  | 'ERR_H3_STOP_SENDING'
  | 'ERR_H3_CONNECTION_CLOSED'
  | 'ERR_H3_CONNECT'
  | 'ERR_H3_SERVER_CLOSED'
  | 'ERR_H3_CLIENT_CLOSED'
  | 'ERR_H3_GOAWAY'
  | 'ERR_H3_HANDLER'
  | 'ERR_H3_INVALID_ARGUMENT'
  | 'ERR_H3_DATAGRAMS_DISABLED'
  | 'ERR_H3_SESSION_CLOSED'
  | 'ERR_H3_WEBTRANSPORT_REFUSED'
  | 'ERR_H3_NOT_WEBTRANSPORT'
  | 'ERR_H3_CONNECT_REQUEST'
  | 'ERR_H3_BODY_TIMEOUT'
  | 'ERR_H3_SEND_TIMEOUT'
  | 'ERR_H3_RESPONSE_ABANDONED'
  | 'ERR_H3_BODY_ABANDONED'

/**
 * The error class of h3node. `instanceof H3Error` works across two copies of
 * the package (it checks a `Symbol.for` brand).
 */
export class H3Error extends Error {
  /** Stable machine-readable code. */
  readonly code: H3ErrorCode
  /** The HTTP/3 or QUIC application error code on the wire, when there is one. */
  readonly wireCode?: number

  constructor(code: H3ErrorCode, message: string, options?: { cause?: unknown; wireCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'H3Error'
    this.code = code
    if (options?.wireCode !== undefined) this.wireCode = options.wireCode
  }

  get [kH3Error](): true {
    return true
  }

  static [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[kH3Error] === true
  }
}

/** Turns a native "[CODE] message" error into an {@link H3Error}. */
export function fromNative(e: unknown): unknown {
  if (e instanceof Error) {
    const m = /^\[(ERR_H3_[A-Z_]+)\] (.*)$/s.exec(e.message)
    if (m) return new H3Error(m[1] as H3ErrorCode, m[2])
  }
  return e
}

/** HTTP/3 error codes (RFC 9114 §8.1) used by h3node on the wire. */
export const H3Codes = {
  NO_ERROR: 0x100,
  GENERAL_PROTOCOL_ERROR: 0x101,
  INTERNAL_ERROR: 0x102,
  REQUEST_REJECTED: 0x10b,
  REQUEST_CANCELLED: 0x10c,
  REQUEST_INCOMPLETE: 0x10d,
  MESSAGE_ERROR: 0x10e,
} as const
