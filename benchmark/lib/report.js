// Turns the raw figures of a run into per-peer summaries, ratios, targets, a markdown
// report and an SVG chart of throughput against concurrency (no plotting dependency).
'use strict'

const SUBJECTS = ['h3node-for-await', 'h3node-serve']
const KiB = 1024

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

function median(values) {
  const v = values.filter((x) => num(x) != null).sort((a, b) => a - b)
  if (!v.length) return null
  const h = Math.floor(v.length / 2)
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2
}

/**
 * A value judged over rounds: the median, the spread and how many rounds meet `ok`
 * (each round's value, null where that round failed).
 */
function overRounds(values, ok) {
  const v = values.filter((x) => num(x) != null)
  if (!v.length) return null
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length, passing: ok ? v.filter(ok).length : null, values }
}

/** Per-round ratios of two servers' paired peak rounds (rounds where both have a figure). */
function pairedRatios(a, b, key) {
  const ra = a?.peak?.rounds || []
  const rb = b?.peak?.rounds || []
  const out = []
  for (let i = 0; i < Math.min(ra.length, rb.length); i++) {
    const x = num(ra[i]?.[key])
    const y = num(rb[i]?.[key])
    out.push(x != null && y ? x / y : null)
  }
  return out
}

/** A peer's small-request steps that have a figure. */
const measuredSteps = (p) => (p.small || []).filter((s) => !s.failed && s.reqPerSec > 0)

/** A peer's peak step: its small-request step (median round) with the highest req/s, or null. */
function peakStep(p) {
  const small = measuredSteps(p)
  return small.length ? small.reduce((a, b) => (b.reqPerSec > a.reqPerSec ? b : a)) : null
}

/**
 * Shares of a core the server and the load generator used during a bulk transfer (CPU time
 * over the transfer's wall time; the client's includes its handshake), or null.
 */
function bulkCpu(b) {
  if (!b?.seconds || b.serverCpuMicros == null || b.clientCpuMicros == null) return null
  return { server: b.serverCpuMicros / 1e6 / b.seconds, client: b.clientCpuMicros / 1e6 / b.seconds }
}

/**
 * A load generator at 95% of its core or more set the pace as much as the server did: the
 * figure is the pair's, and a faster client could have shown more.
 */
const CLIENT_BOUND = 0.95

function summarize(p) {
  const small = measuredSteps(p)
  const peak = peakStep(p)
  const byConcurrency = {}
  for (const s of small) if (!byConcurrency[s.streams] || s.reqPerSec > byConcurrency[s.streams].reqPerSec) byConcurrency[s.streams] = s
  return {
    peakReqPerSec: num(peak?.reqPerSec),
    peakLayout: peak ? `${peak.streams} streams / ${peak.connections} conn` : null,
    cpuMicrosPerRequestAtPeak: num(peak?.serverCpuMicrosPerRequest),
    clientCpuShareAtPeak: num(peak?.clientCpuShare),
    reqPerSecByStep: Object.fromEntries(small.map((s) => [`${s.streams}x${s.connections}`, s.reqPerSec])),
    bestReqPerSecByConcurrency: Object.fromEntries(Object.entries(byConcurrency).map(([k, s]) => [k, s.reqPerSec])),
    p50MsAtHalfLoad: num(p.latency?.p50Ms),
    p99MsAtHalfLoad: num(p.latency?.p99Ms),
    // The same at one step for every server (run.js settings.latencyStep).
    latencyStep: p.latencyCommon ? `${p.latencyCommon.streams}x${p.latencyCommon.connections}` : null,
    p50MsAtHalfLoadCommonStep: num(p.latencyCommon?.p50Ms),
    p99MsAtHalfLoadCommonStep: num(p.latencyCommon?.p99Ms),
    downloadGbps: num(p.bulk?.download?.gbps),
    uploadGbps: num(p.bulk?.upload?.gbps),
    // How busy each side of the median bulk round was (CPU time over the transfer's wall time).
    downloadCpu: bulkCpu(p.bulk?.download),
    uploadCpu: bulkCpu(p.bulk?.upload),
    connPerSecRetryOff: num(p.connections?.retryOff?.connPerSec),
    connPerSecRetryOn: num(p.connections?.retryOn?.connPerSec),
    idleBytesPerConnection: num(p.idle?.bytesPerConnection),
    // Paired peak rounds (run.js runPeak): the median round of the peak layout loaded again.
    pairedPeakReqPerSec: median((p.peak?.rounds || []).map((r) => r?.reqPerSec)),
    pairedPeakCpuMicrosPerRequest: median((p.peak?.rounds || []).map((r) => r?.serverCpuMicrosPerRequest)),
    stealAtHalfLoad: num(p.latency?.steal?.serverCore),
  }
}

// [key, label, higher is better]
const METRICS = [
  ['peakReqPerSec', 'small requests: peak req/s', true],
  ['cpuMicrosPerRequestAtPeak', 'server CPU µs/request at peak', false],
  ['p50MsAtHalfLoad', 'p50 latency at half peak (ms)', false],
  ['p99MsAtHalfLoad', 'p99 latency at half peak (ms)', false],
  ['p50MsAtHalfLoadCommonStep', 'p50 latency at half load, one step for all (ms)', false],
  ['p99MsAtHalfLoadCommonStep', 'p99 latency at half load, one step for all (ms)', false],
  ['downloadGbps', 'bulk download Gbit/s', true],
  ['uploadGbps', 'bulk upload Gbit/s', true],
  ['connPerSecRetryOff', 'new connections/s, Retry off', true],
  ['connPerSecRetryOn', 'new connections/s, Retry on', true],
  ['idleBytesPerConnection', 'bytes per idle connection', false],
]

function derive(results) {
  const summary = Object.fromEntries(Object.entries(results.peers).map(([id, p]) => [id, summarize(p)]))
  const ratios = {}
  for (const s of SUBJECTS) {
    if (!summary[s]) continue
    ratios[s] = {}
    for (const [id, o] of Object.entries(summary)) {
      if (id === s) continue
      const r = {}
      for (const [k] of METRICS) r[k] = summary[s][k] != null && o[k] ? summary[s][k] / o[k] : null
      // Paired peak rounds: the ratio of each round, then their median and spread.
      const paired = pairedRatios(results.peers[s], results.peers[id], 'reqPerSec')
      r.pairedPeakReqPerSec = overRounds(paired)
      r.reqPerSecByStep = {}
      for (const [step, v] of Object.entries(summary[s].reqPerSecByStep)) {
        if (o.reqPerSecByStep[step]) r.reqPerSecByStep[step] = v / o.reqPerSecByStep[step]
      }
      ratios[s][id] = r
    }
  }
  const targets = []
  const add = (subject, name, measured, ok, unit, rounds, note) => targets.push({ subject, target: name, measured, unit, pass: measured == null ? null : ok(measured), ...(rounds ? { rounds } : {}), ...(note ? { note } : {}) })
  // Says which bulk transfers of a figure had their load generator at CLIENT_BOUND or more.
  const clientBound = (dir, ids) => {
    const busy = ids.filter((id) => summary[id]?.[`${dir}Cpu`]?.client >= CLIENT_BOUND)
    if (!busy.length) return undefined
    const share = (id) => `${Math.round(summary[id][`${dir}Cpu`].client * 100)}%`
    if (ids.length === 1) return `load generator at ${share(busy[0])} of its core: client-bound`
    return `load generator at ${busy.map((id, i) => `${share(id)}${i === 0 ? ' of its core' : ''} with ${results.peers[id].label}`).join(', ')}: client-bound`
  }
  // A small-request ratio is judged on the paired peak rounds when the run has them (the
  // median of per-round ratios, with how many rounds pass), else on the ratio of the peaks.
  const smallRatio = (s, id, min, name) => {
    const ok = (v) => v >= min
    const paired = ratios[s][id]?.pairedPeakReqPerSec
    if (paired) add(s, name, paired.median, ok, 'x', overRounds(paired.values, ok))
    else add(s, name, ratios[s][id]?.peakReqPerSec ?? null, ok, 'x')
  }
  for (const s of SUBJECTS) {
    if (!summary[s]) continue
    const m = summary[s]
    const rr = ratios[s]
    smallRatio(s, 'node-http2', 1.0, 'small requests >= 1.0x Node HTTP/2 over TLS (peak req/s)')
    smallRatio(s, 'tokio-quiche', 0.8, 'small requests >= 0.8x plain tokio-quiche (peak req/s)')
    smallRatio(s, 'currentspace', 1.3, 'small requests >= 1.3x @currentspace/http3 (peak req/s)')
    const cpuOk = (v) => v <= 30
    const cpuRounds = results.peers[s].peak ? overRounds(results.peers[s].peak.rounds.map((r) => r?.serverCpuMicrosPerRequest ?? null), cpuOk) : null
    if (cpuRounds) add(s, 'server CPU <= 30 µs/request at peak (handler included)', cpuRounds.median, cpuOk, 'µs', cpuRounds)
    else add(s, 'server CPU <= 30 µs/request at peak (handler included)', m.cpuMicrosPerRequestAtPeak, cpuOk, 'µs')
    add(s, 'bulk download >= 3 Gbit/s on one connection', m.downloadGbps, (v) => v >= 3, 'Gbit/s', null, clientBound('download', [s]))
    add(s, 'bulk upload >= 3 Gbit/s on one connection', m.uploadGbps, (v) => v >= 3, 'Gbit/s', null, clientBound('upload', [s]))
    add(s, 'bulk download >= 0.9x plain tokio-quiche', rr['tokio-quiche']?.downloadGbps ?? null, (v) => v >= 0.9, 'x', null, clientBound('download', [s, 'tokio-quiche']))
    add(s, 'bulk upload >= 0.9x plain tokio-quiche', rr['tokio-quiche']?.uploadGbps ?? null, (v) => v >= 0.9, 'x', null, clientBound('upload', [s, 'tokio-quiche']))
    add(s, '<= 64 KiB per idle connection', m.idleBytesPerConnection == null ? null : m.idleBytesPerConnection / KiB, (v) => v <= 64, 'KiB')
    add(s, 'p99 at half load <= 2 ms', m.p99MsAtHalfLoad, (v) => v <= 2, 'ms')
    if (m.latencyStep) add(s, `p99 at half load <= 2 ms, on ${m.latencyStep} (one step for all)`, m.p99MsAtHalfLoadCommonStep, (v) => v <= 2, 'ms')
  }
  return { summary, ratios, targets }
}

const fmt = (v, d = 2) => (v == null ? '—' : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(d))
const fmtX = (v) => (v == null ? '—' : `${v.toFixed(2)}x`)

function markdown(results) {
  const { environment: env, settings, summary, ratios, targets, peers } = results
  const ids = Object.keys(peers)
  const L = []
  L.push(`# h3node benchmark (${settings.mode} run)`, '')
  // The servers' Node (--node) can differ from the Node running run.js: name both.
  const serverNode = env.versions.serverNode?.version ?? env.versions.node
  L.push(`${results.date} · ${env.cpuModel} · ${env.cores} cores · loopback MTU ${env.loopbackMtu} · Node servers on ${serverNode}${serverNode === env.versions.node ? '' : ` (run.js on ${env.versions.node})`} · ${env.versions.oha ?? 'no oha'} · ${env.versions.h2load ?? 'no h2load'}`, '')
  L.push(`Server pinned to core ${env.pinning?.serverCore ?? '—'}, load generator to core ${env.pinning?.loadGeneratorCore ?? '—'}. Load average at start ${env.loadAverageAtStart.map((v) => v.toFixed(2)).join(' ')}${env.loadAverageAtStart[0] > 0.5 ? ' (the machine was busy: figures are noisy)' : ''}. ${settings.seconds} s per step${settings.stepWarmupSeconds ? ` (small requests and half load: each after ${settings.stepWarmupSeconds} s of the same load, not measured)` : ''}; ${(settings.rounds ?? 1) > 1 ? `small requests, half-load latency, bulk and connection rates were measured in ${settings.rounds} interleaved rounds and each figure is the median round (the spread of the small-request rounds is in brackets)` : 'one round'}; every figure below was taken at loopback MTU ${env.loopbackMtu}.${settings.spin ? ' A SCHED_IDLE busy loop ran on each pinned core (`--spin`), so that neither core halted.' : ''}${env.stealDuringRun?.serverCore == null ? '' : ` The hypervisor stole ${(env.stealDuringRun.serverCore * 100).toFixed(1)}% of the server core's and ${(env.stealDuringRun.loadCore * 100).toFixed(1)}% of the load generator core's time during the run (steal time, /proc/stat).`} Command: \`${results.command}\`.`, '')

  L.push('## Targets', '')
  L.push('| target | h3node for await | h3node serve({fetch}) |', '|---|---|---|')
  const byTarget = new Map()
  for (const t of targets) {
    if (!byTarget.has(t.target)) byTarget.set(t.target, {})
    byTarget.get(t.target)[t.subject] = t
  }
  const show = (v, unit) => (unit === 'x' ? fmtX(v) : `${fmt(v)} ${unit}`)
  const cell = (t) => {
    if (!t || t.measured == null) return 'not measured'
    const r = t.rounds ? ` (${t.rounds.passing}/${t.rounds.n} rounds pass; ${show(t.rounds.min, t.unit)}–${show(t.rounds.max, t.unit)})` : ''
    return `${show(t.measured, t.unit)} ${t.pass ? '**pass**' : '**miss**'}${r}${t.note ? ` (${t.note})` : ''}`
  }
  for (const [name, v] of byTarget) L.push(`| ${name} | ${cell(v['h3node-for-await'])} | ${cell(v['h3node-serve'])} |`)
  L.push('')
  if (ids.some((id) => peers[id].peak)) {
    L.push('Small-request targets are judged on the paired peak rounds below: the median of the per-round ratios (or of the rounds\' CPU per request), with how many rounds pass and their spread.', '')
  }

  const withPeak = ids.filter((id) => peers[id].peak)
  if (withPeak.length) {
    const n = Math.max(...withPeak.map((id) => peers[id].peak.rounds.length))
    const rounds = [...Array(n).keys()]
    L.push('## Paired peak rounds', '')
    L.push(`Each server's peak layout (from the rounds above) loaded ${n} more time${n === 1 ? '' : 's'}, every server in turn in each round. A ratio is taken within a round, then the median over rounds. Steal is the share of the round's wall time the hypervisor took from the server core.`, '')
    L.push(`| server (peak layout) | ${rounds.map((i) => `round ${i + 1}`).join(' | ')} | median |`, `|---|${rounds.map(() => '---').join('|')}|---|`)
    for (const id of withPeak) {
      const pk = peers[id].peak
      const c = rounds.map((i) => {
        const r = pk.rounds[i]
        return r ? `${fmt(r.reqPerSec, 0)} · ${fmt(r.serverCpuMicrosPerRequest, 1)} µs · steal ${r.steal?.serverCore == null ? '—' : `${(r.steal.serverCore * 100).toFixed(0)}%`}` : 'failed'
      })
      L.push(`| ${peers[id].label} (${pk.streams}x${pk.connections}) | ${c.join(' | ')} | ${fmt(summary[id].pairedPeakReqPerSec, 0)} · ${fmt(summary[id].pairedPeakCpuMicrosPerRequest, 1)} µs |`)
    }
    for (const sj of SUBJECTS) {
      if (!peers[sj]?.peak) continue
      for (const id of withPeak) {
        if (id === sj || (sj === 'h3node-serve' && id.startsWith('h3node-for-await'))) continue
        const pr = ratios[sj]?.[id]?.pairedPeakReqPerSec
        if (!pr) continue
        L.push(`| ${sj === 'h3node-serve' ? 'serve' : 'for await'} / ${peers[id].label} | ${rounds.map((i) => fmtX(pr.values[i] ?? null)).join(' | ')} | ${fmtX(pr.median)} |`)
      }
    }
    L.push('')
  }

  L.push('## Ratios (h3node / peer, same run)', '')
  L.push('Above 1 is better for h3node on throughput rows, below 1 is better on CPU, latency and memory rows.', '')
  // serve vs for await is the inverse of a for-await column; serve vs the for-await server on
  // the host Node (h3node-for-await-host) would mix two changes at once. Both stay in the JSON.
  const cols = []
  for (const s of SUBJECTS) for (const id of ids) if (ratios[s]?.[id] && !(s === 'h3node-serve' && id.startsWith('h3node-for-await'))) cols.push([s, id])
  L.push(`| figure | ${cols.map(([s, id]) => `${s === 'h3node-serve' ? 'serve' : 'for await'} vs ${peers[id].label}`).join(' | ')} |`, `|---|${cols.map(() => '---').join('|')}|`)
  for (const [k, label] of METRICS) L.push(`| ${label} | ${cols.map(([s, id]) => fmtX(ratios[s][id][k])).join(' | ')} |`)
  for (const [streams, conns] of settings.steps) {
    const step = `${streams}x${conns}`
    L.push(`| req/s, ${streams} streams over ${conns} conn | ${cols.map(([s, id]) => fmtX(ratios[s][id].reqPerSecByStep[step])).join(' | ')} |`)
  }
  L.push('')

  L.push('## Small requests (req/s; server CPU µs/request; load-generator CPU share)', '')
  L.push(`| streams x conn | ${ids.map((id) => peers[id].label).join(' | ')} |`, `|---|${ids.map(() => '---').join('|')}|`)
  for (const [streams, conns] of settings.steps) {
    L.push(`| ${streams} x ${conns} | ${ids.map((id) => {
      const s = (peers[id].small || []).find((x) => x.streams === streams && x.connections === conns)
      if (!s) return '—'
      if (s.failed) return 'failed'
      const spread = s.rounds?.length > 1 ? ` (${fmt(Math.min(...s.rounds), 0)}–${fmt(Math.max(...s.rounds), 0)})` : ''
      return `${fmt(s.reqPerSec, 0)}${spread} · ${fmt(s.serverCpuMicrosPerRequest, 1)} µs · ${(s.clientCpuShare * 100).toFixed(0)}%${s.errors ? ` · ${s.errors} err` : ''}`
    }).join(' | ')} |`)
  }
  L.push('')
  L.push('## Other figures', '')
  L.push(`| figure | ${ids.map((id) => peers[id].label).join(' | ')} |`, `|---|${ids.map(() => '---').join('|')}|`)
  for (const [k, label] of METRICS) L.push(`| ${label} | ${ids.map((id) => (k === 'idleBytesPerConnection' ? (summary[id][k] == null ? '—' : `${fmt(summary[id][k] / KiB, 1)} KiB`) : fmt(summary[id][k]))).join(' | ')} |`)
  const cpuPair = (c) => (c ? `${Math.round(c.server * 100)}% / ${Math.round(c.client * 100)}%` : '—')
  L.push(`| bulk download: server / load-generator CPU, share of a core | ${ids.map((id) => cpuPair(summary[id].downloadCpu)).join(' | ')} |`)
  L.push(`| bulk upload: server / load-generator CPU, share of a core | ${ids.map((id) => cpuPair(summary[id].uploadCpu)).join(' | ')} |`)
  L.push(`| idle connections opened | ${ids.map((id) => (peers[id].idle ? `${peers[id].idle.opened}/${peers[id].idle.requested}` : '—')).join(' | ')} |`)
  L.push(`| server CPU µs per new connection (Retry off) | ${ids.map((id) => fmt(peers[id].connections?.retryOff?.serverCpuMicrosPerConnection ?? null, 0)).join(' | ')} |`)
  L.push(`| peak layout | ${ids.map((id) => summary[id].peakLayout ?? '—').join(' | ')} |`)
  const halfLoad = (l) => (l ? `${fmt(l.targetRate, 0)} req/s on ${l.streams}x${l.connections}` : '—')
  L.push(`| half-load run, own peak step | ${ids.map((id) => halfLoad(peers[id].latency)).join(' | ')} |`)
  L.push(`| half-load run, one step for all | ${ids.map((id) => halfLoad(peers[id].latencyCommon)).join(' | ')} |`)
  L.push(`| CPU steal of the server core during the half-load run | ${ids.map((id) => (summary[id].stealAtHalfLoad == null ? '—' : `${(summary[id].stealAtHalfLoad * 100).toFixed(1)}%`)).join(' | ')} |`)
  L.push('')
  const clients = new Set()
  for (const p of Object.values(peers)) {
    for (const b of Object.values(p.bulk || {})) clients.add(`bulk: ${b.client}`)
    for (const c of Object.values(p.connections || {})) clients.add(`connections: ${c.client}`)
    if (p.idle) clients.add(`idle: ${p.idle.client}`)
  }
  L.push('Load generators: small requests oha `--http-version 3` (HTTP/3) and h2load (HTTP/2); ' + [...clients].join('; ') + '.', '')
  L.push('## Versions', '')
  for (const id of ids) L.push(`- ${peers[id].label}: ${peers[id].version ?? 'not prepared'} (${peers[id].status})`)
  const errs = ids.flatMap((id) => peers[id].errors.map((e) => `- ${peers[id].label}, ${e.figure}: ${e.error.split('\n')[0].slice(0, 300)}`))
  if (errs.length) L.push('', '## Failures', '', ...errs)
  L.push('')
  return L.join('\n')
}

const COLORS = ['#d62728', '#ff7f0e', '#1f77b4', '#2ca02c', '#9467bd', '#8c564b', '#e377c2']
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])

/** Req/s against concurrent streams (best connection layout at each), one line per server. */
function svg(results) {
  const W = 760
  const H = 440
  const m = { l: 70, r: 200, t: 40, b: 50 }
  const ids = Object.keys(results.peers)
  const xs = [...new Set(results.settings.steps.map(([s]) => s))].sort((a, b) => a - b)
  const series = ids.map((id) => ({ id, label: results.peers[id].label, pts: xs.map((x) => [x, results.summary[id].bestReqPerSecByConcurrency[x] ?? null]) }))
  const ymax = Math.max(1, ...series.flatMap((s) => s.pts.map(([, y]) => y ?? 0)))
  const step = Math.pow(10, Math.floor(Math.log10(ymax)))
  const top = Math.ceil(ymax / step) * step
  const X = (i) => m.l + (xs.length === 1 ? 0 : (i / (xs.length - 1)) * (W - m.l - m.r))
  const Y = (v) => H - m.b - (v / top) * (H - m.t - m.b)
  const o = []
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  o.push(`<rect width="${W}" height="${H}" fill="#fff"/>`)
  o.push(`<text x="${m.l}" y="22" font-size="14" font-weight="bold">${esc(`Requests/s against concurrent streams (${results.settings.mode} run, ${results.date.slice(0, 10)}, loopback MTU ${results.environment.loopbackMtu})`)}</text>`)
  for (let i = 0; i <= 5; i++) {
    const v = (top * i) / 5
    o.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${Y(v)}" y2="${Y(v)}" stroke="#ddd"/>`)
    o.push(`<text x="${m.l - 6}" y="${Y(v) + 4}" text-anchor="end">${Math.round(v).toLocaleString('en-US')}</text>`)
  }
  xs.forEach((x, i) => o.push(`<text x="${X(i)}" y="${H - m.b + 18}" text-anchor="middle">${x}</text>`))
  o.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">concurrent streams (best connection layout at each)</text>`)
  o.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">requests/s</text>`)
  o.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`)
  series.forEach((s, k) => {
    const c = COLORS[k % COLORS.length]
    const pts = s.pts.map(([, y], i) => (y == null ? null : [X(i), Y(y)])).filter(Boolean)
    if (pts.length > 1) o.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((p) => p.map((v) => v.toFixed(1)).join(',')).join(' ')}"/>`)
    for (const [px, py] of pts) o.push(`<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="3.5" fill="${c}"/>`)
    const ly = m.t + 10 + k * 20
    o.push(`<line x1="${W - m.r + 15}" x2="${W - m.r + 35}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2"/><text x="${W - m.r + 40}" y="${ly + 4}">${esc(s.label)}${pts.length ? '' : ' (no data)'}</text>`)
  })
  o.push('</svg>')
  return o.join('\n') + '\n'
}

module.exports = { derive, markdown, svg, summarize, measuredSteps, peakStep, METRICS }
