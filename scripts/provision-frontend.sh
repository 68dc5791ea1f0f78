#!/usr/bin/env bash
# The pinned newest frontend (requirements-frontend.txt) in .frontend/<version>/, for the browser tests' third host:
# the 0.33 host started with --front-end-root .frontend/<version>/comfyui_frontend_package/static. Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
spec=$(grep -E '^comfyui-frontend-package==' "$ROOT/requirements-frontend.txt")
version=${spec#*==}
target="$ROOT/.frontend/$version"
[ -f "$target/comfyui_frontend_package/static/index.html" ] && exit 0
echo "provision-frontend: $spec into .frontend/$version"
rm -rf "$target"
"$PYTHON" -m pip --disable-pip-version-check -q install --no-deps --target "$target" "$spec" \
  || { echo "provision-frontend: pip could not install $spec (network or pip index?)" >&2; exit 1; }
