"""The chess strategy (the spec's order): tiles in phases whose tiles never overlap, each phase sampled from the canvas
as the earlier phases left it and blended toward every earlier neighbour (kernels.compositing.sequential_share)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..kernels.compositing import lerp_, sequential_share
from .region_sampling import RefineJob, RegionRun
from .regions import ImageLayers, Region


def refine_chess(job: RefineJob, canvas: torch.Tensor, noise: torch.Tensor, regions: Sequence[Region],
                 phases: Sequence[Sequence[int]]) -> torch.Tensor:
    """`canvas` [B, H, W, 3] (padded to the grid; not modified) refined phase by phase, as a new tensor; every
    region's anchoring is read from the input canvas."""
    out = canvas.clone()
    images = ImageLayers(regions)
    blended: set[int] = set()
    with RegionRun(job, canvas, noise, regions, range(len(regions))) as run:
        for phase in phases:
            for batch in run.batches(list(phase)):
                for i, pixels in zip(batch, run.sample(out, batch)):
                    r = regions[i]
                    earlier = [images.place[j] for j in images.members[r.image] if j in blended]
                    weight = sequential_share(images.layers[r.image], images.place[i], earlier)
                    lerp_(out[r.image:r.image + 1], r.rect, pixels[None], weight)
                blended.update(batch)
    return out
