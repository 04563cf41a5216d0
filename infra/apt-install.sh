#!/usr/bin/env bash
# Install Debian/Ubuntu packages quietly: one line says what is installed and why; apt's
# own output goes to a log file, shown (its end) only when apt fails.
#
# Usage: infra/apt-install.sh WHY [APT-GET-INSTALL-OPTION...] PACKAGE...
#   e.g. infra/apt-install.sh "the browser tests" chromium
# Environment:
#   APT_LOG          the log file (default: $TMPDIR or /tmp, educonnect-apt.log)
#   APT_SKIP_UPDATE  1 = the package lists are fresh, skip `apt-get update`
# Needs root and apt-get; exits with apt-get's status when it fails.
set -uo pipefail

why="$1"
shift
log="${APT_LOG:-${TMPDIR:-/tmp}/educonnect-apt.log}"
pkgs=()
for arg in "$@"; do [[ "$arg" == -* ]] || pkgs+=("$arg"); done
echo "[apt] installing ${pkgs[*]} (${why}; apt output in ${log})"
export DEBIAN_FRONTEND=noninteractive
(
    printf '\n==== %s apt-get install %s\n' "$(date -u +%FT%TZ)" "$*"
    if [[ "${APT_SKIP_UPDATE:-0}" != "1" ]]; then
        apt-get update -qq || exit $?
    fi
    apt-get install -y -qq "$@"
) >>"$log" 2>&1
status=$?
if [[ "$status" != 0 ]]; then
    echo "[apt] apt-get failed (exit ${status}); the end of ${log}:" >&2
    tail -n 30 "$log" >&2
fi
exit "$status"
