#!/usr/bin/env bash
# The Celery worker of `make run` / `make worker`, with Celery beat embedded (`-B`: the
# periodic tasks of `core.celery_app`'s beat_schedule). Runs in the foreground; exec's
# celery, so signals reach it directly.
#
# Started as root, the worker drops to an unprivileged user (Celery's own `--uid/--gid`,
# right after start-up) when that user can import the code from here, so Celery has no
# reason to warn about superuser privileges. When it cannot (the checkout or the venv is
# not readable by that user), the worker stays root, says so in one line, and Celery's
# warning is silenced: it accepts JSON only (no pickle), which is what makes a root
# worker dangerous, so there is nothing more to say.
#
# Environment: BIN (default .venv/bin); WORKER_USER (default nobody); CELERY_RUN_DIR, a
# directory for beat's schedule file (default: a new temporary directory).
set -euo pipefail
BIN="${BIN:-.venv/bin}"
run_dir="${CELERY_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/educonnect-celery.XXXXXX")}"
mkdir -p "$run_dir"
# prefork with one process: hard time limits are enforced (the solo pool cannot), and the
# worker's metrics come from that one process (WORKER_METRICS_PORT, default 9109).
args=(-A core.celery_app worker -B -s "$run_dir/celerybeat-schedule" --pool=prefork
    --concurrency=1 --loglevel=INFO -n "educonnect@%h")
who="user $(id -un)"
if [[ "$(id -u)" == 0 ]]; then
    user="${WORKER_USER:-nobody}"
    group="$(id -gn "$user" 2>/dev/null || true)"
    if [[ -n "$group" ]] && command -v setpriv >/dev/null &&
        setpriv --reuid="$user" --regid="$group" --clear-groups -- \
            env HOME="$run_dir" "$BIN/python" -c "import core.celery_app" >/dev/null 2>&1; then
        chown "$user:$group" "$run_dir"
        args+=(--uid "$user" --gid "$group")
        export HOME="$run_dir"
        who="user ${user} (started as root, privileges dropped by celery --uid)"
    else
        who="root: user ${user} cannot run ${BIN}/python on this checkout; Celery's superuser warning silenced (JSON tasks only, no pickle)"
        export PYTHONWARNINGS="ignore:You're running the worker with superuser privileges"
    fi
fi
echo "[run] worker: celery worker -B --pool=prefork --concurrency=1, as ${who}; beat schedule in ${run_dir}"
exec "$BIN/celery" "${args[@]}"
