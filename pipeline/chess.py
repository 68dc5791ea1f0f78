"""The chess strategy (the spec's order): regions in phases whose members never overlap, each phase sampled from the
canvas as the earlier phases left it and blended toward every earlier neighbour (kernels.compositing.sequential_share).

A tile grid's phases are its chess colours (kernels.planning.chess_phases); crops are coloured greedily in plan order
(kernels.rect_masks.overlap_rounds); either way per canvas image.
"""
from __future__ import annotations

import torch

from ..kernels.compositing import lerp_, sequential_share
from ..kernels.planning import chess_phases
from ..kernels.rect_masks import overlap_rounds
from .plan import RegionPlan
from .region_sampling import RegionRun
from .regions import ImageLayers
from .strategy import Keep, Strategy


def phases(plan: RegionPlan) -> list[list[int]]:
    """The plan's regions in phases, image by image: the tile grid's chess colours, or overlap rounds of crops."""
    images = ImageLayers(plan.regions)
    grid = chess_phases(plan.tiles) if plan.tiles else None
    out = []
    for members in images.members.values():
        if grid is None:
            rounds = overlap_rounds([plan.regions[i].rect for i in members])
            out += [[members[k] for k in phase] for phase in rounds]
        else:
            for phase in grid:
                tiles = set(phase)
                out.append([i for i in members if plan.regions[i].tile in tiles])
    return [phase for phase in out if phase]


def refine_chess(plan: RegionPlan, keep: Keep | None = None) -> torch.Tensor:
    """The plan's canvas [B, H, W, 3] (not modified) refined phase by phase, as a new tensor; every region's anchoring
    is read from the input canvas."""
    out = plan.canvas.clone()
    images = ImageLayers(plan.regions)
    blended: set[int] = set()
    with RegionRun(plan, range(len(plan.regions))) as run:
        for phase in phases(plan):
            for batch in run.batches(phase):
                for i, pixels in zip(batch, run.sample(out, batch)):
                    if keep is not None:
                        keep(i, pixels)
                    r = plan.regions[i]
                    earlier = [images.place[j] for j in images.members[r.image] if j in blended]
                    weight = sequential_share(images.layers[r.image], images.place[i], earlier)
                    lerp_(out[r.image:r.image + 1], r.rect, pixels[None], weight)
                blended.update(batch)
    return out


CHESS = Strategy(
    "chess", "the spec's order: chess phases, each from the earlier phases' results", refine_chess,
    tile_phases=chess_phases)
