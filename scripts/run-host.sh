#!/usr/bin/env bash
# Start a provisioned ComfyUI host with this pack: scripts/run-host.sh HOST_DIR VENV_DIR PORT [extra ComfyUI args]
# CPU unless CUDA is present. Extra model folders: LSD_MODELS=/path/to/models (a ComfyUI-style models/ tree)
# or ARGS="--extra-model-paths-config my_paths.yaml".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=$(cd "$ROOT" && cd "$1" && pwd); VENV=$(cd "$ROOT" && cd "$2" && pwd); PORT=$3; shift 3

if "$VENV/bin/python" - "$PORT" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
then
  echo "run-host: port $PORT is in use; stop the other server or choose another: make run PORT=8190" >&2
  exit 1
fi

args=(--listen 127.0.0.1 --port "$PORT")
"$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || args+=(--cpu)
if [ -n "${LSD_MODELS:-}" ]; then
  [ -d "$LSD_MODELS" ] || { echo "run-host: LSD_MODELS=$LSD_MODELS is not a folder" >&2; exit 1; }
  cfg="$HOST/.lsd-extra-model-paths.yaml"
  m=$(cd "$LSD_MODELS" && pwd)
  printf 'lsd_models:\n  base_path: %s\n  checkpoints: checkpoints\n  vae: vae\n  clip_vision: clip_vision\n  upscale_models: upscale_models\n  sam3: sam3\n  loras: loras\n' "$m" > "$cfg"
  args+=(--extra-model-paths-config "$cfg")
fi
cd "$HOST"
exec "$VENV/bin/python" main.py "${args[@]}" "$@"
