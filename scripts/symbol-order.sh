#!/usr/bin/env bash
# The functions each release plugin runs, hottest paths first, for the linker to place next to
# each other (`make release` passes scripts/symbol-order/<plugin>.txt to LLD's
# --symbol-ordering-file; PERFORMANCE.md, item 13). The kernel maps a program's code in
# 64 KiB windows around each page it first runs (fault-around), so code spread over the whole
# binary costs the whole binary in RSS; gathered, it costs a third of it.
#
#   scripts/symbol-order.sh           regenerate the lists (root, valgrind; works only in
#                                     network namespaces it creates, removes them at exit)
#   scripts/symbol-order.sh --check   after `make release`: how many listed functions the
#                                     link found (from the link maps); fails under 80 %
#
# The lists hold mangled names. Rust's names depend on the crate and dependency versions and
# the compiler, not on the source, so they stay valid while the code changes; a toolchain or
# Cargo.lock update makes `--check` fail, and rerunning this script fixes it. A function the
# list misses still works, it only lands outside the gathered part.
#
# Order: what every invocation runs (VERSION), then what ADD and DEL on a node that already
# has containers (what a pod start and stop pays; IPv4 and dual-stack) both run, then what
# only DEL runs, then what only ADD runs, so that each verb's code is gathered
# (scripts/symbol-order-list.py); then the rest (first ADD on a fresh node, CHECK, STATUS,
# GC, the nftables backend).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/scripts/symbol-order"
PLUGINS="bridge host-local portmap loopback"
HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if [ "${1:-}" = "--check" ]; then
  status=0
  for p in $PLUGINS; do
    map="$TARGET_DIR/$HOST/release/$p.map"
    [ -f "$map" ] || { echo "symbol-order: no link map $map (run make release)"; exit 1; }
    # LLD's map names every input section ("file.o:(.text.<mangled name>)", Rust's functions
    # have one each) and every symbol (demangled, so only C names match there).
    total=$(grep -c . "$OUT/$p.txt")
    found=$({ grep -o '(\.text\.[^)]*)' "$map" | sed 's/^(\.text\.//; s/)$//'
              awk 'NF==5 {print $5}' "$map"; } | sort -u | comm -12 - <(sort -u "$OUT/$p.txt") | wc -l)
    pct=$((found * 100 / total))
    echo "symbol-order: $p: $found of $total listed functions found ($pct %)"
    [ "$pct" -ge 80 ] || status=1
  done
  [ $status -eq 0 ] || echo "symbol-order: lists out of date; rerun scripts/symbol-order.sh"
  exit $status
fi

for t in valgrind perf python3; do
  command -v $t >/dev/null || { echo "symbol-order: needs $t"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "symbol-order: needs root (network namespaces)"; exit 1; }

BUILD="$TARGET_DIR/symbol-order"
BIN="$BUILD/$HOST/release"
# build [ORDER_DIR]: the same build as `make release`, with symbols kept, and a link map;
# ordered by ORDER_DIR/<plugin>.txt when given.
build() {
  local p args
  for p in $PLUGINS; do
    args="-C link-arg=-Wl,-Map=$BIN/$p.map"
    if [ -n "${1:-}" ]; then
      # named by its digest, as in the Makefile: cargo relinks only when the arguments change
      list="$1/$p-$(sha256sum "$1/$p.txt" | cut -c1-16).txt"
      cp "$1/$p.txt" "$list"
      args="$args -C link-arg=-Wl,--symbol-ordering-file=$list -C link-arg=-Wl,--no-warn-symbol-ordering"
    fi
    CARGO_TARGET_DIR="$BUILD" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo rustc -q --release --target "$HOST" -p "$p" --bin "$p" -- $args
  done
}

P="symord$$"
WORK=$(mktemp -d /tmp/symbol-order.XXXXXX)
cleanup() {
  set +e
  for ns in "$P-n" "$P-c" "$P-d4" "$P-dd"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for ns in "$P-n" "$P-c" "$P-d4" "$P-dd"; do ip netns add "$ns"; done
ip -n "$P-n" link set lo up

# How invocations run: MODE=callgrind (every function that runs, by name) or MODE=perf (the
# page faults of the real run: what valgrind does not see, such as the CPU's variant of a
# string function or the code a spawned child runs before exec). Results go to $WORK/$TAG,
# callgrind's named by verb: wrap VERB.
MODE=none TAG=seed N=0
wrap() {
  N=$((N + 1))
  case $MODE in
    callgrind) echo valgrind -q --tool=callgrind --trace-children=yes --demangle=no \
      "--callgrind-out-file=$WORK/$TAG/cg.$1.%p" ;;
    perf) echo perf record -q -e page-faults -c 1 -d -o "$WORK/$TAG/pf.$N" ;;
  esac
}
phase() { TAG=$1; mkdir -p "$WORK/$TAG"; }
# inv NETNS CONTAINER COMMAND PLUGIN CONFIG: one invocation as a runtime makes it, in the node.
inv() {
  printf '%s' "$5" | ip netns exec "$P-n" env -i PATH="$PATH" CNI_COMMAND="$3" \
    CNI_CONTAINERID="$2" CNI_NETNS="/run/netns/$1" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
    $(wrap "$3") "$BIN/$4"
}
net() { # net NAME RANGES: a bridge config
  printf '{"cniVersion":"1.0.0","name":"%s","type":"bridge","bridge":"so%s","isGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{"type":"host-local","dataDir":"%s/ipam","ranges":%s,"routes":[{"dst":"0.0.0.0/0"}]}}' \
    "$1" "$1" "$WORK" "$2"
}
pm() { # pm NAME PREV [EXTRA]: a portmap config with a TCP and a UDP mapping
  printf '{"cniVersion":"1.0.0","name":"%s","type":"portmap","capabilities":{"portMappings":true}%s,"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":8081,"containerPort":81,"protocol":"udp"}]},"prevResult":%s}' \
    "$1" "${3:-}" "$2"
}
with_prev() { # with_prev CONFIG PREV
  printf '%s' "${1%\}}"; printf ',"prevResult":%s}' "$2"
}
V4='[[{"subnet":"10.99.0.0/24"}]]'
DUAL='[[{"subnet":"10.98.0.0/24"}],[{"subnet":"fd98::/64"}]]'
# chain NETNAME RANGES NETNS [PM_EXTRA]: ADD bridge, ADD portmap, DEL portmap, DEL bridge.
chain() {
  local n b r
  n=$(net "$1" "$2")
  r=$(inv "$3" "c-$1" ADD bridge "$n")
  b=$(pm "$1" "$r" "${4:-}")
  inv "$3" "c-$1" ADD portmap "$b" >/dev/null
  inv "$3" "c-$1" DEL portmap "$b" >/dev/null
  inv "$3" "c-$1" DEL bridge "$n" >/dev/null
}
# The hot paths: VERSION, then a pod's ADD and DEL on a node with containers (IPv4, then
# dual-stack).
hot() {
  phase "$1.1"
  for p in $PLUGINS; do CNI_COMMAND=VERSION $(wrap VERSION) "$BIN/$p" </dev/null >/dev/null; done
  phase "$1.2"
  chain n4 "$V4" "$P-c"
  inv "$P-c" lo ADD loopback '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' >/dev/null
  inv "$P-c" lo DEL loopback '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' >/dev/null
  phase "$1.3"
  chain nd "$DUAL" "$P-c"
}
# Everything else worth keeping near: the nftables backend, a fresh node, CHECK, GC, STATUS.
rest() {
  phase "$1.4"
  chain nf "$V4" "$P-c" ',"backend":"nftables"'
  local n r gc
  n=$(net fresh '[[{"subnet":"10.97.0.0/24"}],[{"subnet":"fd97::/64"}]]')
  r=$(inv "$P-c" c-fresh ADD bridge "$n")
  inv "$P-c" c-fresh ADD portmap "$(pm fresh "$r")" >/dev/null
  inv "$P-c" c-fresh CHECK portmap "$(pm fresh "$r")" >/dev/null
  inv "$P-c" c-fresh CHECK bridge "$(with_prev "$n" "$r")" >/dev/null
  gc="${n%\}},\"cni.dev/valid-attachments\":[{\"containerID\":\"c-fresh\",\"ifname\":\"eth0\"}]}"
  inv "$P-c" c-fresh GC bridge "$gc" >/dev/null || true
  inv "$P-c" c-fresh STATUS bridge "$n" >/dev/null || true
  inv "$P-c" c-fresh DEL portmap "$(pm fresh "$r")" >/dev/null
  inv "$P-c" c-fresh DEL bridge "$n" >/dev/null
}

build
# A node with containers already on it (the first ADD of each network, not recorded).
for x in 4 d; do
  r=$(inv "$P-d$x" "seed-$x" ADD bridge "$(net "n$x" "$([ $x = 4 ] && echo "$V4" || echo "$DUAL")")")
  inv "$P-d$x" "seed-$x" ADD portmap "$(pm "n$x" "$r")" >/dev/null
done
MODE=callgrind
hot cg
rest cg

# The functions callgrind saw run, per plugin, grouped by the verbs that ran them (what every
# invocation runs, what ADD and DEL both run, what only DEL runs, what only ADD runs, the cold
# phases); "@native" marks where the functions found by the real runs below go.
mkdir -p "$WORK/order"
# Startup code every process runs that callgrind does not name (below main, the C runtime).
STARTUP="_start __libc_start_main _init _dl_setup_hash deregister_tm_clones"
for p in $PLUGINS; do
  python3 "$ROOT/scripts/symbol-order-list.py" "$WORK" "$BIN/$p" $STARTUP >"$WORK/order/$p.full"
done

# Then, up to six times: link in that order, run the hot paths for real (twice), and add what
# faulted in outside the listed functions.
MODE=perf
for round in 1 2 3 4 5 6; do
  for p in $PLUGINS; do grep -v '^@native$' "$WORK/order/$p.full" >"$WORK/order/$p.txt"; done
  build "$WORK/order"
  hot "pf$round"; hot "pf$round"
  added=$(python3 "$ROOT/scripts/symbol-order-faults.py" "$BIN" "$WORK/order" $PLUGINS -- "$WORK"/pf"$round".*/pf.*)
  echo "symbol-order: round $round: $added functions added"
  [ "$added" = 0 ] && break
done

mkdir -p "$OUT"
for p in $PLUGINS; do
  grep -v '^@native$' "$WORK/order/$p.full" >"$OUT/$p.txt"
  echo "symbol-order: $p: $(wc -l <"$OUT/$p.txt") functions"
done
