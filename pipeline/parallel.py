"""The parallel strategy: every region sampled from the input canvas, then each blended in with its share.

The shares (kernels.compositing) of the regions of one image sum, with the original's, to 1 at every pixel, whatever
order the regions arrive in: the local run composites them as they are sampled; a shard samples its own
(pipeline.shards) and the merge composites what every shard sent, the same way.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..kernels.compositing import add_share_, share
from .plan import RegionPlan
from .region_sampling import RegionRun
from .regions import ImageLayers
from .strategy import Independent, Strategy, independent_run


class Compositor:
    """`out`: the plan's canvas [B, H, W, 3] (not modified) with regions added by their shares among all the regions
    of their image."""

    def __init__(self, plan: RegionPlan):
        self.base, self.out, self.regions = plan.canvas, plan.canvas.clone(), plan.regions
        self.images = ImageLayers(self.regions)

    def add(self, index: int, pixels: torch.Tensor) -> None:
        """Region `index`'s refined pixels [h, w, 3] into the canvas."""
        r = self.regions[index]
        weight = share(self.images.layers[r.image], self.images.place[index])
        add_share_(self.out[r.image:r.image + 1], r.rect, pixels[None], weight, base=self.base[r.image:r.image + 1])


def sample_regions(plan: RegionPlan, members: Sequence[int], on_result: Callable[[int, torch.Tensor], None]) -> None:
    """Regions `members` of the plan sampled from its canvas in batches; on_result(i, pixels [h, w, 3]) for each as it
    is done."""
    with RegionRun(plan, members) as run:
        for batch in run.batches(list(members)):
            for i, pixels in zip(batch, run.sample(plan.canvas, batch)):
                on_result(i, pixels)


INDEPENDENT = Independent(sample=sample_regions, compositor=Compositor)
PARALLEL = Strategy(
    "parallel", "every tile from the input canvas, blended by the tile weights",
    independent_run(INDEPENDENT), independent=INDEPENDENT, sources=("refiner", "detailer"))
