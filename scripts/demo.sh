#!/usr/bin/env bash
# The demo: runs the plugins the way a runtime does, inside namespaces this script creates,
# and removes everything it created on exit. Never touches the root network namespace.
set -euo pipefail
BIN=$(cd "${1:-target/release}" && pwd)
for p in bridge host-local portmap loopback; do
  printf '%-11s VERSION -> ' "$p"
  CNI_COMMAND=VERSION "$BIN/$p" </dev/null
done
