"""The refiner's region source: the canvas in overlapping tiles, each from its 1:1 scaffold slice."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.compositing import tile_layers
from ..kernels.planning import Tile, plan_tiles
from ..luna_types import NoiseScaffold
from .canvas import canvas_noise, pad_to_grid
from .job import RefineJob
from .plan import RegionPlan
from .regions import Region
from .strategies import strategy_named


@dataclass(frozen=True)
class TileSettings:
    """The refiner's planner settings: tiles near `tile_size` px overlapping by at least `overlap` (kernels.planning `fit`)."""

    tile_size: int
    overlap: int
    fit: str = "fit"


def canvas_tiles(width: int, height: int, tile_size: int, overlap: int, factor: int, fit: str, patch: int = 1) -> list[Tile]:
    """The tiles the refiner samples on a width x height canvas: the plan of the canvas padded to the latent grid, in
    whole patches of `patch` latent cells."""
    return plan_tiles(-(-width // factor) * factor, -(-height // factor) * factor, tile_size, overlap, factor, fit, patch)


def plan_summary(width: int, height: int, tile_size: int, overlap: int, factor: int, fit: str, tiling: str,
                 patch: int = 1) -> dict:
    """The plan the refiner samples for a width x height canvas, as JSON-ready data (for the web extension's overlay):
    `phases` is how many the strategy samples the tiles in, one after the other (1: all at once)."""
    strategy = strategy_named(tiling)
    tiles = canvas_tiles(width, height, tile_size, overlap, factor, fit, patch)
    phases = strategy.tile_phases(tiles) if strategy.tile_phases else [list(range(len(tiles)))]
    phase_of = {i: p for p, members in enumerate(phases) for i in members}
    return {
        "width": tiles[-1].x + tiles[-1].width, "height": tiles[-1].y + tiles[-1].height, "tiling": tiling, "fit": fit,
        "cols": tiles[-1].col + 1, "rows": tiles[-1].row + 1, "count": len(tiles), "phases": len(phases),
        "tile_sizes": sorted({(t.width, t.height) for t in tiles}),
        "sampled_mp": sum(t.width * t.height for t in tiles) / 1e6,
        "tiles": [{"x": t.x, "y": t.y, "w": t.width, "h": t.height, "row": t.row, "col": t.col, "phase": phase_of[i]}
                  for i, t in enumerate(tiles)],
    }


def tile_plan(job: RefineJob, image: torch.Tensor, scaffold: NoiseScaffold, settings: TileSettings) -> RegionPlan:
    """The refiner's plan for `image` [B, H, W, 3]: every tile of the grid on every image (image-major)."""
    height, width = image.shape[1:3]
    tiles = canvas_tiles(width, height, settings.tile_size, settings.overlap, scaffold.factor, settings.fit, job.patch)
    regions = tuple(Region(b, layer.rect, layer.rect[2:], layer.weight, tile=t) for b in range(image.shape[0])
                    for t, layer in enumerate(tile_layers(tiles)))
    return RegionPlan(source="refiner", job=job, canvas=pad_to_grid(image, scaffold.factor), scaffold=scaffold,
                      noise=canvas_noise(scaffold, height, width), regions=regions, width=width, height=height,
                      settings=settings, tiles=tuple(tiles))
