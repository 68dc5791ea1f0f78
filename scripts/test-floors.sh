#!/usr/bin/env bash
# The lower bounds of requirements.txt, tested: a venv holding exactly the oldest versions it allows (each >= as ==),
# on top of the local host's other packages (torch, ComfyUI's own, pytest), runs the tests of the code that uses them.
#   scripts/test-floors.sh [VENV_DIR] [pytest args]     (default VENV_DIR: .venv-floors; needs the package index)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLOORS=${1:-$ROOT/.venv-floors}
shift || true
HOST_VENV=$ROOT/.venv
die() { echo "test-floors: $*" >&2; exit 1; }

[ -x "$HOST_VENV/bin/python" ] && [ -f "$ROOT/.comfyui/main.py" ] || die "no local host: run make host first"
if [ ! -x "$FLOORS/bin/python" ]; then
  "$("$HOST_VENV/bin/python" -c 'import sys; print(sys._base_executable)')" -m venv "$FLOORS"
fi
pins=$(grep -v '^#' "$ROOT/requirements.txt" | sed -E 's/>=/==/')
site() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
rm -f "$(site "$FLOORS/bin/python")/lsd-host.pth"  # pip must not see the host's newer versions
# shellcheck disable=SC2086
"$FLOORS/bin/python" -m pip --disable-pip-version-check -q install --only-binary :all: $pins \
  || die "pip could not install the floors: $(echo $pins)"
site "$HOST_VENV/bin/python" > "$(site "$FLOORS/bin/python")/lsd-host.pth"
"$FLOORS/bin/python" - $pins <<'PY'
import importlib.metadata as metadata, sys
from packaging.version import Version
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    assert Version(metadata.version(name)) == Version(version), f"{pin} is not the one imported: {metadata.version(name)}"
print("test-floors:", ", ".join(sys.argv[1:]))
PY
cd "$ROOT"
LSD_COMFYUI="$ROOT/.comfyui" exec "$FLOORS/bin/python" -m pytest \
  tests/test_sam3_loading.py tests/test_sam3_detector.py tests/test_sam3_daemon.py tests/test_interop.py \
  tests/test_detection_data.py tests/test_requirements.py \
  --deselect tests/test_sam3_daemon.py::test_full_size_sam3_runs_one_1008px_detection \
  --deselect tests/test_requirements.py::test_the_hosts_pins_satisfy_the_requirements "$@"
