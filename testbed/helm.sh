#!/usr/bin/env bash
# Runs Helm (helm.sh/helm/v3, pinned in testbed/helm/go.mod) for the chart tests, built
# into the cache on first use (cold: ~5 min on 2 cores; see gotool.sh).
#   testbed/helm.sh --path   prints the binary's path (building it when missing)
#   testbed/helm.sh ARGS…    runs helm
set -euo pipefail
# shellcheck source=testbed/gotool.sh
. "$(dirname "$0")/gotool.sh"
gotool helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm helm.sh/helm/v3/internal/version.version "$@"
