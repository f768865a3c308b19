// Helpers to drive the server with independent HTTP/3 clients:
//   - aioquic (Python), __test__/clients/aioquic_client.py, in a private venv
//   - quic-go (Go),     __test__/clients/go-h3client, built once into the cache
//
// Everything is cached under $H3NODE_CACHE (default ~/.cache/h3node). The
// ensure* functions are idempotent, memoised per process and safe to call from
// several test processes at once (directory lock + atomic rename).
//
//   const { code, lines, summary, stderr } =
//     await runClient('aioquic', ['--url', url, '--insecure'], { timeoutMs: 30_000 })

import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const AIOQUIC_VERSION = '1.7.2'
export const QUIC_GO_VERSION = 'v0.65.0' // pinned in clients/go-h3client/go.mod

const here = path.dirname(fileURLToPath(import.meta.url))
export const CLIENTS_DIR = path.resolve(here, '..', 'clients')
const AIOQUIC_SCRIPT = path.join(CLIENTS_DIR, 'aioquic_client.py')
const GO_CLIENT_DIR = path.join(CLIENTS_DIR, 'go-h3client')

export function cacheDir() {
  return process.env.H3NODE_CACHE || path.join(os.homedir(), '.cache', 'h3node')
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export async function exists(p) {
  try {
    await fs.access(p)
    return true
  } catch {
    return false
  }
}

/** Run a command to completion; rejects with its output on failure. */
function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('error', (err) => reject(new Error(`${cmd}: ${err.message}`)))
    child.on('close', (code, signal) => {
      if (code === 0) resolve(out)
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? code}):\n${out}`))
    })
  })
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code === 'EPERM'
  }
}

/**
 * Cross-process mutual exclusion with an atomically created directory.
 * A lock whose owner died (same host) or that is older than staleMs is broken.
 */
export async function withLock(lockDir, fn, { staleMs = 15 * 60_000, waitMs = 20 * 60_000 } = {}) {
  const deadline = Date.now() + waitMs
  const owner = path.join(lockDir, 'owner')
  for (;;) {
    try {
      await fs.mkdir(lockDir)
      await fs.writeFile(owner, JSON.stringify({ pid: process.pid, host: os.hostname() }))
      break
    } catch (err) {
      if (err.code !== 'EEXIST') throw err
    }
    let stale = false
    try {
      const st = await fs.stat(lockDir)
      if (Date.now() - st.mtimeMs > staleMs) stale = true
      const info = JSON.parse(await fs.readFile(owner, 'utf8'))
      if (info.host === os.hostname() && !pidAlive(info.pid)) stale = true
    } catch {
      // owner file not written yet (or lock just vanished): just retry
    }
    if (stale) {
      await fs.rm(lockDir, { recursive: true, force: true })
      continue
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${lockDir}`)
    await sleep(200)
  }
  try {
    return await fn()
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true })
  }
}

/**
 * `setup` run once per process: every call shares its promise; a failure is
 * forgotten, so the next call tries again.
 */
export function once(setup) {
  let promise
  return () => {
    promise ??= setup().catch((err) => {
      promise = undefined
      throw err
    })
    return promise
  }
}

/**
 * Create (once) $H3NODE_CACHE/venv with aioquic pinned to AIOQUIC_VERSION.
 * Resolves to the venv's python executable.
 */
export const ensureAioquic = once(() => setupAioquic())

async function setupAioquic() {
  const root = cacheDir()
  const venv = path.join(root, 'venv')
  const python = process.platform === 'win32'
    ? path.join(venv, 'Scripts', 'python.exe')
    : path.join(venv, 'bin', 'python')
  const marker = path.join(venv, `.h3node-aioquic-${AIOQUIC_VERSION}`)
  if (await exists(marker)) return python

  await fs.mkdir(root, { recursive: true })
  return withLock(path.join(root, 'venv.lock'), async () => {
    if (await exists(marker)) return python // someone else finished it
    const basePython = process.env.H3NODE_PYTHON || 'python3'
    await fs.rm(venv, { recursive: true, force: true })
    try {
      await run(basePython, ['-m', 'venv', venv])
    } catch (err) {
      await fs.rm(venv, { recursive: true, force: true })
      throw new Error(
        `could not create a Python venv with "${basePython} -m venv" ` +
          `(on Debian/Ubuntu: apt-get install -y python3-venv):\n${err.message}`,
      )
    }
    await run(python, [
      '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
      `aioquic==${AIOQUIC_VERSION}`,
    ])
    await run(python, ['-c', 'import aioquic.h3.connection, aioquic.asyncio'])
    await fs.writeFile(marker, `${new Date().toISOString()}\n`)
    return python
  })
}

/**
 * Build (when missing or outdated) $H3NODE_CACHE/bin/go-h3client.
 * Resolves to the binary's path.
 */
export const ensureQuicGo = once(() => setupQuicGo())

async function newestSourceMtime() {
  let newest = 0
  for (const f of ['main.go', 'go.mod', 'go.sum']) {
    try {
      newest = Math.max(newest, (await fs.stat(path.join(GO_CLIENT_DIR, f))).mtimeMs)
    } catch (err) {
      if (f !== 'go.sum') throw err
    }
  }
  return newest
}

async function upToDate(bin) {
  try {
    return (await fs.stat(bin)).mtimeMs >= (await newestSourceMtime())
  } catch {
    return false
  }
}

async function setupQuicGo() {
  const binDir = path.join(cacheDir(), 'bin')
  const bin = path.join(binDir, process.platform === 'win32' ? 'go-h3client.exe' : 'go-h3client')
  if (await upToDate(bin)) return bin
  await fs.mkdir(binDir, { recursive: true })
  return withLock(path.join(binDir, 'go-h3client.lock'), async () => {
    if (await upToDate(bin)) return bin
    const tmp = `${bin}.tmp-${process.pid}`
    try {
      await run(process.env.H3NODE_GO || 'go', ['build', '-trimpath', '-o', tmp, '.'], {
        cwd: GO_CLIENT_DIR,
        env: { ...process.env, CGO_ENABLED: '0' },
      })
      await fs.rename(tmp, bin) // atomic: readers never see a partial binary
    } finally {
      await fs.rm(tmp, { force: true })
    }
    return bin
  })
}

/**
 * Run an independent client.
 * @param {'aioquic' | 'quic-go'} kind
 * @param {string[]} args CLI flags (see the client sources)
 * @param {{ timeoutMs?: number, env?: Record<string, string>, script?: string }} [options]
 *   `script`: another aioquic script in clients/ (e.g. 'aioquic_wt_client.py')
 * @returns {Promise<{ code: number | null, signal: string | null, timedOut: boolean,
 *   lines: object[], results: object[], summary: object | undefined,
 *   stdout: string, stderr: string }>}
 *   `lines` are all JSON objects printed (responses then the summary);
 *   `results` excludes the summary line.
 */
export async function runClient(kind, args, { timeoutMs = 60_000, env, script } = {}) {
  let cmd
  let argv
  if (kind === 'aioquic') {
    cmd = await ensureAioquic()
    argv = [script ? path.join(CLIENTS_DIR, script) : AIOQUIC_SCRIPT, ...args]
  } else if (kind === 'quic-go') {
    cmd = await ensureQuicGo()
    argv = [...args]
  } else {
    throw new Error(`unknown client kind ${kind}`)
  }
  const r = await runCommand(cmd, argv, { timeoutMs, env: { PYTHONUNBUFFERED: '1', ...env } })
  let stderr = r.stderr
  const lines = []
  for (const line of r.stdout.split('\n')) {
    const t = line.trim()
    if (!t) continue
    try {
      lines.push(JSON.parse(t))
    } catch {
      stderr += `[unparsed stdout] ${t}\n`
    }
  }
  const summary = lines.findLast((l) => l && l.summary === true)
  const results = lines.filter((l) => !(l && l.summary === true))
  return { code: r.code, signal: r.signal, timedOut: r.timedOut, lines, results, summary, stdout: r.stdout, stderr }
}

/**
 * Runs a command to its end (or kills it after `timeoutMs`) and collects its
 * output: `{ code, signal, stdout, stderr, timedOut }`. Rejects only if it
 * cannot be started.
 */
export function runCommand(cmd, args, { timeoutMs = 120_000, env, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, cwd })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, timedOut })
    })
  })
}

/** sha256 hex of the deterministic body the clients send/expect (byte i = i % 251). */
export function patternSha256(size) {
  const h = createHash('sha256')
  const block = Buffer.alloc(251 * 256)
  for (let i = 0; i < block.length; i++) block[i] = i % 251
  for (let off = 0; off < size; off += block.length) {
    h.update(block.subarray(0, Math.min(block.length, size - off)))
  }
  return h.digest('hex')
}

/** The deterministic body itself (byte i = i % 251), e.g. for a /bytes/N route. */
export function patternBytes(size, offset = 0) {
  const buf = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) buf[i] = (offset + i) % 251
  return buf
}
