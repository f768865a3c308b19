// Headless Chromium for the ava suites: a real browser talking HTTP/3 (fetch)
// and WebTransport to a server started by the test.
//
// Chromium comes from Debian's `chromium` package (installed by .ci/run) and is
// driven over CDP by `playwright-core` (no bundled browser download). Test pages
// are served over plain HTTP from `http://localhost:<port>`, which is a secure
// context, so `fetch` to https origins and `WebTransport` are available. The
// files under __test__/fixtures/ are served too: `/wt-page.js` is importable as
// a module from the page.
//
// Environment:
//   CHROMIUM_PATH           the browser binary (default /usr/bin/chromium)
//   H3NODE_CHROMIUM_NETLOG  a directory: every browser started writes a NetLog
//                           JSON there (QUIC frames, HTTP/3 SETTINGS, WebTransport
//                           session errors); view it at https://netlog-viewer.appspot.com
import { createHash, X509Certificate } from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { chromium } from 'playwright-core'

const here = path.dirname(fileURLToPath(import.meta.url))
export const FIXTURES_DIR = path.resolve(here, '..', 'fixtures')

const BASE_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--enable-quic',
]

const CONTENT_TYPES = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
}

const INDEX_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>h3node browser tests</title></head>
<body><p>h3node browser tests</p></body></html>
`

/** The Chromium binary used: $CHROMIUM_PATH, else /usr/bin/chromium. */
export function chromiumPath() {
  return process.env.CHROMIUM_PATH || '/usr/bin/chromium'
}

/** Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (for --ignore-certificate-errors-spki-list). */
export function spkiHash(certPem) {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' })
  return createHash('sha256').update(spki).digest('base64')
}

/** SHA-256 of the DER certificate as an array of byte values (WebTransport `serverCertificateHashes`). */
export function certHashBytes(certPem) {
  return [...createHash('sha256').update(new X509Certificate(certPem).raw).digest()]
}

let netlogCounter = 0

/** A logger that stops forwarding once the test is over (ava rejects t.log after the end). */
function testLogger(t) {
  const state = { open: true }
  const log = (...args) => {
    if (!state.open) return
    try {
      t.log(...args)
    } catch {
      state.open = false
    }
  }
  return { log, state }
}

/** A tiny static server for the test pages: `/` and the files directly under __test__/fixtures/. */
async function startPageServer() {
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost')
    const send = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' })
      res.end(body)
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed')
    if (pathname === '/' || pathname === '/index.html') return send(200, CONTENT_TYPES['.html'], INDEX_HTML)
    if (pathname === '/favicon.ico') return send(204, 'image/x-icon', '')
    const name = decodeURIComponent(pathname.slice(1))
    const type = CONTENT_TYPES[path.extname(name)]
    // Only plain file names in the fixtures folder: no separators, no dot-files.
    if (!type || name.includes('/') || name.includes('\\') || name.startsWith('.')) return send(404, 'text/plain', 'not found')
    fs.readFile(path.join(FIXTURES_DIR, name), (err, data) => {
      if (err) send(404, 'text/plain', 'not found')
      else send(200, type, data)
    })
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  // Chromium resolves `localhost` to loopback itself; the page origin is http://localhost:<port>.
  return { server, origin: `http://localhost:${server.address().port}` }
}

/**
 * Runs `promise` with a deadline: rejects with an Error naming `what` after `ms`.
 * The original promise is still observed, so a late rejection is not unhandled.
 */
export function withTimeout(promise, ms, what = 'operation') {
  let timer
  const p = Promise.resolve(promise)
  p.catch(() => {})
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result after ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * Evaluates `fn(arg)` in the page (an async function is awaited) and returns its
 * JSON-able result, failing after `timeout` ms instead of hanging the test.
 */
export function evaluate(page, fn, arg, { timeout = 30_000 } = {}) {
  return withTimeout(page.evaluate(fn, arg), timeout, 'page.evaluate')
}

/**
 * Starts headless Chromium and a page at http://localhost:<port>/ for test `t`.
 * Returns `{ browser, page, origin, evaluate(fn, arg, opts), close() }`;
 * `close()` is idempotent and is also registered with `t.teardown`.
 *
 * Options:
 *   quicOrigins  ['127.0.0.1:PORT', ...]  → --origin-to-force-quic-on (fetch over HTTP/3 directly)
 *   spki         [base64 SHA-256 of SPKI] → --ignore-certificate-errors-spki-list
 *   args         extra Chromium arguments
 *   launchTimeout  ms (default 30 s)
 */
export async function openPage(t, { quicOrigins = [], spki = [], args = [], launchTimeout = 30_000 } = {}) {
  const executablePath = chromiumPath()
  if (!fs.existsSync(executablePath)) {
    throw new Error(
      `Chromium not found at ${executablePath}: install the Debian package (apt-get install chromium, as .ci/run does) ` +
        'or set CHROMIUM_PATH to a Chromium/Chrome binary',
    )
  }
  const { log, state } = testLogger(t)
  const launchArgs = [...BASE_ARGS]
  if (quicOrigins.length) launchArgs.push(`--origin-to-force-quic-on=${quicOrigins.join(',')}`)
  if (spki.length) launchArgs.push(`--ignore-certificate-errors-spki-list=${spki.join(',')}`)
  const netlogDir = process.env.H3NODE_CHROMIUM_NETLOG
  if (netlogDir) {
    fs.mkdirSync(netlogDir, { recursive: true })
    const file = path.resolve(netlogDir, `netlog-${process.pid}-${++netlogCounter}.json`)
    launchArgs.push(`--log-net-log=${file}`, '--net-log-capture-mode=Everything')
    log(`chromium netlog: ${file}`)
  }
  launchArgs.push(...args)

  const pages = await startPageServer()
  let browser = null
  let closed = null
  const close = () => {
    closed ??= (async () => {
      state.open = false
      if (browser) await browser.close().catch(() => {})
      pages.server.closeAllConnections?.()
      await new Promise((resolve) => pages.server.close(() => resolve()))
    })()
    return closed
  }
  t.teardown(close)

  browser = await chromium.launch({ executablePath, args: launchArgs, timeout: launchTimeout })
  const page = await browser.newPage()
  page.on('console', (m) => log(`[page ${m.type()}] ${m.text()}`))
  page.on('pageerror', (e) => log(`[page uncaught] ${e?.stack || e}`))
  page.on('requestfailed', (r) => log(`[page request failed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`))
  page.on('crash', () => log('[page crashed]'))
  await page.goto(`${pages.origin}/`, { timeout: launchTimeout })
  return {
    browser,
    page,
    origin: pages.origin,
    evaluate: (fn, arg, opts) => evaluate(page, fn, arg, opts),
    close,
  }
}

/**
 * Runs `fn(page, ctx)` with a fresh headless Chromium (see openPage for the options)
 * and returns its result. The browser is closed when `fn` settles (and by
 * t.teardown if the test is torn down first).
 */
export async function withChromium(t, options, fn) {
  const ctx = await openPage(t, options)
  try {
    return await fn(ctx.page, ctx)
  } finally {
    await ctx.close()
  }
}

/**
 * Runs one scenario of __test__/fixtures/wt-page.js in Chromium against
 * `https://<host>:<port><path>`, with the server certificate accepted through
 * WebTransport `serverCertificateHashes` (SHA-256 of `certPem`; the dev
 * certificate qualifies: ECDSA P-256, valid 14 days at most). Returns the
 * scenario's report (plain JSON).
 *
 * `scenario` is an export of wt-page.js: 'echoScenario', 'serverCloseScenario',
 * 'refuseScenario'. With `trustSpki: true` the certificate is also trusted by
 * SPKI on the command line (normally off, so that the hashes are what is tested).
 */
export async function runWtScenario(t, { port, certPem, path: urlPath = '/', scenario = 'echoScenario', host = '127.0.0.1', timeout = 90_000, trustSpki = false, args = [] }) {
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}${urlPath}`
  const hash = certHashBytes(certPem)
  return withChromium(t, { spki: trustSpki ? [spkiHash(certPem)] : [], args }, async (page) => {
    const started = Date.now()
    const report = await evaluate(
      page,
      async ([name, url, hash]) => {
        const mod = await import('/wt-page.js')
        if (typeof mod[name] !== 'function') throw new Error(`wt-page.js has no export ${name}`)
        return mod[name](url, hash)
      },
      [scenario, url, hash],
      { timeout },
    )
    t.log(`${scenario} ${url}: ${Date.now() - started} ms`)
    return report
  })
}
