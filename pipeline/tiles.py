"""The global refiner's plan: the canvas in overlapping tiles, each from its 1:1 scaffold slice, by one of three strategies."""
from __future__ import annotations

import torch

from ..kernels.compositing import tile_layers
from ..kernels.planning import Tile, chess_phases, plan_tiles
from ..luna_types import NoiseScaffold
from .canvas import canvas_noise, pad_to_grid
from .chess import refine_chess
from .fused import refine_fused
from .parallel import refine_parallel
from .region_sampling import RefineJob
from .regions import Region
from .shards import Shard, ShardPlan, refuse_unless_parallel, sampled_shard, shard_plan

TILINGS = {
    "fused": "one sampler run on the whole canvas latent (its noise: the scaffold); every step each tile predicts its "
             "part with its own conditioning and the predictions are averaged with the tile weights",
    "parallel": "every tile sampled from the input canvas and its scaffold slice, then blended with the tile weights",
    "chess": "the spec's order: tiles in chess phases, each phase sampled from the canvas that holds the earlier "
             "phases' results, blended toward every earlier neighbour",
}


def canvas_tiles(width: int, height: int, tile_size: int, overlap: int, factor: int, fit: str, patch: int = 1) -> list[Tile]:
    """The tiles the refiner samples on a width x height canvas: the plan of the canvas padded to the latent grid, in
    whole patches of `patch` latent cells."""
    return plan_tiles(-(-width // factor) * factor, -(-height // factor) * factor, tile_size, overlap, factor, fit, patch)


def plan_summary(width: int, height: int, tile_size: int, overlap: int, factor: int, fit: str, tiling: str,
                 patch: int = 1) -> dict:
    """The plan the refiner samples for a width x height canvas, as JSON-ready data (for the web extension's overlay)."""
    if tiling not in TILINGS:
        raise ValueError(f"unknown tiling {tiling!r}; expected one of {', '.join(TILINGS)}")
    tiles = canvas_tiles(width, height, tile_size, overlap, factor, fit, patch)
    phases = chess_phases(tiles)
    phase_of = {i: p for p, members in enumerate(phases) for i in members}
    return {
        "width": tiles[-1].x + tiles[-1].width, "height": tiles[-1].y + tiles[-1].height, "tiling": tiling, "fit": fit,
        "cols": tiles[-1].col + 1, "rows": tiles[-1].row + 1, "count": len(tiles), "phases": len(phases),
        "tile_sizes": sorted({(t.width, t.height) for t in tiles}),
        "sampled_mp": sum(t.width * t.height for t in tiles) / 1e6,
        "tiles": [{"x": t.x, "y": t.y, "w": t.width, "h": t.height, "row": t.row, "col": t.col, "phase": phase_of[i]}
                  for i, t in enumerate(tiles)],
    }


def _tiled(job: RefineJob, image: torch.Tensor, scaffold: NoiseScaffold, tile_size: int, overlap: int, tiling: str,
           fit: str) -> tuple[torch.Tensor, torch.Tensor, list[Tile], list[Region]]:
    """(padded canvas, its scaffold noise, the tiles, a region per tile of every image) of a refiner run."""
    if tiling not in TILINGS:
        raise ValueError(f"unknown tiling {tiling!r}; expected one of {', '.join(TILINGS)}")
    height, width = image.shape[1:3]
    tiles = canvas_tiles(width, height, tile_size, overlap, scaffold.factor, fit, job.patch)
    regions = [Region(b, layer.rect, layer.rect[2:], layer.weight) for b in range(image.shape[0])
               for layer in tile_layers(tiles)]
    return pad_to_grid(image, scaffold.factor), canvas_noise(scaffold, height, width), tiles, regions


def refine_tiles(job: RefineJob, image: torch.Tensor, scaffold: NoiseScaffold, tile_size: int, overlap: int,
                 tiling: str, fit: str = "fit") -> torch.Tensor:
    """`image` [B, H, W, 3] refined in tiles near `tile_size` (kernels.planning `fit`) overlapping by at least
    `overlap`, by `tiling` (see TILINGS)."""
    canvas, noise, tiles, regions = _tiled(job, image, scaffold, tile_size, overlap, tiling, fit)
    if tiling == "fused":
        out = refine_fused(job, canvas, noise, regions, tile_layers(tiles, scaffold.factor))
    elif tiling == "chess":
        per_image = chess_phases(tiles)
        out = refine_chess(job, canvas, noise, regions,
                           [[b * len(tiles) + i for i in phase] for b in range(image.shape[0]) for phase in per_image])
    else:
        out = refine_parallel(job, canvas, noise, regions)
    return out[:, :image.shape[1], :image.shape[2]].contiguous()


def refine_tile_shard(job: RefineJob, image: torch.Tensor, scaffold: NoiseScaffold, tile_size: int, overlap: int,
                      tiling: str, fit: str, shard: Shard) -> tuple[torch.Tensor, ShardPlan]:
    """(shard `shard`'s tiles of the refiner run refine_tiles would make, packed for the merge; the plan)."""
    refuse_unless_parallel(tiling, shard)
    canvas, noise, _, regions = _tiled(job, image, scaffold, tile_size, overlap, tiling, fit)
    plan = shard_plan("refiner", job, canvas, noise, regions, image.shape[2], image.shape[1], shard.count,
                      (tile_size, overlap, fit))
    return sampled_shard(plan, shard), plan
