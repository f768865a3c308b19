// Helpers for the interop matrix (__test__/interop-matrix.test.mjs):
//   - ensureOha(): oha with its `http3` feature, installed from the crate
//     registry into $H3NODE_CACHE/tools/oha by `cargo install` when missing
//   - ensureGoInterop(): the quic-go client in clients/go-interop, built once
//   - runJson(): run a command, parse the JSON it prints
//   - readQlogs(): the server's qlog files (one per connection), parsed
//   - Results: the matrix cells, written to __test__/.results/interop*.json;
//     scripts/interop-report.js turns them into docs/interop.md
import { execFile } from 'node:child_process'
import { promises as fs } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import { cacheDir, CLIENTS_DIR, ensureAioquic, exists, once, runCommand, withLock } from './independent.mjs'

export { ensureAioquic, runCommand }

export const OHA_VERSION = '1.16.0'
const here = path.dirname(fileURLToPath(import.meta.url))
export const RESULTS_DIR = path.resolve(here, '..', '.results')
const GO_INTEROP_DIR = path.join(CLIENTS_DIR, 'go-interop')
const execFileP = promisify(execFile)

/** Like runCommand, plus `json`: stdout as one JSON document, else its last line that parses (or null). */
export async function runJson(cmd, args, opts) {
  const r = await runCommand(cmd, args, opts)
  let json = null
  try {
    json = JSON.parse(r.stdout) // one (possibly pretty-printed) document
  } catch {}
  for (const line of json ? [] : r.stdout.split('\n').reverse()) {
    const s = line.trim()
    if (!s) continue
    try {
      json = JSON.parse(s)
      break
    } catch {}
  }
  return { ...r, json }
}

/** Runs clients/aioquic_interop.py with `args` in the aioquic venv. */
export async function runAioquicInterop(args, opts) {
  const python = await ensureAioquic()
  return runJson(python, [path.join(CLIENTS_DIR, 'aioquic_interop.py'), ...args], { ...opts, env: { PYTHONUNBUFFERED: '1', ...opts?.env } })
}

/**
 * oha with HTTP/3 (`cargo install oha --locked --features http3`), installed
 * once into $H3NODE_CACHE/tools/oha. Resolves to the binary's path. Needs
 * cargo (the Rust toolchain the addon is built with) and the crate registry.
 */
export const ensureOha = once(async () => {
  const root = path.join(cacheDir(), 'tools', 'oha')
  const bin = path.join(root, 'bin', process.platform === 'win32' ? 'oha.exe' : 'oha')
  if (await exists(bin)) return bin
  await fs.mkdir(path.dirname(root), { recursive: true })
  // One install at a time across test processes. A cold build takes about
  // 25 minutes on 2 cores: the lock is stale only when its owner is gone.
  return withLock(`${root}.lock`, async () => ((await exists(bin)) ? bin : installOha(root, bin)), {
    staleMs: 120 * 60_000,
    waitMs: 120 * 60_000,
  })
})

async function installOha(root, bin) {
  await fs.mkdir(root, { recursive: true })
  const r = await runCommand(process.env.H3NODE_CARGO || 'cargo', [
    'install', 'oha', '--version', OHA_VERSION, '--locked', '--features', 'http3', '--root', root,
  ], { timeoutMs: 60 * 60_000 })
  if (r.code !== 0 || !(await exists(bin))) {
    throw new Error(`cargo install oha failed (${r.code}):\n${r.stderr.slice(-4000)}`)
  }
  return bin
}

/** `oha --version` output, e.g. "oha 1.16.0". */
export async function ohaVersion(bin) {
  const { stdout } = await execFileP(bin, ['--version'])
  return stdout.trim()
}

/** Builds (when missing or older than its sources) $H3NODE_CACHE/bin/go-interop. */
export const ensureGoInterop = once(() => setupGoInterop())

async function setupGoInterop() {
  const binDir = path.join(cacheDir(), 'bin')
  const bin = path.join(binDir, process.platform === 'win32' ? 'go-interop.exe' : 'go-interop')
  let newest = 0
  for (const f of ['main.go', 'go.mod', 'go.sum']) newest = Math.max(newest, (await fs.stat(path.join(GO_INTEROP_DIR, f))).mtimeMs)
  try {
    if ((await fs.stat(bin)).mtimeMs >= newest) return bin
  } catch {}
  await fs.mkdir(binDir, { recursive: true })
  const tmp = `${bin}.tmp-${process.pid}`
  try {
    const r = await runCommand(process.env.H3NODE_GO || 'go', ['build', '-trimpath', '-o', tmp, '.'], {
      cwd: GO_INTEROP_DIR,
      env: { CGO_ENABLED: '0' },
      timeoutMs: 10 * 60_000,
    })
    if (r.code !== 0) throw new Error(`go build (go-interop) failed:\n${r.stderr}`)
    await fs.rename(tmp, bin)
  } finally {
    await fs.rm(tmp, { force: true })
  }
  return bin
}

/** A fresh, empty directory under the OS temp dir, removed by t.teardown. */
export async function tempDir(t, prefix) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `h3node-${prefix}-`))
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }))
  return dir
}

/** Parses every qlog (JSON-SEQ) in `dir`: [{ file, events: [{ time, name, data }] }]. */
export async function readQlogs(dir) {
  const out = []
  for (const file of (await fs.readdir(dir)).sort()) {
    if (!/\.(sqlog|qlog)$/.test(file)) continue
    const events = []
    let start = ''
    const text = await fs.readFile(path.join(dir, file), 'utf8')
    for (const raw of text.split(/[\n\x1e]/)) {
      const s = raw.trim()
      if (!s) continue
      try {
        const e = JSON.parse(s)
        if (e && e.name) events.push(e)
        else start ||= e?.trace?.common_fields?.reference_time?.wall_clock_time ?? ''
      } catch {}
    }
    out.push({ file, start, events })
  }
  // oldest connection first
  return out.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
}

/**
 * What a server-side qlog (quiche via tokio-quiche) says about one connection:
 *  - odcid: original_destination_connection_id of the server's transport parameters
 *  - firstInitialDcid: DCID of the first Initial the connection processed
 *  - retryValidated: the two differ, i.e. the connection was created from an
 *    Initial sent to the Retry's SCID with the token that carried the ODCID
 *  - cipher: tls_cipher quiche logged with the peer's transport parameters
 *  - zeroRttPackets: 0-RTT packets the connection processed
 *  - keyUpdates: quic:key_updated events ("key_type:trigger")
 *  - handshakeCryptoSent: CRYPTO bytes the server sent in Handshake packets
 *    (a full handshake carries the Certificate there; a resumed one does not)
 */
export function qlogFacts(trace) {
  const facts = { file: trace.file, odcid: null, firstInitialDcid: null, cipher: null, zeroRttPackets: 0, initialTokens: [], handshakeCryptoSent: 0, start: trace.start, keyUpdates: [] }
  for (const e of trace.events) {
    const d = e.data ?? {}
    if (e.name.endsWith('parameters_set')) {
      if (d.initiator === 'local' || d.owner === 'local') facts.odcid ??= d.original_destination_connection_id ?? null
      if (d.tls_cipher) facts.cipher = d.tls_cipher
    }
    if (e.name.endsWith('key_updated')) facts.keyUpdates.push(`${d.key_type}:${d.trigger}`)
    if (e.name.endsWith('packet_sent') && d.header?.packet_type === 'handshake') {
      for (const f of d.frames ?? []) if (f.frame_type === 'crypto') facts.handshakeCryptoSent += f.raw?.payload_length ?? f.length ?? 0
    }
    if (e.name.endsWith('packet_received')) {
      const h = d.header ?? {}
      if (h.packet_type === 'initial') {
        facts.firstInitialDcid ??= h.dcid ?? null
        if (h.token) facts.initialTokens.push(h.token)
      }
      if (h.packet_type === '0RTT') facts.zeroRttPackets++
    }
  }
  facts.retryValidated = Boolean(facts.odcid && facts.firstInitialDcid && facts.odcid !== facts.firstInitialDcid)
  return facts
}

/**
 * The matrix cells of one run. `record()` keeps a cell; `write()` stores
 * them (merged with the cells of the file already there, so that a later
 * partial run does not erase the others) into __test__/.results/<name>.json.
 */
export class Results {
  constructor(name, meta = {}) {
    this.file = path.join(RESULTS_DIR, `${name}.json`)
    this.meta = meta
    this.cells = {}
    this.clients = {}
  }

  record(caseId, client, status, detail) {
    this.cells[`${caseId}|${client}`] = { case: caseId, client, status, detail: String(detail ?? ''), at: new Date().toISOString() }
  }

  client(name, info) {
    this.clients[name] = { ...this.clients[name], ...info }
  }

  async write() {
    await fs.mkdir(RESULTS_DIR, { recursive: true })
    let old = {}
    try {
      old = JSON.parse(await fs.readFile(this.file, 'utf8'))
    } catch {}
    const data = {
      ...old,
      ...this.meta,
      generatedAt: new Date().toISOString(),
      machine: { platform: `${os.platform()} ${os.release()}`, arch: os.arch(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', node: process.version },
      clients: { ...old.clients, ...this.clients },
      cells: { ...old.cells, ...this.cells },
    }
    const tmp = `${this.file}.tmp-${process.pid}`
    await fs.writeFile(tmp, `${JSON.stringify(data, null, 2)}\n`)
    await fs.rename(tmp, this.file)
    return data
  }
}
