// Preload (`node -r`) for benchmark/tail.js. Records in the server process, on the wall clock
// (epoch milliseconds), so that they can be set beside the load generator's per-request times:
//   - event-loop stalls: a 1 ms interval timer that fires more than 4 ms late means the loop was
//     blocked from the previous firing until this one. For each stall: how long the JS thread
//     ran in it and how long it waited for a core while runnable (its /proc schedstat), how long
//     the native I/O thread (`h3node-io`) ran, and the CPU time of the whole process (the rest is
//     V8's helper threads and the tokio runtime's);
//   - GC pauses: perf_hooks 'gc' entries (kind 1 scavenge, 2 minor mark-sweep, 4 mark-compact,
//     8 incremental marking step, 16 weak callbacks);
//   - the arrival of the first request after SIGUSR2 (the server script calls
//     `globalThis.__h3nodeTailMark()` per request when this preload defined it), which aligns
//     the load generator's clock with this one.
// Writes them as JSON to $H3NODE_TAIL_FILE on SIGTERM. The timer costs about 1,000 wake-ups per
// second, so a run with this preload is a diagnosis, not a throughput figure.
'use strict'
const fs = require('node:fs')
const { PerformanceObserver, performance } = require('node:perf_hooks')

const file = process.env.H3NODE_TAIL_FILE
if (file) {
  const origin = performance.timeOrigin
  const stalls = []
  const gcs = []
  let armed = false
  let firstRequest = null
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push([origin + e.startTime, e.duration, e.detail?.kind ?? 0])
  }).observe({ entryTypes: ['gc'] })
  // schedstat: nanoseconds on a core, nanoseconds runnable but waiting for one, time slices.
  const sched = (statFile) => {
    const [run, wait] = fs.readFileSync(statFile, 'utf8').split(' ')
    return [Number(run) / 1e6, Number(wait) / 1e6]
  }
  let ioFile = null
  let ioLookup = 0
  const ioRun = () => {
    if (ioFile === null && ioLookup++ % 1000 === 0) {
      for (const t of fs.readdirSync('/proc/self/task')) {
        if (fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === 'h3node-io') ioFile = `/proc/self/task/${t}/schedstat`
      }
    }
    return ioFile === null ? 0 : sched(ioFile)[0]
  }
  const cpu = () => {
    const u = process.cpuUsage()
    return (u.user + u.system) / 1000
  }
  let last = performance.now()
  let lastSched = sched('/proc/thread-self/schedstat')
  let lastIo = ioRun()
  let lastCpu = cpu()
  setInterval(() => {
    const now = performance.now()
    const sc = sched('/proc/thread-self/schedstat')
    const io = ioRun()
    const c = cpu()
    // [start, length, JS thread running, JS thread waiting for a core, I/O thread running,
    // process CPU] in ms
    if (now - last > 5) stalls.push([origin + last, now - last, sc[0] - lastSched[0], sc[1] - lastSched[1], io - lastIo, c - lastCpu])
    last = now
    lastSched = sc
    lastIo = io
    lastCpu = c
  }, 1).unref()
  process.on('SIGUSR2', () => {
    armed = true
    firstRequest = null
    stalls.length = 0
    gcs.length = 0
  })
  globalThis.__h3nodeTailMark = () => {
    if (armed && firstRequest === null) firstRequest = origin + performance.now()
  }
  process.prependListener('SIGTERM', () => {
    fs.writeFileSync(file, JSON.stringify({ firstRequest, ioThreadFound: ioFile !== null, stalls, gcs }))
  })
}
