#!/usr/bin/env bash
# Runs Helm (helm.sh/helm/v3, pinned in testbed/helm/go.mod), built from the Go module
# proxy into the cache outside the repo on first use, like the control plane.
#   testbed/helm.sh --path   prints the binary's path (building it when missing)
#   testbed/helm.sh ARGS…    runs helm
#   KORDON_CACHE             cache root (default: ~/.cache/kordon)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$here/helm/go.mod")
sums=$(sha256sum < "$here/helm/go.sum" | cut -c1-12)
bin="${KORDON_CACHE:-$HOME/.cache/kordon}/testbed/helm-$version-$sums/bin"
if [ ! -x "$bin/helm" ]; then
  echo "building helm $version into $bin (cold: ~5 min on 2 cores)" >&2
  mkdir -p "$bin"
  tmp=$(mktemp -d "$bin/.build.XXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$here/helm" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
  mv "$tmp/helm" "$bin/helm"
fi
if [ "${1:-}" = "--path" ]; then
  echo "$bin/helm"
  exit 0
fi
exec "$bin/helm" "$@"
