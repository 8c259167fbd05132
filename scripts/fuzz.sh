#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20) and fails on any crash.
# The committed seeds (fuzz/seeds/<target>/, taken from the reference examples) are added to
# each target's corpus (fuzz/corpus/<target>/, not committed) before it runs. Prints one
# summary line per target: executions, seconds, corpus size.
# FUZZ_PROFILE=dev builds unoptimized (about half the build time, fewer executions per
# second: the short CI run); the default is an optimized build (the documented long runs).
# usage: [FUZZ_PROFILE=dev] scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
if [ "${FUZZ_PROFILE:-release}" = dev ]; then profile=--dev; else profile=-O; fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked -q
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1   # stable rustc with the -Z flags cargo-fuzz needs
  fuzz=(cargo fuzz)
fi
mkdir -p fuzz/corpus fuzz/artifacts
targets=$("${fuzz[@]}" list)
# Build every target once up front (the runs below then start at once).
"${fuzz[@]}" build "$profile" >/dev/null
summary=()
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  if [ -d "fuzz/seeds/$t" ]; then
    cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
  fi
  echo "== fuzz $t for ${secs}s"
  log="fuzz/artifacts/$t.log"
  if ! "${fuzz[@]}" run "$profile" "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz: target $t crashed (artifact in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  took=$(sed -n 's/^stat::total_time_sec: *//p' "$log" | tail -1)   # absent in some versions
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  line="fuzz $t: ${runs:-?} executions in ${took:-$secs} s, corpus $corpus, 0 crashes"
  echo "$line"
  summary+=("$line")
done
printf '%s\n' "${summary[@]}"
echo "fuzz: no crashes"
