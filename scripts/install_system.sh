#!/usr/bin/env bash
# Debian packages the test suite needs besides Python ones: chromium (Playwright browser tests,
# tests/web/browser/) and docker-compose (tests/unit/test_compose.py validates
# docker-compose.yml; there is no Docker engine here, `config` needs none).
# Idempotent: installs only what is missing; `apt-get update` only when apt does not know a
# package yet (fresh machine). Never runs `playwright install`: the tests drive this chromium.
set -euo pipefail

want=()
[ -x /usr/bin/chromium ] || want+=(chromium fonts-dejavu-core)
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
if [ ${#want[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
for pkg in "${want[@]}"; do
  if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    $SUDO apt-get update -q
    break
  fi
done
echo "==> installing Debian packages: ${want[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${want[@]}"
