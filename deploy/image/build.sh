#!/usr/bin/env bash
# Builds kordon's container image from scratch, without a base image or a container
# runtime: a static (musl) binary, an /etc/passwd naming the non-root user it runs as,
# and the OCI config, assembled with umoci into an OCI archive that skopeo can push.
#
#   deploy/image/build.sh OUT.tar            release build
#   KORDON_IMAGE_PROFILE=dev deploy/image/build.sh OUT.tar   faster, for tests
#
# Needs: rustup target x86_64-unknown-linux-musl, musl-tools (musl-gcc, for ring), umoci.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:?usage: build.sh OUT.tar}")
profile=${KORDON_IMAGE_PROFILE:-release}
target=x86_64-unknown-linux-musl
version=$(awk -F'"' '/^version/ { print $2; exit }' "$root/Cargo.toml")

export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
cargo build --manifest-path "$root/Cargo.toml" --bin kordon --target "$target" \
  --profile "$profile" >&2
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
binary="${CARGO_TARGET_DIR:-$root/target}/$target/$dir/kordon"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$version"
umoci unpack --rootless --image "$work/oci:$version" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
install -m 0755 "$binary" "$rootfs/kordon"
mkdir -p "$rootfs/etc" "$rootfs/tmp"
echo "nonroot:x:65532:65532:kordon:/:/sbin/nologin" > "$rootfs/etc/passwd"
echo "nonroot:x:65532:" > "$rootfs/etc/group"
umoci repack --image "$work/oci:$version" "$work/bundle"
umoci config --image "$work/oci:$version" \
  --os linux --architecture amd64 \
  --config.entrypoint /kordon --config.cmd controller \
  --config.user 65532:65532 \
  --config.workingdir / \
  --config.label "org.opencontainers.image.title=kordon" \
  --config.label "org.opencontainers.image.description=Takes Kubernetes nodes out of service and back with zero downtime" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --config.label "org.opencontainers.image.source=https://github.com/kordon-dev/kordon"
umoci gc --layout "$work/oci"
mkdir -p "$(dirname "$out")"
tar -C "$work/oci" -cf "$out" .
echo "$out"
