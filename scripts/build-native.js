#!/usr/bin/env node
// Builds the native addon with cargo (release profile, LTO) and copies it
// next to binding.js as h3node.<platform>.node, the name binding.js loads.
// The napi CLI is not needed for this; it is used in CI for cross builds and
// to regenerate binding.d.ts (`npm run build:dts`).
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { platformSuffix } = require('../platform.js')
const { cargo, targetDir } = require('./cargo.js')

const root = path.resolve(__dirname, '..')
if (cargo(['build', '--release', '--package', 'h3node-addon']) !== 0) {
  console.error('[h3node build] cargo build failed')
  process.exit(1)
}
const lib = { linux: 'libh3node_addon.so', darwin: 'libh3node_addon.dylib', win32: 'h3node_addon.dll' }[process.platform]
if (!lib) {
  console.error(`[h3node build] unsupported platform ${process.platform}`)
  process.exit(1)
}
const from = path.join(targetDir(), 'release', lib)
const to = path.join(root, `h3node.${platformSuffix()}.node`)
// Copy to a temporary name, then rename over the old file: a process that has
// the old addon mapped keeps its (unlinked) copy instead of seeing the file
// change under it, which would crash it with SIGBUS.
const tmp = `${to}.${process.pid}.tmp`
fs.copyFileSync(from, tmp)
fs.renameSync(tmp, to)
console.log(`[h3node build] ${path.relative(root, to)} (${(fs.statSync(to).size / 1e6).toFixed(1)} MB)`)
