// A userspace UDP proxy for fault injection (netem is not available here).
//
//   client ──► proxy.port ──► [up faults] ──► upstream socket ──► target
//   client ◄── proxy.port ◄── [down faults] ◄── upstream socket ◄── target
//
// Every client address (ip:port) seen on the listening socket gets its own
// upstream socket, the way a NAT gives each flow its own mapping, so several
// clients can share one proxy. Per direction the proxy can drop, corrupt,
// duplicate, delay and reorder datagrams, and black-hole everything for a
// while; `rebind()` moves every flow to a fresh upstream socket (a new source
// port, and optionally a new source address such as 127.0.0.2), which the
// target sees as a NAT rebinding or an address change.
//
//   const proxy = await udpProxy({
//     target: { host: '127.0.0.1', port },
//     seed: 42,
//     up:   { loss: 0.02, corrupt: 0.01, reorder: 0.1, reorderMs: [5, 20], delayMs: 0, jitterMs: 0 },
//     down: { loss: 0.02, duplicate: 0.01, batchMs: 0 },
//   })
//   proxy.port                        // where clients send (proxy.host, proxy.address)
//   proxy.set({ down: { loss: 0 } })  // change faults on the fly (merged; `set({ loss })` = both ways)
//   await proxy.blackhole(5000)       // drop everything both ways for 5 s (resolves when it ends)
//   await proxy.when('down', 1 << 20) // resolves right after 1 MiB has been forwarded down
//   await proxy.rebind()              // new source port upstream (NAT rebinding), old mapping gone
//   await proxy.rebind({ host: '127.0.0.2', keepOld: true }) // new address; old mapping still delivers
//   proxy.stats()                     // { up, down, flows, upstream, events[, trace] }, counters below
//   await proxy.close()
//
// The fault options per direction are DEFAULT_FAULTS below; the counters per
// direction are counters() below.
//
// Decisions come from a seeded PRNG, one stream per direction, and each
// datagram draws the same number of values whatever the settings are, so
// the n-th datagram of a direction meets the same fate in every run with the
// same seed (what is not reproducible is the interleaving with timers and
// the peers' own timing).
import dgram from 'node:dgram'
import { readFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'

/**
 * sfc32 seeded through splitmix32: small, fast, good enough for test faults.
 * Returns a function giving floats in [0, 1).
 */
export function prng(seed) {
  let s = (Number(seed) >>> 0) || 0x2545f491
  const split = () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split()
  let b = split()
  let c = split()
  let d = split()
  const next = () => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = ((c << 21) | (c >>> 11)) >>> 0
    c = (c + t) >>> 0
    return t
  }
  for (let i = 0; i < 12; i++) next()
  return () => next() / 4294967296
}

const DEFAULT_FAULTS = Object.freeze({
  /** Fraction of datagrams dropped. */
  loss: 0,
  /** Fraction of datagrams with bytes flipped. */
  corrupt: 0,
  /** [min, max] bytes flipped in a corrupted datagram. */
  corruptBytes: [1, 3],
  /** Fraction of datagrams sent twice. */
  duplicate: 0,
  /** Fraction of datagrams held back by reorderMs (so later ones overtake them). */
  reorder: 0,
  /** [min, max] ms a reordered datagram is held, on top of delayMs. */
  reorderMs: [5, 20],
  /** Delay added to every datagram, ms (order kept). */
  delayMs: 0,
  /** Uniform random extra delay in [0, jitterMs), ms (may reorder). */
  jitterMs: 0,
  /**
   * Bursty delivery: when > 0, datagrams (after the other faults) are held
   * and released together every batchMs, in order, back to back (like
   * interrupt coalescing or link-layer aggregation).
   */
  batchMs: 0,
})

function normalize(f, base = DEFAULT_FAULTS) {
  const out = { ...base, ...(f ?? {}) }
  for (const k of ['loss', 'corrupt', 'duplicate', 'reorder']) {
    const v = out[k]
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new RangeError(`${k} must be a fraction in [0, 1], got ${v}`)
  }
  for (const k of ['delayMs', 'jitterMs', 'batchMs']) {
    if (typeof out[k] !== 'number' || !(out[k] >= 0)) throw new RangeError(`${k} must be >= 0, got ${out[k]}`)
  }
  for (const k of ['reorderMs', 'corruptBytes']) {
    if (typeof out[k] === 'number') out[k] = [out[k], out[k]]
    const [lo, hi] = out[k]
    if (!(lo >= 0 && hi >= lo)) throw new RangeError(`${k} must be [min, max] with 0 <= min <= max`)
  }
  return out
}

function counters() {
  return {
    datagrams: 0, // received by the proxy in this direction
    bytes: 0,
    forwarded: 0, // sent on (duplicates included)
    forwardedBytes: 0,
    dropped: 0, // by `loss`
    blackholed: 0, // by a black-hole window
    corrupted: 0,
    corruptedBytes: 0,
    duplicated: 0,
    reordered: 0, // held back by `reorder`
    delayed: 0, // sent later than received (delayMs, jitterMs or reorder)
    batches: 0, // bursts released by batchMs
    unroutable: 0, // down: arrived on a mapping rebind() replaced, and lost
    viaRetired: 0, // down: arrived on a replaced mapping kept by rebind({ keepOld: true }), delivered
    sendErrors: 0,
  }
}

const SOCKET_BUFFER = 4 * 1024 * 1024 // capped by net.core.rmem_max / wmem_max

function bindSocket(type, host, port = 0) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, reuseAddr: false })
    const onError = (e) => reject(e)
    s.once('error', onError)
    s.bind(port, host, () => {
      s.off('error', onError)
      // Bursts (GSO trains of 64 KiB) must not overflow the kernel queue while
      // the event loop is busy: such drops would be loss nobody asked for.
      try {
        s.setRecvBufferSize(SOCKET_BUFFER)
        s.setSendBufferSize(SOCKET_BUFFER)
      } catch {}
      resolve(s)
    })
  })
}

/**
 * Datagrams the kernel dropped on the receive queues of the UDP sockets
 * bound to `ports` (Linux: the last column of /proc/net/udp{,6}); null elsewhere.
 * Matched on the port alone: another socket on the same port number at
 * another address would be counted too (unlikely on a test machine).
 */
function kernelDrops(ports) {
  let text
  try {
    text = readFileSync('/proc/net/udp', 'utf8') + readFileSync('/proc/net/udp6', 'utf8')
  } catch {
    return null
  }
  const want = new Set([...ports].map((p) => p.toString(16).toUpperCase().padStart(4, '0')))
  let drops = 0
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/)
    if (cols.length < 13) continue
    const port = cols[1].split(':').at(-1)
    if (want.has(port)) drops += Number(cols.at(-1)) || 0
  }
  return drops
}

/**
 * Starts a proxy.
 * @param {object} options
 * @param {{ host: string, port: number }} options.target where datagrams go
 * @param {string} [options.host] address to listen on (default: the target's loopback family)
 * @param {number} [options.port] port to listen on (default 0: any)
 * @param {string} [options.upstreamHost] source address of the upstream sockets (default: same as host)
 * @param {number} [options.seed] PRNG seed (default 1)
 * @param {object} [options.up] faults client → target (see DEFAULT_FAULTS)
 * @param {object} [options.down] faults target → client
 * @param {number} [options.keepRetiredMs] how long a socket replaced by rebind() keeps
 *   counting (and dropping) what still arrives on it (default 2000)
 * @param {number} [options.trace] keep a log of the last `trace` datagrams
 *   ({ at ms, dir, len, fate, via: upstream port }) in stats().trace, for debugging
 */
export async function udpProxy(options) {
  const { target } = options
  if (!target || !target.port) throw new TypeError('udpProxy: target { host, port } is required')
  const targetHost = target.host ?? '127.0.0.1'
  const type = isIPv6(targetHost) ? 'udp6' : 'udp4'
  const host = options.host ?? (type === 'udp6' ? '::1' : '127.0.0.1')
  let upstreamHost = options.upstreamHost ?? host
  const seed = options.seed ?? 1
  const keepRetiredMs = options.keepRetiredMs ?? 2000

  const dirs = {
    up: { faults: normalize(options.up), rng: prng(seed * 2 + 1), c: counters(), blackholeUntil: 0, held: [] },
    down: { faults: normalize(options.down), rng: prng(seed * 2 + 2), c: counters(), blackholeUntil: 0, held: [] },
  }
  const timers = new Set()
  // "ip:port" of the client -> { client: { address, port }, sock (null while
  // binding), queue (client datagrams waiting for sock), ports (upstream
  // addresses used, in order), keep (replaced sockets that still deliver) }
  const flows = new Map()
  const retired = new Set()
  const events = [] // { at, what, ... } for the report
  const started = performance.now()
  const now = () => Math.round(performance.now() - started)
  let closed = false
  let retiredDrops = 0
  const traceMax = options.trace ?? 0
  const trace = []
  const log = traceMax > 0
    ? (dir, len, fate, via) => {
        trace.push({ at: +(performance.now() - started).toFixed(1), dir, len, fate, via })
        if (trace.length > traceMax) trace.splice(0, trace.length - traceMax)
      }
    : null

  const listener = await bindSocket(type, host, options.port ?? 0)
  const listenPort = listener.address().port
  listener.on('error', () => {}) // ICMP errors on loopback etc.: the datagram is just lost

  function later(ms, fn) {
    const t = setTimeout(() => {
      timers.delete(t)
      fn()
    }, ms)
    timers.add(t)
  }

  /** Queues `fn` for the next burst of direction `d` (batchMs). */
  function hold(d, fn) {
    d.held.push(fn)
    if (d.held.length > 1) return
    later(d.faults.batchMs, () => {
      const burst = d.held
      d.held = []
      d.c.batches++
      for (const f of burst) f()
    })
  }

  /** Applies the faults of direction `d` to `msg`, then calls send(buf) zero, one or two times. */
  function pass(d, msg, send, via) {
    const { faults: f, rng, c } = d
    const dir = d === dirs.up ? 'up' : 'down'
    c.datagrams++
    c.bytes += msg.length
    // Fixed draws per datagram, whatever the settings: reproducible fates.
    const rLoss = rng()
    const rCorrupt = rng()
    const rDup = rng()
    const rReorder = rng()
    const rHold = rng()
    const rJitter = rng()
    const rFlip = rng()
    if (performance.now() < d.blackholeUntil) {
      c.blackholed++
      log?.(dir, msg.length, 'blackholed', via)
      return
    }
    if (rLoss < f.loss) {
      c.dropped++
      log?.(dir, msg.length, 'dropped', via)
      return
    }
    let buf = msg
    if (rCorrupt < f.corrupt && msg.length > 0) {
      buf = Buffer.from(msg)
      const [lo, hi] = f.corruptBytes
      const n = Math.min(buf.length, lo + Math.floor(rFlip * (hi - lo + 1)))
      // positions and masks from a PRNG seeded by this draw, so the main stream stays in step
      const r2 = prng(Math.floor(rFlip * 4294967296))
      for (let i = 0; i < n; i++) {
        const at = Math.floor(r2() * buf.length)
        buf[at] ^= 1 + Math.floor(r2() * 255) // never 0: the byte really changes
      }
      c.corrupted++
      c.corruptedBytes += n
    }
    let delay = f.delayMs + (f.jitterMs > 0 ? rJitter * f.jitterMs : 0)
    if (rReorder < f.reorder) {
      const [lo, hi] = f.reorderMs
      delay += lo + rHold * (hi - lo)
      c.reordered++
    }
    const copies = rDup < f.duplicate ? 2 : 1
    if (copies === 2) c.duplicated++
    log?.(dir, msg.length, buf !== msg ? 'corrupted' : delay > 0 ? `delayed ${delay.toFixed(1)}` : 'forwarded', via)
    const out = () => {
      for (let i = 0; i < copies; i++) {
        if (closed) return
        c.forwarded++
        c.forwardedBytes += buf.length
        send(buf)
      }
      if (waiters.length) checkWaiters()
    }
    const go = f.batchMs > 0 ? () => hold(d, out) : out
    if (delay > 0) {
      c.delayed++
      later(delay, go)
    } else {
      go()
    }
  }

  /** A new upstream socket for `flow`; what it receives from the target goes to the flow's client. */
  async function newUpstream(flow) {
    const sock = await bindSocket(type, upstreamHost)
    sock.on('error', () => {})
    const port = sock.address().port
    sock.on('message', (msg, rinfo) => {
      if (closed) return
      if (rinfo.port !== target.port) return // not from the target
      if (flow.sock !== sock) {
        // A mapping rebind() replaced: gone (lost), unless the rebind kept it.
        if (flow.keep.has(sock)) {
          dirs.down.c.viaRetired++
        } else {
          dirs.down.c.datagrams++
          dirs.down.c.bytes += msg.length
          dirs.down.c.unroutable++
          log?.('down', msg.length, 'unroutable', port)
          return
        }
      }
      pass(dirs.down, msg, (buf) =>
        listener.send(buf, flow.client.port, flow.client.address, (e) => e && dirs.down.c.sendErrors++), port)
    })
    return sock
  }

  /** Gives `flow` a new upstream socket; datagrams from the client wait in flow.queue meanwhile. */
  function attach(flow) {
    flow.sock = null
    flow.queue ??= []
    return newUpstream(flow).then((sock) => {
      if (closed) {
        sock.close()
        return null
      }
      flow.sock = sock
      flow.ports.push(`${upstreamHost}:${sock.address().port}`)
      const queued = flow.queue
      flow.queue = null
      for (const m of queued) pass(dirs.up, m, (buf) => sendUp(flow, buf), sock.address().port)
      return sock
    })
  }

  function sendUp(flow, buf) {
    flow.sock.send(buf, target.port, targetHost, (e) => e && dirs.up.c.sendErrors++)
  }

  listener.on('message', (msg, rinfo) => {
    if (closed) return
    const key = `${rinfo.address}:${rinfo.port}`
    let flow = flows.get(key)
    if (!flow) {
      flow = { client: { address: rinfo.address, port: rinfo.port }, sock: null, queue: [], ports: [], keep: new Set() }
      flows.set(key, flow)
      attach(flow).then(() => events.push({ at: now(), what: 'flow', client: key, upstream: flow.ports.at(-1) }), () => dirs.up.c.sendErrors++)
    }
    if (flow.queue) flow.queue.push(msg)
    else pass(dirs.up, msg, (buf) => sendUp(flow, buf), flow.sock.address().port)
  })

  // Resolvers of when(): [dir, bytes, resolve]
  const waiters = []
  function checkWaiters() {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const [dir, bytes, resolve] = waiters[i]
      if (dirs[dir].c.forwardedBytes >= bytes) {
        waiters.splice(i, 1)
        resolve(dirs[dir].c.forwardedBytes)
      }
    }
  }

  const proxy = {
    /** Port clients send to. */
    port: listenPort,
    /** Address clients send to. */
    host,
    /** `host:port` clients send to. */
    get address() {
      return type === 'udp6' ? `[${host}]:${listenPort}` : `${host}:${listenPort}`
    },

    /** Merges new faults into one or both directions: `set({ up: {...}, down: {...} })` or `set({ loss })` for both. */
    set(next) {
      const both = { ...next }
      delete both.up
      delete both.down
      for (const name of ['up', 'down']) {
        const d = dirs[name]
        d.faults = normalize({ ...both, ...(next[name] ?? {}) }, d.faults)
      }
      events.push({ at: now(), what: 'set', faults: next })
      return proxy
    },

    /** Current faults per direction. */
    get faults() {
      return { up: { ...dirs.up.faults }, down: { ...dirs.down.faults } }
    },

    /**
     * Drops every datagram in `direction` ('up', 'down' or 'both') for `ms`.
     * Resolves when the window ends.
     */
    blackhole(ms, direction = 'both') {
      const until = performance.now() + ms
      for (const name of direction === 'both' ? ['up', 'down'] : [direction]) dirs[name].blackholeUntil = until
      events.push({ at: now(), what: 'blackhole', ms, direction })
      return new Promise((resolve) => later(ms, () => {
        events.push({ at: now(), what: 'blackhole-end', direction })
        resolve()
      }))
    },

    /**
     * Moves every flow (or the flow of client `key`, "ip:port") to a new
     * upstream socket: the target sees the client's address change. With
     * `host`, the new sockets (and later flows) bind there, e.g. 127.0.0.2.
     *
     * The move happens when rebind() is called (synchronously): from then on
     * the client's datagrams wait for the new socket (well under 1 ms) and
     * leave from it. What the target still sends to the old socket is lost
     * and counted as `down.unroutable`, the way a NAT that dropped the old
     * mapping loses it; with `keepOld: true` the old mapping keeps
     * delivering to the client (counted as `down.viaRetired`) until it is
     * closed, keepRetiredMs later.
     * Resolves with [{ client, from, to }] once the new sockets are bound.
     */
    async rebind({ host: newHost, key, keepOld = false } = {}) {
      if (newHost) upstreamHost = newHost
      const pending = []
      for (const [k, flow] of flows) {
        if (key && k !== key) continue
        if (!flow.sock) continue
        const old = flow.sock
        const from = `${old.address().address}:${old.address().port}`
        retired.add(old)
        if (keepOld) flow.keep.add(old)
        later(keepRetiredMs, () => {
          retired.delete(old)
          flow.keep.delete(old)
          retiredDrops += kernelDrops([old.address().port]) ?? 0
          old.close()
        })
        pending.push(attach(flow).then(() => ({ client: k, from, to: flow.ports.at(-1) })))
      }
      const at = now()
      const moved = await Promise.all(pending)
      events.push({ at, what: 'rebind', keepOld, moved })
      return moved
    },

    /**
     * Resolves once `bytes` have been forwarded in direction `dir` ('up' or
     * 'down') in total, right after the datagram that crossed the mark was
     * sent on and before the proxy handles the next one: `await
     * proxy.when('down', n); proxy.rebind()` moves a flow in the middle of a
     * burst.
     */
    when(dir, bytes) {
      if (dirs[dir].c.forwardedBytes >= bytes) return Promise.resolve(dirs[dir].c.forwardedBytes)
      return new Promise((resolve) => waiters.push([dir, bytes, resolve]))
    },

    /** Counters per direction, plus flows, upstream addresses used and events. */
    stats() {
      const portOf = (sock) => {
        try {
          return sock.address().port
        } catch {
          return null // closed
        }
      }
      const upstreamPorts = [...retired, ...[...flows.values()].map((f) => f.sock).filter(Boolean)].map(portOf).filter(Boolean)
      const upDrops = closed ? null : kernelDrops([listenPort])
      const downDrops = kernelDrops(upstreamPorts)
      return {
        // kernelDrops: datagrams the kernel dropped on the proxy's own receive
        // queues (loss the proxy did not choose; should stay 0). null off Linux.
        up: { ...dirs.up.c, kernelDrops: upDrops },
        down: { ...dirs.down.c, kernelDrops: downDrops === null ? null : downDrops + retiredDrops },
        flows: flows.size,
        upstream: [...flows.values()].map((f) => f.ports.slice()),
        events: events.slice(),
        ...(log ? { trace: trace.slice() } : {}),
      }
    },

    /** Stops everything; pending delayed datagrams are discarded. */
    async close() {
      if (closed) return
      closed = true
      for (const t of timers) clearTimeout(t)
      timers.clear()
      const socks = [listener, ...retired, ...[...flows.values()].map((f) => f.sock).filter(Boolean)]
      retired.clear()
      await Promise.all(socks.map((s) => new Promise((r) => {
        try {
          s.close(r)
        } catch {
          r()
        }
      })))
    },
  }
  return proxy
}
