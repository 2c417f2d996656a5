#!/usr/bin/env bash
# Runs the testbed's external load balancer (testbed/lb: k8s.io/cloud-provider's service
# controller with a cloud of TCP proxies on a testbed address), built into the cache on
# first use (cold: ~2 min), keyed by its source and go.sum.
#   testbed/lb.sh --path   prints the binary's path (building it when missing)
#   testbed/lb.sh ARGS…    runs it: -kubeconfig FILE -address IP [-interval 1s] [-threshold 2]
# KORDON_CACHE moves the cache root (default: ~/.cache/kordon).
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)/lb
sums=$(cat "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-12)
bin="${KORDON_CACHE:-$HOME/.cache/kordon}/testbed/lb-$sums/bin"
if [ ! -x "$bin/lb" ]; then
  echo "building lb into $bin" >&2
  mkdir -p "$bin"
  tmp=$(mktemp -d "$bin/.build.XXXX")
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
    -ldflags "-s -w" -o "$tmp/lb" .) || { rm -rf "$tmp"; exit 1; }
  mv "$tmp/lb" "$bin/lb"
  rm -rf "$tmp"
fi
if [ "${1:-}" = "--path" ]; then
  echo "$bin/lb"
  exit 0
fi
exec "$bin/lb" "$@"
