#!/usr/bin/env bash
# Builds a minimal root filesystem from Debian's busybox-static: /bin/busybox, one symlink
# per applet in /bin, and the empty directories a runtime mounts over.
# Usage: busybox-rootfs.sh DIR   (DIR is replaced atomically)
set -euo pipefail
dir="${1:?usage: busybox-rootfs.sh DIR}"
bb=/bin/busybox
[ -x "$bb" ] || bb=/usr/bin/busybox
# A static binary is needed: the root filesystem has no libraries.
if ! "$bb" --list >/dev/null 2>&1 || ldd "$bb" >/dev/null 2>&1; then
  echo "busybox-rootfs.sh: $bb is not a static busybox (install busybox-static)" >&2
  exit 1
fi
tmp="$dir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"/{bin,dev,proc,sys,etc,tmp,root,run,var/tmp,usr}
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
cp "$bb" "$tmp/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"
done
ln -s ../bin "$tmp/usr/bin"
ln -s bin "$tmp/sbin"
ln -s ../bin "$tmp/usr/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
: >"$tmp/etc/hosts"
: >"$tmp/etc/resolv.conf"
echo busybox >"$tmp/etc/hostname"
rm -rf "$dir"
mv "$tmp" "$dir"
