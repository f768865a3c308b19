/**
 * Raw QUIC for custom protocols: {@link listenQuic} and {@link connectQuic}.
 * No HTTP/3: the application protocol is chosen by ALPN, every stream
 * carries bytes as they come, and datagrams carry no flow id. Connections
 * are {@link QuicConnection}s, shaped like WebTransport sessions.
 *
 * @module
 */
import { isIP } from 'node:net'
import { lookup } from 'node:dns/promises'

import type { DevCertificate } from './cert'
import { H3Error, fromNative } from './errors'
import { native, Ev, commandQueue, dispatchAll, sessionPort, takeEvents, warnIfRuntimeDiffers, type NativeEvent } from './native'
import { resolveTransport, type TransportOptions } from './options'
import { Inbox } from './inbox'
import { addressOf, resolveEndpoint, type AddressInfo, type EndpointOptions } from './server'
import { QuicConnection, type SessionLimits } from './webtransport'

/** ALPN protocol ids: 1 to 255 bytes each, at least one. */
function checkAlpn(alpn: unknown): string[] {
  const list = typeof alpn === 'string' ? [alpn] : alpn
  if (!Array.isArray(list) || list.length === 0 || list.some((a) => typeof a !== 'string' || Buffer.byteLength(a) < 1 || Buffer.byteLength(a) > 255)) {
    throw new H3Error('ERR_H3_INVALID_OPTION', 'option alpn must be a protocol name or a non-empty array of them (1 to 255 bytes each)')
  }
  return list as string[]
}

/** Options of {@link listenQuic}. */
export interface QuicListenOptions extends TransportOptions, EndpointOptions {
  /** Application protocols (ALPN) accepted, in preference order. Required. */
  alpn: string | string[]
}

type Native = InstanceType<typeof native.NativeServer> | InstanceType<typeof native.NativeClient>

/** Routes native events to the connections of one endpoint. */
class Connections {
  readonly map = new Map<number, QuicConnection>()
  #limits: Omit<SessionLimits, 'maxDatagramSize'>
  #native: () => Native
  #isServer: boolean
  #onOpen: (c: QuicConnection) => void

  constructor(nativeOf: () => Native, limits: Omit<SessionLimits, 'maxDatagramSize'>, isServer: boolean, onOpen: (c: QuicConnection) => void) {
    this.#native = nativeOf
    this.#limits = limits
    this.#isServer = isServer
    this.#onOpen = onOpen
  }

  dispatch(e: NativeEvent): void {
    if (e.kind === Ev.ConnOpen) {
      const id = e.conn
      const c = new QuicConnection(sessionPort(this.#native(), id, -1), { ...this.#limits, maxDatagramSize: e.info?.maxDatagramSize ?? 0 }, this.#isServer, {
        id,
        alpn: e.info?.alpn ?? '',
        remoteAddress: e.info?.remoteAddress ?? '',
        remotePort: e.info?.remotePort ?? 0,
      })
      this.map.set(id, c)
      this.#onOpen(c)
      return
    }
    const c = this.map.get(e.conn)
    if (!c) return
    switch (e.kind) {
      case Ev.StreamOpen:
        c.onStreamOpen(e.stream)
        break
      case Ev.Data:
      case Ev.Reset:
      case Ev.StopSending:
      case Ev.Sent:
        c.onStreamEvent(e)
        break
      case Ev.Datagram:
        c.onDatagram(e.data!)
        break
      case Ev.ConnClose:
        this.map.delete(e.conn)
        c.onClosed(e.code, e.text ?? '', true)
        break
    }
  }
}

/**
 * A raw QUIC server. Iterate it with `for await` to receive connections.
 */
export class QuicServer implements AsyncIterable<QuicConnection>, AsyncDisposable {
  /** The generated development certificate, when no `cert` was given. */
  readonly certificate: DevCertificate | null
  #native: InstanceType<typeof native.NativeServer>
  #conns: Connections
  #inbox = new Inbox<QuicConnection>()
  #closing: Promise<void> | null = null
  #resolveClosed!: () => void
  #closed: Promise<void>
  #released = false

  /** @internal use {@link listenQuic} */
  constructor(options: QuicListenOptions) {
    const alpn = checkAlpn(options?.alpn)
    const transport = resolveTransport(options, { alpn, raw: true })
    const endpoint = resolveEndpoint(options)
    this.certificate = endpoint.certificate
    this.#closed = new Promise((r) => {
      this.#resolveClosed = r
    })
    this.#conns = new Connections(
      () => this.#native,
      { readWindow: transport.streamReadWindow, writeWindow: transport.streamWriteWindow, datagramQueue: transport.datagramQueueLength },
      true,
      (c) => this.#inbox.push(c),
    )
    try {
      this.#native = native.NativeServer.listen({ ...endpoint.native, transport }, () =>
        dispatchAll(takeEvents(this.#native), (e) => {
          if (e.kind === Ev.ServerClosed) this.#finish()
          else this.#conns.dispatch(e)
        }),
      )
    } catch (e) {
      throw fromNative(e)
    }
    warnIfRuntimeDiffers(transport)
  }

  /** The bound address. */
  address(): AddressInfo {
    return addressOf(this.#native)
  }

  /** Open connections. */
  get connections(): number {
    return this.#native.connectionCount()
  }

  /** Yields connections as their handshakes complete, until the server closes. */
  [Symbol.asyncIterator](): AsyncIterator<QuicConnection> {
    return {
      next: () => this.#inbox.next(),
      return: async () => {
        await this.close()
        return { value: undefined, done: true }
      },
    }
  }

  /**
   * Stops accepting and closes every connection after `graceMs`
   * milliseconds (default 0: at once) with CONNECTION_CLOSE code 0.
   * Resolves when the socket is closed.
   */
  close(graceMs = 0): Promise<void> {
    if (!this.#closing) {
      this.#closing = this.#closed
      commandQueue(this.#native).flush()
      this.#native.close(graceMs)
      this.#inbox.end()
    }
    return this.#closing
  }

  #finish(): void {
    if (this.#released) return
    this.#released = true
    for (const c of this.#conns.map.values()) c.onClosed(0, 'server closed', true)
    commandQueue(this.#native).flush()
    this.#native.release()
    this.#resolveClosed()
  }

  /** `await using server = await listenQuic(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/**
 * Starts a raw QUIC server for the protocols in `alpn`.
 *
 * @example
 * ```ts
 * import { listenQuic } from 'h3node'
 * const server = await listenQuic({ port: 4444, alpn: 'echo' })
 * for await (const conn of server) {
 *   ;(async () => {
 *     for await (const { readable, writable } of conn.incomingBidirectionalStreams) readable.pipeTo(writable)
 *   })()
 * }
 * ```
 */
export async function listenQuic(options: QuicListenOptions): Promise<QuicServer> {
  return new QuicServer(options)
}

/** Options of {@link connectQuic}. */
export interface QuicConnectOptions extends TransportOptions {
  /** Server host name or IP address. */
  host: string
  /** Server UDP port. */
  port: number
  /** Application protocols (ALPN) offered, in preference order. Required. */
  alpn: string | string[]
  /** SNI server name. Default: `host` when it is a name. */
  serverName?: string
  /** Trusted CA certificates (PEM) instead of the system store. */
  ca?: string | Buffer
  /** Accept servers whose leaf certificate has one of these SHA-256 hashes (hex). */
  pinnedCertificates?: string[]
  /** Accept any certificate. For tests only. Default `false`. */
  insecure?: boolean
}

/**
 * Opens a raw QUIC connection. Rejects with `ERR_H3_CONNECT` when the
 * handshake fails (including when the server speaks none of `alpn`).
 *
 * @example
 * ```ts
 * import { connectQuic } from 'h3node'
 * const conn = await connectQuic({ host: '127.0.0.1', port: 4444, alpn: 'echo', pinnedCertificates: [hash] })
 * const { readable, writable } = await conn.createBidirectionalStream()
 * ```
 */
export async function connectQuic(options: QuicConnectOptions): Promise<QuicConnection> {
  const alpn = checkAlpn(options?.alpn)
  const transport = resolveTransport(options, { alpn, raw: true })
  if (typeof options.host !== 'string' || options.host === '') throw new H3Error('ERR_H3_INVALID_OPTION', 'option host must be a host name or IP address')
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
    throw new H3Error('ERR_H3_INVALID_OPTION', `option port must be an integer from 1 to 65535, got ${String(options.port)}`)
  }
  const host = options.host.replace(/^\[|\]$/g, '')
  const ip = isIP(host) ? host : (await lookup(host)).address
  let client!: InstanceType<typeof native.NativeClient>
  let resolveOpen!: (c: QuicConnection) => void
  const opened = new Promise<QuicConnection>((r) => {
    resolveOpen = r
  })
  const conns = new Connections(
    () => client,
    { readWindow: transport.streamReadWindow, writeWindow: transport.streamWriteWindow, datagramQueue: transport.datagramQueueLength },
    false,
    (c) => {
      resolveOpen(c)
      // One native client per connection: released when the connection ends.
      c.closed.then(() => client.release())
    },
  )
  try {
    client = native.NativeClient.create(
      {
        ca: options.ca === undefined ? undefined : Buffer.from(options.ca),
        pinnedSha256: options.pinnedCertificates ?? [],
        insecure: options.insecure ?? false,
        // One connection per NativeClient here: nothing to resume later.
        resumeSessions: false,
        transport,
      },
      () => dispatchAll(takeEvents(client), (e) => conns.dispatch(e)),
    )
  } catch (e) {
    throw fromNative(e)
  }
  warnIfRuntimeDiffers(transport)
  try {
    await client.connect(ip, options.port, options.serverName ?? (isIP(host) ? undefined : host))
  } catch (e) {
    client.release()
    throw fromNative(e)
  }
  return opened
}
