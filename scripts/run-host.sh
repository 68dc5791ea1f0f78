#!/usr/bin/env bash
# Start ComfyUI with this pack: scripts/run-host.sh HOST_DIR PYTHON PORT [extra ComfyUI args]
# HOST_DIR: the local host (.comfyui) or an existing ComfyUI; PYTHON: the Python that runs it.
# CPU unless CUDA is present. Extra model folders: LSD_MODELS=/path/to/models (a ComfyUI-style models/ tree)
# or ARGS="--extra-model-paths-config my_paths.yaml".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=$(cd "$ROOT" && cd "$1" 2>/dev/null && pwd) || { echo "run-host: no folder $1" >&2; exit 1; }
PY=$2; PORT=$3; shift 3
[ -f "$HOST/main.py" ] || { echo "run-host: $HOST is not a ComfyUI folder (no main.py)" >&2; exit 1; }
command -v "$PY" >/dev/null 2>&1 || { echo "run-host: no Python at $PY (set COMFYUI_PYTHON=/path/to/its/python)" >&2; exit 1; }

missing=$("$PY" - "$ROOT/requirements.txt" <<'PY'
import importlib.util, re, sys
for line in open(sys.argv[1]):
    package = re.split(r"[<>=~ \[]", line.strip(), maxsplit=1)[0]
    if package and not line.startswith("#") and importlib.util.find_spec(package) is None:
        print(package)
PY
)
if [ -n "$missing" ]; then
  echo "run-host: this ComfyUI's Python lacks: $(echo $missing). Nothing was installed; install them with:" >&2
  echo "  $PY -m pip install -r $ROOT/requirements.txt" >&2
  exit 1
fi
link="$HOST/custom_nodes/luna_semantic_detailer"
if [ ! -e "$link" ]; then
  echo "run-host: linking this pack into $link"
  ln -s "$ROOT" "$link"
elif [ "$(cd "$link" && pwd -P)" != "$(cd "$ROOT" && pwd -P)" ]; then
  echo "run-host: $link exists and is not this checkout; leaving it as it is" >&2
fi

if "$PY" - "$PORT" <<'PY'
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
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || args+=(--cpu)
if [ -n "${LSD_MODELS:-}" ]; then
  [ -d "$LSD_MODELS" ] || { echo "run-host: LSD_MODELS=$LSD_MODELS is not a folder" >&2; exit 1; }
  cfg="$HOST/.lsd-extra-model-paths.yaml"
  m=$(cd "$LSD_MODELS" && pwd)
  printf 'lsd_models:\n  base_path: %s\n  checkpoints: checkpoints\n  vae: vae\n  clip_vision: clip_vision\n  upscale_models: upscale_models\n  sam3: sam3\n  loras: loras\n' "$m" > "$cfg"
  args+=(--extra-model-paths-config "$cfg")
fi
cd "$HOST"
exec "$PY" main.py "${args[@]}" "$@"
