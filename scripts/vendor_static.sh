#!/usr/bin/env bash
# Refreshes the vendored front-end libraries (htmx, uPlot) from the npm registry.
# The copies under tracker/web/static/vendor/ are committed, so a fresh clone needs no npm;
# run this only to update them. Pinned to major versions (htmx 2: htmx 4 changed its attributes).
# Idempotent: installs into a throw-away build dir each time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/tracker/web/static/vendor"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT

npm install --no-save --no-audit --no-fund --prefix "$BUILD" "uplot@^1.6" "htmx.org@^2" >/dev/null

mkdir -p "$DEST/uplot" "$DEST/htmx"
cp "$BUILD/node_modules/uplot/dist/uPlot.iife.min.js" "$DEST/uplot/uPlot.iife.min.js"
cp "$BUILD/node_modules/uplot/dist/uPlot.min.css" "$DEST/uplot/uPlot.min.css"
cp "$BUILD/node_modules/uplot/LICENSE" "$DEST/uplot/LICENSE"
cp "$BUILD/node_modules/htmx.org/dist/htmx.min.js" "$DEST/htmx/htmx.min.js"
cp "$BUILD/node_modules/htmx.org/LICENSE" "$DEST/htmx/LICENSE"
{
  echo "uplot $(node -p "require('$BUILD/node_modules/uplot/package.json').version")"
  echo "htmx.org $(node -p "require('$BUILD/node_modules/htmx.org/package.json').version")"
} > "$DEST/VERSIONS"
cat "$DEST/VERSIONS"
