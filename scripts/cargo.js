#!/usr/bin/env node
// Runs cargo on the crate with CARGO_TARGET_DIR defaulting to
// ~/.cache/h3node-target, so builds and test builds share one cache outside
// the clone. `node scripts/cargo.js test --release --lib` runs the Rust tests.
'use strict'
const { spawnSync } = require('node:child_process')
const os = require('node:os')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

/** The target directory cargo builds into. */
function targetDir() {
  return process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache', 'h3node-target')
}

/** Runs `cargo <args> --manifest-path crate/Cargo.toml`; returns the exit status. */
function cargo(args) {
  const full = [...args, '--manifest-path', path.join(root, 'crate', 'Cargo.toml')]
  console.log(`[h3node] cargo ${full.join(' ')} (CARGO_TARGET_DIR=${targetDir()})`)
  const r = spawnSync('cargo', full, { stdio: 'inherit', env: { ...process.env, CARGO_TARGET_DIR: targetDir() } })
  if (r.error) console.error(`[h3node] cannot run cargo: ${r.error.message}`)
  return r.status ?? 1
}

module.exports = { cargo, targetDir }

if (require.main === module) process.exit(cargo(process.argv.slice(2)))
