#!/usr/bin/env bash
# Vendor the web pages' JavaScript libraries from the npm registry at pinned versions.
#
#   bash infra/vendor-web.sh           # (re)creates api/web/static/vendor/ and api/web/static/vendor/VENDORED.md
#   bash infra/vendor-web.sh --check   # verifies the committed files against the tarballs
#
# `npm pack` downloads the published tarball (checked by npm against the registry's
# integrity hash); only the dist files and the licence are copied. Nothing is fetched at
# run time: the pages load these files from /static/vendor/.
set -euo pipefail

LEAFLET_VERSION=1.9.4
MARKERCLUSTER_VERSION=1.5.3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/api/web/static/vendor"
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

command -v npm >/dev/null || { echo "vendor-web: npm is required (apt-get install npm)" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
OUT="$TMP/out"
mkdir -p "$OUT"

pack() {  # pack NAME VERSION -> unpacked dir
  local name="$1" version="$2" dir="$TMP/$1"
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "$name@$version" >/dev/null 2>&1 && tar -xzf ./*.tgz)
  echo "$dir"
}

L="$(pack leaflet "$LEAFLET_VERSION")"
LD="$OUT/leaflet-$LEAFLET_VERSION"
mkdir -p "$LD/images"
cp "$L/package/dist/leaflet.js" "$L/package/dist/leaflet.css" "$LD/"
cp "$L/package/dist/images/"*.png "$LD/images/"
cp "$L/package/LICENSE" "$LD/LICENSE"

M="$(pack leaflet.markercluster "$MARKERCLUSTER_VERSION")"
MD="$OUT/leaflet.markercluster-$MARKERCLUSTER_VERSION"
mkdir -p "$MD"
cp "$M/package/dist/leaflet.markercluster.js" "$M/package/dist/MarkerCluster.css" \
   "$M/package/dist/MarkerCluster.Default.css" "$MD/"
cp "$M/package/MIT-LICENCE.txt" "$MD/LICENSE"

{
  echo "# Vendored web libraries"
  echo
  echo "Reproduce with \`bash infra/vendor-web.sh\` (npm registry tarballs, pinned versions);"
  echo "verify with \`bash infra/vendor-web.sh --check\`. Served from \`/static/vendor/\`, never a CDN."
  echo
  echo "| package | version | licence | tarball integrity (npm) |"
  echo "|---|---|---|---|"
  for spec in "leaflet@$LEAFLET_VERSION:BSD-2-Clause" "leaflet.markercluster@$MARKERCLUSTER_VERSION:MIT"; do
    pkg="${spec%%:*}"; lic="${spec##*:}"
    integrity="$(npm view "$pkg" dist.integrity 2>/dev/null)"
    echo "| \`${pkg%@*}\` | ${pkg##*@} | $lic | \`$integrity\` |"
  done
  echo
  echo "## sha256 of the vendored files"
  echo
  echo '```'
  (cd "$OUT" && find . -type f ! -name VENDORED.md | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum)
  echo '```'
} > "$OUT/VENDORED.md"

if [[ $CHECK == 1 ]]; then
  if diff -r "$OUT" "$DEST" >/dev/null; then
    echo "vendor-web: api/web/static/vendor matches the npm tarballs"
  else
    diff -r "$OUT" "$DEST" | head -20 >&2
    echo "vendor-web: api/web/static/vendor differs from the npm tarballs" >&2
    exit 1
  fi
else
  rm -rf "$DEST"
  mkdir -p "$(dirname "$DEST")"
  cp -r "$OUT" "$DEST"
  echo "vendor-web: leaflet $LEAFLET_VERSION and leaflet.markercluster $MARKERCLUSTER_VERSION in api/web/static/vendor"
fi
