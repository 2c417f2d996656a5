#!/usr/bin/env bash
# Runs vegeta (github.com/tsenart/vegeta/v12, pinned in testbed/vegeta/go.mod), the load
# tool of the traffic probe, built into the cache on first use (cold: ~1 min; see
# gotool.sh).
#   testbed/vegeta.sh --path   prints the binary's path (building it when missing)
#   testbed/vegeta.sh ARGS…    runs vegeta
set -euo pipefail
# shellcheck source=testbed/gotool.sh
. "$(dirname "$0")/gotool.sh"
gotool vegeta github.com/tsenart/vegeta/v12 github.com/tsenart/vegeta/v12 main.Version "$@"
