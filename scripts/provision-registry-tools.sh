#!/usr/bin/env bash
# comfy-cli (requirements-registry.txt) in a venv of its own, .venv-tools/, for tests/test_registry.py. Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV="$ROOT/.venv-tools"
stamp=$(cat "$ROOT/requirements-registry.txt")
[ -f "$VENV/.lsd-stamp" ] && [ "$(cat "$VENV/.lsd-stamp")" = "$stamp" ] && exit 0
echo "provision-registry-tools: comfy-cli into .venv-tools"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip --disable-pip-version-check -q install -r "$ROOT/requirements-registry.txt" \
  || { echo "provision-registry-tools: pip install failed (network or pip index?)" >&2; exit 1; }
echo "$stamp" > "$VENV/.lsd-stamp"
