// Process helpers for the benchmark: spawn pinned to a core, wait for a line, read CPU time
// and RSS from /proc, run a command to completion with its own CPU time.
'use strict'
const { spawn } = require('node:child_process')
const { readFileSync } = require('node:fs')
const dgram = require('node:dgram')

const TICK = 100 // USER_HZ on Linux

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** utime + stime of a live process, in microseconds (all threads). */
function cpuMicros(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1e6) / TICK
}

/**
 * Steal time of every core so far (/proc/stat), in ticks: the time a virtual machine's
 * hypervisor ran something else while the core had work. `stealShare` turns two readings
 * into a share of the wall time between them.
 */
function stealTicks() {
  const out = []
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)/.exec(line)
    if (m) out[Number(m[1])] = Number(m[2].trim().split(/\s+/)[7] ?? 0)
  }
  return out
}

/** Share (0..1) of `wallMs` that the hypervisor stole from `core` between two stealTicks() readings. */
function stealShare(before, after, core, wallMs) {
  if (core == null || !(wallMs > 0) || before[core] == null || after[core] == null) return null
  return ((after[core] - before[core]) * (1000 / TICK)) / wallMs
}

/** Resident set size of a live process, in bytes. */
function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

/** A UDP (and TCP) port that is free right now on 127.0.0.1. */
async function freePort() {
  const s = dgram.createSocket('udp4')
  await new Promise((r) => s.bind(0, '127.0.0.1', r))
  const { port } = s.address()
  await new Promise((r) => s.close(r))
  return port
}

/** Prefix a command with `taskset -c CORE` when pinning is on. */
function pinned(core, cmd, args) {
  if (core == null) return [cmd, args]
  return ['taskset', ['-c', String(core), cmd, ...args]]
}

/**
 * Starts a long-running process (a server) and resolves once a stdout line matches `ready`.
 * Resolves to { child, pid, match, stderr(), stop() }. Rejects on exit or timeout.
 */
function startProcess(cmd, args, { env, ready = /^listening (\d+)/, timeoutMs = 30_000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    let done = false
    const t = setTimeout(() => finish(new Error(`${cmd} did not get ready within ${timeoutMs} ms\n${err.slice(-2000)}`)), timeoutMs)
    function finish(e, m) {
      if (done) return
      done = true
      clearTimeout(t)
      if (e) {
        child.kill('SIGKILL')
        return reject(e)
      }
      resolve({
        child,
        pid: child.pid,
        match: m,
        stdout: () => out,
        stderr: () => err,
        stop: () => stopProcess(child),
      })
    }
    child.stdout.on('data', (d) => {
      out += d
      if (out.length > 1e6) out = out.slice(-1e5)
      if (!done) {
        for (const line of out.split('\n')) {
          const m = ready.exec(line)
          if (m) return finish(null, m)
        }
      }
    })
    child.stderr.on('data', (d) => {
      err += d
      if (err.length > 1e6) err = err.slice(-1e5)
    })
    child.on('error', (e) => finish(e))
    child.on('exit', (code, sig) => finish(new Error(`${cmd} exited (${sig ?? code}) before it was ready:\n${err.slice(-2000)}`)))
  })
}

async function stopProcess(child) {
  if (child.exitCode != null || child.signalCode != null) return
  const gone = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  const t = setTimeout(() => child.kill('SIGKILL'), 5000)
  await gone
  clearTimeout(t)
}

/**
 * Runs a command to completion (pinned with taskset when `core` is set) and resolves to
 * { code, stdout, stderr, cpuMicros, wallMs } where cpuMicros is the command's own
 * user+system time (read by a wrapping shell from its children's times).
 */
function runMeasured(cmd, args, { core, timeoutMs = 600_000, env, input } = {}) {
  // The wrapping bash waits for the command, then reads its own cutime/cstime.
  const script = '"$@"; rc=$?; read -r s < /proc/$$/stat; echo "@@STAT ${s##*) }" >&2; exit $rc'
  const [c, a] = pinned(core, 'bash', ['-c', script, 'bash', cmd, ...args])
  return new Promise((resolve) => {
    const t0 = performance.now()
    // A process group of its own: on timeout the whole group is killed. Killing
    // only the wrapping bash left the command holding the pipes open, so the
    // run never ended (seen with a stalled upload).
    const child = spawn(c, a, { env: { ...process.env, ...env }, stdio: [input == null ? 'ignore' : 'pipe', 'pipe', 'pipe'], detached: true })
    if (input != null) child.stdin.end(input)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const t = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {
        child.kill('SIGKILL')
      }
    }, timeoutMs)
    child.on('error', (e) => {
      clearTimeout(t)
      resolve({ code: -1, stdout, stderr: stderr + e.message, cpuMicros: NaN, wallMs: performance.now() - t0 })
    })
    child.on('close', (code, sig) => {
      clearTimeout(t)
      let cpu = NaN
      const m = /@@STAT (.*)/.exec(stderr)
      if (m) {
        const f = m[1].trim().split(' ') // fields from `state` on: cutime/cstime are #16/#17 -> idx 13/14
        cpu = ((Number(f[13]) + Number(f[14])) * 1e6) / TICK
        stderr = stderr.replace(/@@STAT .*\n?/, '')
      }
      resolve({ code: sig ? -1 : code, signal: sig, stdout, stderr, cpuMicros: cpu, wallMs: performance.now() - t0 })
    })
  })
}

module.exports = { sleep, cpuMicros, stealTicks, stealShare, rssBytes, freePort, pinned, startProcess, stopProcess, runMeasured }
