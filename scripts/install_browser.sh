#!/usr/bin/env bash
# Installs Debian's chromium for the Playwright browser tests (tests/web/browser/).
# Idempotent: does nothing when /usr/bin/chromium is already there. Runs `apt-get update`
# only when the package is unknown to apt (fresh machine). Never runs `playwright install`:
# the tests drive this system chromium through executable_path.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
