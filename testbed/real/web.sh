#!/bin/sh
# The web image's entrypoint: busybox httpd answers HTTP 200 on port 8080 at `/`.
# On SIGTERM (or SIGINT) it keeps serving for $STOP_DELAY seconds (default 0), then
# exits 0, like a server that drains its connections before it stops.
mkdir -p /tmp/www
# shellcheck disable=SC3028 # the kubelet sets HOSTNAME to the pod's name
echo "ok from ${HOSTNAME:-web}" >/tmp/www/index.html
httpd -f -p 8080 -h /tmp/www &
server=$!
# shellcheck disable=SC2317 # run by the trap
stop() {
  sleep "${STOP_DELAY:-0}"
  kill "$server" 2>/dev/null
  exit 0
}
trap stop TERM INT
# `wait` returns when a trapped signal arrives; the trap then runs.
while kill -0 "$server" 2>/dev/null; do wait "$server"; done
exit 1
