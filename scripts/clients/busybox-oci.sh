#!/usr/bin/env bash
# Builds an OCI image archive (oci-layout, index.json, blobs) holding the busybox root
# filesystem as one layer, for `ctr image import`: no registry is needed.
# The image is named localhost/cni-e2e/busybox:latest.
# Usage: busybox-oci.sh OUT.tar
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: busybox-oci.sh OUT.tar}"
name="localhost/cni-e2e/busybox:latest"
arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$here/busybox-rootfs.sh" "$work/rootfs"
mkdir -p "$work/oci/blobs/sha256"
blob() { # FILE -> prints digest hex, stores the blob
  local h
  h="$(sha256sum "$1" | cut -d' ' -f1)"
  cp "$1" "$work/oci/blobs/sha256/$h"
  echo "$h"
}
# The layer: reproducible (sorted, fixed owner and times), uncompressed.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -C "$work/rootfs" -cf "$work/layer.tar" .
layer="$(blob "$work/layer.tar")"
layer_size="$(stat -c %s "$work/layer.tar")"
cat >"$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer"]},"history":[{"created_by":"scripts/clients/busybox-oci.sh"}]}
JSON
config="$(blob "$work/config.json")"
config_size="$(stat -c %s "$work/config.json")"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer","size":$layer_size}]}
JSON
manifest="$(blob "$work/manifest.json")"
manifest_size="$(stat -c %s "$work/manifest.json")"
cat >"$work/oci/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$manifest_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"latest"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/oci" -cf "$out.tmp.$$" .
mv "$out.tmp.$$" "$out"
