# shellcheck shell=bash
# Sourced by helm.sh, vegeta.sh, prometheus.sh and alertmanager.sh: runs a Go command pinned in its own small module
# (testbed/NAME/go.mod), built from the Go module proxy into the cache outside the repo
# on first use, like the control plane.
#   gotool NAME MODULE PACKAGE VERSION_VAR --path   prints the binary's path
#   gotool NAME MODULE PACKAGE VERSION_VAR ARGS…    runs it
# VERSION_VAR is the Go variable the version is linked into; GOTOOL_TAGS (optional) are
# build tags, part of the cache key; KORDON_CACHE moves the cache root (default:
# ~/.cache/kordon).
gotool() {
  local name=$1 module=$2 package=$3 version_var=$4
  shift 4
  local src version sums bin tmp tags=${GOTOOL_TAGS:-}
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$name
  version=$(awk -v m="$module" '{ for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' "$src/go.mod")
  sums=$(sha256sum < "$src/go.sum" | cut -c1-12)
  bin="${KORDON_CACHE:-$HOME/.cache/kordon}/testbed/$name-$version${tags:+-${tags//,/-}}-$sums/bin"
  if [ ! -x "$bin/$name" ]; then
    echo "building $name $version into $bin" >&2
    mkdir -p "$bin"
    tmp=$(mktemp -d "$bin/.build.XXXX")
    (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
      ${tags:+-tags "$tags"} -ldflags "-s -w -X $version_var=$version" -o "$tmp/$name" "$package") \
      || { rm -rf "$tmp"; return 1; }
    mv "$tmp/$name" "$bin/$name"
    rm -rf "$tmp"
  fi
  if [ "${1:-}" = "--path" ]; then
    echo "$bin/$name"
    return 0
  fi
  exec "$bin/$name" "$@"
}
