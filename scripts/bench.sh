#!/usr/bin/env bash
# Runs one benchmark from bench/ against the pinned ComfyUI: scripts/bench.sh NAME [ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
name="${1:?usage: scripts/bench.sh NAME [ARGS...] (NAME is a file in bench/ without .py)}"
shift
exec "$COMFYUI_PYTHON" "bench/$name.py" "$@"
