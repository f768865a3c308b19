// h3node carries its own TLS stack (BoringSSL, statically linked into the addon) inside a
// Node.js process that has OpenSSL. The two must not meet:
//
//   - the addon exports nothing but its napi entry points (no SSL_*, EVP_*, X509_*, ... that
//     could preempt or be preempted by Node's OpenSSL symbols), and imports no OpenSSL-named
//     function that the dynamic linker would bind to Node's (the only ones allowed are BoringSSL's
//     weak allocator hooks, OPENSSL_memory_*, and only while this node binary does not define them);
//   - at run time, an h3node server and client, node:https and node:crypto all work at the same
//     time in one process and afterwards, with the same dev certificate (ECDSA P-256).
//
// Symbols: ELF (Linux) with `nm -D` when binutils is installed, else a small .dynsym reader
// below; Mach-O (macOS) with `nm -g`; PE (Windows) with a small export-table reader below.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import tls from 'node:tls'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

import { listen, Client, generateDevCertificate } from '../dist/index.js'

const require = createRequire(import.meta.url)
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

// ------------------------------------------------------------------ symbol tables

/** Names OpenSSL and BoringSSL use for their C API (and BoringSSL's C++ namespace). */
const CRYPTO_RE = new RegExp(
  '^(' +
    [
      'SSL', 'SSL_CTX', 'SSL_SESSION', 'TLS', 'TLSv1', 'DTLS', 'DTLSv1', 'EVP', 'X509', 'X509V3', 'CRYPTO', 'BIO',
      'OPENSSL', 'OSSL', 'ERR', 'RSA', 'EC', 'EC_KEY', 'EC_POINT', 'EC_GROUP', 'ECDSA', 'ECDH', 'BN', 'PEM', 'd2i',
      'i2d', 'ASN1', 'HMAC', 'HKDF', 'CMAC', 'SHA1', 'SHA224', 'SHA256', 'SHA384', 'SHA512', 'MD4', 'MD5', 'AES',
      'RAND', 'DH', 'DSA', 'OBJ', 'PKCS5', 'PKCS7', 'PKCS8', 'PKCS12', 'CBS', 'CBB', 'BORINGSSL', 'ED25519',
      'X25519', 'CHACHA20', 'POLY1305', 'ENGINE', 'CONF', 'NCONF', 'OPENSSL_sk', 'sk', 'lh', 'BUF', 'UI', 'CTLOG',
      'SCT', 'OCSP', 'CMS', 'TS', 'SRP', 'CT', 'KDF', 'HPKE', 'SPAKE2', 'TRUST_TOKEN', 'SIPHASH', 'MLKEM', 'MLDSA',
      'KYBER', 'SLHDSA', 'DILITHIUM',
    ].join('|') +
    ')_|^_ZN4bssl|^bssl_',
)
/** What a shared object may export besides napi: symbols the linker adds (ELF; Mach-O's header). */
const LINKER_SYMBOLS = new Set(['_mh_dylib_header', '_init', '_fini', '__bss_start', '_edata', '_end', '__data_start', 'data_start', '_IO_stdin_used'])
const NAPI_RE = /^(napi_|node_api_)/

function has(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' })
  return !r.error
}

/**
 * The dynamic symbols of an ELF shared object, read from .dynsym:
 * [{ name, defined, weak }] for global and weak symbols.
 */
function elfDynamicSymbols(file) {
  const b = fs.readFileSync(file)
  if (b.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not ELF`)
  const is64 = b[4] === 2
  const le = b[5] === 1
  const u16 = (o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o))
  const u32 = (o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o))
  const addr = (o) => (is64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(o))
  const shoff = addr(is64 ? 0x28 : 0x20)
  const shentsize = u16(is64 ? 0x3a : 0x2e)
  const shnum = u16(is64 ? 0x3c : 0x30)
  const sections = []
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize
    sections.push(
      is64
        ? { type: u32(o + 4), offset: addr(o + 0x18), size: addr(o + 0x20), link: u32(o + 0x28), entsize: addr(o + 0x38) }
        : { type: u32(o + 4), offset: u32(o + 0x10), size: u32(o + 0x14), link: u32(o + 0x18), entsize: u32(o + 0x24) },
    )
  }
  const dynsym = sections.find((s) => s.type === 11 /* SHT_DYNSYM */)
  if (!dynsym) return []
  const strtab = sections[dynsym.link]
  const cstr = (o) => b.toString('latin1', o, b.indexOf(0, o))
  const out = []
  const entsize = dynsym.entsize || (is64 ? 24 : 16)
  for (let o = dynsym.offset + entsize; o < dynsym.offset + dynsym.size; o += entsize) {
    const nameOff = u32(o)
    const info = is64 ? b[o + 4] : b[o + 12]
    const shndx = is64 ? u16(o + 6) : u16(o + 14)
    const bind = info >> 4
    if (bind === 0 /* STB_LOCAL */) continue
    out.push({ name: cstr(strtab.offset + nameOff), defined: shndx !== 0, weak: bind === 2 })
  }
  return out
}

/** The names a PE DLL exports (export directory name table). */
function peExports(file) {
  const b = fs.readFileSync(file)
  if (b.readUInt16LE(0) !== 0x5a4d) throw new Error(`${file} is not PE`)
  const pe = b.readUInt32LE(0x3c)
  if (b.readUInt32LE(pe) !== 0x4550) throw new Error(`${file}: no PE signature`)
  const nsections = b.readUInt16LE(pe + 6)
  const optSize = b.readUInt16LE(pe + 20)
  const opt = pe + 24
  const magic = b.readUInt16LE(opt)
  const dirs = opt + (magic === 0x20b ? 112 : 96)
  const exportRva = b.readUInt32LE(dirs)
  if (exportRva === 0) return []
  const sections = []
  for (let i = 0; i < nsections; i++) {
    const s = opt + optSize + i * 40
    sections.push({ va: b.readUInt32LE(s + 12), vsize: Math.max(b.readUInt32LE(s + 8), b.readUInt32LE(s + 16)), raw: b.readUInt32LE(s + 20) })
  }
  const off = (rva) => {
    const s = sections.find((x) => rva >= x.va && rva < x.va + x.vsize)
    if (!s) throw new Error(`${file}: RVA ${rva} is in no section`)
    return rva - s.va + s.raw
  }
  const dir = off(exportRva)
  const count = b.readUInt32LE(dir + 24)
  const names = off(b.readUInt32LE(dir + 32))
  const out = []
  for (let i = 0; i < count; i++) {
    const o = off(b.readUInt32LE(names + 4 * i))
    out.push(b.toString('latin1', o, b.indexOf(0, o)))
  }
  return out
}

/** [{ name, defined, weak }] of a binary's dynamic symbol table, and how it was read. */
function dynamicSymbols(file) {
  if (process.platform === 'win32') {
    // PE imports name their DLL, so nothing can be bound to node.exe's OpenSSL by accident;
    // only the exports matter.
    return { method: 'PE export table (reader in this file)', symbols: peExports(file).map((name) => ({ name, defined: true, weak: false })) }
  }
  if (process.platform === 'darwin') {
    const r = spawnSync('nm', ['-g', '-P', file], { encoding: 'utf8', maxBuffer: 256 << 20 })
    if (r.status !== 0) throw new Error(`nm -g -P ${file}: ${r.stderr || r.error}`)
    const symbols = r.stdout.split('\n').filter(Boolean).map((line) => {
      const [raw, type] = line.split(' ')
      return { name: raw.replace(/^_/, ''), defined: !/^[Uu]$/.test(type), weak: /^[wWvV]$/.test(type) }
    })
    return { method: 'nm -g -P (Mach-O)', symbols }
  }
  if (has('nm')) {
    // `nm -D -P`: "name type [value size]"; U, w and v without a value are undefined.
    const r = spawnSync('nm', ['-D', '-P', file], { encoding: 'utf8', maxBuffer: 256 << 20 })
    if (r.status !== 0) throw new Error(`nm -D -P ${file}: ${r.stderr || r.error}`)
    const symbols = r.stdout.split('\n').filter(Boolean).map((line) => {
      const [raw, type, value] = line.split(' ')
      const defined = !(type === 'U' || ((type === 'w' || type === 'v') && !value))
      return { name: raw.replace(/@.*$/, ''), defined, weak: /^[wWvV]$/.test(type) }
    })
    return { method: 'nm -D -P (binutils)', symbols }
  }
  return { method: '.dynsym reader in this file (no nm on PATH)', symbols: elfDynamicSymbols(file) }
}

function addonPath() {
  // The binary binding.js loads: the local build, else the installed platform package.
  require('../binding.js')
  const loaded = Object.keys(require.cache).filter((k) => k.endsWith('.node') && /h3node/.test(path.basename(k)))
  if (loaded.length !== 1) throw new Error(`expected one h3node .node in require.cache, found ${JSON.stringify(loaded)}`)
  return loaded[0]
}

test('the addon exports only napi symbols and imports no OpenSSL function from node', (t) => {
  const file = addonPath()
  const { method, symbols } = dynamicSymbols(file)
  t.log(`${path.relative(root, file)}: ${symbols.length} dynamic symbols, read with ${method}`)

  const exported = symbols.filter((s) => s.defined).map((s) => s.name)
  t.log(`exports: ${exported.join(' ')}`)
  const cryptoExports = exported.filter((n) => CRYPTO_RE.test(n))
  t.deepEqual(cryptoExports, [], 'OpenSSL/BoringSSL symbols exported by the addon')
  const other = exported.filter((n) => !NAPI_RE.test(n) && !LINKER_SYMBOLS.has(n))
  t.deepEqual(other, [], 'exports besides napi entry points')
  t.true(exported.includes('napi_register_module_v1'), 'napi_register_module_v1 is exported')

  if (process.platform === 'win32') return
  // Imports the dynamic linker would resolve against node's own OpenSSL.
  const imports = symbols.filter((s) => !s.defined && CRYPTO_RE.test(s.name))
  t.deepEqual(imports.filter((s) => !s.weak).map((s) => s.name), [], 'OpenSSL-named functions the addon imports')
  const weak = imports.filter((s) => s.weak).map((s) => s.name)
  if (weak.length > 0) {
    // BoringSSL's optional allocator hooks. Null unless something in the process defines them.
    t.log(`weak imports (BoringSSL hooks): ${weak.join(' ')}`)
    t.deepEqual(weak.filter((n) => !/^OPENSSL_memory_/.test(n)), [], 'unexpected weak OpenSSL-named imports')
    const nodeDefines = new Set(dynamicSymbols(process.execPath).symbols.filter((s) => s.defined).map((s) => s.name))
    t.deepEqual(weak.filter((n) => nodeDefines.has(n)), [], `hooks that ${process.execPath} defines (they would be bound to node's)`)
  }

  // The fallback reader agrees with nm where both are available (it is what runs without binutils).
  if (process.platform === 'linux' && method.startsWith('nm')) {
    const mine = elfDynamicSymbols(file).filter((s) => s.defined).map((s) => s.name).sort()
    t.deepEqual(mine, [...exported].sort(), '.dynsym reader and nm disagree')
  }
})

// ------------------------------------------------------------------ at run time

/** node:crypto with known answers; throws on any mismatch. */
function cryptoBattery(devCert) {
  const eq = (a, b, what) => {
    if (a !== b) throw new Error(`${what}: ${a} !== ${b}`)
  }
  eq(crypto.createHash('sha256').update('abc').digest('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 'sha256')
  eq(crypto.createHash('sha3-256').update('').digest('hex'), 'a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a', 'sha3-256')
  eq(
    crypto.createHmac('sha256', 'Jefe').update('what do ya want for nothing?').digest('hex'),
    '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    'hmac-sha256 (RFC 4231 case 2)',
  )
  const key = crypto.randomBytes(32)
  const iv = crypto.randomBytes(12)
  const c = crypto.createCipheriv('aes-256-gcm', key, iv)
  const ct = Buffer.concat([c.update('side by side'), c.final()])
  const d = crypto.createDecipheriv('aes-256-gcm', key, iv).setAuthTag(c.getAuthTag())
  eq(Buffer.concat([d.update(ct), d.final()]).toString(), 'side by side', 'aes-256-gcm')
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const sig = crypto.sign('sha256', Buffer.from('msg'), privateKey)
  eq(crypto.verify('sha256', Buffer.from('msg'), publicKey, sig), true, 'ecdsa p-256 sign/verify')
  const a = crypto.generateKeyPairSync('x25519')
  const b = crypto.generateKeyPairSync('x25519')
  eq(
    crypto.diffieHellman({ privateKey: a.privateKey, publicKey: b.publicKey }).toString('hex'),
    crypto.diffieHellman({ privateKey: b.privateKey, publicKey: a.publicKey }).toString('hex'),
    'x25519',
  )
  eq(crypto.pbkdf2Sync('password', 'salt', 1, 20, 'sha1').toString('hex'), '0c60c80f961f0e71f3a9b524af6012062fe037a6', 'pbkdf2 (RFC 6070)')

  // The dev certificate as node's OpenSSL sees it.
  const x509 = new crypto.X509Certificate(devCert.cert)
  eq(x509.fingerprint256.replace(/:/g, '').toLowerCase(), devCert.sha256, 'certificate SHA-256: node vs h3node')
  eq(x509.publicKey.asymmetricKeyType, 'ec', 'certificate key type')
  eq(x509.publicKey.asymmetricKeyDetails.namedCurve, 'prime256v1', 'certificate curve')
  const priv = crypto.createPrivateKey(devCert.key)
  eq(x509.checkPrivateKey(priv), true, 'certificate matches its key')
  eq(x509.checkHost('localhost'), 'localhost', 'certificate names localhost')
  eq(x509.checkIP('127.0.0.1'), '127.0.0.1', 'certificate names 127.0.0.1')
  const s = crypto.sign('sha256', Buffer.from('dev'), priv)
  eq(crypto.verify('sha256', Buffer.from('dev'), x509.publicKey, s), true, 'dev key signs, certificate verifies')
  return true
}

async function webCryptoBattery() {
  const digest = Buffer.from(await crypto.webcrypto.subtle.digest('SHA-256', new TextEncoder().encode('abc'))).toString('hex')
  if (digest !== 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad') throw new Error(`webcrypto sha256 ${digest}`)
  return true
}

function httpsGet(port, ca, p) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: p, ca, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, body, protocol: res.socket.getProtocol?.() }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.setTimeout(10_000, () => req.destroy(new Error('https request timed out')))
  })
}

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex')

test('h3node, node:https and node:crypto side by side in one process, and after', async (t) => {
  t.timeout(60_000)
  t.log(`node ${process.version}, OpenSSL ${process.versions.openssl}`)
  const dev = generateDevCertificate()
  t.true(cryptoBattery(dev), 'node:crypto before h3node serves')

  // node:https on the dev certificate.
  const httpsServer = https.createServer({ cert: dev.cert, key: dev.key }, (req, res) => {
    res.end(`https ${req.url} ${sha(req.url)}`)
  })
  await new Promise((resolve) => httpsServer.listen(0, '127.0.0.1', resolve))
  t.teardown(() => httpsServer.close())
  const httpsPort = httpsServer.address().port

  // h3node on the same certificate; its handler makes a node:https request and hashes with
  // node:crypto on the way, so both stacks work inside one request.
  const server = await listen({ host: '127.0.0.1', port: 0, cert: dev.cert, key: dev.key })
  const client = new Client({ ca: dev.cert })
  t.teardown(async () => {
    await client.close()
    await server.close(1000)
  })
  ;(async () => {
    for await (const req of server) {
      const p = new URL(req.request.url).pathname
      req.respond(
        httpsGet(httpsPort, dev.cert, p).then(
          (inner) => new Response(`h3 ${p} ${sha(p)} <${inner.body}>`),
          (e) => new Response(String(e), { status: 502 }),
        ),
      )
    }
  })()
  const h3Base = `https://127.0.0.1:${server.address().port}`

  const N = 12
  const results = await Promise.all([
    ...Array.from({ length: N }, async (_, i) => {
      const res = await client.fetch(`${h3Base}/h3/${i}`)
      return { kind: 'h3', i, status: res.status, body: await res.text() }
    }),
    ...Array.from({ length: N }, async (_, i) => ({ kind: 'https', i, ...(await httpsGet(httpsPort, dev.cert, `/tls/${i}`)) })),
    ...Array.from({ length: N }, async () => ({ kind: 'crypto', ok: cryptoBattery(dev) && (await webCryptoBattery()) })),
  ])
  for (const r of results) {
    if (r.kind === 'h3') {
      t.is(r.status, 200)
      t.is(r.body, `h3 /h3/${r.i} ${sha(`/h3/${r.i}`)} <https /h3/${r.i} ${sha(`/h3/${r.i}`)}>`)
    } else if (r.kind === 'https') {
      t.is(r.status, 200)
      t.is(r.body, `https /tls/${r.i} ${sha(`/tls/${r.i}`)}`)
      t.regex(r.protocol, /^TLSv1\.[23]$/)
    } else {
      t.true(r.ok)
    }
  }

  // The h3node client refuses what it should, with node's TLS still fine next to it.
  const stranger = generateDevCertificate()
  const strict = new Client({ ca: stranger.cert })
  await t.throwsAsync(strict.fetch(`${h3Base}/nope`))
  await strict.close()
  await t.throwsAsync(httpsGet(httpsPort, stranger.cert, '/nope'), { message: /self.signed|unable to verify|certificate/i })

  // After h3node has closed: node's TLS and crypto still work.
  await client.close()
  await server.close(1000)
  t.true(cryptoBattery(dev), 'node:crypto after h3node closed')
  t.true(await webCryptoBattery())
  const after = await httpsGet(httpsPort, dev.cert, '/after')
  t.is(after.body, `https /after ${sha('/after')}`)
  t.true(tls.getCiphers().includes('tls_aes_128_gcm_sha256'))
  // And a new h3node server still starts and serves next to it.
  const again = await listen({ host: '127.0.0.1', port: 0 })
  const c2 = new Client({ pinnedCertificates: [again.certificate.sha256] })
  ;(async () => {
    for await (const req of again) req.respond(new Response('again'))
  })()
  const res = await c2.fetch(`https://127.0.0.1:${again.address().port}/`)
  t.is(await res.text(), 'again')
  await c2.close()
  await again.close(1000)
})
