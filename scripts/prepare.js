#!/usr/bin/env node
// Runs from the "prepare" lifecycle script (`npm ci` / `npm install` inside this repository,
// `npm pack`, installs from git). Users installing the published package never run it: they get
// a prebuilt binary through the per-platform optionalDependencies.
//
// 1. Native addon: skipped when ./binding.js loads a binary for this platform, unless
//    H3NODE_FORCE_BUILD is set (or the binary is older than the Rust sources). Otherwise the
//    prerequisites are checked and `npm run build:native` runs. H3NODE_SKIP_NATIVE_BUILD=1
//    skips it unconditionally (TypeScript-only work, CI jobs that bring their own binary).
// 2. TypeScript: `npm run build:ts`, always.
//
// CARGO_TARGET_DIR defaults to ~/.cache/h3node-target so that a fresh clone reuses the
// compiled dependencies (BoringSSL alone takes minutes) instead of starting from nothing.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const IS_WINDOWS = process.platform === 'win32';

function log(msg) {
  console.log(`[h3node prepare] ${msg}`);
}

function fail(msg) {
  console.error(`\n[h3node prepare] ERROR: ${msg}\n`);
  process.exit(1);
}

function envFlag(name) {
  const v = process.env[name];
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

function seconds(t0) {
  return `${((Date.now() - t0) / 1000).toFixed(1)}s`;
}

/** Runs `cmd args`; true when it started and exited 0. Output is discarded. */
function probe(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'ignore', shell: false });
  return !r.error && r.status === 0;
}

/** Runs an npm script with inherited stdio; exits the process if it fails. */
function runNpmScript(script, env) {
  const t0 = Date.now();
  log(`npm run ${script}`);
  const execpath = process.env.npm_execpath;
  const r =
    execpath && /\.c?js$/.test(execpath)
      ? spawnSync(process.execPath, [execpath, 'run', script], { cwd: ROOT, env, stdio: 'inherit' })
      : spawnSync('npm', ['run', script], { cwd: ROOT, env, stdio: 'inherit', shell: IS_WINDOWS });
  if (r.error) fail(`could not start npm for "${script}": ${r.error.message}`);
  if (r.status !== 0) {
    fail(`"npm run ${script}" failed (exit ${r.status ?? r.signal}); see the output above.`);
  }
  log(`npm run ${script} done in ${seconds(t0)}`);
}

// ---------------------------------------------------------------- native binary present?

/** Returns null when ./binding.js loads a native binary here, else the reason it did not. */
function bindingLoadError() {
  const loader = path.join(ROOT, 'binding.js');
  if (!fs.existsSync(loader)) return 'binding.js is missing';
  try {
    require(loader);
    return null;
  } catch (e) {
    const first = String((e && e.message) || e).split('\n')[0];
    return `binding.js did not load a binary for ${process.platform}-${process.arch} (${first})`;
  }
}

function newestMtime(p) {
  let st;
  try {
    st = fs.statSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const name of fs.readdirSync(p)) {
    newest = Math.max(newest, newestMtime(path.join(p, name)));
  }
  return newest;
}

/** A local .node older than the Rust sources would load fine but lack recent changes. */
function localBinaryIsStale() {
  const binaries = fs
    .readdirSync(ROOT)
    .filter((f) => f.startsWith('h3node.') && f.endsWith('.node'))
    .map((f) => fs.statSync(path.join(ROOT, f)).mtimeMs);
  if (binaries.length === 0) return false; // loaded from an installed platform package
  const sources = ['crate', 'Cargo.toml', 'Cargo.lock', 'rust-toolchain.toml'].map((p) =>
    newestMtime(path.join(ROOT, p)),
  );
  return Math.max(...sources) > Math.max(...binaries);
}

// ---------------------------------------------------------------- prerequisites

function findLibclang() {
  if (process.env.LIBCLANG_PATH) {
    return fs.existsSync(process.env.LIBCLANG_PATH) ? process.env.LIBCLANG_PATH : null;
  }
  const dirs = [];
  const llvmConfig = spawnSync('llvm-config', ['--libdir'], { encoding: 'utf8' });
  if (!llvmConfig.error && llvmConfig.status === 0) dirs.push(llvmConfig.stdout.trim());
  let pattern;
  if (process.platform === 'linux') {
    pattern = /^libclang(-\d+(\.\d+)*)?\.so(\.\d+)*$/;
    for (const base of ['/usr/lib', '/usr/local/lib', '/usr/lib64']) {
      dirs.push(base);
      try {
        for (const d of fs.readdirSync(base)) {
          if (/^llvm-?\d*/.test(d)) dirs.push(path.join(base, d, 'lib'));
          if (/-linux-gnu$/.test(d)) dirs.push(path.join(base, d));
        }
      } catch {
        // directory absent
      }
    }
  } else if (process.platform === 'darwin') {
    pattern = /^libclang\.dylib$/;
    dirs.push(
      '/Library/Developer/CommandLineTools/usr/lib',
      '/Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/lib',
      '/opt/homebrew/opt/llvm/lib',
      '/usr/local/opt/llvm/lib',
    );
  } else if (IS_WINDOWS) {
    pattern = /^libclang\.dll$/i;
    dirs.push(
      path.join(process.env.ProgramFiles || 'C:\\Program Files', 'LLVM', 'bin'),
      ...(process.env.PATH || '').split(path.delimiter),
    );
  } else {
    return 'unknown'; // let bindgen decide
  }
  for (const dir of dirs) {
    try {
      const hit = fs.readdirSync(dir).find((f) => pattern.test(f));
      if (hit) return path.join(dir, hit);
    } catch {
      // directory absent
    }
  }
  return null;
}

function checkPrerequisites(env) {
  const missing = []; // { what, debian }
  const warnings = [];

  // cargo: also accept a rustup install whose bin dir is not on PATH (non-login shells).
  if (!probe('cargo', ['--version'])) {
    const cargoBin = path.join(os.homedir(), '.cargo', 'bin');
    if (fs.existsSync(path.join(cargoBin, IS_WINDOWS ? 'cargo.exe' : 'cargo'))) {
      env.PATH = `${cargoBin}${path.delimiter}${env.PATH || ''}`;
      process.env.PATH = env.PATH;
      log(`using cargo from ${cargoBin} (not on PATH)`);
    } else {
      missing.push({
        what: 'cargo (Rust toolchain; install rustup from https://rustup.rs, not the distro cargo: rust-toolchain.toml pins the version)',
      });
    }
  }
  if (!probe('cmake', ['--version'])) missing.push({ what: 'cmake', debian: 'cmake' });

  if (!IS_WINDOWS) {
    // On Windows cmake and cc-rs locate MSVC themselves (Visual Studio Build Tools).
    const candidates = env.CXX ? [env.CXX] : ['c++', 'g++', 'clang++'];
    if (!candidates.some((cxx) => probe(cxx, ['--version']))) {
      missing.push({ what: `a C++ compiler (${candidates.join(', ')})`, debian: 'g++' });
    }
  } else if (!probe('nasm', ['-v'])) {
    warnings.push('nasm not found on PATH: BoringSSL needs it for x86_64 Windows builds.');
  }

  const libclang = findLibclang();
  if (!libclang) {
    const what = 'libclang (used by bindgen for the BoringSSL bindings; or set LIBCLANG_PATH)';
    if (process.platform === 'linux') missing.push({ what, debian: 'libclang-dev' });
    else warnings.push(`${what} was not found in the usual places; the build may fail.`);
  }

  for (const w of warnings) log(`warning: ${w}`);
  if (missing.length > 0) {
    const debian = missing.filter((m) => m.debian).map((m) => m.debian);
    const lines = [
      'cannot build the native addon; missing prerequisites:',
      ...missing.map((m) => `  - ${m.what}`),
    ];
    if (debian.length > 0) {
      lines.push(
        '',
        'On Debian/Ubuntu:',
        `  sudo apt-get install ${debian.join(' ')}`,
        '(the full set is: cmake g++ libclang-dev)',
      );
    }
    lines.push(
      '',
      'To skip the native build (TypeScript-only work), set H3NODE_SKIP_NATIVE_BUILD=1.',
    );
    fail(lines.join('\n'));
  }
}

// ---------------------------------------------------------------- main

function main() {
  const started = Date.now();
  const env = { ...process.env };
  if (!env.CARGO_TARGET_DIR) {
    env.CARGO_TARGET_DIR = path.join(os.homedir(), '.cache', 'h3node-target');
  }

  let reason = null;
  if (envFlag('H3NODE_SKIP_NATIVE_BUILD')) {
    log('H3NODE_SKIP_NATIVE_BUILD is set: not building the native addon');
  } else if (envFlag('H3NODE_FORCE_BUILD')) {
    // Not loading the existing binary: the build is about to overwrite it.
    reason = 'H3NODE_FORCE_BUILD is set';
  } else {
    reason = bindingLoadError();
    if (!reason && localBinaryIsStale()) {
      reason = 'the native binary is older than the Rust sources';
    }
    if (!reason) log('native binary present and loadable: skipping the native build');
  }

  if (reason) {
    log(`building the native addon: ${reason}`);
    log(`CARGO_TARGET_DIR=${env.CARGO_TARGET_DIR}`);
    checkPrerequisites(env);
    runNpmScript('build:native', env);
    // Check in a child process: this one may hold the previous binary open.
    const check = spawnSync(process.execPath, ['-e', "require('./binding.js')"], {
      cwd: ROOT,
      env,
      stdio: 'inherit',
    });
    if (check.status !== 0) fail('the native build finished but ./binding.js does not load it.');
  }

  runNpmScript('build:ts', env);
  log(`done in ${seconds(started)}`);
}

main();
process.exit(0);
