"""benchmarks/cuda.py's FLOP count, the one part of the CUDA benchmark that needs no GPU (meta device)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sdxl_unet_flops_match_the_figure_measured_on_the_h100():
    out = subprocess.run([sys.executable, "benchmarks/cuda.py", "--flops"], cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=600).stdout
    flops = json.loads(out.strip().splitlines()[-1])["sdxl_unet_forward_tflop"]
    assert abs(flops["1024px_context77"] - 6.76) < 0.01
    assert flops["1024px_context77"] < flops["1024px_context334"] < 1.1 * flops["1024px_context77"]
    assert 2.25 < flops["1536px_context77"] / flops["1024px_context77"] < 3.0
