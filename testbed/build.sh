#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) and the real nodes' kubelet and kube-proxy from the pinned Go
# modules into a cache outside the repo and prints the directory that holds the
# binaries. Does nothing when they are already there.
#
#   KORDON_CACHE   cache root (default: ~/.cache/kordon)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

bin_dir() {
  local sums
  sums=$(cat "$here"/{kube,kwok,etcd}/go.sum | sha256sum | cut -c1-12)
  echo "${KORDON_CACHE:-$HOME/.cache/kordon}/testbed/k8s-$KUBE_VERSION-kwok-$KWOK_VERSION-etcd-$ETCD_VERSION-$sums/bin"
}

bin=$(bin_dir)
wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubelet kube-proxy)
missing=()
for b in "${wanted[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi

echo "building ${missing[*]} into $bin (cold: ~15-25 min on 2 cores)" >&2
mkdir -p "$bin"
tmp=$(mktemp -d "$bin/.build.XXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
(cd "$here/kwok" && go build -trimpath -o "$tmp/kwok" \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok)
(cd "$here/kube" && go build -trimpath -ldflags "$kube_ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy)
mv "$tmp"/* "$bin/"
echo "$bin"
