#!/usr/bin/env bash
# Start ComfyUI with this pack: scripts/run-host.sh HOST_DIR PYTHON PORT [extra ComfyUI args]
# HOST_DIR: the local host (.comfyui) or an existing ComfyUI; PYTHON: the Python that runs it (a path, or a command
# looked up on PATH). CPU unless CUDA is present. Extra model folders: LSD_MODELS=/path/to/models (a ComfyUI-style
# models/ tree) or ARGS="--extra-model-paths-config my_paths.yaml".
# Relative paths (HOST_DIR, PYTHON, LSD_MODELS and the values of ComfyUI's path options in the extra args) are read
# from the folder the command was typed in: LSD_CALLER_DIR (the Makefile sets it from the shell's $PWD, which
# `make -C` keeps), else this shell's $PWD.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FROM=${LSD_CALLER_DIR:-$PWD}

die() { echo "run-host: $*" >&2; exit 1; }
absolute() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$FROM/$1" ;; esac; }

[ "$#" -ge 3 ] || die "usage: scripts/run-host.sh HOST_DIR PYTHON PORT [ComfyUI args...]"
[ -d "$FROM" ] || die "LSD_CALLER_DIR=$FROM is not a folder"
HOST=$(cd "$(absolute "$1")" 2>/dev/null && pwd) || die "no folder $1 (relative paths are read from $FROM)"
case $2 in
  */*) PY=$(absolute "$2") ;;
  *) PY=$(command -v "$2" 2>/dev/null) || PY=$2 ;;
esac
PORT=$3
shift 3
[ -f "$HOST/main.py" ] || die "$HOST is not a ComfyUI folder (no main.py)"
[ -x "$PY" ] && [ -f "$PY" ] || die "no Python at $PY (set COMFYUI_PYTHON=/path/to/its/python)"

missing=$("$PY" - "$ROOT/requirements.txt" <<'PY'
import importlib.metadata as metadata, re, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    Requirement = None
lacking = []
for line in open(sys.argv[1]):
    spec = line.split("#")[0].strip()
    if not spec:
        continue
    try:
        version = metadata.version(re.split(r"[<>=~!; \[]", spec, maxsplit=1)[0])
    except metadata.PackageNotFoundError:
        lacking.append(spec)
        continue
    if Requirement is not None and not Requirement(spec).specifier.contains(version, prereleases=True):
        lacking.append(f"{spec} (it has {version})")
print(", ".join(lacking))
PY
)
if [ -n "$missing" ]; then
  echo "run-host: this ComfyUI's Python lacks: $missing. Nothing was installed; install them with:" >&2
  echo "  $PY -m pip install -r $ROOT/requirements.txt" >&2
  exit 1
fi

mkdir -p "$HOST/custom_nodes"
link="$HOST/custom_nodes/luna_semantic_detailer"
if [ -L "$link" ] && [ ! -e "$link" ]; then
  echo "run-host: $link pointed to $(readlink "$link"), which is gone; linking this checkout ($ROOT) instead" >&2
  ln -sfn "$ROOT" "$link"
elif [ -L "$link" ] && [ "$(cd "$link" && pwd -P)" != "$(cd "$ROOT" && pwd -P)" ]; then
  echo "run-host: $link pointed to another checkout ($(readlink "$link")); linking this one ($ROOT) instead" >&2
  ln -sfn "$ROOT" "$link"
elif [ -e "$link" ] && [ ! -L "$link" ]; then
  die "$link is a folder, not a link to this checkout: ComfyUI would load that copy of the pack. Move it away (mv $link $link.bak) and run again."
elif [ ! -e "$link" ]; then
  echo "run-host: linking this pack into $link"
  ln -s "$ROOT" "$link"
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
  die "port $PORT is in use; stop the other server or choose another: make run PORT=8190"
fi

args=(--listen 127.0.0.1 --port "$PORT")
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || args+=(--cpu)
if [ -n "${LSD_MODELS:-}" ]; then
  m=$(cd "$(absolute "$LSD_MODELS")" 2>/dev/null && pwd) || die "LSD_MODELS=$LSD_MODELS is not a folder (relative paths are read from $FROM)"
  cfg="$HOST/.lsd-extra-model-paths.yaml"
  printf 'lsd_models:\n  base_path: %s\n  checkpoints: checkpoints\n  vae: vae\n  clip_vision: clip_vision\n  upscale_models: upscale_models\n  sam3: sam3\n  loras: loras\n' "$m" > "$cfg"
  args+=(--extra-model-paths-config "$cfg")
fi

# ComfyUI's options that take paths (main.py reads them from its own folder, where this script starts it).
PATH_OPTIONS=" --extra-model-paths-config --base-directory --input-directory --output-directory --temp-directory \
--user-directory --front-end-root --tls-keyfile --tls-certfile "
taking=""
for arg in "$@"; do
  case $arg in
    --*=*)
      taking=""
      name=${arg%%=*}
      [[ $PATH_OPTIONS == *" $name "* ]] && arg="$name=$(absolute "${arg#*=}")" ;;
    -*)
      taking=""
      [[ $PATH_OPTIONS == *" $arg "* ]] && taking=$arg ;;
    *)
      if [ -n "$taking" ]; then
        arg=$(absolute "$arg")
        [ "$taking" = --extra-model-paths-config ] || taking=""  # the only one that takes several paths
      fi ;;
  esac
  args+=("$arg")
done

cd "$HOST"
exec "$PY" main.py "${args[@]}"
