#!/usr/bin/env bash
# Run the test suite against a provisioned host: scripts/test.sh HOST_DIR VENV_DIR [pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=$(cd "$ROOT" && cd "$1" && pwd); VENV=$(cd "$ROOT" && cd "$2" && pwd); shift 2
cd "$ROOT"
LSD_COMFYUI="$HOST" exec "$VENV/bin/python" -m pytest "$@"
