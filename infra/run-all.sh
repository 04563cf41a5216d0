#!/usr/bin/env bash
# Start EduConnect's long-running processes for local use (`make run`): the outbox relay
# (streaming indexer), the API, and a Celery worker with beat embedded (reindex,
# background and periodic tasks; infra/worker.sh). Ctrl-C or the exit of any one of them
# stops them all.
# Usage: infra/run-all.sh [HOST] [PORT]   (BIN defaults to .venv/bin; API_WORKERS = uvicorn
# worker processes, default 1)
set -euo pipefail
BIN="${BIN:-.venv/bin}"
HOST="${1:-127.0.0.1}"
PORT="${2:-8000}"
WORKERS="${API_WORKERS:-1}"
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/educonnect-run.XXXXXX")"
chmod 755 "$run_dir" # the worker may run as another user (infra/worker.sh)
pids=()
stop_all() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$run_dir"
}
trap stop_all EXIT INT TERM
# Video sessions: with no LiveKit key (environment or .env), the local LiveKit stand-in
# (standins/livekit) with a development key, its signed webhooks sent to this API.
if [ -z "${LIVEKIT_API_KEY:-}" ] && ! grep -qs '^LIVEKIT_API_KEY=.' .env; then
    export LIVEKIT_URL="ws://127.0.0.1:${LIVEKIT_PORT:-7880}" LIVEKIT_API_KEY=devkey \
        LIVEKIT_API_SECRET=dev-only-livekit-secret-0123456789abcdef
    echo "[run] livekit stand-in: python -m standins.livekit --port ${LIVEKIT_PORT:-7880}"
    "$BIN/python" -m standins.livekit --port "${LIVEKIT_PORT:-7880}" \
        --webhook-url "http://$HOST:$PORT/api/v1/sessions/webhooks/livekit" &
    pids+=("$!")
fi

echo "[run] indexer: educonnect indexer run (metrics on 127.0.0.1:${INDEXER_METRICS_PORT:-9108})"
"$BIN/educonnect" indexer run &
pids+=("$!")
echo "[run] api: educonnect serve --host $HOST --port $PORT --workers $WORKERS"
"$BIN/educonnect" serve --host "$HOST" --port "$PORT" --workers "$WORKERS" &
pids+=("$!")
BIN="$BIN" CELERY_RUN_DIR="$run_dir/celery" bash "$(dirname "${BASH_SOURCE[0]}")/worker.sh" &
pids+=("$!")
# The first process to exit (crash or signal) takes the others down with it.
wait -n
