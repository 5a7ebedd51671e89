#!/usr/bin/env bash
# The main job: a ComfyUI master with this extension and two local worker ComfyUIs on this machine,
# already listed in the registry and launched by the master, ready at http://127.0.0.1:8188.
#
# Everything lives in .demo/ (its own workers.json, outputs and logs); your own ComfyUI and the
# extension's workers.json are not touched. On a machine with NVIDIA GPUs the master seeds one local
# worker per spare GPU itself; without one, all three run on the CPU.
# Environment: DEMO_PORT (8188), DEMO_DIR (.demo), COMFYUI_ROOT to use an existing ComfyUI,
# DEMO_FRONTEND=newest to serve the newest tested ComfyUI frontend instead of the pinned one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

project="$(pwd)"
port="${DEMO_PORT:-8188}"
demo="$(mkdir -p "${DEMO_DIR:-.demo}" && cd "${DEMO_DIR:-.demo}" && pwd)"
mkdir -p "$demo/custom_nodes" "$demo/user/default" "$demo/input" "$demo/output" "$demo/models"
ln -sfn "$project" "$demo/custom_nodes/comfyui-distributed-gpu"
[ -f "$demo/user/default/comfy.settings.json" ] || echo '{"Comfy.TutorialCompleted": true}' > "$demo/user/default/comfy.settings.json"

frontend_flag=()
case "${DEMO_FRONTEND:-pinned}" in
  pinned) ;;
  newest) frontend_flag=(--front-end-root "$DISTRIBUTED_NEW_FRONTEND_ROOT") ;;
  *) echo "DEMO_FRONTEND must be pinned or newest, not ${DEMO_FRONTEND}" >&2; exit 2 ;;
esac

device_flag=()
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  device_flag=(--cpu)
fi
if [ ! -f "$demo/workers.json" ]; then
  if [ ${#device_flag[@]} -gt 0 ]; then
    workers='[
    {"id": "cpu-1", "name": "Local CPU worker 1", "type": "local", "host": "127.0.0.1", "port": '$((port + 1))'},
    {"id": "cpu-2", "name": "Local CPU worker 2", "type": "local", "host": "127.0.0.1", "port": '$((port + 2))'}
  ]'
    seeded=true
  else
    workers='[]'
    seeded=false
  fi
  cat > "$demo/workers.json" <<JSON
{
  "version": 1,
  "master": {"participate": true},
  "settings": {"auto_launch": true, "stop_workers_on_exit": true},
  "workers": $workers,
  "local_workers_seeded": $seeded
}
JSON
fi

echo "Master: http://127.0.0.1:$port  (registry: $demo/workers.json; open the Distributed tab in the sidebar)"
echo "Expect two 'No module named torchaudio' tracebacks and an IMPORT FAILED line for ComfyUI's audio nodes below:" \
  "the pinned CPU torch ships without torchaudio, so only those audio nodes are missing; the demo does not need them."
cd "$COMFYUI_ROOT"
exec env DISTRIBUTED_WORKERS_FILE="$demo/workers.json" "$COMFYUI_PYTHON" main.py "${device_flag[@]}" \
  --listen 127.0.0.1 --port "$port" --disable-auto-launch --base-directory "$demo" \
  --database-url "sqlite:///$demo/user/comfyui.db" "${frontend_flag[@]}"
