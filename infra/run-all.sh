#!/usr/bin/env bash
# Run the EduConnect processes side by side in the foreground (what `make run` does):
# the HTTP API, the streaming indexer (outbox relay) and a Celery worker (reindex and
# other background tasks). Ctrl-C / SIGTERM stops all of them; if one exits, the others
# are stopped too, so a crash is never hidden.
#
#   BIN=.venv/bin bash infra/run-all.sh [HOST] [PORT]
#
# Add a process: append a `start NAME COMMAND...` line below.
set -euo pipefail

BIN="${BIN:-.venv/bin}"
HOST="${1:-127.0.0.1}"
PORT="${2:-8000}"
pids=()

start() {
  local name="$1"; shift
  "$@" &
  pids+=("$!")
  echo "[run-all] started ${name} (pid $!)"
}

stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

start api     "$BIN/educonnect" serve --host "$HOST" --port "$PORT"
start indexer "$BIN/educonnect" indexer run
# prefork with one process: hard time limits are enforced (the solo pool cannot), and the
# worker's metrics are one process (WORKER_METRICS_PORT, default 9109).
start worker  "$BIN/celery" -A core.celery_app worker --pool=prefork --concurrency=1 \
              --loglevel=INFO -n "educonnect@%h"

# Exit (and stop the others) as soon as any process exits.
wait -n
status=$?
echo "[run-all] a process exited (status ${status}); stopping the others"
exit "$status"
