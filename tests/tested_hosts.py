"""The ComfyUI releases the suite runs on, each a host built by the Makefile: the oldest supported (0.3.75 from PyPI,
`make host`: .comfyui + .venv, the host of `make test`) and the newest to be had (0.33.0 from
../shared/hosts/comfyui-0.33.0.tar.gz, `make host-0.33`: .comfyui-0.33 + .venv-0.33, the host of `make test-compat`
and of the browser tests' other two frontends). README's tested-releases lines name them and pyproject's
`requires-comfyui` starts at the oldest (tests/test_requirements.py checks both against the hosts' own version files)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class HostRelease:
    """A tested ComfyUI release: its tree, the Python that runs it, and the make target that builds both."""

    release: str
    comfyui: Path
    python: Path
    make: str

    def version(self) -> str | None:
        """The version this host's tree says it is (comfyui_version.py, else pyproject.toml), or None if not built."""
        for name, pattern in (("comfyui_version.py", r'__version__\s*=\s*"([^"]+)"'),
                              ("pyproject.toml", r'(?m)^version\s*=\s*"([^"]+)"')):
            path = self.comfyui / name
            if path.is_file():
                found = re.search(pattern, path.read_text())
                if found:
                    return found.group(1)
        return None

    def missing(self) -> str | None:
        """Why this host cannot run here, or None."""
        if not (self.comfyui / "main.py").is_file() or not self.python.exists():
            return f"no ComfyUI {self.release} host at {self.comfyui} with {self.python} (`{self.make}` builds it)"
        return None


OLDEST = HostRelease("0.3.75", ROOT / ".comfyui", ROOT / ".venv" / "bin" / "python", "make host")
NEWEST = HostRelease("0.33.0", Path(os.environ.get("LSD_COMFYUI_033", ROOT / ".comfyui-0.33")).resolve(),
                     Path(os.environ.get("LSD_PYTHON_033", ROOT / ".venv-0.33" / "bin" / "python")), "make host-0.33")
TESTED = (OLDEST, NEWEST)

