#!/usr/bin/env bash
# Make Debian's Chromium available for the browser tests (tests/api/test_web_browser.py).
#
# Idempotent: does nothing when /usr/bin/chromium (or $CHROMIUM_PATH) exists. Otherwise, as
# root on Debian/Ubuntu, installs the `chromium` package with apt-get. It never downloads a
# browser from elsewhere (no `playwright install`). When it cannot install, it says so and
# exits 0: the browser tests then skip with the reason.
set -uo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [[ -x "$CHROMIUM" ]]; then
  echo "[ensure-browser] $CHROMIUM present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "[ensure-browser] $CHROMIUM missing and not root on Debian/Ubuntu: the browser tests will be skipped"
  echo "[ensure-browser] install it with: sudo apt-get install -y chromium"
  exit 0
fi
if bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" "Debian's chromium, for the browser tests" chromium; then
  echo "[ensure-browser] $("$CHROMIUM" --version 2>/dev/null || echo chromium installed)"
else
  echo "[ensure-browser] apt-get install chromium failed: the browser tests will be skipped"
fi
exit 0
