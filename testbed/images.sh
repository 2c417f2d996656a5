#!/usr/bin/env bash
# Builds the real nodes' images from Debian's busybox-static only, with umoci and
# skopeo, as docker-archive tars that `ctr images import` reads (no registry is needed
# or reachable), and prints the directory that holds them. Does nothing when they are
# there: the cache key is a hash of this script, its helpers and the busybox version.
#
#   pause  kordon.test/pause:1  the pod sandbox: sleeps forever
#   web    kordon.test/web:1    busybox httpd, HTTP 200 on :8080 at /; on SIGTERM keeps
#                               serving $STOP_DELAY seconds (default 0), then exits;
#                               sh, sleep, touch, cat, nc... for preStop hooks and
#                               probes (busybox's wget crashes in this image: use nc)
#
#   testbed/images.sh          build when missing; print the directory
#   testbed/images.sh --list   print NAME=REFERENCE, one line per image
#
#   KORDON_CACHE   cache root (default: ~/.cache/kordon)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
images=(web=kordon.test/web:1 pause=kordon.test/pause:1)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${images[@]}"
  exit 0
fi

busybox_version=$(dpkg-query -W -f '${Version}' busybox-static)
key=$(cat "$0" "$here/real/web.sh" <(echo "$busybox_version") | sha256sum | cut -c1-12)
out=${KORDON_CACHE:-$HOME/.cache/kordon}/images/$key
done_=1
for image in "${images[@]}"; do [ -f "$out/${image%%=*}.tar" ] || done_=0; done
if [ $done_ = 1 ]; then
  echo "$out"
  exit 0
fi

echo "building images ${images[*]} into $out" >&2
mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXX")
trap 'rm -rf "$tmp"' EXIT

build() { # name reference configure-args...
  local name=$1 ref=$2 layout=$tmp/oci bundle=$tmp/$1
  shift 2
  [ -d "$layout" ] || umoci init --layout "$layout"
  umoci new --image "$layout:$name"
  umoci unpack --image "$layout:$name" "$bundle" >/dev/null
  mkdir -p "$bundle/rootfs"/{bin,tmp,etc}
  chmod 1777 "$bundle/rootfs/tmp"
  cp /bin/busybox "$bundle/rootfs/bin/busybox"
  for applet in sh sleep httpd touch cat echo ls kill mkdir rm date nc; do
    ln -s busybox "$bundle/rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/:/bin/sh' >"$bundle/rootfs/etc/passwd"
  echo 'root:x:0:' >"$bundle/rootfs/etc/group"
  if [ "$name" = web ]; then install -m 0755 "$here/real/web.sh" "$bundle/rootfs/bin/web"; fi
  umoci repack --image "$layout:$name" "$bundle"
  umoci config --image "$layout:$name" --tag "$name" \
    --config.workingdir / --config.env PATH=/bin "$@"
  skopeo copy -q "oci:$layout:$name" "docker-archive:$tmp/$name.tar:$ref"
}

build pause kordon.test/pause:1 --config.entrypoint /bin/sleep --config.cmd 2147483647
build web kordon.test/web:1 --config.entrypoint /bin/web --config.env STOP_DELAY=0 \
  --config.exposedports 8080/tcp
mv "$tmp"/*.tar "$out/"
echo "$out"
