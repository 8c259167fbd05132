#!/usr/bin/env bash
# The demo: runs bridge + host-local + portmap the way a runtime does, inside namespaces this
# script creates, shows two sandboxes talking, a published port fetched through the node's
# address and through 127.0.0.1, masquerading to another host, then tears everything down and
# shows that nothing is left. It never touches the root network namespace.
#
# usage: scripts/demo.sh [BIN_DIR]   (BIN_DIR holds bridge, host-local, portmap, cni-run)
set -euo pipefail
BIN=$(cd "${1:-target/release}" && pwd)
PLUGINS=${DEMO_PLUGINS:-$BIN}   # where the plugins come from (the reference: /usr/lib/cni)
RUN="$BIN/cni-run"
P="cnidemo$$"
NODE="$P-node" C1="$P-c1" C2="$P-c2" OUT="$P-outside"
WORK=$(mktemp -d /tmp/cnidemo.XXXXXX)
HTTPD_PID=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
cleanup() {
  set +e
  [ -n "$HTTPD_PID" ] && kill "$HTTPD_PID" 2>/dev/null
  for ns in "$C1" "$C2" "$OUT" "$NODE"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for p in bridge host-local portmap; do
  printf '%-11s VERSION -> ' "$p"
  CNI_COMMAND=VERSION "$PLUGINS/$p" </dev/null
done

say "namespaces: node $NODE (plays the host), containers $C1 $C2, and $OUT (another host)"
for ns in "$NODE" "$C1" "$C2" "$OUT"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
# The node's "uplink" to another host, inside our namespaces only (198.18.0.0/15 is reserved
# for benchmarking and never routed).
ip link add "${P:0:8}n" netns "$NODE" type veth peer name "${P:0:8}o" netns "$OUT"
in_ns "$NODE" ip addr add 198.18.0.1/24 dev "${P:0:8}n"
in_ns "$NODE" ip link set "${P:0:8}n" up
in_ns "$OUT" ip addr add 198.18.0.2/24 dev "${P:0:8}o"
in_ns "$OUT" ip link set "${P:0:8}o" up

cat >"$WORK/demo.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "demonet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$WORK/ipam",
        "ranges": [[{"subnet": "10.88.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
say "the conflist"
cat "$WORK/demo.conflist"

run() { in_ns "$NODE" "$RUN" "$@" --conflist "$WORK/demo.conflist" --cni-path "$PLUGINS" --cache-dir "$WORK/cache"; }

say "ADD $C1 (publishing node port 8080 -> container port 80)"
run add --id demo-c1 --netns "/run/netns/$C1" \
  --cap-args '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
say "ADD $C2"
run add --id demo-c2 --netns "/run/netns/$C2"
say "CHECK both"
run check --id demo-c1 --netns "/run/netns/$C1" \
  --cap-args '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' && echo "demo-c1: ok"
run check --id demo-c2 --netns "/run/netns/$C2" && echo "demo-c2: ok"

IP1=$(in_ns "$C1" ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
IP2=$(in_ns "$C2" ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
say "addresses: $C1 eth0 = $IP1, $C2 eth0 = $IP2"
in_ns "$NODE" ip -br addr show cni0

say "connectivity: $C1 -> $C2 and $C2 -> gateway"
in_ns "$C1" ping -c 2 -W 2 "$IP2"
in_ns "$C2" ping -c 1 -W 2 10.88.0.1

say "masquerading: $C2 -> $OUT (198.18.0.2); $OUT has no route to 10.88.0.0/24, so the reply only comes back because the node masqueraded"
in_ns "$C2" ping -c 1 -W 2 198.18.0.2

say "a web server in $C1 on port 80, published as node port 8080"
mkdir -p "$WORK/www" && echo "hello from $C1 ($IP1)" >"$WORK/www/index.html"
ip netns exec "$C1" busybox httpd -f -p 80 -h "$WORK/www" &
HTTPD_PID=$!
for _ in $(seq 1 50); do in_ns "$C1" busybox nc -z 127.0.0.1 80 2>/dev/null && break; sleep 0.1; done
echo "from $OUT via the node address 198.18.0.1:8080:"
in_ns "$OUT" timeout 5 busybox wget -q -O - http://198.18.0.1:8080/
echo "from the node itself via 127.0.0.1:8080:"
in_ns "$NODE" timeout 5 busybox wget -q -O - http://127.0.0.1:8080/
echo "from $C2 via the node address 198.18.0.1:8080:"
in_ns "$C2" timeout 5 busybox wget -q -O - http://198.18.0.1:8080/
kill "$HTTPD_PID"; wait "$HTTPD_PID" 2>/dev/null || true; HTTPD_PID=""

say "DEL both"
run del --id demo-c1 --netns "/run/netns/$C1" \
  --cap-args '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
run del --id demo-c2 --netns "/run/netns/$C2"

say "after DEL: node links, CNI firewall rules, IPAM reservations"
in_ns "$NODE" ip -br link
left_links=$(in_ns "$NODE" ip -o link show type veth | grep -Ec ': veth[0-9a-f]{8}@' || true)
left_rules=$(in_ns "$NODE" iptables-save -t nat | grep -Ec '^-A (POSTROUTING|CNI-HOSTPORT-DNAT) .*(demo-c1|demo-c2)|^:CNI-(DN-)?[0-9a-f]' || true)
# Reservation files are named by their IP (host-local's own index lives in a hidden dir).
left_res=$(find "$WORK/ipam/demonet" -maxdepth 1 -type f -regextype posix-extended -regex '.*/([0-9.]+|[0-9a-f:]*:[0-9a-f:]*)' | wc -l)
echo "container veths left: ${left_links}; per-container rules/chains left: ${left_rules}; reservations left: ${left_res}"
if [ "$left_links" != 0 ] || [ "$left_rules" != 0 ] || [ "$left_res" != 0 ]; then
  echo "demo: something was left behind" >&2
  exit 1
fi
say "demo finished: everything it created is gone (namespaces are removed on exit)"
