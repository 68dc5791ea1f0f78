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

from luna_semantic_detailer.kernels.compositing import add_share_, share, tile_layers  # noqa: E402
from luna_semantic_detailer.kernels.masks import detection_alpha  # noqa: E402
from luna_semantic_detailer.kernels.noise import field_noise, make_scaffold  # noqa: E402
from luna_semantic_detailer.kernels.planning import batches, chess_phases, plan_tiles  # noqa: E402
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


def plan() -> tuple[list, list[list[int]], list[list[int]]]:
    tiles = plan_tiles(CANVAS, CANVAS, TILE, OVERLAP)
    phases = chess_phases(tiles)
    return tiles, phases, [b for p in phases for b in batches(p, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)

    tiles, phases, _ = plan()
    generator = torch.Generator("cpu").manual_seed(0)
    canvas = torch.rand((1, CANVAS, CANVAS, 3), generator=generator).to(device)
    original = canvas.clone()
    refined = torch.rand((len(tiles), TILE, TILE, 3), generator=generator).to(device)

    def composite_pass() -> None:
        layers = tile_layers(tiles)
        for i, layer in enumerate(layers):
            add_share_(canvas, layer.rect, refined[i:i + 1], share(layers, i), base=original)

    noise = make_scaffold(CANVAS, CANVAS, seed=0).to(device)
    cells = (torch.rand((1, 512, 512), generator=generator) > 0.5).float().to(device)

    rows = [
        (f"composite pass: {len(tiles)} tiles {TILE}² (overlap {OVERLAP}): tile_layers + share + add_share_ "
         f"into [1,{CANVAS},{CANVAS},3] f32", timed(composite_pass, args.repeat, device)),
        ("noise downscale [1,4,512,512] -> [1,4,192,192] (4096 -> 1536 px)",
         timed(lambda: downscale_noise(noise, (192, 192), seed=1), args.repeat, device)),
        ("step noise of a batch of 4 tiles: field_noise, 4 x [4,128,128] (1024 px tiles)",
         timed(lambda: field_noise(1, 1, [(96 * i, 40, 128, 128) for i in range(4)], 4), args.repeat, device)),
        ("detection weight of a 1536² crop from 512² cells (random half-filled mask), feather 32",
         timed(lambda: detection_alpha(cells, 3, (1536, 1536), 16, 32), args.repeat, device)),
        (f"plan {len(tiles)} tiles + chess phases + batches", timed(plan, args.repeat, device)),
    ]
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"python={platform.python_version()} repeat={args.repeat}")
    print(f"{'kernel':<88} {'median ms':>10} {'min ms':>10}")
    for name, times in rows:
        print(f"{name:<88} {statistics.median(times) * 1e3:>10.2f} {min(times) * 1e3:>10.2f}")


if __name__ == "__main__":
    main()
