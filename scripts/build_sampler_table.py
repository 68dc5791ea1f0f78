#!/usr/bin/env python3
"""Write the sampler table of tests/sampler_table.py between README.md's sampler-table markers, from the samplers of
the host it runs in (build it on the newest host: its list holds the older one's).

    LSD_COMFYUI=.comfyui-0.33 .venv-0.33/bin/python scripts/build_sampler_table.py
tests/test_devices.py fails when a sampler of the host it runs on has no row, or another row, in README.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (the host on sys.path, the pack imported as ComfyUI does)
import comfy.samplers  # noqa: E402
from sampler_table import with_section  # noqa: E402


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(with_section(readme.read_text(encoding="utf-8"), list(comfy.samplers.KSampler.SAMPLERS)),
                      encoding="utf-8")


if __name__ == "__main__":
    main()
