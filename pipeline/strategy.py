"""What a strategy is: how the regions of a plan are sampled and enter the canvas (the registry: pipeline.strategies)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..kernels.planning import Tile
from .plan import RegionPlan

Keep = Callable[[int, torch.Tensor], None]
"""keep(i, pixels [h, w, 3]): sees region i's refined pixels as it is done."""


class Compositing(Protocol):
    """Results entering a canvas one by one: add(i, pixels [h, w, 3]); `out` the canvas so far."""

    out: torch.Tensor

    def add(self, index: int, pixels: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class Independent:
    """A strategy whose regions are each sampled from the input canvas alone: any subset can be sampled anywhere and
    the results composited in any order, which is what a shard needs.

    sample(plan, members, on_result): the regions `members`, on_result(i, pixels) as each is done;
    compositor(plan): an empty Compositing of the padded canvas (not modified); units(plan, members): the groups of
    regions that are sampled together (a shard takes whole units), None for every region alone."""

    sample: Callable[[RegionPlan, Sequence[int], Keep], None]
    compositor: Callable[[RegionPlan], Compositing]
    units: Callable[[RegionPlan, Sequence[int]], list[list[int]]] | None = None

    def composite(self, plan: RegionPlan, results: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """The padded canvas with `results` {i: pixels} in it, in region order, as a new tensor."""
        compositing = self.compositor(plan)
        for i in sorted(results):
            compositing.add(i, results[i])
        return compositing.out


@dataclass(frozen=True)
class Strategy:
    """A named way to refine a plan: run(plan, keep) gives the padded canvas refined.

    independent: how to sample and composite parts of the plan, for a strategy that never needs the whole canvas;
    None when it does (every step or phase sees the canvas), so it cannot be split over shards. tile_phases: the
    order it samples a tile grid in, for the preview (None: all at once). sources: the region sources whose plans it
    takes ("refiner": offered as the refiner's tiling)."""

    name: str
    description: str
    run: Callable[[RegionPlan, Keep | None], torch.Tensor]
    independent: Independent | None = None
    tile_phases: Callable[[Sequence[Tile]], list[list[int]]] | None = None
    sources: tuple[str, ...] = ("refiner",)

    @property
    def shardable(self) -> bool:
        return self.independent is not None


def independent_run(parts: Independent) -> Callable[[RegionPlan, Keep | None], torch.Tensor]:
    """run(plan, keep) of an independent strategy: every region sampled and composited as it is done."""
    def run(plan: RegionPlan, keep: Keep | None = None) -> torch.Tensor:
        compositing = parts.compositor(plan)

        def on_result(i: int, pixels: torch.Tensor) -> None:
            if keep is not None:
                keep(i, pixels)
            compositing.add(i, pixels)

        parts.sample(plan, range(len(plan.regions)), on_result)
        return compositing.out

    return run
