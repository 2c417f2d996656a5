#!/usr/bin/env bash
# Runs Prometheus (github.com/prometheus/prometheus, v3 tagged v0.3xx.y, pinned in
# testbed/prometheus/go.mod), the metric gates' source in the tests, built into the cache
# on first use (see gotool.sh). The smallest build: -tags remove_all_sd keeps only the
# static, file and HTTP service discovery, and without -tags builtinassets no web UI is
# embedded (the tests use the HTTP API only).
#   testbed/prometheus.sh --path   prints the binary's path (building it when missing)
#   testbed/prometheus.sh ARGS…    runs prometheus
set -euo pipefail
# shellcheck source=testbed/gotool.sh
. "$(dirname "$0")/gotool.sh"
GOTOOL_TAGS=remove_all_sd gotool prometheus github.com/prometheus/prometheus \
  github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/common/version.Version "$@"
