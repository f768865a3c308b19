// Loads the native addon: a local build (h3node.<platform>.node, made by
// `npm run build:native`) first, then the prebuilt per-platform package
// (h3node-<platform>, an optionalDependency of the published package).
'use strict'
const { join } = require('node:path')
const { platformSuffix } = require('./platform.js')

function load() {
  const suffix = platformSuffix()
  const tried = []
  const candidates = [join(__dirname, `h3node.${suffix}.node`), `h3node-${suffix}`]
  if (process.env.NAPI_RS_NATIVE_LIBRARY_PATH) candidates.unshift(process.env.NAPI_RS_NATIVE_LIBRARY_PATH)
  for (const c of candidates) {
    try {
      return require(c)
    } catch (e) {
      tried.push(`${c}: ${String(e.message).split('\n')[0]}`)
    }
  }
  const err = new Error(
    `h3node: no native binary for ${suffix}. Tried:\n  ${tried.join('\n  ')}\n` +
      'Install the matching optional dependency, or build from source with `npm run build:native` (see README).',
  )
  err.code = 'ERR_H3_NATIVE_BINARY'
  throw err
}

module.exports = load()
