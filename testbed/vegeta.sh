#!/usr/bin/env bash
# Runs vegeta (github.com/tsenart/vegeta/v12, pinned in testbed/vegeta/go.mod), the load
# tool of the traffic probe, built from the Go module proxy into the cache outside the
# repo on first use, like Helm.
#   testbed/vegeta.sh --path   prints the binary's path (building it when missing)
#   testbed/vegeta.sh ARGS…    runs vegeta
#   KORDON_CACHE               cache root (default: ~/.cache/kordon)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$0 ~ /github.com\/tsenart\/vegeta\/v12 v/ { print $NF }' "$here/vegeta/go.mod")
sums=$(sha256sum < "$here/vegeta/go.sum" | cut -c1-12)
bin="${KORDON_CACHE:-$HOME/.cache/kordon}/testbed/vegeta-$version-$sums/bin"
if [ ! -x "$bin/vegeta" ]; then
  echo "building vegeta $version into $bin (cold: ~1 min on 2 cores)" >&2
  mkdir -p "$bin"
  tmp=$(mktemp -d "$bin/.build.XXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$here/vegeta" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
    -ldflags "-s -w -X main.Version=$version" -o "$tmp/vegeta" github.com/tsenart/vegeta/v12)
  mv "$tmp/vegeta" "$bin/vegeta"
fi
if [ "${1:-}" = "--path" ]; then
  echo "$bin/vegeta"
  exit 0
fi
exec "$bin/vegeta" "$@"
