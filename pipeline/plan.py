"""The region plan: what one node run refines, made by a region source (pipeline.tiles, pipeline.crops) and the only
thing a strategy (pipeline.strategies) receives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..kernels.planning import Tile
from ..luna_types import NoiseScaffold
from .fingerprint import LOCAL
from .job import RefineJob
from .regions import Region


@dataclass(frozen=True, kw_only=True)
class RegionPlan:
    """The regions of one run on a canvas of width x height px.

    source: who planned it ("refiner", "detailer"); settings: the source's own settings (a dataclass); canvas:
    [B, H, W, 3] padded to the latent grid; scaffold: the master scaffold; noise: it under the padded canvas,
    [1, C, H/f, W/f]; tiles: the tile grid of one image when the source is a tiler (each tile region names its grid
    index), empty for crops."""

    source: str
    job: RefineJob
    canvas: torch.Tensor = field(metadata=LOCAL)
    scaffold: NoiseScaffold
    noise: torch.Tensor = field(metadata=LOCAL)
    regions: tuple[Region, ...]
    width: int
    height: int
    settings: Any
    tiles: tuple[Tile, ...] = ()

    def trimmed(self, canvas: torch.Tensor) -> torch.Tensor:
        """A padded canvas [B, H, W, 3] cut back to width x height."""
        return canvas[:, :self.height, :self.width].contiguous()
