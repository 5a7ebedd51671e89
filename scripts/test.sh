#!/usr/bin/env bash
# Runs the whole test suite: lint, unit tests, then real ComfyUI processes and a real browser.
# First run on a fresh machine also prepares the pinned ComfyUI (see scripts/env.sh) and installs
# Debian's chromium for the panel tests. Extra arguments go to pytest (e.g. -k collector).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

if ! command -v chromium >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { $sudo_cmd apt-get update -qq && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
fi

"$COMFYUI_PYTHON" -m ruff check .
exec "$COMFYUI_PYTHON" -m pytest "$@"
