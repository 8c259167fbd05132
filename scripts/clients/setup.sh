#!/usr/bin/env bash
# Installs what the client tests need, only when something is missing, and builds the
# cached artefacts. Usage: setup.sh CACHE_DIR [podman] [containerd] [cnitool] [busybox]
#   podman      Debian podman (+ conmon, runc)
#   containerd  Debian containerd + runc, and CACHE_DIR/busybox-oci.tar (a local OCI image)
#   cnitool     golang-go, and CACHE_DIR/cnitool built from Debian's CNI library source
#   busybox     busybox-static, and CACHE_DIR/rootfs (a busybox root filesystem)
# Concurrent callers are serialised by a lock in CACHE_DIR. Nothing outside CACHE_DIR and
# the Debian package set is changed (no /etc/apt edit: cnitool's source comes through a
# private apt configuration, see build-cnitool.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${1:?usage: setup.sh CACHE_DIR [podman] [containerd] [cnitool] [busybox]}"
shift
mkdir -p "$cache"
exec 9>"$cache/.setup.lock"
flock -w 900 9

need=()
have() { command -v "$1" >/dev/null 2>&1; }
want_busybox=0 want_oci=0 want_cnitool=0
for what in "$@"; do
  case "$what" in
    podman)
      have podman || need+=(podman)
      have conmon || need+=(conmon)
      have runc || need+=(runc)
      want_busybox=1 ;;
    containerd)
      have containerd || need+=(containerd)
      have ctr || need+=(containerd)
      have runc || need+=(runc)
      want_busybox=1 want_oci=1 ;;
    cnitool)
      have go || need+=(golang-go)
      want_cnitool=1 ;;
    busybox) want_busybox=1 ;;
    *) echo "setup.sh: unknown component $what" >&2; exit 2 ;;
  esac
done
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
have unshare || need+=(util-linux)
have nsenter || need+=(util-linux)
have timeout || need+=(coreutils)
if [ "$want_cnitool" = 1 ]; then have xz || need+=(xz-utils); fi

if [ ${#need[@]} -gt 0 ]; then
  # shellcheck disable=SC2207
  need=($(printf '%s\n' "${need[@]}" | sort -u))
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "clients setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  # Debian's podman ships /etc/cni/net.d/87-podman-bridge.conflist: keep the machine's
  # /etc/cni untouched (the tests point every client at their own configuration).
  timeout 900 apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--path-exclude=/etc/cni -o Dpkg::Options::=--path-exclude=/etc/cni/* \
    "${need[@]}" >/dev/null
fi

if [ "$want_busybox" = 1 ] && [ ! -x "$cache/rootfs/bin/busybox" ]; then
  "$here/busybox-rootfs.sh" "$cache/rootfs"
fi
if [ "$want_oci" = 1 ] && [ ! -s "$cache/busybox-oci.tar" ]; then
  "$here/busybox-oci.sh" "$cache/busybox-oci.tar"
fi
if [ "$want_cnitool" = 1 ] && [ ! -x "$cache/cnitool" ]; then
  "$here/build-cnitool.sh" "$cache"
fi
exit 0
