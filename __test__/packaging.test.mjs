// Packaging: what `npm install h3node` gives a user.
//
// `npm pack` the package and this platform's binary package (npm/<platform> with the built
// h3node.<platform>.node copied in, in a temp copy), install both tarballs offline into an empty
// directory whose PATH holds only node plus decoy compilers that record any call, and serve one
// request there through `require('h3node')`. Nothing may compile, no lifecycle script of h3node
// may run, and the main tarball carries no binary and nothing platform-specific.
//
// `npm pack --ignore-scripts` packs the dist/ that is there (`npm test` builds it first):
// without it, "prepare" would run the TypeScript build, or even a native build when the binary
// is older than crate/.
import test from 'ava'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const { platformSuffix } = require('../platform.js')
const suffix = platformSuffix()
const binaryName = `h3node.${suffix}.node`
const IS_WINDOWS = process.platform === 'win32'

// Names the main tarball must not carry: platform suffixes (any platform, not only others:
// binaries live in the per-platform packages) and source or development trees.
const PLATFORM_RE = /(linux|darwin|win32|freebsd|android|openbsd|sunos|aix)-(x64|arm64|ia32|arm|riscv64|s390x|ppc64|loong64)/
const DEV_TREES = ['npm/', 'crate/', 'target/', 'src/', '__test__/', 'scripts/', 'benchmark/', 'examples/', 'docs/', '.github/', '.ci/', 'node_modules/']
// What a build would call. On POSIX, PATH during install holds these as decoys that log and fail.
const DECOYS = ['cargo', 'rustc', 'rustup', 'cc', 'c++', 'gcc', 'g++', 'clang', 'clang++', 'cmake', 'make', 'ninja', 'node-gyp', 'python', 'python3', 'zig']

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'h3node-packaging-'))
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }))

/** Runs a command to completion: { code, signal, out } (stdout + stderr); never rejects on exit status. */
function run(cmd, args, { cwd, env, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let stdout = ''
    child.stdout.on('data', (d) => { out += d; stdout += d })
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`${cmd}: ${e.message}`)) })
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, out, stdout }) })
  })
}

/** npm's CLI script, run with this process's node (so the matrix runs test each Node's own install path). */
function npmCli() {
  const candidates = []
  if (process.env.npm_execpath && /npm-cli\.c?js$/.test(process.env.npm_execpath)) candidates.push(process.env.npm_execpath)
  const bin = path.dirname(process.execPath)
  candidates.push(
    path.join(bin, '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'), // POSIX layout
    path.join(bin, 'node_modules', 'npm', 'bin', 'npm-cli.js'), // Windows layout
  )
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    for (const name of IS_WINDOWS ? [] : ['npm']) {
      try {
        const real = fs.realpathSync(path.join(dir, name))
        if (/npm-cli\.c?js$/.test(real)) candidates.push(real)
      } catch {
        // not there
      }
    }
  }
  const found = candidates.find((c) => fs.existsSync(c))
  if (!found) throw new Error(`cannot find npm-cli.js; tried:\n  ${candidates.join('\n  ')}`)
  return found
}

/** This environment without npm's lifecycle variables and build-related settings, with PATH = dirs. */
function cleanEnv(pathDirs, extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|path$|node_options$|napi_rs_|cargo|rustup|rustflags|cc$|cxx$|h3node_)/i.test(k)) continue
    env[k] = v
  }
  return { ...env, PATH: pathDirs.join(path.delimiter), ...extra }
}

/** `npm pack` of `dir` into `dest`; resolves to npm's JSON record of the tarball. */
async function pack(dir, dest) {
  fs.mkdirSync(dest, { recursive: true })
  const args = [npmCli(), 'pack', '--ignore-scripts', '--json', '--pack-destination', dest]
  const r = await run(process.execPath, args, { cwd: dir, env: cleanEnv([path.dirname(process.execPath)]) })
  if (r.code !== 0) throw new Error(`npm pack in ${dir} failed (${r.signal ?? r.code}):\n${r.out}`)
  const [info] = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')))
  info.path = path.join(dest, info.filename)
  return info
}

let mainPack
const packMain = () => (mainPack ??= pack(root, path.join(tmp, 'packs')))

/** A copy of npm/<platform> (or a minimal one if that directory is not committed) with the binary in it, packed. */
async function packPlatform() {
  const binary = path.join(root, binaryName)
  if (!fs.existsSync(binary)) throw new Error(`${binaryName} is not built (npm run build:native)`)
  const dir = path.join(tmp, `h3node-${suffix}`)
  const committed = path.join(root, 'npm', suffix)
  if (fs.existsSync(committed)) {
    fs.cpSync(committed, dir, { recursive: true })
  } else {
    // Only npm/linux-x64-gnu is committed; publish generates the others with `napi create-npm-dirs`.
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({
      name: `h3node-${suffix}`, version: pkg.version, main: binaryName, files: [binaryName],
      os: [process.platform], cpu: [process.arch], license: pkg.license,
    }, null, 2))
  }
  const platPkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  fs.copyFileSync(binary, path.join(dir, binaryName))
  return { info: await pack(dir, path.join(tmp, 'packs')), platPkg, committed: fs.existsSync(committed) }
}

test('the main tarball: no binary, nothing per platform, every entry point present', async (t) => {
  const info = await packMain()
  const files = info.files.map((f) => f.path)
  t.log(`${info.filename}: ${info.size} bytes packed, ${info.unpackedSize} unpacked, ${info.entryCount} files`)
  t.log(files.join(' '))

  t.deepEqual(files.filter((f) => f.endsWith('.node')), [], 'no .node binary')
  t.deepEqual(files.filter((f) => PLATFORM_RE.test(f)), [], 'no platform-specific files')
  t.deepEqual(files.filter((f) => DEV_TREES.some((d) => f.startsWith(d))), [], 'no source or development trees')
  t.true(info.size < 1_000_000, `the tarball is small (${info.size} bytes)`)

  // Everything package.json points at must be in the tarball.
  const targets = new Set([pkg.main, pkg.types].filter(Boolean))
  const walk = (v) => (typeof v === 'string' ? targets.add(v) : v && Object.values(v).forEach(walk))
  walk(pkg.exports)
  const norm = (p) => path.posix.normalize(p).replace(/^\.\//, '')
  const missing = [...targets].map(norm).filter((p) => !files.includes(p))
  t.deepEqual(missing, [], 'files named by main/types/exports but not in the tarball')
  for (const f of ['index.js', 'binding.js', 'platform.js', 'dist/index.js']) t.true(files.includes(f), f)
})

test('installed from the two tarballs with no compiler on PATH, require("h3node") serves a request', async (t) => {
  t.timeout(120_000)
  const started = Date.now()
  const [main, plat] = await Promise.all([packMain(), packPlatform()])
  t.log(`${plat.info.filename}: ${plat.info.size} bytes packed (${plat.committed ? `npm/${suffix}` : 'generated package.json'})`)
  t.deepEqual(plat.info.files.map((f) => f.path).sort(), [binaryName, 'package.json', ...(plat.committed && fs.existsSync(path.join(root, 'npm', suffix, 'README.md')) ? ['README.md'] : [])].sort())
  t.is(plat.platPkg.name, `h3node-${suffix}`)
  t.is(plat.platPkg.version, pkg.version, 'platform package version = h3node version')
  t.is(plat.platPkg.main, binaryName)
  t.false('scripts' in plat.platPkg, 'the platform package has no lifecycle scripts')

  // PATH: node (a link to this very binary) and decoys for every compiler a build would call.
  const bin = path.join(tmp, 'bin')
  const calls = path.join(tmp, 'compiler-calls.log')
  fs.mkdirSync(bin)
  let pathDirs
  if (IS_WINDOWS) {
    pathDirs = [path.dirname(process.execPath)] // setup-node's directory: node and npm, no compiler
  } else {
    fs.symlinkSync(process.execPath, path.join(bin, 'node'))
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh')) // npm runs lifecycle scripts with sh from PATH
    for (const name of DECOYS) {
      fs.writeFileSync(path.join(bin, name), `#!/bin/sh\necho "${name} $*" >> '${calls}'\nexit 127\n`, { mode: 0o755 })
    }
    pathDirs = [bin]
  }
  const home = path.join(tmp, 'home')
  fs.mkdirSync(home)
  fs.writeFileSync(path.join(tmp, 'npmrc'), '')
  const env = cleanEnv(pathDirs, {
    HOME: home,
    USERPROFILE: home,
    npm_config_cache: path.join(tmp, 'npm-cache'),
    npm_config_userconfig: path.join(tmp, 'npmrc'),
    npm_config_update_notifier: 'false',
  })

  const app = path.join(tmp, 'app')
  fs.mkdirSync(app)
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  const install = await run(
    process.execPath,
    [npmCli(), 'install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel=info', main.path, plat.info.path],
    { cwd: app, env, timeoutMs: 60_000 },
  )
  const installSecs = ((Date.now() - started) / 1000).toFixed(1)
  t.is(install.code, 0, `npm install failed:\n${install.out}`)
  if (install.code !== 0) return

  // Nothing compiled, no lifecycle script of ours ran.
  const compilerCalls = fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8').trim() : ''
  t.is(compilerCalls, '', 'a compiler was called during npm install')
  const scripts = install.out.match(/^(> h3node\S*@\S+ \S+|npm info run h3node).*$/gm) ?? []
  t.deepEqual(scripts, [], 'lifecycle scripts of h3node ran during install')
  t.notRegex(install.out, /build:native|cargo build|\[h3node (prepare|build)\]/)
  const installed = path.join(app, 'node_modules', 'h3node')
  const binaries = fs.readdirSync(installed).filter((f) => f.endsWith('.node'))
  t.deepEqual(binaries, [], 'no binary was built into node_modules/h3node')
  t.true(fs.existsSync(path.join(app, 'node_modules', `h3node-${suffix}`, binaryName)))
  for (const peer of Object.keys(pkg.peerDependencies ?? {})) {
    t.false(fs.existsSync(path.join(app, 'node_modules', peer)), `optional peer ${peer} was not installed`)
  }

  const check = path.join(app, 'check.cjs')
  fs.writeFileSync(check, CHECK_SCRIPT)
  const r = await run(process.execPath, [check], { cwd: app, env, timeoutMs: 30_000 })
  t.is(r.code, 0, `check script failed (${r.signal ?? r.code}):\n${r.out}`)
  if (r.code !== 0) return
  const result = JSON.parse(r.stdout.trim().split('\n').pop())
  t.is(result.status, 200)
  t.is(result.body, 'hello from /packaged over h3')
  t.is(result.main, fs.realpathSync(path.join(installed, 'index.js')))
  t.deepEqual(result.binaries, [fs.realpathSync(path.join(app, 'node_modules', `h3node-${suffix}`, binaryName))], 'the binary came from the platform package')
  t.log(`packed, installed (${installSecs}s) and served a request in ${((Date.now() - started) / 1000).toFixed(1)}s on Node ${process.version}`)
})

// Runs in the installed app directory: plain require, one request over HTTP/3 to itself.
const CHECK_SCRIPT = `'use strict'
const h3 = require('h3node')
;(async () => {
  const server = await h3.listen({ host: '127.0.0.1', port: 0 })
  const { port } = server.address()
  ;(async () => {
    for await (const req of server) {
      req.respond(new Response('hello from ' + new URL(req.request.url).pathname + ' over ' + req.connection.alpn))
    }
  })()
  const client = new h3.Client({ pinnedCertificates: [server.certificate.sha256] })
  const res = await client.fetch('https://127.0.0.1:' + port + '/packaged')
  const body = await res.text()
  await client.close()
  await server.close(1000)
  const real = (p) => require('node:fs').realpathSync(p)
  const binaries = Object.keys(require.cache).filter((k) => k.endsWith('.node')).map(real)
  console.log(JSON.stringify({ status: res.status, body, main: real(require.resolve('h3node')), binaries }))
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
`
