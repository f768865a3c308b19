// The benchmark report's arithmetic (benchmark/lib/report.js): targets judged on paired peak
// rounds. Figures here are made up; what is checked is how they are combined, not any speed.
import test from 'ava'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const report = require('../benchmark/lib/report.js')

const round = (reqPerSec, cpu) => ({ reqPerSec, serverCpuMicrosPerRequest: cpu, steal: { serverCore: 0.01, loadCore: 0 } })

function results(peers) {
  return {
    date: '2026-01-01T00:00:00.000Z',
    command: 'node benchmark/run.js',
    settings: { mode: 'full', seconds: 5, rounds: 3, peakRounds: 5, steps: [[256, 4]] },
    environment: { cpuModel: 'test', cores: 2, loopbackMtu: 65536, loadAverageAtStart: [0, 0, 0], versions: { node: 'v24' }, stealDuringRun: { serverCore: 0.02, loadCore: 0.03 } },
    peers: Object.fromEntries(
      Object.entries(peers).map(([id, p]) => [
        id,
        { label: id, protocol: 'h3', status: 'ok', errors: [], small: [{ streams: 256, connections: 4, reqPerSec: p.sweep, serverCpuMicrosPerRequest: 25 }], ...(p.rounds ? { peak: { streams: 256, connections: 4, rounds: p.rounds } } : {}) },
      ]),
    ),
  }
}

function derived(r) {
  const d = report.derive(r)
  return { ...r, ...d }
}

test('small-request targets use the median of per-round ratios, with how many rounds pass', (t) => {
  // Per-round ratios to node-http2: 1.2, 0.9, 1.1, 1.05, 0.8 -> median 1.05, 3 of 5 pass.
  // The ratio of the medians (11,000 / 10,000 = 1.10) and of the sweep peaks (2.0) differ on purpose.
  const r = derived(
    results({
      'h3node-for-await': { sweep: 20_000, rounds: [round(12_000, 20), round(9_000, 31), round(11_000, 24), round(10_500, 26), round(8_000, 35)] },
      'node-http2': { sweep: 10_000, rounds: [round(10_000, 20), round(10_000, 20), round(10_000, 20), round(10_000, 20), round(10_000, 20)] },
    }),
  )
  const h2 = r.targets.find((x) => x.subject === 'h3node-for-await' && x.target.includes('Node HTTP/2'))
  t.is(Number(h2.measured.toFixed(4)), 1.05)
  t.true(h2.pass)
  t.is(h2.rounds.n, 5)
  t.is(h2.rounds.passing, 3)
  t.is(Number(h2.rounds.min.toFixed(2)), 0.8)
  t.is(Number(h2.rounds.max.toFixed(2)), 1.2)
  // CPU: median of the rounds' µs/request (20, 31, 24, 26, 35 -> 26), 3 of 5 at or under 30.
  const cpu = r.targets.find((x) => x.subject === 'h3node-for-await' && x.target.startsWith('server CPU'))
  t.is(cpu.measured, 26)
  t.is(cpu.rounds.passing, 3)
  const md = report.markdown(r)
  t.regex(md, /1\.05x \*\*pass\*\* \(3\/5 rounds pass; 0\.80x–1\.20x\)/)
  t.regex(md, /## Paired peak rounds/)
  t.regex(md, /stole 2\.0% of the server core/)
})

test('a round one server failed is left out of the pairs; without peak rounds the sweep peaks decide', (t) => {
  const r = derived(
    results({
      'h3node-for-await': { sweep: 9_000, rounds: [round(9_000, 20), null, round(7_500, 20)] },
      'tokio-quiche': { sweep: 10_000, rounds: [round(10_000, 20), round(10_000, 20), round(10_000, 20)] },
      // No peak rounds: judged on the sweep (9,000 / 10,000).
      currentspace: { sweep: 10_000 },
    }),
  )
  const tq = r.targets.find((x) => x.subject === 'h3node-for-await' && x.target.includes('tokio-quiche') && x.target.startsWith('small'))
  t.is(tq.rounds.n, 2)
  t.is(Number(tq.measured.toFixed(3)), 0.825) // median of 0.9 and 0.75
  t.true(tq.pass)
  const cs = r.targets.find((x) => x.subject === 'h3node-for-await' && x.target.includes('currentspace'))
  t.is(cs.rounds, undefined)
  t.is(Number(cs.measured.toFixed(2)), 0.9)
  t.false(cs.pass)
})

test('half-load latency is judged both on each server\'s own peak step and on the one step for all', (t) => {
  const r = results({ 'h3node-for-await': { sweep: 20_000 }, 'tokio-quiche': { sweep: 30_000 } })
  const lat = (streams, connections, targetRate, p50Ms, p99Ms) => ({ streams, connections, targetRate, p50Ms, p99Ms })
  Object.assign(r.peers['h3node-for-await'], { latency: lat(256, 4, 10_000, 1.5, 20), latencyCommon: lat(64, 1, 9_000, 0.9, 1.8) })
  Object.assign(r.peers['tokio-quiche'], { latency: lat(64, 1, 15_000, 0.6, 3), latencyCommon: lat(64, 1, 15_000, 0.6, 3) })
  const d = derived(r)
  const own = d.targets.find((x) => x.subject === 'h3node-for-await' && x.target === 'p99 at half load <= 2 ms')
  t.is(own.measured, 20)
  t.false(own.pass)
  const common = d.targets.find((x) => x.subject === 'h3node-for-await' && x.target.startsWith('p99 at half load <= 2 ms, on 64x1'))
  t.is(common.measured, 1.8)
  t.true(common.pass)
  // The ratio to tokio-quiche: 20 / 3 on own peak steps, 1.8 / 3 on the common step.
  t.is(Number(d.ratios['h3node-for-await']['tokio-quiche'].p99MsAtHalfLoad.toFixed(2)), 6.67)
  t.is(Number(d.ratios['h3node-for-await']['tokio-quiche'].p99MsAtHalfLoadCommonStep.toFixed(2)), 0.6)
  const md = report.markdown(d)
  t.regex(md, /\| half-load run, own peak step \| 10,000 req\/s on 256x4 \| 15,000 req\/s on 64x1 \|/)
  t.regex(md, /\| half-load run, one step for all \| 9,000 req\/s on 64x1 \| 15,000 req\/s on 64x1 \|/)
})

test('a bulk figure whose load generator used 95% of its core or more is marked client-bound', (t) => {
  const r = results({ 'h3node-for-await': { sweep: 20_000 }, 'tokio-quiche': { sweep: 30_000 } })
  // seconds, server CPU µs, client CPU µs -> shares of a core over the transfer.
  const bulk = (gbps, seconds, serverCpuMicros, clientCpuMicros) => ({ gbps, seconds, serverCpuMicros, clientCpuMicros, bytes: 2 ** 30 })
  // h3node: download client at 88% (not bound), upload client at 97%; tokio-quiche: both clients at 96% or more.
  r.peers['h3node-for-await'].bulk = { download: bulk(2.6, 3.0, 2_850_000, 2_640_000), upload: bulk(2.1, 4.0, 3_960_000, 3_880_000) }
  r.peers['tokio-quiche'].bulk = { download: bulk(3.2, 2.5, 2_400_000, 2_400_000), upload: bulk(1.9, 4.5, 3_960_000, 4_400_000) }
  const d = derived(r)
  const find = (name) => d.targets.find((x) => x.subject === 'h3node-for-await' && x.target === name)
  t.is(find('bulk download >= 3 Gbit/s on one connection').note, undefined)
  t.is(find('bulk upload >= 3 Gbit/s on one connection').note, 'load generator at 97% of its core: client-bound')
  // A ratio names the transfers whose client was bound: here only tokio-quiche's download.
  t.is(find('bulk download >= 0.9x plain tokio-quiche').note, 'load generator at 96% of its core with tokio-quiche: client-bound')
  t.is(find('bulk upload >= 0.9x plain tokio-quiche').note, 'load generator at 97% of its core with h3node-for-await, 98% with tokio-quiche: client-bound')
  const md = report.markdown(d)
  t.regex(md, /\| bulk download: server \/ load-generator CPU, share of a core \| 95% \/ 88% \| 96% \/ 96% \|/)
  t.regex(md, /2\.10 Gbit\/s \*\*miss\*\* \(load generator at 97% of its core: client-bound\)/)
})
