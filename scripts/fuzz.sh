#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20) and fails on any crash.
# usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked -q
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1   # stable rustc with the -Z flags cargo-fuzz needs
  fuzz=(cargo fuzz)
fi
mkdir -p fuzz/corpus
for t in $("${fuzz[@]}" list); do
  mkdir -p "fuzz/corpus/$t"
  echo "== fuzz $t for ${secs}s"
  log="fuzz/artifacts/$t.log"
  mkdir -p fuzz/artifacts
  if ! "${fuzz[@]}" run "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz: target $t crashed (artifact in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log" || tail -3 "$log"
done
echo "fuzz: no crashes"
