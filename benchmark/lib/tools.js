// Installs (once, into $H3NODE_CACHE, default ~/.cache/h3node) what the benchmark needs and
// the repository does not carry: oha with HTTP/3, h2load, Node 24, @currentspace/http3, the
// plain tokio-quiche server and the quic-go bench client. Each ensure* resolves to a path
// or throws an Error whose message says what is missing; the caller records it as a peer
// failure and goes on.
'use strict'
const { spawn, spawnSync, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { pathToFileURL } = require('node:url')

// The version the interop tests install (__test__/helpers/interop.mjs).
const OHA_VERSION = '1.16.0'
const NODE24_VERSION = '24.21.0'
const CURRENTSPACE_VERSION = '0.9.0'

const cache = process.env.H3NODE_CACHE || path.join(os.homedir(), '.cache', 'h3node')
const benchCache = path.join(cache, 'bench')
const here = path.resolve(__dirname, '..')

function log(msg) {
  console.error(`[bench] ${msg}`)
}

function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('error', (e) => reject(new Error(`${cmd}: ${e.message}`)))
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}):\n${out.slice(-3000)}`))))
  })
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

function version(cmd, args = ['--version']) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).trim().split('\n')[0]
  } catch (e) {
    return (e.stdout || e.stderr || '').toString().trim().split('\n')[0] || null
  }
}

/**
 * oha with --features http3 in $cache/tools/oha: the interop tests' installer
 * (one `cargo install`, under a lock shared with running tests).
 */
async function ensureOha() {
  const { ensureOha: install } = await import(pathToFileURL(path.join(__dirname, '..', '..', '__test__', 'helpers', 'interop.mjs')).href)
  return install()
}

/** h2load from Debian's nghttp2-client. */
async function ensureH2load() {
  let bin = which('h2load')
  if (bin) return bin
  if (!which('apt-get')) throw new Error('h2load is missing (install nghttp2-client)')
  log('installing h2load (apt-get install nghttp2-client) ...')
  await run('apt-get', ['update', '-qq']).catch(() => {})
  await run('apt-get', ['install', '-y', '-qq', 'nghttp2-client'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  bin = which('h2load')
  if (!bin) throw new Error('apt-get install nghttp2-client did not give h2load')
  return bin
}

/** Node 24 from the npm package `node`, as scripts/test-node-matrix.js installs it. */
async function ensureNode24() {
  const dir = path.join(cache, `node-${NODE24_VERSION}`)
  const find = () => {
    for (const base of [path.join(dir, 'node_modules', 'node', 'node_modules'), path.join(dir, 'node_modules')]) {
      let entries = []
      try {
        entries = fs.readdirSync(base)
      } catch {
        continue
      }
      for (const e of entries) {
        const bin = path.join(base, e, 'bin', 'node')
        if (e.startsWith(`node-${process.platform}-`) && fs.existsSync(bin)) return bin
      }
    }
    return null
  }
  let bin = find()
  if (bin) return bin
  log(`installing node@${NODE24_VERSION} from npm into ${dir} ...`)
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'h3node-node', private: true }))
  // The `node` package fetches its binary package from its install script.
  await run(npmCli()[0], [...npmCli()[1], 'install', '--no-audit', '--no-fund', '--foreground-scripts', '--allow-scripts=node', `node@${NODE24_VERSION}`], { cwd: dir }).catch(async (e) => {
    // npm versions without --allow-scripts: approve the script, then rebuild.
    await run(npmCli()[0], [...npmCli()[1], 'install', '--no-audit', '--no-fund', `node@${NODE24_VERSION}`], { cwd: dir }).catch(() => {})
    await run(npmCli()[0], [...npmCli()[1], 'install-scripts', 'approve', 'node'], { cwd: dir }).catch(() => {})
    await run(npmCli()[0], [...npmCli()[1], 'rebuild', 'node'], { cwd: dir }).catch(() => {})
    if (!find()) throw e
  })
  bin = find()
  if (!bin) throw new Error(`node@${NODE24_VERSION} installed into ${dir} but no binary was found`)
  return bin
}

/**
 * The `--node 24|current` option of run.js and the diagnosis scripts: throws, naming the
 * option, on any other value; returns the option for the binary lookup of {@link nodeFor}.
 */
function checkNodeOption(value) {
  if (value !== '24' && value !== 'current') throw new Error(`--node takes 24 or current, not ${value}`)
  return value
}

/** The Node binary `--node 24|current` names: the benchmark's Node 24, or the one running. */
async function nodeFor(option) {
  return checkNodeOption(option) === '24' ? ensureNode24() : process.execPath
}

function npmCli() {
  const execpath = process.env.npm_execpath
  if (execpath && /npm-cli\.c?js$/.test(execpath)) return [process.execPath, [execpath]]
  const p = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
  if (fs.existsSync(p)) return [process.execPath, [p]]
  return ['npm', []]
}

/** @currentspace/http3 in its own cache directory (never a dependency of h3node). */
async function ensureCurrentspace() {
  const dir = path.join(benchCache, 'currentspace')
  const pkg = path.join(dir, 'node_modules', '@currentspace', 'http3', 'package.json')
  const ok = () => {
    try {
      return JSON.parse(fs.readFileSync(pkg, 'utf8')).version === CURRENTSPACE_VERSION
    } catch {
      return false
    }
  }
  if (ok()) return dir
  log(`installing @currentspace/http3@${CURRENTSPACE_VERSION} into ${dir} ...`)
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'bench-currentspace', private: true }))
  await run(npmCli()[0], [...npmCli()[1], 'install', '--no-audit', '--no-fund', '--engine-strict=false', `@currentspace/http3@${CURRENTSPACE_VERSION}`], { cwd: dir })
  if (!ok()) throw new Error('@currentspace/http3 did not install')
  return dir
}

function newestMtime(dir) {
  let newest = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'target') continue
    const p = path.join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs)
  }
  return newest
}

/** The plain tokio-quiche server (benchmark/peers/tokio-quiche-server), built in release. */
async function ensureTokioQuiche() {
  const src = path.join(here, 'peers', 'tokio-quiche-server')
  const target = path.join(benchCache, 'target')
  const bin = path.join(target, 'release', 'bench-tokio-quiche-server')
  try {
    if (fs.statSync(bin).mtimeMs >= newestMtime(src)) return bin
  } catch {}
  if (!which('cargo')) throw new Error('cargo is not installed: cannot build the plain tokio-quiche server')
  log('building the plain tokio-quiche server (cargo build --release; BoringSSL takes a few minutes the first time) ...')
  await run('cargo', ['build', '--release', '--manifest-path', path.join(src, 'Cargo.toml')], { env: { ...process.env, CARGO_TARGET_DIR: target } })
  fs.utimesSync(bin, new Date(), new Date())
  return bin
}

/** Builds a Go program of the benchmark (quic-go from the Go module proxy) into the cache. */
async function ensureGo(srcRel, name) {
  const src = path.join(here, srcRel)
  const bin = path.join(benchCache, 'bin', name)
  try {
    if (fs.statSync(bin).mtimeMs >= newestMtime(src)) return bin
  } catch {}
  if (!which('go')) throw new Error(`go is not installed: cannot build ${srcRel}`)
  log(`building ${srcRel} (go build) ...`)
  fs.mkdirSync(path.dirname(bin), { recursive: true })
  const tmp = `${bin}.tmp-${process.pid}`
  await run('go', ['build', '-trimpath', '-o', tmp, '.'], { cwd: src, env: { ...process.env, CGO_ENABLED: '0' } })
  fs.renameSync(tmp, bin)
  return bin
}

/** The quic-go bench client (benchmark/clients/quic-bench). */
const ensureQuicBench = () => ensureGo(path.join('clients', 'quic-bench'), 'quic-bench')
/** The optional quic-go HTTP/3 server peer (benchmark/peers/quic-go-server). */
const ensureQuicGoServer = () => ensureGo(path.join('peers', 'quic-go-server'), 'quic-go-server')

/** A throwaway self-signed ECDSA P-256 certificate for 127.0.0.1, shared by every server. */
function makeCert(dir) {
  const cert = path.join(dir, 'cert.pem')
  const key = path.join(dir, 'key.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' })
  const der = execFileSync('openssl', ['x509', '-in', cert, '-outform', 'DER'])
  const sha256 = require('node:crypto').createHash('sha256').update(der).digest()
  return { cert, key, sha256 }
}

module.exports = {
  cache, benchCache, log, which, version, run,
  ensureOha, ensureH2load, ensureNode24, checkNodeOption, nodeFor, ensureCurrentspace, ensureTokioQuiche, ensureQuicBench, ensureQuicGoServer, makeCert,
  OHA_VERSION, NODE24_VERSION, CURRENTSPACE_VERSION,
}
