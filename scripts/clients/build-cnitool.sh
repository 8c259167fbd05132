#!/usr/bin/env bash
# Builds cnitool from Debian's source package of the CNI library (golang-github-appc-cni;
# Debian ships no cnitool binary). The deb-src entry lives in a private apt configuration
# under the work directory: /etc/apt is not touched.
# Usage: build-cnitool.sh OUT_DIR   -> OUT_DIR/cnitool
set -euo pipefail
out="${1:?usage: build-cnitool.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
apt_dir="$work/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work/src"
cat >"$apt_dir/sources.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.sources" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
timeout 300 apt-get "${apt_opts[@]}" update -qq
(cd "$work/src" && timeout 300 apt-get "${apt_opts[@]}" source --download-only -qq golang-github-appc-cni)
orig="$(ls "$work/src"/golang-github-appc-cni_*.orig.tar.* | head -n1)"
mkdir -p "$work/tree"
tar -xf "$orig" -C "$work/tree" --strip-components=1
# GOPATH mode: the tree vendors nothing but needs only its own packages and the stdlib.
gopath="$work/gopath"
mkdir -p "$gopath/src/github.com/containernetworking"
ln -s "$work/tree" "$gopath/src/github.com/containernetworking/cni"
(cd "$gopath/src/github.com/containernetworking/cni" &&
  GO111MODULE=off GOPATH="$gopath" GOCACHE="$work/gocache" GOFLAGS= CGO_ENABLED=0 \
    timeout 600 go build -o "$out/cnitool.tmp.$$" ./cnitool)
mv "$out/cnitool.tmp.$$" "$out/cnitool"
echo "built $out/cnitool from $(basename "$orig")" >&2
