#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers h3node owns, on stable Rust.
#
#   scripts/fuzz.sh smoke                  every target for $FUZZ_SMOKE_SECONDS (default 20) s; fails on a crash
#   scripts/fuzz.sh run <target> [secs]    one target, default 600 s, extra libFuzzer flags after the seconds
#   scripts/fuzz.sh replay                 `cargo test` of fuzz/: seed corpus + regressions through the same functions
#   scripts/fuzz.sh seeds                  rewrite fuzz/corpus/ from fuzz/tests/seeds.rs
#   scripts/fuzz.sh build                  build the instrumented binaries only
#   scripts/fuzz.sh list                   the target names
#
# No cargo-fuzz and no nightly: cargo-fuzz would add -Zsanitizer. The
# binaries are built with the stable SanitizerCoverage flags below and linked
# against libFuzzer, which the libfuzzer-sys crate compiles with the system
# C++ compiler. Sanitizers are off (they need nightly); Rust's own checks
# (bounds, debug assertions, overflow checks) are on.
#
# Builds go to $FUZZ_TARGET_DIR (default ~/.cache/h3node/fuzz-target),
# outside the clone. The working corpus grows in $FUZZ_WORK (default
# ~/.cache/h3node/fuzz-corpus/<target>), seeded from fuzz/corpus/<target>;
# crashes land in fuzz/artifacts/<target>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
# Always a target directory of its own (FUZZ_TARGET_DIR), whatever
# CARGO_TARGET_DIR says: the instrumented build must not share one with the
# addon's (.ci/run exports CARGO_TARGET_DIR for the addon).
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/h3node/fuzz-target}"
WORK="${FUZZ_WORK:-$HOME/.cache/h3node/fuzz-corpus}"
TARGETS=(frame settings capsule headers session section)

if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

host() { rustc -vV | sed -n 's/^host: //p'; }

# cargo_fuzz <cargo subcommand> [args...]: cargo with the instrumentation flags.
cargo_fuzz() {
  local sub=$1
  shift
  # Flags as cargo-fuzz passes them, minus -Zsanitizer. RUSTFLAGS with an
  # explicit --target leave build scripts and proc macros uninstrumented.
  local flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cdebug-assertions
    -Coverflow-checks
  )
  RUSTFLAGS="${flags[*]}" cargo "$sub" --release --locked \
    --manifest-path "$FUZZ/Cargo.toml" --features libfuzzer --target "$(host)" "$@"
}

build() {
  echo "[fuzz] building targets (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
  cargo_fuzz build --bins >&2
  BIN="$CARGO_TARGET_DIR/$(host)/release"
}

known() {
  local t
  for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done
  echo "unknown target '$1'; targets: ${TARGETS[*]}" >&2
  exit 2
}

# run_one <target> <seconds> [libFuzzer flags...]
run_one() {
  local t=$1 secs=$2
  shift 2
  local corpus="$WORK/$t" artifacts="$FUZZ/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  local dict=()
  [[ -f $FUZZ/dict/$t.dict ]] && dict=(-dict="$FUZZ/dict/$t.dict")
  echo "[fuzz] $t for ${secs}s" >&2
  # Seeds and regressions are read-only inputs; new units go to $corpus.
  "$BIN/$t" "$corpus" "$FUZZ/corpus/$t" $([[ -d $FUZZ/regressions/$t ]] && echo "$FUZZ/regressions/$t") \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${dict[@]}" "$@"
}

cmd=${1:-}
case $cmd in
  list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  build)
    build
    ;;
  replay)
    # The same build as the fuzz binaries (no second build of the
    # dependencies); the tests are the plain-Rust replay in fuzz/tests/.
    cargo_fuzz test
    ;;
  seeds)
    cargo_fuzz test --test seeds -- --ignored
    ;;
  smoke)
    secs=${FUZZ_SMOKE_SECONDS:-20}
    build
    failed=()
    for t in "${TARGETS[@]}"; do
      # Smoke runs do not grow the shared corpus: a fresh one each time.
      tmp=$(mktemp -d)
      if ! FUZZ_WORK="$tmp" WORK="$tmp" run_one "$t" "$secs"; then failed+=("$t"); fi
      rm -rf "$tmp"
    done
    if ((${#failed[@]})); then
      echo "[fuzz] FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
      exit 1
    fi
    echo "[fuzz] smoke: ${#TARGETS[@]} targets, no crash" >&2
    ;;
  run)
    t=${2:?usage: scripts/fuzz.sh run <target> [seconds] [libFuzzer flags...]}
    known "$t"
    secs=${3:-600}
    build
    run_one "$t" "$secs" "${@:4}"
    ;;
  *)
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
