"""The parallel strategy: every region sampled from the input canvas, then each blended in with its share.

The shares (kernels.compositing) of the regions of one image sum, with the original's, to 1 at every pixel, whatever
order the regions arrive in: the local run composites them as they are sampled; a shard sends its own
(pipeline.shards) and the merge composites what every shard sent, the same way.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..kernels.compositing import add_share_, share
from .region_sampling import RefineJob, RegionRun
from .regions import ImageLayers, Region


class Compositor:
    """`out`: the canvas [B, H, W, 3] (`base`, not modified) with regions added by their shares among all the
    regions of their image."""

    def __init__(self, canvas: torch.Tensor, regions: Sequence[Region]):
        self.base, self.out, self.regions = canvas, canvas.clone(), list(regions)
        self.images = ImageLayers(self.regions)

    def add(self, index: int, pixels: torch.Tensor) -> None:
        """Region `index`'s refined pixels [h, w, 3] into the canvas."""
        r = self.regions[index]
        weight = share(self.images.layers[r.image], self.images.place[index])
        add_share_(self.out[r.image:r.image + 1], r.rect, pixels[None], weight, base=self.base[r.image:r.image + 1])


def sample_regions(job: RefineJob, canvas: torch.Tensor, noise: torch.Tensor, regions: Sequence[Region],
                   members: Sequence[int], on_result: Callable[[int, torch.Tensor], None]) -> None:
    """Regions `members` of the plan sampled from `canvas` [B, H, W, 3] (its scaffold `noise` [1, C, H/f, W/f]) in
    batches; on_result(i, pixels [h, w, 3]) for each as it is done."""
    with RegionRun(job, canvas, noise, regions, members) as run:
        for batch in run.batches(list(members)):
            for i, pixels in zip(batch, run.sample(canvas, batch)):
                on_result(i, pixels)


def composite(canvas: torch.Tensor, regions: Sequence[Region], results: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """`canvas` with the results {region: pixels [h, w, 3]} added by their shares, as a new tensor."""
    compositor = Compositor(canvas, regions)
    for i in sorted(results):
        compositor.add(i, results[i])
    return compositor.out


def refine_parallel(job: RefineJob, canvas: torch.Tensor, noise: torch.Tensor, regions: Sequence[Region],
                    keep: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """`canvas` [B, H, W, 3] (padded to the grid; not modified) with every region refined and composited, as a new
    tensor; keep(i, pixels) sees each region's refined pixels [h, w, 3]."""
    compositor = Compositor(canvas, regions)

    def on_result(i: int, pixels: torch.Tensor) -> None:
        if keep is not None:
            keep(i, pixels)
        compositor.add(i, pixels)

    sample_regions(job, canvas, noise, regions, range(len(regions)), on_result)
    return compositor.out
