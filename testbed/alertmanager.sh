#!/usr/bin/env bash
# Runs Alertmanager (github.com/prometheus/alertmanager, pinned in
# testbed/alertmanager/go.mod), the alert gates' source in the tests, built into the cache
# on first use (see gotool.sh).
#   testbed/alertmanager.sh --path   prints the binary's path (building it when missing)
#   testbed/alertmanager.sh ARGS…    runs alertmanager
set -euo pipefail
# shellcheck source=testbed/gotool.sh
. "$(dirname "$0")/gotool.sh"
gotool alertmanager github.com/prometheus/alertmanager \
  github.com/prometheus/alertmanager/cmd/alertmanager github.com/prometheus/common/version.Version "$@"
