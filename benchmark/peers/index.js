// The servers `npm run bench` runs side by side. Each entry says how to prepare (install or
// build) and start one, which protocol it speaks (which load generator drives it) and which
// figures apply. Every server answers the same routes with the same bodies:
//   /  -> "Hello, HTTP/3!"     /bytes/N -> N zero bytes     /sink -> length of the request body
'use strict'
const path = require('node:path')
const tools = require('../lib/tools')

const here = __dirname

/** @typedef {{ id: string, label: string, protocol: 'h3'|'h2', optional?: boolean, hostOf?: string,
 *   prepare: (ctx: {serverNode: () => Promise<string>}) => Promise<object>,
 *   command: (prep: object, o: {port: number, retry: boolean}) => [string, string[], object?],
 *   version: (prep: object) => string|null, noRetry?: boolean }} Peer */

// The h3node peers and Node's http2 run on ctx.serverNode(): the Node binary chosen with
// run.js --node (Node 24 by default), so that every Node-based server of a run, currentspace
// included, runs on the same Node. `hostOf` marks a copy of another peer on the Node running
// run.js itself, which run.js adds only when that Node is another binary.

const h3nodeVersion = (p) => `h3node ${require('../../package.json').version} on Node ${tools.version(p.node)}`

function h3nodeCommand(mode) {
  return (p, { port, retry, cert, key, idleMs }) => [p.node, [path.join(here, 'h3node-server.js'), '--mode', mode, '--port', String(port), '--cert', cert, '--key', key, '--idle-timeout-ms', String(idleMs), ...(retry ? ['--retry'] : [])]]
}

/** @type {Peer[]} */
const PEERS = [
  {
    id: 'h3node-for-await',
    label: 'h3node for await',
    protocol: 'h3',
    prepare: async (ctx) => ({ node: await ctx.serverNode() }),
    command: h3nodeCommand('for-await'),
    version: h3nodeVersion,
  },
  {
    id: 'h3node-for-await-host',
    label: `h3node for await (Node ${process.versions.node})`,
    protocol: 'h3',
    optional: true,
    hostOf: 'h3node-for-await',
    prepare: async () => ({ node: process.execPath }),
    command: h3nodeCommand('for-await'),
    version: h3nodeVersion,
  },
  {
    id: 'h3node-serve',
    label: 'h3node serve({fetch})',
    protocol: 'h3',
    prepare: async (ctx) => ({ node: await ctx.serverNode() }),
    command: h3nodeCommand('serve'),
    version: h3nodeVersion,
  },
  {
    id: 'node-http2',
    label: 'Node http2 (TLS)',
    protocol: 'h2',
    noRetry: true,
    prepare: async (ctx) => ({ node: await ctx.serverNode(), h2load: await tools.ensureH2load() }),
    command: (p, { port, cert, key }) => [p.node, [path.join(here, 'node-http2-server.js'), '--port', String(port), '--cert', cert, '--key', key]],
    version: (p) => `Node ${tools.version(p.node)} http2.createSecureServer`,
  },
  {
    id: 'tokio-quiche',
    label: 'plain tokio-quiche',
    protocol: 'h3',
    prepare: async () => ({ bin: await tools.ensureTokioQuiche() }),
    command: (p, { port, retry, cert, key, idleMs }) => [p.bin, ['--addr', `127.0.0.1:${port}`, '--cert', cert, '--key', key, '--threads', '1', '--idle-timeout-ms', String(idleMs), ...(retry ? ['--retry'] : [])]],
    version: () => 'tokio-quiche 0.20.1 (crates.io), ServerH3Driver, 1 worker thread',
  },
  {
    id: 'currentspace',
    label: '@currentspace/http3',
    protocol: 'h3',
    // Node 24 whatever --node says: @currentspace/http3 needs Node >= 24.
    prepare: async () => ({ node: await tools.ensureNode24(), dir: await tools.ensureCurrentspace() }),
    command: (p, { port, retry, cert, key, idleMs }) => [p.node, [path.join(here, 'currentspace-server.mjs'), '--port', String(port), '--cert', cert, '--key', key, '--idle-timeout-ms', String(idleMs), ...(retry ? ['--retry'] : [])], { CURRENTSPACE_DIR: p.dir }],
    version: (p) => `@currentspace/http3 ${tools.CURRENTSPACE_VERSION} on Node ${p?.node ? tools.version(p.node) : '24'}`,
  },
  {
    id: 'quic-go',
    label: 'quic-go http3',
    protocol: 'h3',
    optional: true,
    prepare: async () => ({ bin: await tools.ensureQuicGoServer() }),
    command: (p, { port, retry, cert, key, idleMs }) => [p.bin, ['-addr', `127.0.0.1:${port}`, '-cert', cert, '-key', key, '-idle-timeout-ms', String(idleMs), ...(retry ? ['-retry'] : [])], { GOMAXPROCS: '1' }],
    version: () => 'quic-go v0.65.0 http3.Server (Go module proxy), GOMAXPROCS=1',
  },
]

module.exports = { PEERS }
