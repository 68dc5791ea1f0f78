"""The frontends the browser tests open, each in both renderers (classic LiteGraph canvas and Nodes 2.0, the Vue
renderer): the session's host (ComfyUI 0.3.75 with frontend 1.32.9 in `make test`), the 0.33 host (the newest tested
release, tests/tested_hosts.py) with its own frontend 1.48.7, and the 0.33 host serving the pinned newest frontend
(requirements-frontend.txt) with --front-end-root. `make test` provisions the other two (`make browser-hosts`); without
them their tests are skipped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tested_hosts import NEWEST as NEWEST_HOST

ROOT = Path(__file__).resolve().parents[1]
NEWEST = next(line.split("==")[1].strip() for line in (ROOT / "requirements-frontend.txt").read_text().splitlines()
              if line.startswith("comfyui-frontend-package=="))
NEWEST_ROOT = ROOT / ".frontend" / NEWEST / "comfyui_frontend_package" / "static"
RENDERERS = ("classic", "vue")


@dataclass(frozen=True)
class Host:
    """A ComfyUI server for the browser: None for the session's own; `queue` is the bundled workflow this frontend
    runs with the Run button, in renderer `queue_renderer` (one run per frontend)."""

    name: str
    comfyui: Path | None
    python: Path | None
    front_end_root: Path | None
    queue: str
    queue_renderer: str

    def missing(self) -> str | None:
        """Why this host cannot run here, or None."""
        if self.comfyui is None:
            return None
        if not (self.comfyui / "main.py").is_file() or not self.python.exists():
            return f"no ComfyUI {NEWEST_HOST.release} host at {self.comfyui} with {self.python} (make browser-hosts)"
        if self.front_end_root and not (self.front_end_root / "index.html").is_file():
            return f"no frontend {NEWEST} at {self.front_end_root} (scripts/provision-frontend.sh)"
        return None


HOSTS = (
    Host("session", None, None, None, "lsd_global_only", "classic"),
    Host("0.33", NEWEST_HOST.comfyui, NEWEST_HOST.python, None, "lsd_detail_only", "classic"),
    Host(f"0.33-fe{NEWEST}", NEWEST_HOST.comfyui, NEWEST_HOST.python, NEWEST_ROOT, "lsd_detection_tools", "vue"),
)


def ui_params() -> list:
    """(host, renderer) for every host and renderer; the other hosts' are slow (`make test-fast` leaves them out)."""
    return [pytest.param((host, renderer), id=f"{host.name}-{renderer}",
                         marks=[pytest.mark.slow] if host.comfyui is not None else [])
            for host in HOSTS for renderer in RENDERERS]
