"""Timings of the LSD kernels: a full 4096² RGB tile blend pass, a 4096→1536 noise downscale, a 25-tile plan.

Run from the repository root: `.venv/bin/python benchmarks/kernels.py [--device cpu|cuda] [--repeat N]`.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import harness  # noqa: F401  (first: it takes this folder off sys.path before torch is imported)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACK = "luna_semantic_detailer"
if PACK not in sys.modules:
    package = types.ModuleType(PACK)
    package.__path__ = [str(ROOT)]
    sys.modules[PACK] = package

from luna_semantic_detailer.kernels.masks import blend_, tile_alpha  # noqa: E402
from luna_semantic_detailer.kernels.noise import make_scaffold  # noqa: E402
from luna_semantic_detailer.kernels.planning import batches, chess_phases, feather_flags, plan_tiles  # noqa: E402
from luna_semantic_detailer.kernels.resample import downscale_noise  # noqa: E402

CANVAS, TILE, OVERLAP = 4096, 1024, 128


def timed(fn: Callable[[], object], repeat: int, device: torch.device) -> list[float]:
    """Wall seconds of `repeat` calls after one warm-up, synchronizing CUDA around each."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def plan() -> tuple[list, list[list[int]], list, list[list[int]]]:
    tiles = plan_tiles(CANVAS, CANVAS, TILE, OVERLAP)
    phases = chess_phases(tiles)
    return tiles, phases, feather_flags(tiles, phases), [b for p in phases for b in batches(p, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)

    tiles, phases, flags, _ = plan()
    generator = torch.Generator("cpu").manual_seed(0)
    canvas = torch.rand((1, CANVAS, CANVAS, 3), generator=generator).to(device)
    refined = torch.rand((len(tiles), TILE, TILE, 3), generator=generator).to(device)

    def blend_pass() -> None:
        for phase in phases:
            for i in phase:
                t = tiles[i]
                alpha = tile_alpha(t.height, t.width, OVERLAP, *flags[i], device=device)
                blend_(canvas, refined[i:i + 1], alpha, t.x, t.y)

    noise = make_scaffold(CANVAS, CANVAS, seed=0).to(device)

    rows = [
        (f"blend pass: {len(tiles)} tiles {TILE}² (overlap {OVERLAP}, {len(phases)} phases) "
         f"into [1,{CANVAS},{CANVAS},3] f32", timed(blend_pass, args.repeat, device)),
        ("noise downscale [1,4,512,512] -> [1,4,192,192] (4096 -> 1536 px)",
         timed(lambda: downscale_noise(noise, (192, 192), seed=1), args.repeat, device)),
        (f"plan {len(tiles)} tiles + chess phases + feather flags + batches",
         timed(plan, args.repeat, device)),
    ]
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"python={platform.python_version()} repeat={args.repeat}")
    print(f"{'kernel':<88} {'median ms':>10} {'min ms':>10}")
    for name, times in rows:
        print(f"{name:<88} {statistics.median(times) * 1e3:>10.2f} {min(times) * 1e3:>10.2f}")


if __name__ == "__main__":
    main()
